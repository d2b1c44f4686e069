"""bf16 autocast vs float32 on a trained model: pixel agreement of the labels and mIoU on CamVid test.

    python benchmarks/bf16_agreement.py work_dirs/segnext-t_camvid_15min/final [--split test]

The model is evaluated twice with its stored test protocol (``segkit eval`` defaults) — float32 and
``amp="bf16"`` — and the labels of every image are compared pixel by pixel. Targets (issue 13):
agreement ≥ 99.5 % and |ΔmIoU| ≤ 0.2. Needs a CPU with native bfloat16 (``avx512_bf16`` /
``amx_bf16``). Writes ``benchmarks/results/bf16_agreement.json`` and prints a Markdown line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", help="a trained model folder (final/) or checkpoint")
    p.add_argument("--data", default="${SEGKIT_DATA}/camvid")
    p.add_argument("--split", default="test")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bf16_agreement.json"))
    args = p.parse_args(argv)

    import segkit
    from segkit.data import build_dataset
    from segkit.data.protocol import TestProtocol
    from segkit.engine.evaluator import evaluate
    from segkit.models.fuse import for_inference
    from segkit.runtime import autocast, check_amp, tune_cpu_allocator

    check_amp("bf16", "cpu")
    tune_cpu_allocator()
    torch.set_num_threads(args.threads)
    model = segkit.load_model(args.model)
    protocol = TestProtocol.of(model)
    ds = build_dataset(
        {"type": "split", "root": args.data, "split": args.split}, transform=protocol.transform(model.mean, model.std)
    )
    kw = protocol.inference_kwargs()
    r32 = evaluate(model, ds, **kw, progress=False)
    r16 = evaluate(model, ds, **kw, progress=False, amp="bf16")
    runner = for_inference(model.eval())
    same = total = 0
    with torch.inference_mode():
        for i in range(len(ds)):
            item = ds[i]
            x, size = item["image"][None], item["label"].shape[-2:]
            a = runner.predict(x, out_size=size, **kw)
            with autocast("bf16", "cpu"):
                b = runner.predict(x, out_size=size, **kw)
            same += int((a == b).sum())
            total += a.numel()
    res = {
        "command": "python benchmarks/bf16_agreement.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "model": str(args.model),
        "protocol": protocol.describe(),
        "images": len(ds),
        "mIoU_fp32": r32["mIoU"],
        "mIoU_bf16": r16["mIoU"],
        "delta_mIoU": r16["mIoU"] - r32["mIoU"],
        "agreement": same / total,
        "eval_s_fp32": r32["time_s"],
        "eval_s_bf16": r16["time_s"],
        "passed": same / total >= 0.995 and abs(r16["mIoU"] - r32["mIoU"]) <= 0.2,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(
        f"| {args.split} ({len(ds)} images) | {r32['mIoU']:.2f} | {r16['mIoU']:.2f} | {res['delta_mIoU']:+.2f} | "
        f"{100 * res['agreement']:.2f} % | {r32['time_s']:.1f} s → {r16['time_s']:.1f} s |"
    )
    return 0 if res["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
