"""``segkit benchmark``: latency / FPS / peak memory under a fixed protocol (segkit/tools/benchmark.py)."""

from __future__ import annotations

from segkit.cli.common import (
    DEVICE_HELP,
    Formatter,
    claim_out,
    device,
    examples,
    hw,
    non_negative_int,
    overwrite_arg,
    positive_int,
)

NAME = "benchmark"


def add_parser(sub):
    s = sub.add_parser(
        NAME,
        formatter_class=Formatter,
        help="latency / FPS / peak memory under a fixed protocol (segkit/tools/benchmark.py)",
        epilog=examples("segkit benchmark segnext-t --shape 512 512 --runs 20 --json b.json"),
    )
    s.add_argument("model", help="zoo name (random weights; speed does not depend on them) or checkpoint")
    hw(s, "--shape", "network input size", default=[512, 512])
    s.add_argument("--batch", type=positive_int, default=1, help="images per call")
    s.add_argument("--num-classes", type=positive_int, default=150, help="classes of a zoo model (150 = ADE20K)")
    s.add_argument(
        "--image",
        metavar="PATH",
        help="time on this photo (resized to --shape) instead of random input, the label path's worst case",
    )
    s.add_argument("--mode", default="whole", choices=["whole", "slide"], help="inference mode")
    hw(s, "--crop", "slide window (default 512 512)")
    hw(s, "--stride", "slide stride (default 3/4 of the crop)")
    s.add_argument("--device", default="auto", help=DEVICE_HELP)
    s.add_argument("--amp", choices=["bf16", "fp16"], help="autocast dtype (fp16: CUDA only)")
    s.add_argument("--channels-last", action="store_true", help="model and input in channels-last memory format")
    s.add_argument("--compile", action="store_true", help="torch.compile the model (compiled during warm-up)")
    s.add_argument("--warmup", type=non_negative_int, default=5, help="untimed calls first")
    s.add_argument("--runs", type=positive_int, default=20, help="timed calls")
    s.add_argument("--threads", type=positive_int, help="torch intra-op threads (default: PyTorch's)")
    s.add_argument("--json", metavar="PATH", help="write the full result (machine included) as JSON")
    overwrite_arg(s, what="--json", kind="file")
    return s


def run(args) -> int:
    from segkit.tools.benchmark import benchmark, format_result, load_for_benchmark, write_json

    if args.json:
        claim_out(args, args.json, what="--json", kind="file")  # before the model is built and timed
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
        device=device(args.device),
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
