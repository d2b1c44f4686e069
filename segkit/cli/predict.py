"""``segkit predict``: segment images, a folder, a video or a camera with a checkpoint, or an
exported ONNX model with onnxruntime (``--onnx``, or a CKPT ending in ``.onnx``: no PyTorch import)."""

from __future__ import annotations

import sys
from pathlib import Path

from segkit.cli.common import (
    AMP_HELP,
    Formatter,
    claim_out,
    default_protocol_note,
    device,
    examples,
    overwrite_arg,
    protocol_overrides,
    revision_arg,
)
from segkit.errors import UsageError
from segkit.runtime import check_amp

NAME = "predict"


def add_parser(sub):
    s = sub.add_parser(
        NAME,
        formatter_class=Formatter,
        help="segment images: index PNG + colour overlay with legend",
        epilog=examples(
            "segkit predict work_dirs/run/final photo.jpg --out pred",
            "segkit predict segformer-b0_ade20k-512 street.mp4 --out pred --save-labels",
            "segkit predict --onnx model.onnx photos/ --out pred",
        ),
    )
    s.add_argument(
        "checkpoint",
        nargs="?",
        help="a save_pretrained folder, a training checkpoint .pth, a registry name or a Hub repo id",
    )
    s.add_argument("inputs", nargs="?", help="an image file, a folder of images, or a video file")
    s.add_argument(
        "--onnx",
        metavar="MODEL.onnx",
        help="run an exported ONNX model with onnxruntime (no PyTorch); then give only IMAGE_OR_DIR",
    )
    s.add_argument("--out", required=True, help="output folder")
    overwrite_arg(s)
    revision_arg(s)
    s.add_argument(
        "--mode",
        choices=["auto", "whole", "slide"],
        help="inference mode (default: the checkpoint's protocol); auto = slide for images above 1024² px",
    )
    protocol_overrides(s)
    s.add_argument("--amp", choices=["bf16", "fp16"], help=AMP_HELP)
    s.add_argument("--source", metavar="N", help="read camera N (e.g. 0) instead of files; stop with Ctrl-C")
    s.add_argument("--save-labels", action="store_true", help="video / camera: also write every frame's label PNG")
    s.add_argument(
        "--format",
        nargs="+",
        default=["png"],
        choices=["png", "json", "coco"],
        metavar="{png,json,coco}",
        help="images: png = label + overlay PNGs; json = <stem>.json (per class: area, box, COCO RLE); "
        "coco = one coco_results.json for all images (RLE per class present; image_id = file name) "
        "+ coco_images.json; several may be given",
    )
    s.add_argument(
        "--coco-gt",
        metavar="FILE",
        help="--format coco: take image ids (by file name) and category ids (by class name) from this COCO file",
    )
    s.add_argument("--polygons", action="store_true", help="--format json: add each class's polygons (with holes)")
    s.add_argument(
        "--tolerance", type=float, default=1.0, metavar="PX", help="--polygons: simplification tolerance in pixels"
    )
    return s


def format_kwargs(args) -> dict:
    """The result-format options of ``segkit predict`` as keyword arguments (usage errors for misplaced ones)."""
    formats = list(dict.fromkeys(args.format))
    if args.coco_gt is not None and "coco" not in formats:
        raise UsageError("--coco-gt is for --format coco")
    if args.polygons and "json" not in formats:
        raise UsageError("--polygons is for --format json")
    if not args.tolerance >= 0:
        raise UsageError(f"--tolerance {args.tolerance}: must be >= 0 pixels")
    return dict(formats=formats, coco_gt=args.coco_gt, polygons=args.polygons, tolerance=args.tolerance)


def run(args) -> int:
    if args.onnx or (args.checkpoint or "").endswith(".onnx"):
        return run_onnx(args)
    if args.source is not None and args.inputs is not None:
        raise UsageError(
            f"two inputs: {args.inputs} and --source {args.source}; give a file or folder, or --source N for a camera"
        )
    if args.source is not None and not str(args.source).isdigit():
        raise UsageError(f"--source {args.source}: expects a camera index (0, 1, …); give a file or folder without it")
    source = args.source if args.source is not None else args.inputs
    if args.checkpoint is None or source is None:
        raise UsageError("give CKPT IMAGE_OR_DIR_OR_VIDEO (or --source N for a camera; --onnx MODEL.onnx IMAGE_OR_DIR)")
    formats = format_kwargs(args)
    from segkit.engine.predict import is_camera, predict_paths
    from segkit.hub import load_model
    from segkit.utils import list_inputs

    _quiet_video_decoders()

    if not is_camera(source):
        list_inputs(source, warn=False)  # a missing input or a folder with nothing to read: before the model loads
    _inputs_outside_out(source, args.out)
    claim_out(args, args.out)
    dev = device(args.device)
    check_amp(args.amp, dev)
    model = load_model(args.checkpoint, map_location=dev, revision=args.revision)
    note = default_protocol_note(args, model, args.checkpoint)
    if note:
        print(f"segkit predict: note: {note}", file=sys.stderr)
    written = predict_paths(
        model,
        source,
        args.out,
        mode=args.mode,
        crop_size=args.crop,
        stride=args.stride,
        scale=args.scale,
        device=dev,
        amp=args.amp,
        save_labels=args.save_labels,
        **formats,
    )
    for p in written:
        print(p)
    return 0


def run_onnx(args) -> int:
    """``segkit predict --onnx``. No torch import on this path: onnxruntime + numpy + OpenCV/Pillow only."""
    from segkit.tools.onnx_predict import predict_paths_onnx

    model_path = args.onnx or args.checkpoint
    inputs = args.inputs if args.onnx is None else (args.checkpoint if args.inputs is None else None)
    if inputs is None:
        raise UsageError("segkit predict --onnx MODEL.onnx IMAGE_OR_DIR --out DIR: give exactly one IMAGE_OR_DIR")
    formats = format_kwargs(args)
    for flag in ("crop", "stride"):
        if getattr(args, flag):
            raise UsageError(f"segkit predict --onnx: --{flag} is not supported (whole-image inference only)")
    if args.mode == "slide" or args.device not in ("cpu", "auto"):
        raise UsageError(
            "segkit predict --onnx: runs whole-image inference on the CPU with onnxruntime "
            "(--mode slide / --device are for PyTorch checkpoints)"
        )
    from segkit.utils import list_images

    list_images(inputs, warn=False)  # a missing input or an empty folder is reported before --out is claimed
    _inputs_outside_out(inputs, args.out)
    claim_out(args, args.out)
    for p in predict_paths_onnx(model_path, inputs, args.out, scale=args.scale, **formats):
        print(p)
    return 0


def _quiet_video_decoders() -> None:
    """OpenCV's and FFmpeg's own log lines (``[mpeg4 @ 0x…] header damaged``) off: segkit reports what failed,
    frame by frame, in its own words. ``OPENCV_FFMPEG_LOGLEVEL`` / ``OPENCV_LOG_LEVEL`` set by the user win."""
    import os

    import cv2

    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET; read when FFmpeg first opens a file
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def _inputs_outside_out(source, out) -> None:
    """The inputs must not lie in ``--out``: ``--overwrite`` would move them aside with the old results."""
    if str(source).isdigit() or not str(out).strip():  # an empty --out: claim_out says so
        return
    src, dst = Path(source).resolve(), Path(out).resolve()
    if src == dst or dst in src.parents:
        raise UsageError(f"--out {out} holds the input {source}: write the results to another folder")
