"""``segkit flops``: GFLOPs (multiply-adds) and parameters of a zoo model at an input size."""

from __future__ import annotations

import json

from segkit.cli.common import Formatter, examples, hw, positive_int

NAME = "flops"


def add_parser(sub):
    s = sub.add_parser(
        NAME,
        formatter_class=Formatter,
        help="GFLOPs (multiply-adds) and parameters of a model at an input size",
        epilog=examples("segkit flops segformer-b0 --shape 1024 2048"),
    )
    s.add_argument("model", help="zoo name (segkit models lists them)")
    hw(s, "--shape", "input size", default=[512, 512])
    s.add_argument("--num-classes", type=positive_int, default=150, help="classes of the head")
    s.add_argument(
        "--mode",
        default="paper",
        choices=["paper", "torch", "mmcv", "torchprofile"],
        help="counting convention (segkit.tools.flops); 'paper' = the one the model's paper used",
    )
    s.add_argument("--json", action="store_true", help="print the full result as JSON")
    return s


def run(args) -> int:
    import torch

    from segkit.models.layers import skip_init
    from segkit.models.zoo import build_model
    from segkit.tools.flops import count_flops

    with torch.device("meta"), skip_init():  # shapes only: no memory, no initialisation
        model = build_model(args.model, num_classes=args.num_classes)
    res = count_flops(model, tuple(args.shape), mode=args.mode)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(
            f"{args.model} @ {args.shape[0]}x{args.shape[1]}: {res['gmacs']:.2f} GFLOPs (GMACs, 1 MAC = 1 FLOP), "
            f"{res['params'] / 1e6:.2f} M params [{res['mode']} convention]"
        )
    return 0
