"""``segkit robustness``: mIoU under the 16 image corruptions (segkit/tools/robustness.py)."""

from __future__ import annotations

import sys

from segkit.cli.common import (
    AMP_HELP,
    Formatter,
    absent_arg,
    claim_out,
    device,
    eval_protocol_args,
    examples,
    overwrite_arg,
    protocol_and_spec,
)
from segkit.runtime import check_amp

NAME = "robustness"


def add_parser(sub):
    from segkit.tools.robustness import CORRUPTIONS  # numpy only at import time

    s = sub.add_parser(
        NAME,
        formatter_class=Formatter,
        help="mIoU under the 16 image corruptions (SegFormer / RSSeg tables)",
        epilog=examples(
            "segkit robustness work_dirs/run/final --data ${SEGKIT_DATA}/camvid --severities 3 --out robust"
        ),
    )
    s.add_argument("checkpoint", help="a save_pretrained folder or a training checkpoint .pth")
    eval_protocol_args(s)
    s.add_argument(
        "--corruptions",
        nargs="+",
        default=list(CORRUPTIONS),
        choices=list(CORRUPTIONS),
        metavar="NAME",
        help="corruptions to run (default: all 16)",
    )
    s.add_argument(
        "--severities", type=int, nargs="+", default=[1, 2, 3, 4, 5], choices=[1, 2, 3, 4, 5], help="severity levels"
    )
    s.add_argument("--seed", type=int, default=0, help="seed of the random corruptions")
    s.add_argument(
        "--grid-severity", type=int, default=3, choices=[1, 2, 3, 4, 5], help="severity shown in corruptions_grid.png"
    )
    s.add_argument("--out", help="folder for robustness.json / .md and corruptions_grid.png")
    overwrite_arg(s)
    s.add_argument("--amp", choices=["bf16", "fp16"], help=AMP_HELP)
    absent_arg(s)
    return s


def run(args) -> int:
    from segkit import load_model
    from segkit.data import build_dataset
    from segkit.tools.robustness import corruption_functions, evaluate_robustness

    corruption_functions()  # the optional packages are there, before the model and data are loaded
    if args.out:
        claim_out(args, args.out)
    dev = device(args.device)
    check_amp(args.amp, dev)
    model = load_model(args.checkpoint, map_location=dev)
    protocol, spec = protocol_and_spec(args, model)
    dataset = build_dataset(spec)  # images are read raw, corrupted, then go through the test transform
    print(f"test protocol: {protocol.describe()}", file=sys.stderr)
    kw = protocol.inference_kwargs()
    res = evaluate_robustness(
        model,
        dataset,
        protocol.transform(model.mean, model.std),
        corruptions=args.corruptions,
        severities=args.severities,
        seed=args.seed,
        max_images=args.max_images,
        mode=kw["mode"],
        crop_size=kw.get("crop_size"),
        stride=kw.get("stride"),
        device=dev,
        out_dir=args.out,
        grid_severity=args.grid_severity,
        amp=args.amp,
        absent=args.absent,
    )
    print(res["table"])
    print()
    print(res["summary_table"])
    print(
        f"Clean {res['clean']:.2f}  Corr. {res['corr']:.2f}  Rete. {res['retention']:.1f}%  "
        f"({res['num_images']} images, severities {res['severities']}, seed {res['seed']}, {res['time_s']:.0f} s)"
    )
    if args.out:
        print(f"wrote {args.out}/robustness.json, robustness.md, corruptions_grid.png")
    return 0
