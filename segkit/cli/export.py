"""``segkit export``: a checkpoint to ONNX (decoder-stride logits + metadata), verified with onnxruntime."""

from __future__ import annotations

from segkit.cli.common import Formatter, claim_out, examples, hw, overwrite_arg, positive_int, revision_arg
from segkit.errors import UsageError

NAME = "export"


def add_parser(sub):
    s = sub.add_parser(
        NAME,
        formatter_class=Formatter,
        help="export to ONNX (decoder-stride logits + metadata), verified with onnxruntime",
        epilog=examples(
            "segkit export work_dirs/run/final --dynamic --out model.onnx",
            "segkit export work_dirs/run/final --dynamic --quantize int8 "
            "--calibration ${SEGKIT_DATA}/camvid/images/train --out model.int8.onnx",
        ),
    )
    s.add_argument("checkpoint", help="a save_pretrained folder or a training checkpoint .pth")
    s.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    hw(s, "--shape", "example input size (the fixed size unless --dynamic)", default=[512, 512])
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
    s.add_argument(
        "--quantize",
        choices=["int8"],
        help="static INT8 quantization with onnxruntime (QDQ, per-channel int8 weights, uint8 activations), "
        "calibrated on --calibration through the model's test protocol",
    )
    s.add_argument("--calibration", metavar="DIR", help="--quantize: folder of calibration images (e.g. train images)")
    s.add_argument(
        "--num-calib", type=positive_int, default=32, metavar="N", help="--quantize: calibration images (evenly spaced)"
    )
    s.add_argument(
        "--calib-method",
        choices=["minmax", "entropy", "percentile"],
        default="minmax",
        help="--quantize: activation-range calibration (minmax: chosen by CamVid val mIoU, benchmarks/results/int8.md)",
    )
    s.add_argument(
        "--int8-ops",
        choices=["matmul", "all"],
        default="matmul",
        help="--quantize: matmul = Conv, Gemm and weight MatMuls (LayerNorm, softmax, attention products, the Ham "
        "NMF stay float); all = every op onnxruntime can quantize (the NMF still float)",
    )
    s.add_argument("--out", required=True, help="the .onnx file to write")
    overwrite_arg(s, kind="file")
    revision_arg(s)
    return s


def run(args) -> int:
    from segkit import load_model
    from segkit.tools.export import export_onnx
    from segkit.utils import require

    require("onnx", "tools", "segkit export")  # before the model is loaded
    if args.quantize:
        return run_int8(args)
    for flag in ("calibration",):
        if getattr(args, flag) is not None:
            raise UsageError(f"--{flag} is for --quantize int8")
    claim_out(args, args.out, kind="file")
    model = load_model(args.checkpoint, revision=args.revision)
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


def run_int8(args) -> int:
    """``segkit export --quantize int8``: the float32 export, then onnxruntime static quantization."""
    from segkit import load_model
    from segkit.tools.quantize import calibration_files, export_int8

    if args.calibration is None:
        raise UsageError("--quantize int8 needs --calibration DIR (a folder of images the model will see)")
    if args.check or args.logits_at != "decoder":
        raise UsageError("--quantize int8: --check / --logits-at input are for the float32 export")
    calibration_files(args.calibration, args.num_calib)  # a bad folder before the model is loaded
    claim_out(args, args.out, kind="file")
    model = load_model(args.checkpoint, revision=args.revision)
    rep = export_int8(
        model,
        args.out,
        args.calibration,
        num_calib=args.num_calib,
        method=args.calib_method,
        ops=args.int8_ops,
        shape=args.shape,
        dynamic=args.dynamic,
        opset=args.opset,
        verify=not args.no_verify,
    )
    quantized = ", ".join(f"{k} {v}" for k, v in rep["quantized"].items())
    floating = ", ".join(f"{k} {v}" for k, v in rep["float"].items())
    print(
        f"wrote {rep['path']} ({rep['size_mb']:.1f} MB, INT8 QDQ, {rep['weights']} weights, {rep['activations']} "
        f"activations; {rep['method']} calibration on {rep['num_calib']} image(s) of {args.calibration})"
    )
    print(f"  quantized: {quantized or 'none'}")
    print(
        f"  float32:   {floating or 'none'}"
        + (f" (+ the Ham NMF: {len(rep['excluded'])} nodes)" if rep["excluded"] else "")
    )
    print(
        f"  labels agree with the float32 export on {100 * rep['agreement']:.2f}% of the pixels of 4 calibration images"
    )
    return 0
