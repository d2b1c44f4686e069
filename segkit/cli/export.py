"""``segkit export``: a checkpoint to ONNX (decoder-stride logits + metadata), verified with onnxruntime."""

from __future__ import annotations

from segkit.cli.common import Formatter, claim_out, examples, hw, overwrite_arg

NAME = "export"


def add_parser(sub):
    s = sub.add_parser(
        NAME,
        formatter_class=Formatter,
        help="export to ONNX (decoder-stride logits + metadata), verified with onnxruntime",
        epilog=examples("segkit export work_dirs/run/final --dynamic --out model.onnx"),
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
    s.add_argument("--out", required=True, help="the .onnx file to write")
    overwrite_arg(s, kind="file")
    return s


def run(args) -> int:
    from segkit import load_model
    from segkit.tools.export import export_onnx
    from segkit.utils import require

    require("onnx", "tools", "segkit export")  # before the model is loaded
    claim_out(args, args.out, kind="file")
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
