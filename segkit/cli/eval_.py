"""``segkit eval``: evaluate a checkpoint under its test protocol (or the command line's overrides).

The module is ``eval_`` so as not to shadow the builtin ``eval``."""

from __future__ import annotations

import contextlib
import sys

from segkit.cli.common import (
    AMP_HELP,
    Formatter,
    absent_arg,
    claim_out,
    default_protocol_note,
    device,
    eval_protocol_args,
    examples,
    non_negative_int,
    overwrite_arg,
    positive_float,
    positive_int,
    protocol_and_spec,
    protocol_source,
    revision_arg,
)
from segkit.errors import UsageError
from segkit.runtime import check_amp

NAME = "eval"


def _set_threshold(args, model, name) -> None:
    """``--threshold``: the foreground probability threshold of a binary model (PyTorch or ONNX) named ``name``;
    a UsageError for a multi-class model or a value outside (0, 1)."""
    if args.threshold is None:
        return
    if not getattr(model, "is_binary", False):
        raise UsageError(
            f"--threshold {args.threshold}: {name} is a multi-class model ({model.num_classes} classes, "
            f"each pixel takes the most likely one); --threshold is for binary models (task: binary)"
        )
    if not 0 < args.threshold < 1:
        raise UsageError(f"--threshold {args.threshold}: the foreground probability threshold must be in (0, 1)")
    model.threshold = float(args.threshold)


def add_parser(sub):
    s = sub.add_parser(
        NAME,
        formatter_class=Formatter,
        help="evaluate a checkpoint (mIoU, aAcc, mAcc, mDice, mFscore)",
        epilog=examples("segkit eval work_dirs/run/final --data ${SEGKIT_DATA}/camvid --split test --out results"),
    )
    s.add_argument(
        "checkpoint", nargs="?", help="a save_pretrained folder, a training checkpoint .pth, or an exported .onnx"
    )
    s.add_argument(
        "--onnx",
        metavar="MODEL.onnx",
        help="evaluate an exported ONNX model (float32 or INT8) with onnxruntime: whole-image, its stored protocol",
    )
    eval_protocol_args(s)
    s.add_argument(
        "--scales", type=positive_float, nargs="+", help="multi-scale test ratios, e.g. 0.5 0.75 1.0 1.25 1.5 1.75"
    )
    s.add_argument("--flip", action="store_true", help="also average the horizontally flipped image")
    s.add_argument("--out", help="folder for metrics.json and the confusion-matrix PNG")
    overwrite_arg(s)
    revision_arg(s)
    s.add_argument("--window-batch", type=positive_int, default=4, help="slide windows per forward")
    s.add_argument("--workers", type=non_negative_int, default=0, help="DataLoader workers reading and resizing images")
    s.add_argument("--amp", choices=["bf16", "fp16"], help=AMP_HELP)
    s.add_argument(
        "--threshold",
        type=positive_float,
        help="binary models: foreground where sigmoid(logit) >= this, in (0, 1) (default: the model's, 0.5 unless "
        "its config set eval.threshold)",
    )
    absent_arg(s)
    return s


def run(args) -> int:
    if args.set and not args.config:  # they override --config's keys: alone they would change nothing
        raise UsageError(f"--set {' '.join(args.set)}: --set overrides keys of --config; give --config CONFIG too")
    if args.onnx or (args.checkpoint or "").endswith(".onnx"):
        return run_onnx(args)
    from segkit import load_model
    from segkit.data import build_dataset
    from segkit.data.binary import match_model
    from segkit.data.checks import conversion_note
    from segkit.data.datasets import classes_replaced
    from segkit.engine.evaluator import evaluate, write_results
    from segkit.engine.metrics import BINARY_KEYS, format_table

    if args.checkpoint is None:
        raise UsageError("give CHECKPOINT (or --onnx MODEL.onnx)")
    if args.out:
        claim_out(args, args.out)  # before the work: a bad or used --out must not cost the evaluation
    dev = device(args.device)
    check_amp(args.amp, dev)
    model = load_model(args.checkpoint, map_location=dev, revision=args.revision)
    _set_threshold(args, model, args.checkpoint)
    protocol, spec = protocol_and_spec(args, model)
    with classes_replaced() if getattr(model, "is_binary", False) else contextlib.nullcontext():
        dataset = match_model(build_dataset(spec, transform=protocol.transform(model.mean, model.std)), model)
    conversions = conversion_note(dataset)  # one line per data set, as train and check-data say it
    if conversions:
        print(f"segkit eval: note: {conversions}", file=sys.stderr)
    note = default_protocol_note(args, model, args.checkpoint)
    if note:
        print(f"segkit eval: note: {note}", file=sys.stderr)
    print(f"test protocol: {protocol.describe()} ({protocol_source(args, model)})", file=sys.stderr)
    res = evaluate(
        model,
        dataset,
        **protocol.inference_kwargs(),
        device=dev,
        max_images=args.max_images,
        window_batch=args.window_batch,
        num_workers=args.workers,
        amp=args.amp,
        absent=args.absent,
    )
    print(format_table(res, model.class_names))
    print(
        f"aAcc {res['aAcc']:.2f}  mIoU {res['mIoU']:.2f}  mAcc {res['mAcc']:.2f}  mDice {res['mDice']:.2f}  "
        f"mFscore {res['mFscore']:.2f}"
        + "".join(f"  {k} {res[k]:.2f}" for k in BINARY_KEYS if k in res)
        + (f"  (threshold {res['threshold']:g})" if "threshold" in res else ""),
        flush=True,
    )
    if args.out:  # the metrics are on screen before anything is written
        for path in write_results(res, args.out):
            print(f"wrote {path}")
    return 0


def run_onnx(args) -> int:
    """``segkit eval --onnx MODEL.onnx --data ROOT``: :func:`segkit.tools.onnx_eval.evaluate_onnx`."""
    from segkit.data import build_dataset
    from segkit.data.binary import match_model
    from segkit.data.checks import conversion_note
    from segkit.data.datasets import classes_replaced
    from segkit.engine.evaluator import write_results
    from segkit.engine.metrics import BINARY_KEYS, format_table
    from segkit.tools.onnx_eval import evaluate_onnx
    from segkit.tools.onnx_predict import OnnxSegmenter

    if args.onnx and args.checkpoint:
        raise UsageError(f"two models: {args.checkpoint} and --onnx {args.onnx}; give one")
    for flag in ("crop", "stride", "scales", "amp", "config"):
        if getattr(args, flag, None):
            raise UsageError(f"--onnx: --{flag} is not supported (whole-image inference with the exported protocol)")
    if args.flip or args.mode == "slide" or args.device not in ("cpu", "auto"):
        raise UsageError("--onnx: whole-image inference on the CPU (--flip / --mode slide / --device need PyTorch)")
    if not args.data:
        raise UsageError("--onnx: give --data ROOT (and --split)")
    if args.out:
        claim_out(args, args.out)
    model = OnnxSegmenter(args.onnx or args.checkpoint)
    _set_threshold(args, model, model.path)
    with classes_replaced() if model.is_binary else contextlib.nullcontext():
        dataset = build_dataset({"type": args.data_type, "root": args.data, "split": args.split})
    match_model(dataset, model)  # its bands (read_bands) and, for a binary model, its masks' 0/1 or 0/255 values
    conversions = conversion_note(dataset)  # one line per data set, as train and check-data say it
    if conversions:
        print(f"segkit eval: note: {conversions}", file=sys.stderr)
    quant = model.meta.get("quantization")
    print(f"test protocol: {model.protocol.describe()} (stored in {model.path}){' [INT8]' if quant else ''}")
    res = evaluate_onnx(model, dataset, max_images=args.max_images, absent=args.absent, scale=args.scale)
    print(format_table(res, model.class_names))
    print(
        f"aAcc {res['aAcc']:.2f}  mIoU {res['mIoU']:.2f}  mAcc {res['mAcc']:.2f}  mDice {res['mDice']:.2f}  "
        f"mFscore {res['mFscore']:.2f}"
        + "".join(f"  {k} {res[k]:.2f}" for k in BINARY_KEYS if k in res)
        + (f"  (threshold {res['threshold']:g})" if "threshold" in res else ""),
        flush=True,
    )
    if args.out:
        for path in write_results(res, args.out):
            print(f"wrote {path}")
    return 0
