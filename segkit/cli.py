"""The ``segkit`` command line: one sub-command per Python API entry point.

    segkit models [--pretrained]          list the zoo with parameter counts
    segkit flops MODEL --shape H W        GFLOPs (multiply-adds) and parameters
    segkit train CONFIG [--set k=v ...] [--resume PATH|auto]
    segkit eval CKPT --data ROOT [--split test] [--mode whole|slide] [--crop H W --stride H W] [--scales ... --flip]
    segkit predict CKPT IMAGE_OR_DIR --out DIR
    segkit check-data ROOT [--split train]  (or --config CONFIG)
    segkit convert SRC DST --model NAME [--num-classes K]
    segkit benchmark MODEL_OR_CKPT --shape H W [--batch B] [--mode whole|slide] [--device auto] [--amp bf16|fp16]
    segkit robustness CKPT --data ROOT [--corruptions ...] [--severities 1 2 3 4 5] [--seed 0] [--out DIR]
    segkit export CKPT --format onnx [--shape H W] [--dynamic] [--opset 17] [--check IMAGE] --out model.onnx
    segkit predict --onnx model.onnx IMAGE_OR_DIR --out DIR   (onnxruntime, no PyTorch needed)
    segkit analyze {layers,erf,features,attention,gradcam,sizes} MODEL ... --out DIR
    segkit pretrain ENCODER --data FOLDER [--epochs N] [--set k=v ...] [--resume auto]

Every sub-command is a thin wrapper: the work is done by the functions it calls. Exit status:
0 on success, 1 when the data, a model, a checkpoint or the run fails (one line naming the file
and the problem, no traceback; ``SEGKIT_DEBUG=1`` shows it), 2 for a usage mistake (bad flags).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from segkit.errors import UsageError
from segkit.runtime import check_amp

AMP_HELP = "autocast dtype for the network (bf16: CPUs with avx512_bf16/amx_bf16, or GPUs; fp16: CUDA)"


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help with defaults shown (where there is one) and examples kept as written."""

    def _get_help_string(self, action):
        if action.default in (None, False, [], "") or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def _examples(*lines: str) -> str:
    return "example:\n" + "\n".join(f"  {line}" for line in lines)


def _device(name: str):
    """``auto`` → CUDA when available, else CPU; other names as given (``cpu``, ``cuda``, ``cuda:1``)."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
    return dev


# ============================================================================= zoo
def _cmd_models(args) -> int:
    import torch

    from segkit.models.layers import skip_init
    from segkit.models.zoo import FAMILIES, PRETRAINED, build_model, count_parameters

    if args.pretrained:
        print(f"{'name':<30}{'model':<16}{'dataset':<12}{'classes':>8}{'mIoU':>7}  source / licence")
        for e in PRETRAINED.values():
            if args.filter and args.filter not in e.name:
                continue
            miou = f"{e.miou:.2f}" if e.miou is not None else "-"
            k = e.num_classes or "encoder"
            print(f"{e.name:<30}{e.model:<16}{e.dataset:<12}{k:>8}{miou:>7}  {e.source}\n{'':<73}{e.licence}")
        return 0
    print(f"{'model':<22}{'family':<11}{f'params ({args.num_classes} classes)':>26}")
    for family in FAMILIES.values():
        for name in family.models:
            if args.filter and args.filter not in name:
                continue
            with torch.device("meta"), skip_init():  # shapes only: no memory, no initialisation
                n = count_parameters(build_model(name, num_classes=args.num_classes))
            print(f"{name:<22}{family.name:<11}{n:>26,}")
    return 0


def _cmd_flops(args) -> int:
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


# ============================================================================= train / eval / predict
def _cmd_train(args) -> int:
    from segkit.config import load_config
    from segkit.engine.trainer import train

    cfg = load_config(args.config, args.set)
    summary = train(cfg, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2))
    return 0


def _cmd_pretrain(args) -> int:
    from segkit.config import apply_overrides, read_yaml, resolve_config_path
    from segkit.engine.pretrain import pretrain, pretrain_config

    data = dict(read_yaml(resolve_config_path(args.config))) if args.config else {}
    flags = {
        "model": args.model,
        "data": args.data,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "input_size": args.input_size,
        "work_dir": args.work_dir,
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    if "model" not in data:
        raise UsageError("name the encoder: segkit pretrain ENCODER --data FOLDER (mscan-t … mscan-l, mit-b0 … mit-b5)")
    cfg = pretrain_config(apply_overrides(data, args.set))
    summary = pretrain(cfg, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2))
    return 0


def _protocol_and_spec(args, model):
    """The model's test protocol with the command-line overrides, and the dataset spec to evaluate on."""
    import dataclasses

    from segkit.config import load_config
    from segkit.data.protocol import TestProtocol

    cfg = load_config(args.config, args.set).to_dict() if args.config else None
    protocol = TestProtocol.from_config(cfg) if cfg is not None else TestProtocol.of(model)
    if args.scale is not None:
        protocol = dataclasses.replace(protocol, scale=None if args.scale in ([0], [0, 0]) else tuple(args.scale))
    protocol = protocol.replace(
        mode=args.mode,
        crop_size=args.crop,
        stride=args.stride,
        scales=getattr(args, "scales", None),
        flip=True if getattr(args, "flip", False) else None,
    )
    if args.data:
        spec = {"type": args.data_type, "root": args.data, "split": args.split}
    else:
        data = (cfg or getattr(model, "train_config", None) or {}).get("data") or {}
        spec = data.get("test") or data.get("val")
        if spec is None:
            raise UsageError("give --data ROOT (and --split), or a --config with data.test")
    return protocol, spec


def _cmd_eval(args) -> int:
    from segkit import load_model
    from segkit.data import build_dataset
    from segkit.engine.evaluator import evaluate, write_results
    from segkit.engine.metrics import format_table
    from segkit.utils import check_output_dir

    if args.out:
        check_output_dir(args.out)  # before the work: a bad --out must not cost the evaluation
    device = _device(args.device)
    check_amp(args.amp, device)
    model = load_model(args.checkpoint, map_location=device)
    protocol, spec = _protocol_and_spec(args, model)
    dataset = build_dataset(spec, transform=protocol.transform(model.mean, model.std))
    print(f"test protocol: {protocol.describe()}", file=sys.stderr)
    res = evaluate(
        model,
        dataset,
        **protocol.inference_kwargs(),
        device=device,
        max_images=args.max_images,
        window_batch=args.window_batch,
        num_workers=args.workers,
        amp=args.amp,
    )
    print(format_table(res, model.class_names))
    print(
        f"aAcc {res['aAcc']:.2f}  mIoU {res['mIoU']:.2f}  mAcc {res['mAcc']:.2f}  mDice {res['mDice']:.2f}  "
        f"mFscore {res['mFscore']:.2f}",
        flush=True,
    )
    if args.out:  # the metrics are on screen before anything is written
        for path in write_results(res, args.out):
            print(f"wrote {path}")
    return 0


def _cmd_predict(args) -> int:
    if args.onnx or (args.checkpoint or "").endswith(".onnx"):
        return _cmd_predict_onnx(args)
    source = args.source if args.source is not None else args.inputs
    if args.checkpoint is None or source is None:
        raise UsageError("give CKPT IMAGE_OR_DIR_OR_VIDEO (or --source N for a camera; --onnx MODEL.onnx IMAGE_OR_DIR)")
    from segkit.engine.predict import is_video, predict_paths
    from segkit.hub import load_model
    from segkit.utils import check_output_dir, list_images

    check_output_dir(args.out)
    if not is_video(source):
        list_images(source)  # a missing input or an empty folder is reported before the model loads
    elif not str(source).isdigit() and not Path(source).is_file():
        raise FileNotFoundError(f"{source}: no such video file")
    device = _device(args.device)
    check_amp(args.amp, device)
    model = load_model(args.checkpoint, map_location=device)
    written = predict_paths(
        model,
        source,
        args.out,
        mode=args.mode,
        crop_size=args.crop,
        stride=args.stride,
        scale=args.scale,
        device=device,
        amp=args.amp,
        save_labels=args.save_labels,
    )
    for p in written:
        print(p)
    return 0


def _cmd_check_data(args) -> int:
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


def _cmd_convert(args) -> int:
    from segkit import build_model, load_checkpoint, read_state_dict
    from segkit.utils import check_output_dir

    check_output_dir(args.dst, what="DST")

    num_classes = args.num_classes
    if num_classes is None:
        state = read_state_dict(args.src)
        for suffix in (
            "decode_head.linear_pred.weight",
            "decode_head.classifier.weight",
            "decode_head.conv_seg.weight",
        ):
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
# benchmark / robustness / export and `predict --onnx` (segkit/tools/*).
def _cmd_benchmark(args) -> int:
    from segkit.tools.benchmark import benchmark, format_result, load_for_benchmark, write_json

    model = load_for_benchmark(args.model, num_classes=args.num_classes)
    crop = args.crop or ([512, 512] if args.mode == "slide" else None)
    stride = args.stride or ([max(1, c * 3 // 4) for c in crop] if crop else None)
    res = benchmark(
        model,
        args.shape,
        batch=args.batch,
        mode=args.mode,
        crop_size=crop,
        stride=stride,
        device=_device(args.device),
        amp=args.amp,
        channels_last=args.channels_last,
        compile=args.compile,
        warmup=args.warmup,
        runs=args.runs,
        threads=args.threads,
        image=args.image,
    )
    print(format_result(res))
    if args.json:
        print(f"wrote {write_json(res, args.json)}")
    return 0


def _cmd_robustness(args) -> int:
    from segkit import load_model
    from segkit.data import build_dataset
    from segkit.tools.robustness import corruption_functions, evaluate_robustness
    from segkit.utils import check_output_dir

    corruption_functions()  # the optional packages are there, before the model and data are loaded
    if args.out:
        check_output_dir(args.out)
    device = _device(args.device)
    check_amp(args.amp, device)
    model = load_model(args.checkpoint, map_location=device)
    protocol, spec = _protocol_and_spec(args, model)
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
        device=device,
        out_dir=args.out,
        grid_severity=args.grid_severity,
        amp=args.amp,
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


def _cmd_export(args) -> int:
    from segkit import load_model
    from segkit.tools.export import export_onnx
    from segkit.utils import check_output_file, require

    require("onnx", "tools", "segkit export")  # before the model is loaded
    check_output_file(args.out)
    model = load_model(args.checkpoint)
    rep = export_onnx(
        model,
        args.out,
        shape=args.shape,
        dynamic=args.dynamic,
        opset=args.opset,
        check_image=args.check,
        verify=not args.no_verify,
        atol=args.atol,
        logits_at=args.logits_at,
    )
    print(
        f"wrote {rep['path']} ({rep['size_mb']:.1f} MB, opset {rep['opset']}, "
        f"{'dynamic batch/H/W' if rep['dynamic'] else 'dynamic batch, fixed %dx%d' % tuple(rep['shape'])})"
    )
    for c in rep["checks"]:
        print(
            f"  check {c.get('image', 'random input')} {tuple(c['input'])}: max |logit diff| {c['max_abs_diff']:.2e} "
            f"(max |logit| {c['max_abs_logit']:.2f}), argmax agreement {100 * c['argmax_agreement']:.2f}%"
        )
    return 0


def _cmd_predict_onnx(args) -> int:
    # No torch import on this path: onnxruntime + numpy + OpenCV/Pillow only.
    from segkit.tools.onnx_predict import predict_paths_onnx

    model_path = args.onnx or args.checkpoint
    inputs = args.inputs if args.onnx is None else (args.checkpoint if args.inputs is None else None)
    if inputs is None:
        raise UsageError("segkit predict --onnx MODEL.onnx IMAGE_OR_DIR --out DIR: give exactly one IMAGE_OR_DIR")
    for flag in ("crop", "stride"):
        if getattr(args, flag):
            raise UsageError(f"segkit predict --onnx: --{flag} is not supported (whole-image inference only)")
    if args.mode == "slide" or args.device not in ("cpu", "auto"):
        raise UsageError(
            "segkit predict --onnx: runs whole-image inference on the CPU with onnxruntime "
            "(--mode slide / --device are for PyTorch checkpoints)"
        )
    from segkit.utils import check_output_dir

    check_output_dir(args.out)
    for p in predict_paths_onnx(model_path, inputs, args.out, scale=args.scale):
        print(p)
    return 0


# ============================================================================= analyze
def _analysis_model(args, device):
    """A checkpoint / Hub / registry model, or a zoo name with random weights (``--num-classes``);
    ``--random-init``: the checkpoint's architecture and metadata with fresh weights (``--seed``)."""
    import torch

    from segkit import load_model
    from segkit.models.zoo import MODELS, build_model

    if not Path(args.model).exists() and str(args.model).lower() in MODELS:
        torch.manual_seed(args.seed)
        return build_model(args.model, num_classes=args.num_classes).to(device).eval()
    model = load_model(args.model, map_location=device)
    if getattr(args, "random_init", False):
        from segkit.checkpoints import model_from_description

        torch.manual_seed(args.seed)
        fresh = model_from_description(model.config())
        fresh.train_config, fresh.test_protocol = model.train_config, model.test_protocol
        model = fresh
    return model.to(device).eval()


def _analysis_samples(args, model, device, limit):
    from segkit.data import build_dataset
    from segkit.tools.analysis import load_samples

    if args.images:
        return load_samples(model, images=args.images, limit=limit, device=device)
    if args.data:
        spec = {"type": args.data_type, "root": args.data, "split": args.split}
    else:
        data = (getattr(model, "train_config", None) or {}).get("data") or {}
        spec = data.get("test") or data.get("val")
        if spec is None:
            raise UsageError("give --images PATH or --data ROOT (the model has no training config naming its data)")
    return load_samples(model, dataset=build_dataset(spec), limit=limit, device=device)


def _nth(samples, index: int):
    count = 0
    for count, s in enumerate(samples, start=1):
        if count - 1 == index:
            return s
    raise UsageError(f"--index {index}: there are only {count} image(s) (--index counts from 0)")


def _cmd_analyze(args) -> int:
    from segkit.tools import analysis_report as R
    from segkit.utils import check_output_dir

    tool = args.tool
    if tool != "layers":
        check_output_dir(args.out)
    device = _device(args.device)
    model = _analysis_model(args, device)
    if tool == "layers":
        from segkit.tools.analysis import layer_shapes

        for row in layer_shapes(model, args.shape, max_depth=args.depth):
            print(f"{row['name']:<48}{row['type']:<28}{row['output']}")
        return 0
    if tool == "sizes":
        from segkit.data import build_dataset
        from segkit.tools.analysis import object_size_iou

        protocol, spec = _protocol_and_spec(args, model)
        dataset = build_dataset(spec, transform=protocol.transform(model.mean, model.std))
        print(f"test protocol: {protocol.describe()}", file=sys.stderr)
        res = object_size_iou(
            model,
            dataset,
            thresholds=args.thresholds,
            **protocol.inference_kwargs(),
            device=device,
            max_images=args.max_images,
        )
        names = list(getattr(dataset, "classes", None) or model.class_names or range(model.num_classes))
        R.write_sizes(res, [str(n) for n in names], args.out)
        print(R.sizes_table(res, [str(n) for n in names]))
    elif tool == "erf":
        layers = args.layer or R.stage_layers(model)
        title = f"ERF of {getattr(model, 'name', args.model)}{' (random init)' if args.random_init else ''}"
        summary = R.write_erf(model, _analysis_samples(args, model, device, args.num), layers, args.out, title=title)
        for spec, r in summary["layers"].items():
            ar = r["area_ratio"]
            extent = r["extent_px"]
            print(f"{spec:<28} r20 {ar['0.2']:.4f}  r50 {ar['0.5']:.4f}  r99 {ar['0.99']:.4f}  extent {extent:.1f} px")
    elif tool == "features":
        layers = args.layer or R.stage_layers(model)
        sample = _nth(_analysis_samples(args, model, device, args.index + 1), args.index)
        summary = R.write_features(model, sample, layers, args.out)
        for spec, r in summary["layers"].items():
            print(
                f"{spec:<28} {r['shape']}  neighbour cos {r['neighbour_cos']:.3f}  "
                f"pairwise cos {r['mean_pairwise_cos']:.3f}"
            )
    elif tool == "attention":
        sample = _nth(_analysis_samples(args, model, device, args.index + 1), args.index)
        classes = R.resolve_classes(model, args.classes) if args.classes else None
        summary = R.write_attention(model, sample, args.layer, args.out, query_yx=args.query, classes=classes)
        for name, r in summary["layers"].items():
            print(f"{name}: {r['kind']}, grid {r['grid']}, {len(r['maps'])} maps")
    elif tool == "gradcam":
        layer = (args.layer or ["backbone#-1"])[0]
        summary = R.write_gradcam(
            model,
            _analysis_samples(args, model, device, args.num),
            layer,
            args.out,
            classes=R.resolve_classes(model, args.classes),
            ignore_index=int(model.ignore_index),
        )
        for name, r in summary["per_class"].items():
            print(f"{name:<20} inside {r['inside']:.3f}  outside {r['outside']:.3f}  ({r['images']} images)")
    print(f"wrote {args.out}/{tool}.*")
    return 0


# ============================================================================= the parser
def _hw(s, name: str, help: str, default=None):
    s.add_argument(name, type=int, nargs=2, metavar=("H", "W"), default=default, help=help)


def _protocol_overrides(s) -> None:
    """Options that override a checkpoint's test protocol, and the device (eval, robustness, predict)."""
    _hw(s, "--crop", "slide window (default: the protocol's, else the training crop)")
    _hw(s, "--stride", "slide stride (default: the protocol's, else the crop)")
    s.add_argument(
        "--scale",
        type=int,
        nargs="+",
        metavar="PX",
        help="test resize LONG SHORT (keep ratio; default: the protocol's); 0 = no resize",
    )
    s.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")


def _eval_protocol_args(s) -> None:
    s.add_argument(
        "--data",
        help="dataset root (default: the data.test / data.val of the checkpoint's training "
        "config); may use ${SEGKIT_DATA}",
    )
    s.add_argument(
        "--data-type",
        default="split",
        help="dataset layout: split, folder, ade20k, cityscapes, voc, "
        "pascal_context, coco_stuff164k, coco_stuff10k, isaid",
    )
    s.add_argument("--split", default="test", help="split of --data to evaluate")
    s.add_argument(
        "--config",
        help="YAML config (or shipped config name) whose data.test / test protocol to use instead of the checkpoint's",
    )
    s.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for --config")
    s.add_argument("--mode", choices=["whole", "slide"], help="inference mode (default: the checkpoint's protocol)")
    _protocol_overrides(s)
    s.add_argument("--max-images", type=int, help="evaluate only the first N images")


def _add_tool_parsers(sub) -> None:
    s = sub.add_parser(
        "benchmark",
        formatter_class=_Formatter,
        help="latency / FPS / peak memory under a fixed protocol (segkit/tools/benchmark.py)",
        epilog=_examples("segkit benchmark segnext-t --shape 512 512 --runs 20 --json b.json"),
    )
    s.add_argument("model", help="zoo name (random weights; speed does not depend on them) or checkpoint")
    _hw(s, "--shape", "network input size", default=[512, 512])
    s.add_argument("--batch", type=int, default=1, help="images per call")
    s.add_argument("--num-classes", type=int, default=150, help="classes of a zoo model (150 = ADE20K)")
    s.add_argument(
        "--image",
        metavar="PATH",
        help="time on this photo (resized to --shape) instead of random input, the label path's worst case",
    )
    s.add_argument("--mode", default="whole", choices=["whole", "slide"], help="inference mode")
    _hw(s, "--crop", "slide window (default 512 512)")
    _hw(s, "--stride", "slide stride (default 3/4 of the crop)")
    s.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    s.add_argument("--amp", choices=["bf16", "fp16"], help="autocast dtype (fp16: CUDA only)")
    s.add_argument("--channels-last", action="store_true", help="model and input in channels-last memory format")
    s.add_argument("--compile", action="store_true", help="torch.compile the model (compiled during warm-up)")
    s.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    s.add_argument("--runs", type=int, default=20, help="timed calls")
    s.add_argument("--threads", type=int, help="torch intra-op threads (default: PyTorch's)")
    s.add_argument("--json", metavar="PATH", help="write the full result (machine included) as JSON")
    s.set_defaults(fn=_cmd_benchmark)

    from segkit.tools.robustness import CORRUPTIONS  # numpy only at import time

    s = sub.add_parser(
        "robustness",
        formatter_class=_Formatter,
        help="mIoU under the 16 image corruptions (SegFormer / RSSeg tables)",
        epilog=_examples(
            "segkit robustness work_dirs/run/final --data ${SEGKIT_DATA}/camvid --severities 3 --out robust"
        ),
    )
    s.add_argument("checkpoint", help="a save_pretrained folder or a training checkpoint .pth")
    _eval_protocol_args(s)
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
    s.add_argument("--amp", choices=["bf16", "fp16"], help=AMP_HELP)
    s.set_defaults(fn=_cmd_robustness)

    s = sub.add_parser(
        "export",
        formatter_class=_Formatter,
        help="export to ONNX (decoder-stride logits + metadata), verified with onnxruntime",
        epilog=_examples("segkit export work_dirs/run/final --dynamic --out model.onnx"),
    )
    s.add_argument("checkpoint", help="a save_pretrained folder or a training checkpoint .pth")
    s.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    _hw(s, "--shape", "example input size (the fixed size unless --dynamic)", default=[512, 512])
    s.add_argument("--dynamic", action="store_true", help="dynamic height/width (batch is always dynamic)")
    s.add_argument("--opset", type=int, default=17, help="ONNX opset (17-20)")
    s.add_argument("--check", metavar="IMAGE", help="compare PyTorch and onnxruntime logits on this image")
    s.add_argument("--atol", type=float, default=1e-3, help="largest accepted max |logit difference|")
    s.add_argument("--no-verify", action="store_true", help="skip the random-input verification")
    s.add_argument(
        "--logits-at",
        default="decoder",
        choices=["decoder", "input"],
        help="graph output: logits at the decoder's stride, or upsampled to the input size",
    )
    s.add_argument("--out", required=True, help="the .onnx file to write")
    s.set_defaults(fn=_cmd_export)


def _add_pretrain_parser(sub) -> None:
    s = sub.add_parser(
        "pretrain",
        formatter_class=_Formatter,
        help="ImageNet-style pretraining of an encoder (MSCAN / MiT classifier, DeiT recipe)",
        description="Classification pretraining with the DeiT recipe (segkit/engine/pretrain.py). "
        "DATA holds train/<class>/<image> and val/<class>/<image>. Writes the encoder in the official "
        "mscan_*/mit_* layout and in segkit's, both loadable as `pretrained:` of a segmentation config.",
        epilog=_examples(
            "segkit pretrain mscan-t --data /data/imagenet --batch-size 128",
            "torchrun --nproc_per_node=8 -m segkit pretrain mit-b0 --data /data/imagenet",
            "segkit pretrain mscan-t --data crops --epochs 30 --input-size 96 --set rand_augment=null --work-dir w",
        ),
    )
    s.add_argument("model", nargs="?", help="mscan-t … mscan-l, mit-b0 … mit-b5 (or model: in --config)")
    s.add_argument("--data", help="folder with train/ and val/ class folders; may use ${SEGKIT_DATA}")
    s.add_argument("--config", help="YAML with PretrainConfig keys (segkit/engine/pretrain.py)")
    s.add_argument("--epochs", type=int, help="training epochs (DeiT: 300, plus 10 cool-down)")
    s.add_argument("--batch-size", type=int, help="images per process and step (DeiT: 1024 in total)")
    s.add_argument("--input-size", type=int, help="crop side (224)")
    s.add_argument("--work-dir", help="output folder (default work_dirs/pretrain_<model>)")
    s.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="any other PretrainConfig key")
    s.add_argument("--resume", metavar="PATH|auto", help="continue from last.pth (auto: the work dir's)")
    s.add_argument("--overwrite", action="store_true", help="move an existing run in the work dir aside and start over")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(fn=_cmd_pretrain)


def _add_analyze_parser(sub) -> None:
    p = sub.add_parser(
        "analyze",
        formatter_class=_Formatter,
        help="the papers' analysis figures: ERF, feature maps, attention, Grad-CAM, IoU by object size",
        description="Analysis through forward hooks on named modules (segkit/tools/analysis.py). "
        "A LAYER is a module name from `segkit analyze layers MODEL`, optionally NAME#i for element i "
        "of a list/Features output (backbone#3 = the fourth encoder stage).",
        epilog=_examples(
            "segkit analyze layers segformer-b0 --depth 2",
            "segkit analyze erf work_dirs/run/final --data ${SEGKIT_DATA}/camvid --out erf",
        ),
    )
    tools = p.add_subparsers(dest="tool", required=True, metavar="TOOL", help="the analysis (docs/analysis.md)")

    def common(s, images: bool = True, device: bool = True):
        s.add_argument("model", help="checkpoint / save_pretrained folder / Hub id, or a zoo name (random weights)")
        s.add_argument("--num-classes", type=int, default=150, help="classes of a zoo model")
        s.add_argument("--seed", type=int, default=0, help="seed of random weights")
        if device:  # (sizes takes it with the evaluation protocol options)
            s.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
        if images:
            s.add_argument("--images", metavar="PATH", help="an image file or a folder of images")
            s.add_argument("--data", help="dataset root (default: the checkpoint's test data)")
            s.add_argument("--data-type", default="split", help="dataset layout (see segkit eval -h)")
            s.add_argument("--split", default="test", help="split of --data")
            s.add_argument("--layer", action="append", metavar="LAYER", help="module to analyse (repeatable)")
            s.add_argument("--out", required=True, help="folder for the PNGs and JSON")
        s.set_defaults(fn=_cmd_analyze)

    s = tools.add_parser(
        "layers",
        formatter_class=_Formatter,
        help="module names and output shapes",
        epilog=_examples("segkit analyze layers segformer-b0 --depth 2"),
    )
    common(s, images=False)
    _hw(s, "--shape", "input size of the probe forward pass", default=[256, 256])
    s.add_argument("--depth", type=int, help="only names with fewer dots than this")

    s = tools.add_parser(
        "erf",
        formatter_class=_Formatter,
        help="effective receptive field of the centre pixel (SegFormer Fig. 3)",
        epilog=_examples(
            "segkit analyze erf work_dirs/run/final --data ${SEGKIT_DATA}/camvid --num 20 --out erf",
            "segkit analyze erf work_dirs/run/final --random-init --data ${SEGKIT_DATA}/camvid --out erf_init",
        ),
    )
    common(s)
    s.add_argument("--num", type=int, default=20, help="images averaged")
    s.add_argument("--random-init", action="store_true", help="the checkpoint's architecture with fresh weights")

    s = tools.add_parser(
        "features",
        formatter_class=_Formatter,
        help="PCA colours, norms and over-smoothness of layer outputs (RSSeg Figs. 3, 8)",
        epilog=_examples("segkit analyze features ckpt --images a.jpg --layer backbone#0 --layer decode_head --out f"),
    )
    common(s)
    s.add_argument("--index", type=int, default=0, help="which image of --images / --data")

    s = tools.add_parser(
        "attention",
        formatter_class=_Formatter,
        help="attention of class queries (RSSeg Fig. 7) or of a query pixel (MiT, ViT)",
        epilog=_examples("segkit analyze attention ckpt --images photo.jpg --query 180 240 --out att"),
    )
    common(s)
    s.add_argument("--index", type=int, default=0, help="which image of --images / --data")
    s.add_argument("--query", type=int, nargs=2, metavar=("Y", "X"), help="query pixel in the network input (centre)")
    s.add_argument("--classes", nargs="+", metavar="C", help="class names or indices to show (default: predicted)")

    s = tools.add_parser(
        "gradcam",
        formatter_class=_Formatter,
        help="Grad-CAM of classes on a layer (SegNeXt supplementary Fig. 2)",
        epilog=_examples("segkit analyze gradcam ckpt --data ${SEGKIT_DATA}/camvid --layer backbone#3 --out cam"),
    )
    common(s)
    s.add_argument("--num", type=int, default=20, help="images")
    s.add_argument("--classes", nargs="+", metavar="C", help="class names or indices (default: all)")

    s = tools.add_parser(
        "sizes",
        formatter_class=_Formatter,
        help="IoU by object size: connected components of each class (RSSeg Tables 1-2)",
        epilog=_examples("segkit analyze sizes work_dirs/run/final --data ${SEGKIT_DATA}/camvid --out sizes"),
    )
    common(s, images=False, device=False)
    _eval_protocol_args(s)
    s.add_argument(
        "--thresholds",
        type=int,
        nargs=2,
        default=[1024, 9216],
        metavar=("SMALL", "LARGE"),
        help="object area bounds in label pixels: small < SMALL <= medium < LARGE <= large",
    )
    s.add_argument("--out", required=True, help="folder for sizes.json / .md / .png")


def build_parser() -> argparse.ArgumentParser:
    from segkit import __version__

    p = argparse.ArgumentParser(
        prog="segkit",
        formatter_class=_Formatter,
        description="Semantic segmentation with SegNeXt, SegFormer and RSSeg.",
        epilog="Run `segkit COMMAND -h` for a command's options and an example.",
    )
    p.add_argument("--version", action="version", version=f"segkit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser(
        "models",
        formatter_class=_Formatter,
        help="list models with parameter counts",
        epilog=_examples("segkit models --filter segnext --num-classes 19", "segkit models --pretrained"),
    )
    s.add_argument("--num-classes", type=int, default=150, help="classes of the heads counted")
    s.add_argument("--filter", default="", help="only names containing this text")
    s.add_argument("--pretrained", action="store_true", help="list the published weights (the registry) instead")
    s.set_defaults(fn=_cmd_models)

    s = sub.add_parser(
        "flops",
        formatter_class=_Formatter,
        help="GFLOPs (multiply-adds) and parameters of a model at an input size",
        epilog=_examples("segkit flops segformer-b0 --shape 1024 2048"),
    )
    s.add_argument("model", help="zoo name (segkit models lists them)")
    _hw(s, "--shape", "input size", default=[512, 512])
    s.add_argument("--num-classes", type=int, default=150, help="classes of the head")
    s.add_argument(
        "--mode",
        default="paper",
        choices=["paper", "torch", "mmcv", "torchprofile"],
        help="counting convention (segkit.tools.flops); 'paper' = the one the model's paper used",
    )
    s.add_argument("--json", action="store_true", help="print the full result as JSON")
    s.set_defaults(fn=_cmd_flops)

    s = sub.add_parser(
        "train",
        formatter_class=_Formatter,
        help="train from a YAML config",
        epilog=_examples(
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
    s.set_defaults(fn=_cmd_train)

    s = sub.add_parser(
        "eval",
        formatter_class=_Formatter,
        help="evaluate a checkpoint (mIoU, aAcc, mAcc, mDice, mFscore)",
        epilog=_examples("segkit eval work_dirs/run/final --data ${SEGKIT_DATA}/camvid --split test --out results"),
    )
    s.add_argument("checkpoint", help="a save_pretrained folder or a training checkpoint .pth")
    _eval_protocol_args(s)
    s.add_argument("--scales", type=float, nargs="+", help="multi-scale test ratios, e.g. 0.5 0.75 1.0 1.25 1.5 1.75")
    s.add_argument("--flip", action="store_true", help="also average the horizontally flipped image")
    s.add_argument("--out", help="folder for metrics.json and the confusion-matrix PNG")
    s.add_argument("--window-batch", type=int, default=4, help="slide windows per forward")
    s.add_argument("--workers", type=int, default=0, help="DataLoader workers reading and resizing images")
    s.add_argument("--amp", choices=["bf16", "fp16"], help=AMP_HELP)
    s.set_defaults(fn=_cmd_eval)

    s = sub.add_parser(
        "predict",
        formatter_class=_Formatter,
        help="segment images: index PNG + colour overlay with legend",
        epilog=_examples(
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
    s.add_argument(
        "--mode",
        choices=["auto", "whole", "slide"],
        help="inference mode (default: the checkpoint's protocol); auto = slide for images above 1024² px",
    )
    _protocol_overrides(s)
    s.add_argument("--amp", choices=["bf16", "fp16"], help=AMP_HELP)
    s.add_argument("--source", metavar="N", help="read camera N (e.g. 0) instead of files; stop with Ctrl-C")
    s.add_argument("--save-labels", action="store_true", help="video / camera: also write every frame's label PNG")
    s.set_defaults(fn=_cmd_predict)

    s = sub.add_parser(
        "check-data",
        formatter_class=_Formatter,
        help="scan labels: class frequencies and guard-rail errors",
        epilog=_examples(
            "segkit check-data ${SEGKIT_DATA}/camvid --split train", "segkit check-data --config my.yaml --split val"
        ),
    )
    s.add_argument("root", nargs="?", help="dataset root (or use --config)")
    s.add_argument("--data-type", default="split", help="dataset layout (split, folder, ade20k, cityscapes, ...)")
    s.add_argument("--split", default="train", help="split to scan (with --config: train, val or test)")
    s.add_argument("--config", help="take the dataset from this config instead of ROOT")
    s.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for --config")
    s.add_argument("--num-classes", type=int, help="expected class count (default: the dataset's)")
    s.set_defaults(fn=_cmd_check_data)

    s = sub.add_parser(
        "convert",
        formatter_class=_Formatter,
        help="convert an official checkpoint to segkit's safetensors folder",
        epilog=_examples("segkit convert segnext_tiny_512x512_ade_160k.pth segnext-t-ade --model segnext-t"),
    )
    s.add_argument("src", help="official / mmseg / Hugging Face checkpoint file or folder")
    s.add_argument("dst", help="output folder (model.safetensors + config.json)")
    s.add_argument("--model", required=True, help="zoo name of the architecture (segkit models lists them)")
    s.add_argument("--num-classes", type=int, help="classes (default: read from the checkpoint's classifier)")
    s.add_argument("--non-strict", action="store_true", help="load what fits and report the rest")
    s.set_defaults(fn=_cmd_convert)
    _add_tool_parsers(sub)
    _add_analyze_parser(sub)
    _add_pretrain_parser(sub)
    return p


def _message(e: BaseException) -> str:
    if isinstance(e, KeyError) and e.args:
        return str(e.args[0])
    text = str(e) or type(e).__name__
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if lines and lines[0].startswith("Caught ") and "DataLoader worker" in lines[0]:
        # an error raised in a DataLoader worker arrives with the worker's traceback in its message:
        # keep its last line, "segkit.errors.DataError: <file>: <problem>", without the type
        last = lines[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


def _plain_warnings(command: str) -> None:
    """segkit's own warnings as one line ``segkit <command>: warning: …`` (not Python's file:line form);
    warnings of other packages, and all of them under ``SEGKIT_DEBUG=1``, keep the default format."""
    import warnings

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        here = os.path.dirname(os.path.abspath(__file__))
        if os.environ.get("SEGKIT_DEBUG") or not os.path.abspath(filename).startswith(here):
            return default(message, category, filename, lineno, file, line)
        print(f"segkit {command}: warning: {message}", file=sys.stderr if file is None else file)

    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from segkit.runtime import tune_cpu_allocator

    tune_cpu_allocator()  # glibc thresholds for large tensors; SEGKIT_MALLOC_TUNING=0 disables
    _plain_warnings(args.command)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` & co.: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except UsageError as e:
        if os.environ.get("SEGKIT_DEBUG"):
            raise
        print(f"segkit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (ImportError, OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
        if os.environ.get("SEGKIT_DEBUG"):
            raise
        print(f"segkit {args.command}: error: {_message(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
