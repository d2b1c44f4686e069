"""``segkit check-data``: scan a dataset's labels (class frequencies and guard-rail errors)."""

from __future__ import annotations

import sys

from segkit.cli.common import Formatter, examples, positive_int
from segkit.errors import UsageError

NAME = "check-data"


def add_parser(sub):
    s = sub.add_parser(
        NAME,
        formatter_class=Formatter,
        help="scan labels: class frequencies and guard-rail errors",
        epilog=examples(
            "segkit check-data ${SEGKIT_DATA}/camvid --split train", "segkit check-data --config my.yaml --split val"
        ),
    )
    s.add_argument("root", nargs="?", help="dataset root (or use --config)")
    s.add_argument("--data-type", default="split", help="dataset layout (split, folder, ade20k, cityscapes, ...)")
    s.add_argument("--split", default="train", help="split to scan (with --config: train, val or test)")
    s.add_argument("--config", help="take the dataset from this config instead of ROOT")
    s.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for --config")
    s.add_argument("--num-classes", type=positive_int, help="expected class count (default: the dataset's)")
    return s


def run(args) -> int:
    from segkit.config import load_config
    from segkit.data import build_dataset, check_dataset

    if args.config:
        cfg = load_config(args.config, args.set)
        spec = getattr(cfg.data, args.split, None) or cfg.data.train
    elif args.root:
        spec = {"type": args.data_type, "root": args.root, "split": args.split}
    else:
        raise UsageError("give a dataset ROOT or --config CONFIG")
    report = check_dataset(build_dataset(spec), num_classes=args.num_classes, raise_on_error=False)
    print(report.table())
    if not report.ok:  # the table lists the problems; the exit status says there are some
        print(f"segkit check-data: {len(report.problems)} problem(s) found", file=sys.stderr)
        return 1
    return 0
