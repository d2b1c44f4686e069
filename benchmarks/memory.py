"""Peak memory of slide inference on very large images (issue "scale out", item 5).

For SegNeXt-T and SegFormer-B0 (19 classes, Cityscapes protocol: window 1024, stride 768) this
runs slide inference on random uint8 images of 2048×1024, 4096×2048 and 8192×8192 in a fresh
subprocess each and records the peak resident set size (``VmHWM`` from /proc/self/status):

* ``streaming`` — :meth:`Segmentor.slide_predict`: logits kept only for a band of rows, windows
  normalised on the fly; memory should grow far slower than the pixel count;
* ``full-buffer`` — :meth:`Segmentor.slide_logits` on the normalised image (a K×H×W logit
  buffer), for comparison at the two smaller sizes.

    python benchmarks/memory.py [--sizes 2048x1024 4096x2048 8192x8192] [--threads 2]

Writes ``benchmarks/results/memory.json`` and ``benchmarks/results/memory.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results"

CHILD = r"""
import sys, time, torch, segkit
name, h, w, method, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
torch.set_num_threads(threads)
torch.manual_seed(0)
model = segkit.build_model(name, num_classes=19).eval()
img = torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8)
def hwm():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM'):
            return int(line.split()[1]) / 1024
before = hwm()
t = time.time()
with torch.inference_mode():
    if method == 'streaming':
        out = model.slide_predict(img, (1024, 1024), (768, 768), window_batch=2)
    else:
        out = model.slide_logits(model.normalize(img), (1024, 1024), (768, 768), window_batch=2).argmax(1)
print(f'{before:.1f} {hwm():.1f} {time.time() - t:.1f}')
"""


def run(name: str, h: int, w: int, method: str, threads: int) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", CHILD, name, str(h), str(w), method, str(threads)], capture_output=True, text=True
    )
    if r.returncode != 0:
        return {"model": name, "size": f"{w}x{h}", "method": method, "error": r.stderr.strip().splitlines()[-1]}
    before, peak, secs = map(float, r.stdout.split())
    return {
        "model": name,
        "size": f"{w}x{h}",
        "pixels_M": round(h * w / 1e6, 2),
        "method": method,
        "rss_after_build_MiB": before,
        "peak_rss_MiB": peak,
        "seconds": secs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["2048x1024", "4096x2048", "8192x8192"], help="WxH")
    ap.add_argument("--models", nargs="+", default=["segnext-t", "segformer-b0"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--full-buffer-max-mpix",
        type=float,
        default=10.0,
        help="also run the full-buffer method up to this many megapixels",
    )
    args = ap.parse_args()
    rows = []
    for name in args.models:
        for size in args.sizes:
            w, h = map(int, size.split("x"))
            methods = ["streaming"] + (["full-buffer"] if h * w / 1e6 <= args.full_buffer_max_mpix else [])
            for m in methods:
                rows.append(run(name, h, w, m, args.threads))
                print(rows[-1], flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    import torch

    meta = {
        "machine": platform.processor() or platform.machine(),
        "cpu": _cpu_model(),
        "torch": torch.__version__,
        "threads": args.threads,
        "command": "python benchmarks/memory.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
    }
    (OUT / "memory.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        "# Slide-inference peak memory\n",
        f"Machine: {meta['cpu']}, torch {meta['torch']}, "
        f"{args.threads} threads, {meta['date']}. Command: `{meta['command']}`.\n",
        "Window 1024×1024, stride 768, window batch 2, 19 classes, uint8 input image.\n",
        "| model | image (W×H) | Mpixels | method | RSS after build (MiB) | peak RSS (MiB) | time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['size']} | | {r['method']} | error: {r['error']} | | |")
        else:
            lines.append(
                f"| {r['model']} | {r['size']} | {r['pixels_M']} | {r['method']} | {r['rss_after_build_MiB']:.0f} "
                f"| {r['peak_rss_MiB']:.0f} | {r['seconds']:.1f} |"
            )
    (OUT / "memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
