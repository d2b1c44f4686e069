"""The CUDA paths the CPU-only development machine never runs — one script, about 8 minutes on one GPU.

    bash benchmarks/gpu_check.sh            # = python benchmarks/gpu_check.py --out benchmarks/results/gpu

Sections (each recorded as passed / failed with its numbers in ``gpu_check.json``; one failing
section does not stop the others):

1. ``parity`` — same weights on CUDA and CPU, float32 with TF32 off: SegFormer-B0 (segkit vs
   transformers, both on CUDA, and segkit CUDA vs CPU) and SegNeXt-T (CUDA vs CPU, eval and the
   fused copy). Pass: max |Δ logits| ≤ 1e-4.
2. ``amp_training`` — 15 AdamW steps on one fixed batch (8 × 3 × 256², 19 classes) under bf16
   and fp16 autocast (fp16 with the gradient scaler), SegFormer-B0 and SegNeXt-T. Pass: finite
   losses and the last loss below the first (the batch is being fitted).
3. ``torchrun`` — ``torchrun --nproc_per_node=1 -m segkit train`` on a generated 12-image data set
   (``train.device=cuda``: the NCCL process group, DDP, the CUDA evaluation and checkpoints).
   Pass: exit 0 and ``final/`` written.
4. ``slide`` — SegFormer-B0 (19 classes) slide inference on a 1024 × 2048 image (window 1024,
   stride 768): the label path's labels vs ``inference().argmax`` on CUDA, and CUDA vs CPU labels.
   Pass: ≥ 99.9 % equal.
5. ``fps`` — the papers' FPS protocol through :func:`segkit.tools.benchmark.benchmark` (batch 1,
   whole image, ``Segmentor.predict``, CUDA-synchronised): SegNeXt-T at 768 × 1536, SegFormer-B0 at
   1024 × 2048 and 512 × 1024 (short side 512), float32 and bf16 eager, bf16 compiled.

Writes ``gpu_check.json`` (and the log via ``gpu_check.sh``) under ``--out``. Needs torch with
CUDA, transformers (for the parity check) and this checkout on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import segkit  # noqa: E402


def section(results: dict, name: str):
    """Decorator: run a check, record its dict (plus ``passed`` / ``error`` / ``seconds``)."""

    def wrap(fn):
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            out = fn()
            results[name] = {**out, "seconds": round(time.perf_counter() - t0, 1)}
        except Exception as e:  # record and go on: one broken path must not hide the others
            traceback.print_exc()
            seconds = round(time.perf_counter() - t0, 1)
            results[name] = {"passed": False, "error": f"{type(e).__name__}: {e}", "seconds": seconds}
        print(json.dumps(results[name], indent=1)[:2000], flush=True)
        return fn

    return wrap


def parity() -> dict:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    hf = SegformerForSemanticSegmentation(SegformerConfig(num_labels=150)).eval()
    seg = segkit.build_model("segformer-b0", num_classes=150).eval()
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(hf.state_dict(), Path(tmp) / "hf.pth")
        segkit.load_checkpoint(seg, Path(tmp) / "hf.pth")
    x = torch.randn(2, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    out = {}
    with torch.inference_mode():
        cpu = seg.encode_decode(x)
        hf_cuda = hf.cuda()(pixel_values=x.cuda()).logits.float().cpu()
        seg_cuda = seg.cuda().encode_decode(x.cuda()).float().cpu()
        out["segformer_cuda_vs_cpu"] = float((seg_cuda - cpu).abs().max())
        out["segformer_segkit_vs_transformers_cuda"] = float((seg_cuda - hf_cuda).abs().max())
        torch.manual_seed(0)
        nx = segkit.build_model("segnext-t", num_classes=150).eval()
        cpu = nx.encode_decode(x)
        fused_cpu = nx.fused().encode_decode(x)
        nx = nx.cuda()
        out["segnext_cuda_vs_cpu"] = float((nx.encode_decode(x.cuda()).cpu() - cpu).abs().max())
        out["segnext_fused_cuda_vs_cpu"] = float((nx.fused().encode_decode(x.cuda()).cpu() - fused_cpu).abs().max())
    out["passed"] = all(v <= 1e-4 for v in out.values())
    return out


def amp_training() -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 256, 256, generator=g).cuda()
    y = torch.randint(0, 19, (8, 256, 256), generator=g).cuda()
    out, ok = {}, True
    for name in ("segformer-b0", "segnext-t"):
        for amp in ("bf16", "fp16"):
            torch.manual_seed(0)
            m = segkit.build_model(name, num_classes=19).cuda().train()
            opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
            scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
            losses, t0 = [], time.perf_counter()
            for _ in range(15):
                with torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16):
                    loss = m.loss(x, y)["loss"]
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                losses.append(float(loss))
            torch.cuda.synchronize()
            good = all(np.isfinite(losses)) and losses[-1] < losses[0]
            ok &= good
            out[f"{name} {amp}"] = {
                "first_loss": losses[0],
                "last_loss": losses[-1],
                "s_per_step": round((time.perf_counter() - t0) / 15, 4),
                "passed": good,
            }
    out["passed"] = ok
    return out


def make_dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    from PIL import Image

    for split, n in (("train", 8), ("val", 2), ("test", 2)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        stems = [f"{split}_{i}" for i in range(n)]
        for s in stems:
            lab = np.zeros((256, 320), np.uint8)
            lab[:80] = 1
            for c in (2, 3, 4):
                y0, x0 = rng.integers(60, 200), rng.integers(0, 260)
                lab[y0 : y0 + 50, x0 : x0 + 60] = c
            img = np.clip(lab[..., None] * 50 + rng.normal(0, 20, (256, 320, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / "images" / split / f"{s}.png")
            Image.fromarray(lab).save(root / "labels" / split / f"{s}.png")
        (root / "splits").mkdir(exist_ok=True)
        (root / "splits" / f"{split}.txt").write_text("\n".join(stems) + "\n")
    meta = {"name": "synthetic", "classes": ["a", "b", "c", "d", "e"], "ignore_index": 255}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def torchrun() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        data = make_dataset(Path(tmp) / "data")
        work = Path(tmp) / "run"
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=1",
            "-m",
            "segkit",
            "train",
            "camvid/segnext-t_15min",
            "--no-progress",
            "--set",
            f"data.train.root={data}",
            f"data.val.root={data}",
            f"data.test.root={data}",
            "train.device=cuda",
            "train.batch_size=4",
            "train.num_workers=2",
            "schedule.max_iters=20",
            "schedule.warmup_iters=5",
            "train.eval_interval=10",
            "train.class_weight=null",
            "train.tensorboard=false",
            f"train.work_dir={work}",
        ]
        env = {**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        final = (work / "final" / "model.safetensors").is_file()
        return {
            "returncode": p.returncode,
            "final_written": final,
            "tail": (p.stdout + p.stderr)[-1500:],
            "passed": p.returncode == 0 and final,
        }


def slide() -> dict:
    torch.manual_seed(0)
    m = segkit.build_model("segformer-b0", num_classes=19).eval()
    x = torch.randn(1, 3, 1024, 2048, generator=torch.Generator().manual_seed(0))
    kw = dict(mode="slide", crop_size=(1024, 1024), stride=(768, 768), window_batch=2)
    with torch.inference_mode():
        cpu = m.predict(x, **kw)
        mc = m.cuda()
        t0 = time.perf_counter()
        gpu = mc.predict(x.cuda(), **kw).cpu()
        torch.cuda.synchronize()
        t_pred = time.perf_counter() - t0
        ref = mc.inference(x.cuda(), **kw).argmax(1).cpu()
        out_size = mc.predict(x.cuda(), out_size=(700, 1400), **kw).cpu()
        ref_size = mc.inference(x.cuda(), out_size=(700, 1400), **kw).argmax(1).cpu()
    out = {
        "label_path_vs_reference_cuda": float((gpu == ref).float().mean()),
        "label_path_vs_reference_cuda_resized": float((out_size == ref_size).float().mean()),
        "cuda_vs_cpu": float((gpu == cpu).float().mean()),
        "predict_s": round(t_pred, 3),
    }
    out["passed"] = all(v >= 0.999 for k, v in out.items() if k != "predict_s")
    return out


def fps() -> dict:
    from segkit.tools.benchmark import benchmark

    runs = []
    cases = [("segnext-t", (768, 1536)), ("segformer-b0", (1024, 2048)), ("segformer-b0", (512, 1024))]
    for name, shape in cases:
        for amp, comp in ((None, False), ("bf16", False), ("bf16", True)):
            torch.manual_seed(0)
            m = segkit.build_model(name, num_classes=19)
            r = benchmark(m, shape, device="cuda", amp=amp, compile=comp, warmup=10 if comp else 5, runs=30)
            runs.append(
                {
                    "model": name,
                    "shape": list(shape),
                    "amp": amp,
                    "compile": comp,
                    "median_ms": round(r["latency_ms"]["median"], 2),
                    "fps": round(r["fps"], 1),
                    "peak_mb": r["memory"].get("peak_mb"),
                }
            )
            print(runs[-1], flush=True)
    return {"runs": runs, "machine": r["machine"], "passed": True}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu"))
    p.add_argument("--only", nargs="*", help="run only these sections")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to torch", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0),
    }
    checks = {"parity": parity, "amp_training": amp_training, "torchrun": torchrun, "slide": slide, "fps": fps}
    for name, fn in checks.items():
        if args.only and name not in args.only:
            continue
        section(results, name)(fn)
        (out / "gpu_check.json").write_text(json.dumps(results, indent=2) + "\n")
    failed = [n for n in checks if n in results and not results[n].get("passed")]
    verdict = "all passed" if not failed else "FAILED: " + ", ".join(failed)
    print(f"gpu_check: {verdict}; wrote {out / 'gpu_check.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
