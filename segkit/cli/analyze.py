"""``segkit analyze``: the papers' analysis figures through forward hooks on named modules
(segkit/tools/analysis.py, written by segkit/tools/analysis_report.py). One sub-tool per analysis:
layers, erf, features, attention, gradcam, sizes."""

from __future__ import annotations

import sys
from pathlib import Path

from segkit.cli.common import (
    DEVICE_HELP,
    Formatter,
    claim_out,
    device,
    eval_protocol_args,
    examples,
    hw,
    non_negative_int,
    overwrite_arg,
    positive_int,
    protocol_and_spec,
)
from segkit.errors import UsageError

NAME = "analyze"


def add_parser(sub):
    p = sub.add_parser(
        NAME,
        formatter_class=Formatter,
        help="the papers' analysis figures: ERF, feature maps, attention, Grad-CAM, IoU by object size",
        description="Analysis through forward hooks on named modules (segkit/tools/analysis.py). "
        "A LAYER is a module name from `segkit analyze layers MODEL`, optionally NAME#i for element i "
        "of a list/Features output (backbone#3 = the fourth encoder stage).",
        epilog=examples(
            "segkit analyze layers segformer-b0 --depth 2",
            "segkit analyze erf work_dirs/run/final --data ${SEGKIT_DATA}/camvid --out erf",
        ),
    )
    tools = p.add_subparsers(dest="tool", required=True, metavar="TOOL", help="the analysis (docs/analysis.md)")

    def tool_args(s, images: bool = True, with_device: bool = True):
        """The options every tool takes: the model, and (unless told) the device and the images."""
        s.add_argument("model", help="checkpoint / save_pretrained folder / Hub id, or a zoo name (random weights)")
        s.add_argument("--num-classes", type=positive_int, default=150, help="classes of a zoo model")
        s.add_argument("--seed", type=int, default=0, help="seed of random weights")
        if with_device:  # (sizes takes it with the evaluation protocol options)
            s.add_argument("--device", default="auto", help=DEVICE_HELP)
        if images:
            s.add_argument("--images", metavar="PATH", help="an image file or a folder of images")
            s.add_argument("--data", help="dataset root (default: the checkpoint's test data)")
            s.add_argument("--data-type", default="split", help="dataset layout (see segkit eval -h)")
            s.add_argument("--split", default="test", help="split of --data")
            s.add_argument("--layer", action="append", metavar="LAYER", help="module to analyse (repeatable)")
            s.add_argument("--out", required=True, help="folder for the PNGs and JSON")
            overwrite_arg(s)

    s = tools.add_parser(
        "layers",
        formatter_class=Formatter,
        help="module names and output shapes",
        epilog=examples("segkit analyze layers segformer-b0 --depth 2"),
    )
    tool_args(s, images=False)
    hw(s, "--shape", "input size of the probe forward pass", default=[256, 256])
    s.add_argument("--depth", type=positive_int, help="only names with fewer dots than this")

    s = tools.add_parser(
        "erf",
        formatter_class=Formatter,
        help="effective receptive field of the centre pixel (SegFormer Fig. 3)",
        epilog=examples(
            "segkit analyze erf work_dirs/run/final --data ${SEGKIT_DATA}/camvid --num 20 --out erf",
            "segkit analyze erf work_dirs/run/final --random-init --data ${SEGKIT_DATA}/camvid --out erf_init",
        ),
    )
    tool_args(s)
    s.add_argument("--num", type=positive_int, default=20, help="images averaged")
    s.add_argument("--random-init", action="store_true", help="the checkpoint's architecture with fresh weights")

    s = tools.add_parser(
        "features",
        formatter_class=Formatter,
        help="PCA colours, norms and over-smoothness of layer outputs (RSSeg Figs. 3, 8)",
        epilog=examples("segkit analyze features ckpt --images a.jpg --layer backbone#0 --layer decode_head --out f"),
    )
    tool_args(s)
    s.add_argument("--index", type=non_negative_int, default=0, help="which image of --images / --data")

    s = tools.add_parser(
        "attention",
        formatter_class=Formatter,
        help="attention of class queries (RSSeg Fig. 7) or of a query pixel (MiT, ViT)",
        epilog=examples("segkit analyze attention ckpt --images photo.jpg --query 180 240 --out att"),
    )
    tool_args(s)
    s.add_argument("--index", type=non_negative_int, default=0, help="which image of --images / --data")
    s.add_argument("--query", type=int, nargs=2, metavar=("Y", "X"), help="query pixel in the network input (centre)")
    s.add_argument("--classes", nargs="+", metavar="C", help="class names or indices to show (default: predicted)")

    s = tools.add_parser(
        "gradcam",
        formatter_class=Formatter,
        help="Grad-CAM of classes on a layer (SegNeXt supplementary Fig. 2)",
        epilog=examples("segkit analyze gradcam ckpt --data ${SEGKIT_DATA}/camvid --layer backbone#3 --out cam"),
    )
    tool_args(s)
    s.add_argument("--num", type=positive_int, default=20, help="images")
    s.add_argument("--classes", nargs="+", metavar="C", help="class names or indices (default: all)")

    s = tools.add_parser(
        "sizes",
        formatter_class=Formatter,
        help="IoU by object size: connected components of each class (RSSeg Tables 1-2)",
        epilog=examples("segkit analyze sizes work_dirs/run/final --data ${SEGKIT_DATA}/camvid --out sizes"),
    )
    tool_args(s, images=False, with_device=False)
    eval_protocol_args(s)
    s.add_argument(
        "--thresholds",
        type=int,
        nargs=2,
        default=[1024, 9216],
        metavar=("SMALL", "LARGE"),
        help="object area bounds in label pixels: small < SMALL <= medium < LARGE <= large",
    )
    s.add_argument("--out", required=True, help="folder for sizes.json / .md / .png")
    overwrite_arg(s)
    return p


def _analysis_model(args, dev):
    """A checkpoint / Hub / registry model, or a zoo name with random weights (``--num-classes``);
    ``--random-init``: the checkpoint's architecture and metadata with fresh weights (``--seed``)."""
    import torch

    from segkit import load_model
    from segkit.models.zoo import MODELS, build_model

    if not Path(args.model).exists() and str(args.model).lower() in MODELS:
        torch.manual_seed(args.seed)
        return build_model(args.model, num_classes=args.num_classes).to(dev).eval()
    from segkit.hub import HUB_ID, registry, unknown_spec_error

    if not Path(args.model).exists() and args.model not in registry() and not HUB_ID.match(str(args.model)):
        raise unknown_spec_error(args.model, zoo=True)  # zoo names are suggested too: this takes either
    model = load_model(args.model, map_location=dev)
    if getattr(args, "random_init", False):
        from segkit.checkpoints import model_from_description

        torch.manual_seed(args.seed)
        fresh = model_from_description(model.config())
        fresh.train_config, fresh.test_protocol = model.train_config, model.test_protocol
        model = fresh
    return model.to(dev).eval()


def _analysis_samples(args, model, dev, limit):
    from segkit.data import build_dataset
    from segkit.tools.analysis import load_samples

    if args.images:
        return load_samples(model, images=args.images, limit=limit, device=dev)
    if args.data:
        spec = {"type": args.data_type, "root": args.data, "split": args.split}
    else:
        data = (getattr(model, "train_config", None) or {}).get("data") or {}
        spec = data.get("test") or data.get("val")
        if spec is None:
            raise UsageError("give --images PATH or --data ROOT (the model has no training config naming its data)")
    return load_samples(model, dataset=build_dataset(spec), limit=limit, device=dev)


def _nth(samples, index: int):
    count = 0
    for count, s in enumerate(samples, start=1):
        if count - 1 == index:
            return s
    raise UsageError(f"--index {index}: there are only {count} image(s) (--index counts from 0)")


def run(args) -> int:
    from segkit.tools import analysis_report as R

    tool = args.tool
    if tool != "layers":
        claim_out(args, args.out)
    dev = device(args.device)
    model = _analysis_model(args, dev)
    channels = int(getattr(model, "in_channels", 3))
    if channels != 3:  # its probes and maps are RGB images (was PyTorch's conv channel-mismatch message)
        raise UsageError(
            f"{args.model}: the model takes {channels}-band images (model_args.in_channels: {channels}); segkit "
            f"analyze probes it with and draws over RGB images only"
        )
    if tool == "layers":
        from segkit.tools.analysis import layer_shapes

        for row in layer_shapes(model, args.shape, max_depth=args.depth):
            print(f"{row['name']:<48}{row['type']:<28}{row['output']}")
        return 0
    if tool == "sizes":
        from segkit.data import build_dataset
        from segkit.tools.analysis import object_size_iou

        protocol, spec = protocol_and_spec(args, model)
        dataset = build_dataset(spec, transform=protocol.transform(model.mean, model.std))
        print(f"test protocol: {protocol.describe()}", file=sys.stderr)
        res = object_size_iou(
            model,
            dataset,
            thresholds=args.thresholds,
            **protocol.inference_kwargs(),
            device=dev,
            max_images=args.max_images,
        )
        names = list(getattr(dataset, "classes", None) or model.class_names or range(model.num_classes))
        R.write_sizes(res, [str(n) for n in names], args.out)
        print(R.sizes_table(res, [str(n) for n in names]))
    elif tool == "erf":
        layers = args.layer or R.stage_layers(model)
        title = f"ERF of {getattr(model, 'name', args.model)}{' (random init)' if args.random_init else ''}"
        summary = R.write_erf(model, _analysis_samples(args, model, dev, args.num), layers, args.out, title=title)
        for spec, r in summary["layers"].items():
            ar = r["area_ratio"]
            extent = r["extent_px"]
            print(f"{spec:<28} r20 {ar['0.2']:.4f}  r50 {ar['0.5']:.4f}  r99 {ar['0.99']:.4f}  extent {extent:.1f} px")
    elif tool == "features":
        layers = args.layer or R.stage_layers(model)
        sample = _nth(_analysis_samples(args, model, dev, args.index + 1), args.index)
        summary = R.write_features(model, sample, layers, args.out)
        for spec, r in summary["layers"].items():
            print(
                f"{spec:<28} {r['shape']}  neighbour cos {r['neighbour_cos']:.3f}  "
                f"pairwise cos {r['mean_pairwise_cos']:.3f}"
            )
    elif tool == "attention":
        sample = _nth(_analysis_samples(args, model, dev, args.index + 1), args.index)
        classes = R.resolve_classes(model, args.classes) if args.classes else None
        summary = R.write_attention(model, sample, args.layer, args.out, query_yx=args.query, classes=classes)
        for name, r in summary["layers"].items():
            print(f"{name}: {r['kind']}, grid {r['grid']}, {len(r['maps'])} maps")
    elif tool == "gradcam":
        layer = (args.layer or ["backbone#-1"])[0]
        summary = R.write_gradcam(
            model,
            _analysis_samples(args, model, dev, args.num),
            layer,
            args.out,
            classes=R.resolve_classes(model, args.classes),
            ignore_index=int(model.ignore_index),
        )
        for name, r in summary["per_class"].items():
            print(f"{name:<20} inside {r['inside']:.3f}  outside {r['outside']:.3f}  ({r['images']} images)")
    print(f"wrote {args.out}/{tool}.*")
    return 0
