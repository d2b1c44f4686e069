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
            "segkit check-data ${SEGKIT_DATA}/camvid --split train",
            "segkit check-data --config my.yaml --split val",
            "segkit check-data --config rgb_nir.yaml --stats   # per-band mean/std for model_args",
        ),
    )
    s.add_argument("root", nargs="?", help="dataset root (or use --config)")
    s.add_argument("--data-type", default="split", help="dataset layout (split, folder, ade20k, cityscapes, ...)")
    s.add_argument("--split", default="train", help="split to scan (with --config: train, val or test)")
    s.add_argument("--config", help="take the dataset from this config instead of ROOT")
    s.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for --config")
    s.add_argument("--num-classes", type=positive_int, help="expected class count (default: the dataset's)")
    s.add_argument(
        "--in-channels",
        type=positive_int,
        help="bands per image (default: model_args.in_channels of --config, else 3); 4 reads RGB + NIR TIFFs",
    )
    s.add_argument(
        "--stats",
        action="store_true",
        help="also print the per-band mean and std of the images (0-255 scale), to paste into model_args",
    )
    return s


def run(args) -> int:
    from segkit.config import load_config
    from segkit.data import build_dataset, check_dataset

    channels, binary = 3, False
    if args.config:
        cfg = load_config(args.config, args.set)
        spec = getattr(cfg.data, args.split, None) or cfg.data.train
        channels = int(cfg.model_args.get("in_channels", 3))
        binary = cfg.is_binary
    elif args.root:
        spec = {"type": args.data_type, "root": args.root, "split": args.split}
    else:
        raise UsageError("give a dataset ROOT or --config CONFIG")
    if binary:  # read as the run reads it: {0 background, 1 foreground} from 0/1 or 0/255 masks
        from segkit.data.binary import apply_binary_convention, binary_convention, raw_label_values
        from segkit.data.datasets import classes_replaced

        with classes_replaced():
            dataset = build_dataset(spec)
        label_map, mask_values = binary_convention(dataset, raw_label_values(dataset))
        apply_binary_convention(dataset, label_map)
        bg, fg = mask_values
        print(f"task: binary: {dataset.name}: masks stored as {bg} / {fg} (background / foreground)")
    else:
        dataset = build_dataset(spec)
    dataset.in_channels = args.in_channels or channels
    report = check_dataset(dataset, num_classes=args.num_classes, raise_on_error=False)
    print(report.table())
    if args.stats and report.ok:
        from segkit.data.checks import image_statistics

        mean, std, n = image_statistics(dataset)
        print(f"image statistics ({dataset.in_channels} band(s), {n:,} pixels per band, 0-255 scale):")
        print(f"  mean: [{', '.join(f'{v:.3f}' for v in mean)}]")
        print(f"  std: [{', '.join(f'{v:.3f}' for v in std)}]")
    if not report.ok:  # the table lists the problems; the exit status says there are some
        print(f"segkit check-data: {len(report.problems)} problem(s) found", file=sys.stderr)
        return 1
    return 0
