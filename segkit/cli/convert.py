"""``segkit convert``: an official / mmseg / Hugging Face checkpoint to segkit's safetensors folder."""

from __future__ import annotations

from segkit.cli.common import Formatter, claim_out, examples, overwrite_arg, positive_int
from segkit.errors import UsageError

NAME = "convert"


def add_parser(sub):
    s = sub.add_parser(
        NAME,
        formatter_class=Formatter,
        help="convert an official checkpoint to segkit's safetensors folder",
        epilog=examples("segkit convert segnext_tiny_512x512_ade_160k.pth segnext-t-ade --model segnext-t"),
    )
    s.add_argument("src", help="official / mmseg / Hugging Face checkpoint file or folder")
    s.add_argument("dst", help="output folder (model.safetensors + config.json)")
    s.add_argument("--model", required=True, help="zoo name of the architecture (segkit models lists them)")
    s.add_argument("--num-classes", type=positive_int, help="classes (default: read from the checkpoint's classifier)")
    s.add_argument("--non-strict", action="store_true", help="load what fits and report the rest")
    overwrite_arg(s, what="DST")
    return s


def run(args) -> int:
    from pathlib import Path

    from segkit import build_model, load_checkpoint, read_state_dict

    src, dst = Path(args.src).resolve(), Path(args.dst).resolve()
    if src == dst or dst in src.parents:
        raise UsageError(f"DST {args.dst} holds SRC {args.src}: write the converted model to another folder")
    claim_out(args, args.dst, what="DST")

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
