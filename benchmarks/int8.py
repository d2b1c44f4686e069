"""INT8 on the CPU: accuracy and latency of a trained model as PyTorch fp32 / bf16, ONNX Runtime fp32 and INT8.

    python benchmarks/int8.py MODEL_DIR [MODEL_DIR ...] [--data $SEGKIT_DATA/camvid] [--num-calib 32]
                              [--threads 1] [--methods minmax entropy percentile] [--max-images N]

For each trained model folder (a ``save_pretrained`` folder with its test protocol, e.g. the README
model's ``final/``):

1. **Export** float32 ONNX (``segkit.tools.export.export_onnx``, dynamic H/W, verified against PyTorch).
2. **Calibration method, chosen on val**: the model is quantized (``segkit.tools.quantize.quantize_onnx``:
   QDQ, per-channel int8 weights, uint8 activations, Conv / Gemm / weight MatMuls) with each of
   ``--methods``, calibrated on ``--num-calib`` train images (evenly spaced over the sorted list), and each
   INT8 model is evaluated on the val split (``segkit.tools.onnx_eval.evaluate_onnx``); the best val mIoU
   is kept (the test split is not looked at for the choice). ``--int8-ops all`` of the chosen method is
   measured as well.
3. **Test split, round-robin**: every test image is run through every path in turn, the order rotating
   per image so that load from other processes hits all paths alike: PyTorch float32 and bf16 autocast
   (``segkit.Segmenter``: the fused model, the stored protocol), ONNX Runtime float32 and INT8
   (``OnnxSegmenter``: the same protocol). Each call is timed on the user's path — **file in → label map
   out** (``read_image`` / decoding included, labels at the image's size) — and its labels are counted
   against the ground truth (mIoU, CamVid's 11 classes, ``absent="union"``) and against PyTorch float32
   (pixel agreement).
4. **Profile** of the INT8 model (onnxruntime's profiler over a few test images): time per kernel type,
   grouped into integer kernels, quantize / dequantize, and float kernels — the ops that stay in float and
   their share of the time.

Threads: PyTorch ``set_num_threads(--threads)`` and onnxruntime ``intra_op_num_threads = --threads``
(1 by default: the CPU is shared; every path gets the same). The 1-minute load average is recorded before
and after. Writes ``benchmarks/results/int8_<model folder>.{json,md}`` (``--out`` to change the folder).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

import segkit
from segkit.data import build_dataset
from segkit.data.io import read_image
from segkit.engine.metrics import metrics_from_matrix
from segkit.tools.export import export_onnx
from segkit.tools.onnx_eval import confusion, evaluate_onnx
from segkit.tools.onnx_predict import OnnxSegmenter
from segkit.tools.quantize import quantize_onnx

ROOT = Path(__file__).resolve().parents[1]
TARGET_SPEEDUP, TARGET_DROP = 1.5, 1.0  # issue 24: INT8 >= 1.5x faster than torch fp32, <= 1.0 mIoU drop
INT8_KERNELS = ("QLinear", "MatMulInteger", "ConvInteger", "DynamicQuantize", "QGemm", "QAttention")


def machine() -> dict:
    info = {"cpu": platform.processor() or "unknown", "logical_cpus": os.cpu_count()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)}
        flags = fields.get("Flags", "").split()
        info.update(
            cpu=fields.get("Model name", info["cpu"]),
            int8_isa=[f for f in ("avx2", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags],
            bf16_isa=[f for f in ("avx512_bf16", "amx_bf16") if f in flags],
        )
    except (OSError, subprocess.CalledProcessError, ValueError):
        pass
    return info


def versions() -> dict:
    import onnxruntime

    return {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "segkit": segkit.__version__}


def dataset_split(root: Path, split: str):
    return build_dataset({"type": "split", "root": str(root), "split": split})


def choose_method(fp32: Path, tmp: Path, args, data: Path) -> tuple[str, list[dict]]:
    """Quantize with each method, evaluate on val; the best val mIoU (first listed on a tie)."""
    val = dataset_split(data, "val")
    rows = []
    for method in args.methods:
        path = tmp / f"int8_{method}.onnx"
        t0 = time.perf_counter()
        rep = quantize_onnx(fp32, path, data / "images" / "train", num_calib=args.num_calib, method=method)
        t_quant = time.perf_counter() - t0
        res = evaluate_onnx(path, val, max_images=args.max_images, progress=False)
        rows.append({"method": method, "val_mIoU": res["mIoU"], "quantize_s": t_quant, "report": rep})
        print(f"  {method:10s} val mIoU {res['mIoU']:.2f} (quantized in {t_quant:.0f} s)", flush=True)
    best = max(rows, key=lambda r: (round(r["val_mIoU"], 2), -args.methods.index(r["method"])))
    return best["method"], rows


def round_robin(paths: dict, dataset, num_classes: int, ignore: int, max_images: int | None) -> dict:
    """Run every path on every test image (rotating order); time file in → labels out; count metrics."""
    names = list(paths)
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    times = {k: [] for k in names}
    cms = {k: np.zeros((num_classes, num_classes), np.int64) for k in names}
    agree = {k: [0, 0] for k in names}
    for name in names:  # warm-up: first calls allocate / pack weights
        paths[name](dataset.samples[0][0])
    for i in range(n):
        image_path, label_path = dataset.samples[i]
        label = dataset.load(i)[1]
        order = names[i % len(names) :] + names[: i % len(names)]
        labels = {}
        for name in order:
            t0 = time.perf_counter()
            labels[name] = paths[name](image_path)
            times[name].append(time.perf_counter() - t0)
        for name in names:
            cms[name] += confusion(labels[name], label, num_classes, ignore, label_path)
            agree[name][0] += int((labels[name] == labels[names[0]]).sum())
            agree[name][1] += labels[name].size
        if (i + 1) % 50 == 0:
            print(f"  {i + 1}/{n} test images", flush=True)
    out = {}
    for name in names:
        m = metrics_from_matrix(torch.from_numpy(cms[name]))
        t = sorted(times[name])
        ratio = [a / b for a, b in zip(times[names[0]], times[name])]  # per image, same moment: robust to load
        out[name] = {
            "mIoU": m["mIoU"],
            "aAcc": m["aAcc"],
            "IoU": [float(v) for v in m["IoU"]],
            "agreement_with_torch_fp32": agree[name][0] / agree[name][1],
            "latency_ms_median": 1000 * statistics.median(t),
            "latency_ms_p25": 1000 * t[len(t) // 4],
            "latency_ms_p75": 1000 * t[(3 * len(t)) // 4],
            "latency_ms_min": 1000 * t[0],
            "speedup_vs_torch_fp32_median": statistics.median(ratio),
            "images": n,
        }
    return out


def profile(path: Path, files: list, threads: int, runs: int = 3) -> dict:
    """onnxruntime profile of ``path`` on ``files``: kernel time per op type, grouped."""
    import onnxruntime as ort

    seg = OnnxSegmenter(path)
    xs = [seg.preprocess(read_image(f)) for f in files]
    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory() as tmp:
        opts.profile_file_prefix = str(Path(tmp) / "prof")
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        for x in xs:  # warm-up
            sess.run(None, {seg.input_name: x})
        t0 = time.time()
        for _ in range(runs):
            for x in xs:
                sess.run(None, {seg.input_name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    by_op: Counter = Counter()
    count: Counter = Counter()
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    warm = kernels[len(kernels) // (runs + 1) :]  # drop the warm-up pass (each pass runs the same kernels)
    for e in warm:
        by_op[e["args"]["op_name"]] += e["dur"]
        count[e["args"]["op_name"]] += 1
    total = sum(by_op.values())
    calls = runs * len(xs)

    def group(op: str) -> str:
        if op.startswith(INT8_KERNELS):
            return "int8 kernels"
        if op in ("QuantizeLinear", "DequantizeLinear"):
            return "quantize / dequantize"
        return "float kernels"

    groups: Counter = Counter()
    for op, us in by_op.items():
        groups[group(op)] += us
    return {
        "kernel_ms_per_image": total / calls / 1000,
        "wall_s": time.time() - t0,
        "groups": {g: {"ms": us / calls / 1000, "share": us / total} for g, us in groups.most_common()},
        "ops": [
            {"op": op, "group": group(op), "ms": us / calls / 1000, "share": us / total, "nodes": count[op] // calls}
            for op, us in by_op.most_common()
        ],
    }


def bench_model(folder: Path, args) -> dict:
    data = Path(args.data)
    torch.set_num_threads(args.threads)
    model = segkit.load_model(folder)
    name = folder.parent.name if folder.name == "final" else folder.name
    print(f"{name}: {model.name}, {model.num_classes} classes", flush=True)
    res = {"model_folder": str(folder), "model": model.name, "name": name}
    with tempfile.TemporaryDirectory(prefix="segkit-int8-bench-") as tmp:
        tmp = Path(tmp)
        fp32 = tmp / "fp32.onnx"
        test = dataset_split(data, "test")
        h, w = read_image(test.samples[0][0]).shape[:2]
        shape = segkit.TestProtocol.of(model).transform(model.mean, model.std).output_size(h, w)
        export_onnx(model, fp32, shape=shape, dynamic=True)
        method, rows = choose_method(fp32, tmp, args, data)
        res["calibration"] = {
            "num_calib": args.num_calib,
            "images": f"{data}/images/train (evenly spaced)",
            "val": [{k: v for k, v in r.items() if k != "report"} for r in rows],
            "chosen": method,
        }
        chosen = tmp / f"int8_{method}.onnx"
        res["quantization"] = next(r["report"] for r in rows if r["method"] == method)
        res["quantization"].pop("calibration", None)
        all_ops = tmp / "int8_all.onnx"
        quantize_onnx(fp32, all_ops, data / "images" / "train", num_calib=args.num_calib, method=method, ops="all")

        seg32 = segkit.Segmenter(model, device="cpu")
        seg16 = segkit.Segmenter(model, device="cpu", amp="bf16")
        ort32, ort8 = OnnxSegmenter(fp32, threads=args.threads), OnnxSegmenter(chosen, threads=args.threads)
        ort8all = OnnxSegmenter(all_ops, threads=args.threads)
        paths = {
            "torch fp32": lambda f: seg32(f).label,
            "torch bf16": lambda f: seg16(f).label,
            "ORT fp32": lambda f: ort32.predict(read_image(f)),
            f"ORT INT8 ({method})": lambda f: ort8.predict(read_image(f)),
            f"ORT INT8 ({method}, all ops)": lambda f: ort8all.predict(read_image(f)),
        }
        res["load_before"] = round(os.getloadavg()[0], 2)
        t0 = time.time()
        res["test"] = round_robin(paths, test, model.num_classes, test.ignore_index, args.max_images)
        res["test_wall_s"] = time.time() - t0
        res["load_after"] = round(os.getloadavg()[0], 2)
        res["network_input"] = list(shape)
        res["profile"] = {
            "ORT INT8": profile(chosen, [s[0] for s in test.samples[:: max(1, len(test) // 4)][:4]], args.threads),
            "ORT fp32": profile(fp32, [s[0] for s in test.samples[:: max(1, len(test) // 4)][:4]], args.threads),
        }
        res["load_end"] = round(os.getloadavg()[0], 2)
    int8 = res["test"][f"ORT INT8 ({method})"]
    res["target"] = {
        "speedup_vs_torch_fp32": int8["speedup_vs_torch_fp32_median"],
        "mIoU_drop": res["test"]["torch fp32"]["mIoU"] - int8["mIoU"],
        "met": int8["speedup_vs_torch_fp32_median"] >= TARGET_SPEEDUP
        and res["test"]["torch fp32"]["mIoU"] - int8["mIoU"] <= TARGET_DROP,
    }
    return res


def markdown(res: dict, head: dict) -> str:
    q = res["quantization"]
    lines = [
        f"# INT8 on the CPU: {res['name']} ({res['model']})",
        "",
        f"Command: `{head['command']}`  ",
        f"Date: {head['date']}; machine: {head['machine'].get('cpu')} ({head['machine'].get('logical_cpus')} logical "
        f"CPUs; int8 ISA {', '.join(head['machine'].get('int8_isa', []))}; bf16 ISA "
        f"{', '.join(head['machine'].get('bf16_isa', [])) or 'none'}); {head['versions']}  ",
        f"Threads: {head['threads']} per path; 1-min load average {res['load_before']} before, {res['load_after']} "
        f"after the test loop (the machine is shared: a training run and other jobs run beside it).  ",
        f"Network input {res['network_input'][0]}x{res['network_input'][1]} (the stored test protocol), "
        f"{res['test']['torch fp32']['images']} CamVid test images.",
        "",
        f"## Calibration method (val split, {res['calibration']['num_calib']} train images)",
        "",
        "| method | val mIoU | quantize time (s) |",
        "|---|---:|---:|",
    ]
    for r in res["calibration"]["val"]:
        lines.append(f"| {r['method']} | {r['val_mIoU']:.2f} | {r['quantize_s']:.0f} |")
    lines += [
        "",
        f"Chosen: **{res['calibration']['chosen']}** (best val mIoU; on a tie the first listed).",
        "",
        "## Test split: accuracy and latency (file in → label map out)",
        "",
        "| path | mIoU | Δ vs torch fp32 | pixel agreement with torch fp32 | latency median (ms) | p25–p75 (ms) "
        "| speed-up vs torch fp32 (median per image) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    ref = res["test"]["torch fp32"]["mIoU"]
    for name, r in res["test"].items():
        lines.append(
            f"| {name} | {r['mIoU']:.2f} | {r['mIoU'] - ref:+.2f} | {100 * r['agreement_with_torch_fp32']:.2f}% | "
            f"{r['latency_ms_median']:.1f} | {r['latency_ms_p25']:.1f}–{r['latency_ms_p75']:.1f} | "
            f"{r['speedup_vs_torch_fp32_median']:.2f}× |"
        )
    t = res["target"]
    lines += [
        "",
        f"Target (issue 24): INT8 ≥ {TARGET_SPEEDUP}× faster than torch fp32 with ≤ {TARGET_DROP} mIoU drop — "
        f"measured {t['speedup_vs_torch_fp32']:.2f}× and a drop of {t['mIoU_drop']:+.2f} mIoU: "
        f"**{'met' if t['met'] else 'not met'}**.",
        "",
        "## Where the INT8 model spends its time (onnxruntime profiler)",
        "",
    ]
    for label, prof in res["profile"].items():
        groups = ", ".join(f"{g} {v['ms']:.1f} ms ({100 * v['share']:.0f}%)" for g, v in prof["groups"].items())
        lines += [f"**{label}**: {prof['kernel_ms_per_image']:.1f} ms of kernels per image — {groups}.", ""]
        lines += ["| op | kind | ms / image | share | nodes |", "|---|---|---:|---:|---:|"]
        for op in prof["ops"][:14]:
            lines.append(f"| {op['op']} | {op['group']} | {op['ms']:.2f} | {100 * op['share']:.1f}% | {op['nodes']} |")
        lines.append("")
    lines += [
        "Quantized nodes: " + ", ".join(f"{k} {v}" for k, v in q["quantized"].items()) + ".  ",
        "Left in float32: " + ", ".join(f"{k} {v}" for k, v in q["float"].items())
        + (f" (+ {len(q['excluded'])} nodes excluded by name)" if q["excluded"] else "") + ".",
        "",
    ]  # fmt: skip
    return "\n".join(lines)


def relative(text: str) -> str:
    """Paths outside the repository written relative to its root (``../shared/data/...``), as the docs do."""
    return text.replace(str(ROOT.parent) + "/", "../")


def write(stem: Path, head: dict, res: dict) -> None:
    stem.with_suffix(".json").write_text(relative(json.dumps({**head, **res}, indent=1, default=float)) + "\n")
    stem.with_suffix(".md").write_text(relative(markdown(res, head)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", type=Path, help="trained model folders (save_pretrained, e.g. .../final)")
    p.add_argument("--data", default=os.path.join(os.environ.get("SEGKIT_DATA", ROOT.parent / "shared/data"), "camvid"))
    p.add_argument("--num-calib", type=int, default=32)
    p.add_argument("--methods", nargs="+", default=["minmax", "entropy", "percentile"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-images", type=int, help="first N images of val and test (quick runs)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    head = {
        "command": "python benchmarks/int8.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "versions": versions(),
        "threads": args.threads,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for folder in args.models:
        res = bench_model(folder, args)
        stem = args.out / f"int8_{res['name']}"
        write(stem, head, res)
        print(f"wrote {stem}.json and .md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
