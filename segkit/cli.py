"""The ``segkit`` command line: one sub-command per Python API entry point.

    segkit models                         list the zoo with parameter counts
    segkit flops MODEL --shape H W        GMACs and parameters
    segkit train CONFIG [--set k=v ...] [--resume PATH|auto]
    segkit eval CKPT --data ROOT [--split test] [--mode whole|slide] [--crop H W --stride H W] [--scales ... --flip]
    segkit predict CKPT IMAGE_OR_DIR --out DIR
    segkit check-data ROOT [--split train]  (or --config CONFIG)
    segkit convert SRC DST --model NAME [--num-classes K]
    segkit benchmark MODEL_OR_CKPT --shape H W [--batch B] [--mode whole|slide] [--device cpu|cuda] [--amp bf16|fp16]
    segkit robustness CKPT --data ROOT [--corruptions ...] [--severities 1 2 3 4 5] [--seed 0] [--out DIR]
    segkit export CKPT --format onnx [--shape H W] [--dynamic] [--opset 17] [--check IMAGE] --out model.onnx
    segkit predict --onnx model.onnx IMAGE_OR_DIR --out DIR   (onnxruntime, no PyTorch needed)

Every sub-command is a thin wrapper: the work is done by the functions it calls.
"""
from __future__ import annotations

import argparse
import os
import json
import sys


def _cmd_models(args) -> int:
    from segkit.models.zoo import MODELS, build_model, count_parameters

    print(f"{'model':<16}{'params (150 classes)':>22}")
    for name in MODELS:
        if args.filter and args.filter not in name:
            continue
        n = count_parameters(build_model(name, num_classes=args.num_classes))
        print(f"{name:<16}{n:>22,}")
    return 0


def _cmd_flops(args) -> int:
    from segkit.models.zoo import build_model
    import torch
    from segkit.tools.flops import count_flops

    with torch.device("meta"):  # shapes only: no weight initialisation, no memory
        model = build_model(args.model, num_classes=args.num_classes)
    res = count_flops(model, tuple(args.shape), mode=args.mode)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{args.model} @ {args.shape[0]}x{args.shape[1]}: {res['gmacs']:.2f} GFLOPs (GMACs, 1 MAC = 1 FLOP), "
              f"{res['params'] / 1e6:.2f} M params [{res['mode']} convention]")
    return 0


def _cmd_train(args) -> int:
    from segkit.config import load_config
    from segkit.engine.trainer import train

    cfg = load_config(args.config, args.set)
    summary = train(cfg, resume=args.resume, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2))
    return 0


def _dataset_for_eval(args, model):
    from segkit.data import build_dataset
    from segkit.engine.trainer import build_test_transform
    from segkit.config import config_from_dict, load_config

    if args.config:
        cfg = load_config(args.config, args.set)
    elif getattr(model, "train_config", None):
        cfg = config_from_dict(model.train_config)
    else:
        cfg = config_from_dict({})
    if args.scale is not None:
        cfg.test_transform.scale = None if args.scale == [0] else args.scale
    tf = build_test_transform(cfg, model.mean, model.std)
    if args.data:
        spec = {"type": args.data_type, "root": args.data, "split": args.split}
    else:
        spec = cfg.data.test or cfg.data.val
        if spec is None:
            raise SystemExit("segkit eval: give --data ROOT (and --split) or a config with data.test")
    return build_dataset(spec, transform=tf), cfg


def _cmd_eval(args) -> int:
    from segkit import load_model
    from segkit.engine.evaluator import evaluate
    from segkit.engine.metrics import format_table

    model = load_model(args.checkpoint, map_location=args.device)
    dataset, cfg = _dataset_for_eval(args, model)
    mode = args.mode or cfg.eval.mode
    crop = args.crop or cfg.eval.crop_size
    stride = args.stride or cfg.eval.stride or crop
    res = evaluate(model, dataset, mode=mode, crop_size=crop, stride=stride, scales=args.scales or cfg.eval.scales,
                   flip=args.flip or cfg.eval.flip, device=args.device, out_dir=args.out, max_images=args.max_images,
                   window_batch=args.window_batch)
    print(format_table(res, model.class_names))
    print(f"aAcc {res['aAcc']:.2f}  mIoU {res['mIoU']:.2f}  mAcc {res['mAcc']:.2f}  mDice {res['mDice']:.2f}  "
          f"mFscore {res['mFscore']:.2f}")
    return 0


def _cmd_predict(args) -> int:
    if args.onnx or (args.checkpoint or "").endswith(".onnx"):
        return _cmd_predict_onnx(args)
    if args.checkpoint is None or args.inputs is None:
        raise SystemExit("segkit predict: give CKPT IMAGE_OR_DIR (or --onnx MODEL.onnx IMAGE_OR_DIR)")
    from segkit import load_model
    from segkit.engine.predict import predict_paths

    model = load_model(args.checkpoint, map_location=args.device)
    written = predict_paths(model, args.inputs, args.out, mode=args.mode, crop_size=args.crop, stride=args.stride,
                            scale=args.scale, device=args.device)
    for p in written:
        print(p)
    return 0


def _cmd_check_data(args) -> int:
    from segkit.config import load_config
    from segkit.data import build_dataset, check_dataset

    if args.config:
        cfg = load_config(args.config, args.set)
        spec = getattr(cfg.data, args.split) or cfg.data.train
    else:
        spec = {"type": args.data_type, "root": args.root, "split": args.split}
    report = check_dataset(build_dataset(spec), num_classes=args.num_classes)
    print(report if isinstance(report, str) else getattr(report, "table", report))
    return 0


def _cmd_convert(args) -> int:
    from segkit import build_model, load_checkpoint, read_state_dict

    num_classes = args.num_classes
    if num_classes is None:
        state = read_state_dict(args.src)
        for suffix in ("decode_head.linear_pred.weight", "decode_head.classifier.weight", "decode_head.conv_seg.weight"):
            key = next((k for k in state if k.endswith(suffix)), None)
            if key is not None and not (suffix.endswith("conv_seg.weight") and args.model.startswith("segformer")):
                num_classes = state[key].shape[0]
                break
        num_classes = num_classes or 150
    model = build_model(args.model, num_classes=num_classes)
    load_checkpoint(model, args.src, strict=not args.non_strict)
    out = model.save_pretrained(args.dst)
    print(f"wrote {out}/model.safetensors and config.json ({args.model}, {num_classes} classes)")
    return 0


# ============================================================================= measurement tools
# benchmark / robustness / export and `predict --onnx` (segkit/tools/*). Kept in one block.
def _cmd_benchmark(args) -> int:
    from segkit.tools.benchmark import benchmark, format_result, load_for_benchmark, write_json

    model = load_for_benchmark(args.model, num_classes=args.num_classes)
    crop = args.crop or ([512, 512] if args.mode == "slide" else None)
    stride = args.stride or ([max(1, c * 3 // 4) for c in crop] if crop else None)
    res = benchmark(model, args.shape, batch=args.batch, mode=args.mode, crop_size=crop, stride=stride,
                    device=args.device, amp=args.amp, channels_last=args.channels_last, compile=args.compile,
                    warmup=args.warmup, runs=args.runs, threads=args.threads)
    print(format_result(res))
    if args.json:
        print(f"wrote {write_json(res, args.json)}")
    return 0


def _cmd_robustness(args) -> int:
    from segkit import load_model
    from segkit.data import TestTransform
    from segkit.tools.robustness import evaluate_robustness

    model = load_model(args.checkpoint, map_location=args.device)
    dataset, cfg = _dataset_for_eval(args, model)  # its items are not used: images are read raw (dataset.load),
    t = cfg.test_transform                         # corrupted, then go through this test transform
    tf = TestTransform(scale=tuple(t.scale) if t.scale else None, keep_ratio=t.keep_ratio,
                       size_divisor=t.size_divisor, mean=model.mean, std=model.std)
    mode = args.mode or cfg.eval.mode
    crop = args.crop or cfg.eval.crop_size
    stride = args.stride or cfg.eval.stride or crop
    res = evaluate_robustness(model, dataset, tf, corruptions=args.corruptions, severities=args.severities,
                              seed=args.seed, max_images=args.max_images, mode=mode, crop_size=crop, stride=stride,
                              device=args.device, out_dir=args.out, grid_severity=args.grid_severity)
    print(res["table"])
    print()
    print(res["summary_table"])
    print(f"Clean {res['clean']:.2f}  Corr. {res['corr']:.2f}  Rete. {res['retention']:.1f}%  "
          f"({res['num_images']} images, severities {res['severities']}, seed {res['seed']}, {res['time_s']:.0f} s)")
    if args.out:
        print(f"wrote {args.out}/robustness.json, robustness.md, corruptions_grid.png")
    return 0


def _cmd_export(args) -> int:
    from segkit import load_model
    from segkit.tools.export import export_onnx

    if args.format != "onnx":
        raise ValueError(f"unsupported export format {args.format!r} (only 'onnx')")
    model = load_model(args.checkpoint)
    rep = export_onnx(model, args.out, shape=args.shape, dynamic=args.dynamic, opset=args.opset,
                      check_image=args.check, verify=not args.no_verify, atol=args.atol)
    print(f"wrote {rep['path']} ({rep['size_mb']:.1f} MB, opset {rep['opset']}, "
          f"{'dynamic batch/H/W' if rep['dynamic'] else 'dynamic batch, fixed %dx%d' % tuple(rep['shape'])})")
    for c in rep["checks"]:
        print(f"  check {c.get('image', 'random input')} {tuple(c['input'])}: max |logit diff| {c['max_abs_diff']:.2e} "
              f"(max |logit| {c['max_abs_logit']:.2f}), argmax agreement {100 * c['argmax_agreement']:.2f}%")
    return 0


def _cmd_predict_onnx(args) -> int:
    # No torch import on this path: onnxruntime + numpy + Pillow only.
    from segkit.tools.onnx_predict import predict_paths_onnx

    model_path = args.onnx or args.checkpoint
    inputs = args.inputs if args.onnx is None else (args.checkpoint if args.inputs is None else None)
    if inputs is None:
        raise SystemExit("segkit predict --onnx MODEL.onnx IMAGE_OR_DIR --out DIR: give exactly one IMAGE_OR_DIR")
    for flag in ("crop", "stride"):
        if getattr(args, flag):
            raise SystemExit(f"segkit predict --onnx: --{flag} is not supported (whole-image inference only)")
    if args.mode == "slide" or args.device != "cpu":
        raise SystemExit("segkit predict --onnx: runs whole-image inference on the CPU with onnxruntime "
                         "(--mode slide / --device are for PyTorch checkpoints)")
    for p in predict_paths_onnx(model_path, inputs, args.out, scale=args.scale):
        print(p)
    return 0


def _add_tool_parsers(sub) -> None:
    s = sub.add_parser("benchmark", help="latency / FPS / peak memory under a fixed protocol (segkit/tools/benchmark.py)")
    s.add_argument("model", help="zoo name (random weights; speed does not depend on them) or checkpoint")
    s.add_argument("--shape", type=int, nargs=2, default=[512, 512], metavar=("H", "W"))
    s.add_argument("--batch", type=int, default=1)
    s.add_argument("--num-classes", type=int, default=150, help="classes of a zoo model (150 = ADE20K)")
    s.add_argument("--mode", default="whole", choices=["whole", "slide"])
    s.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), help="slide window (default 512 512)")
    s.add_argument("--stride", type=int, nargs=2, metavar=("H", "W"), help="slide stride (default 3/4 of the crop)")
    s.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    s.add_argument("--amp", choices=["bf16", "fp16"])
    s.add_argument("--channels-last", action="store_true")
    s.add_argument("--compile", action="store_true", help="torch.compile the model (compiled during warm-up)")
    s.add_argument("--warmup", type=int, default=5)
    s.add_argument("--runs", type=int, default=20)
    s.add_argument("--threads", type=int, help="torch intra-op threads (default: PyTorch's)")
    s.add_argument("--json", metavar="PATH", help="write the full result (machine included) as JSON")
    s.set_defaults(fn=_cmd_benchmark)

    from segkit.tools.robustness import CORRUPTIONS  # numpy only at import time

    s = sub.add_parser("robustness", help="mIoU under the 16 image corruptions (SegFormer/RSSeg tables)")
    s.add_argument("checkpoint")
    s.add_argument("--data", help="dataset root")
    s.add_argument("--data-type", default="split")
    s.add_argument("--split", default="test")
    s.add_argument("--config", help="config whose data.test / test transform / eval settings to use")
    s.add_argument("--set", nargs="*", default=[])
    s.add_argument("--corruptions", nargs="+", default=list(CORRUPTIONS), choices=list(CORRUPTIONS),
                   metavar="NAME", help="default: all 16")
    s.add_argument("--severities", type=int, nargs="+", default=[1, 2, 3, 4, 5], choices=[1, 2, 3, 4, 5])
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--max-images", type=int)
    s.add_argument("--mode", choices=["whole", "slide"])
    s.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"))
    s.add_argument("--stride", type=int, nargs=2, metavar=("H", "W"))
    s.add_argument("--scale", type=int, nargs="+", help="test resize (long short); 0 = none")
    s.add_argument("--grid-severity", type=int, default=3, choices=[1, 2, 3, 4, 5])
    s.add_argument("--device", default="cpu")
    s.add_argument("--out", help="folder for robustness.json / .md and corruptions_grid.png")
    s.set_defaults(fn=_cmd_robustness)

    s = sub.add_parser("export", help="export to ONNX (logits at input size + metadata), verified with onnxruntime")
    s.add_argument("checkpoint")
    s.add_argument("--format", default="onnx", choices=["onnx"])
    s.add_argument("--shape", type=int, nargs=2, default=[512, 512], metavar=("H", "W"))
    s.add_argument("--dynamic", action="store_true", help="dynamic height/width (batch is always dynamic)")
    s.add_argument("--opset", type=int, default=17)
    s.add_argument("--check", metavar="IMAGE", help="compare PyTorch and onnxruntime logits on this image")
    s.add_argument("--atol", type=float, default=1e-3, help="largest accepted max |logit difference|")
    s.add_argument("--no-verify", action="store_true", help="skip the random-input verification")
    s.add_argument("--out", required=True)
    s.set_defaults(fn=_cmd_export)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="segkit", description="Semantic segmentation with SegNeXt, SegFormer and RSSeg.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("models", help="list models with parameter counts")
    s.add_argument("--num-classes", type=int, default=150)
    s.add_argument("--filter", default="")
    s.set_defaults(fn=_cmd_models)

    s = sub.add_parser("flops", help="GFLOPs (multiply-adds) and parameters of a model at an input size")
    s.add_argument("model")
    s.add_argument("--shape", type=int, nargs=2, default=[512, 512], metavar=("H", "W"))
    s.add_argument("--num-classes", type=int, default=150)
    s.add_argument("--mode", default="paper", choices=["paper", "torch", "mmcv", "torchprofile"],
                   help="counting convention (segkit.tools.flops); 'paper' = the one the model's paper used")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=_cmd_flops)

    s = sub.add_parser("train", help="train from a YAML config")
    s.add_argument("config")
    s.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config fields")
    s.add_argument("--resume", default=None, help="checkpoint path, or 'auto' for the latest in work_dir")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(fn=_cmd_train)

    s = sub.add_parser("eval", help="evaluate a checkpoint (mIoU, aAcc, mAcc, mDice, mFscore)")
    s.add_argument("checkpoint")
    s.add_argument("--data", help="dataset root")
    s.add_argument("--data-type", default="split", help="dataset layout (split, folder, ade20k, cityscapes, ...)")
    s.add_argument("--split", default="test")
    s.add_argument("--config", help="config whose data.test / eval settings to use")
    s.add_argument("--set", nargs="*", default=[])
    s.add_argument("--mode", choices=["whole", "slide"])
    s.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"))
    s.add_argument("--stride", type=int, nargs=2, metavar=("H", "W"))
    s.add_argument("--scales", type=float, nargs="+")
    s.add_argument("--flip", action="store_true")
    s.add_argument("--scale", type=int, nargs="+", help="test resize (long short); 0 = none")
    s.add_argument("--device", default="cpu")
    s.add_argument("--out", help="folder for metrics.json and the confusion-matrix PNG")
    s.add_argument("--max-images", type=int)
    s.add_argument("--window-batch", type=int, default=4)
    s.set_defaults(fn=_cmd_eval)

    s = sub.add_parser("predict", help="segment images: index PNG + colour overlay with legend")
    s.add_argument("checkpoint", nargs="?")
    s.add_argument("inputs", nargs="?", help="an image file or a folder of images")
    s.add_argument("--onnx", metavar="MODEL.onnx", help="run an exported ONNX model with onnxruntime (no PyTorch); "
                   "then give only IMAGE_OR_DIR")
    s.add_argument("--out", required=True)
    s.add_argument("--mode", default="auto", choices=["auto", "whole", "slide"])
    s.add_argument("--crop", type=int, nargs=2)
    s.add_argument("--stride", type=int, nargs=2)
    s.add_argument("--scale", type=int, nargs=2, help="resize (long short) before inference")
    s.add_argument("--device", default="cpu")
    s.set_defaults(fn=_cmd_predict)

    s = sub.add_parser("check-data", help="scan labels: class frequencies and guard-rail errors")
    s.add_argument("root", nargs="?")
    s.add_argument("--data-type", default="split")
    s.add_argument("--split", default="train")
    s.add_argument("--config")
    s.add_argument("--set", nargs="*", default=[])
    s.add_argument("--num-classes", type=int)
    s.set_defaults(fn=_cmd_check_data)

    s = sub.add_parser("convert", help="convert an official checkpoint to segkit's safetensors format")
    s.add_argument("src")
    s.add_argument("dst")
    s.add_argument("--model", required=True)
    s.add_argument("--num-classes", type=int)
    s.add_argument("--non-strict", action="store_true")
    s.set_defaults(fn=_cmd_convert)
    _add_tool_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from segkit.runtime import tune_cpu_allocator

    tune_cpu_allocator()  # glibc thresholds for large tensors; SEGKIT_MALLOC_TUNING=0 disables
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        if os.environ.get("SEGKIT_DEBUG"):
            raise
        print(f"segkit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
