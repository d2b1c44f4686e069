"""``segkit train``: train from a YAML config (also under ``torchrun``)."""

from __future__ import annotations

import json
import os
import sys

from segkit.cli.common import Formatter, examples

NAME = "train"


def add_parser(sub):
    s = sub.add_parser(
        NAME,
        formatter_class=Formatter,
        help="train from a YAML config",
        epilog=examples(
            "segkit train camvid/segformer-b0_10min",
            "segkit train my.yaml --set optim.lr=1e-3 schedule.max_iters=2000",
            "torchrun --nproc_per_node=2 -m segkit train my.yaml",
        ),
    )
    s.add_argument("config", help="YAML file or the name of a shipped config (e.g. camvid/segformer-b0_10min)")
    s.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config fields (dotted keys)")
    s.add_argument(
        "--resume",
        default=None,
        help="continue a run: a checkpoint path, or 'auto' for the newest readable iter_*.pth in work_dir",
    )
    s.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in a work_dir that holds a run (the old run is moved to <work_dir>.prev-<time>)",
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    return s


def run(args) -> int:
    from segkit.config import load_config
    from segkit.engine.trainer import train

    cfg = load_config(args.config, args.set)
    summary = train(cfg, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2))
    stopped = summary.get("stopped_by_signal")
    if stopped:  # Ctrl-C / SIGTERM: a checkpoint was written, the run is not finished; not a success
        if int(os.environ.get("RANK", "0")) == 0:
            print(
                f"segkit train: stopped by signal {stopped} at iteration {summary['iterations']} (a checkpoint was "
                f"saved; continue with --resume auto)",
                file=sys.stderr,
            )
        return 128 + int(stopped)
    return 0
