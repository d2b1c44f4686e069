"""Segmenter throughput by ``batch_size`` on the CPU (the default of ``segkit.Segmenter(batch_size=8)``).

A list of CamVid test images (480x360, no test resize: whole-image inference at 480x384 after the multiples of
32) goes through ``Segmenter(model, batch_size=B)`` for each B, rounds interleaved (B = 1, 4, 8, 1, 4, 8 …) so that
a change of machine load hits every B alike; the median seconds per image of the rounds is reported, with the
load average before and after. Writes ``benchmarks/results/segmenter_batch.{json,md}``.

    SEGKIT_DATA=... python benchmarks/segmenter_batch.py [--model segformer-b0] [--images 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests"))

import torch  # noqa: E402
from latency import run_info  # noqa: E402

import segkit  # noqa: E402
from segkit.data import read_image  # noqa: E402
from segkit.data.protocol import TestProtocol  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="segformer-b0")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "segmenter_batch"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    info = run_info("segmenter_batch.py", None)
    data = Path(os.environ.get("SEGKIT_DATA") or REPO.parent / "shared" / "data") / "camvid"
    files = sorted((data / "images" / "test").iterdir())[: args.images]
    images = [read_image(f) for f in files]
    torch.manual_seed(0)
    model = segkit.build_model(args.model, 11)
    segs = {b: segkit.Segmenter(model, device="cpu", protocol=TestProtocol(scale=None), batch_size=b)
            for b in args.batch_sizes}  # fmt: skip
    segs[args.batch_sizes[0]](images[:2])  # warm-up
    load_before = os.getloadavg()
    times: dict[int, list[float]] = {b: [] for b in args.batch_sizes}
    for _ in range(args.rounds):
        for b, seg in segs.items():
            t = time.perf_counter()
            seg(images)
            times[b].append((time.perf_counter() - t) / len(images))
    load_after = os.getloadavg()
    rows = [
        {"batch_size": b, "s_per_image": round(statistics.median(ts), 4), "rounds": [round(t, 4) for t in ts]}
        for b, ts in times.items()
    ]
    result = dict(
        info,
        model=args.model,
        images=len(images),
        image_size=list(images[0].shape[:2]),
        threads=args.threads,
        load_average_before=[round(x, 2) for x in load_before],
        load_average_after=[round(x, 2) for x in load_after],
        rows=rows,
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(result, indent=1) + "\n")
    base = rows[0]["s_per_image"]
    md = [
        "# Segmenter throughput by batch_size (CPU)",
        "",
        f"`{result['command']}` on {info['machine']['cpu']} ({info['machine']['logical_cpus']} logical CPUs), "
        f"{args.threads} thread(s), torch {info['torch']}, {info['date']}; load average before "
        f"{result['load_average_before'][0]}, after {result['load_average_after'][0]} (other jobs were running).",
        "",
        f"{args.model}, {len(images)} CamVid test images of {images[0].shape[0]}x{images[0].shape[1]}, whole-image "
        f"inference without test resize; median of {args.rounds} interleaved rounds.",
        "",
        "| batch_size | s / image | vs batch 1 |",
        "|---:|---:|---:|",
        *[f"| {r['batch_size']} | {r['s_per_image']:.4f} | {base / r['s_per_image']:.2f}x |" for r in rows],
        "",
    ]
    Path(args.out + ".md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
