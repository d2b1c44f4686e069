"""Kernel and layout choices under AVX-512 and under emulated AVX2, side by side (CPU).

    python benchmarks/avx2_kernels.py [--rounds 15] [--only NAME …]

Two worker processes run the same timed calls: one with the host's native instruction set,
one with PyTorch's kernels capped at AVX2 (``benchmarks/isa.py``: ATen, oneDNN and MKL). The
driver alternates between them call by call, so that load from other processes hits both
alike, and reports the median and the minimum per call and ISA (the minimum is the better
estimate of a kernel's cost on a loaded machine). 2 threads, float32.

The calls are the alternatives behind segkit's layout and kernel choices on the CPU:

* ``gelu`` — GELU of a channels-last map as is, and on its contiguous NHWC view
  (:class:`segkit.models.layers.ChannelsLastGELU`); forward, and forward + backward;
* ``upsample`` — bilinear ×8 / ×4 resize of 150-class logits to 512², NCHW vs channels-last
  (the layout segkit's heads return);
* ``conv1x1`` — MSCAN's 1×1 convolutions (oneDNN, channels-last) vs ``F.linear`` on the NHWC
  view (MKL);
* ``msca`` — MSCA's six strip convolutions as separate depth-wise convolutions vs the three
  horizontal ones merged into one (kernels zero-padded to 1×21) and the vertical ones into a
  grouped 3→1 convolution;
* ``segnext`` — SegNeXt-T inference (fused, 512²) and a training step (batch 8, 256²) with
  ``ChannelsLastGELU.use_nhwc_view`` on and off.

Writes ``benchmarks/results/avx2_kernels.{json,md}``. The AVX2 figures are an emulation on the
host CPU (caches, bandwidth and instruction costs stay the host's), not an AVX2-only machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import isa  # noqa: E402


def calls(only: list[str] | None) -> dict:
    """name → zero-argument callable (built in the worker, after torch is imported)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from segkit.models.layers import ChannelsLastGELU

    torch.manual_seed(0)
    cl = torch.channels_last
    out: dict = {}

    def want(group: str) -> bool:
        return not only or group in only

    if want("gelu"):
        for name, shape in (("stage-1 FFN 1×256×128²", (1, 256, 128, 128)), ("train 8×256×64²", (8, 256, 64, 64))):
            x = torch.randn(shape).contiguous(memory_format=cl)
            g = torch.randn(shape).contiguous(memory_format=cl)
            xg = x.clone().requires_grad_()
            plain, view = ChannelsLastGELU(), ChannelsLastGELU()
            plain.use_nhwc_view = False
            for label, mod in (("channels-last", plain), ("NHWC view", view)):
                out[f"gelu {name} fwd, {label}"] = lambda m=mod, x=x: m(x)
                out[f"gelu {name} fwd+bwd, {label}"] = lambda m=mod, x=xg, g=g: torch.autograd.grad(m(x), x, g)
    if want("upsample"):
        for name, h in (("SegNeXt-T ×8", 64), ("SegFormer-B0 ×4", 128)):
            x = torch.randn(1, 150, h, h)
            for label, t in (("NCHW", x), ("channels-last", x.contiguous(memory_format=cl))):
                out[f"upsample {name} 150×512², {label}"] = lambda t=t: F.interpolate(
                    t, (512, 512), mode="bilinear", align_corners=False
                )
    if want("conv1x1"):
        for name, (c, h, r) in (("stage 1", (32, 128, 8)), ("stage 3", (160, 32, 4))):
            for fc, (cin, cout) in (("fc1", (c, r * c)), ("fc2", (r * c, c))):
                conv = nn.Conv2d(cin, cout, 1)
                x = torch.randn(1, cin, h, h).contiguous(memory_format=cl)
                w2 = conv.weight.flatten(1)
                out[f"conv1x1 {name} {fc} {cin}→{cout} {h}², oneDNN conv"] = lambda m=conv, x=x: m(x)
                out[f"conv1x1 {name} {fc} {cin}→{cout} {h}², F.linear (MKL)"] = lambda m=conv, w=w2, x=x: F.linear(
                    x.permute(0, 2, 3, 1), w, m.bias
                )
    if want("msca"):
        from segkit.models.backbones.mscan import MSCA

        for name, (c, h) in (("stage 1", (32, 128)), ("stage 4", (256, 16))):
            m = MSCA(c).eval()
            x = torch.randn(1, c, h, h).contiguous(memory_format=cl)
            wh, bh = torch.zeros(3 * c, 1, 1, 21), torch.zeros(3 * c)
            wv, bv = torch.zeros(c, 3, 21, 1), torch.zeros(c)
            for i, k in enumerate(m.kernel_sizes):
                o = (21 - k) // 2
                wh[i::3, :, :, o : o + k] = getattr(m, f"conv{i}_1").weight.detach()
                bh[i::3] = getattr(m, f"conv{i}_1").bias.detach()
                wv[:, i, o : o + k] = getattr(m, f"conv{i}_2").weight.detach()[:, 0]
                bv += getattr(m, f"conv{i}_2").bias.detach()

            def merged(m=m, x=x, wh=wh, bh=bh, wv=wv, bv=bv, c=c):
                a = m.conv0(x)
                s = F.conv2d(F.conv2d(a, wh, bh, padding=(0, 10), groups=c), wv, bv, padding=(10, 0), groups=c)
                return m.conv3(s.add_(a)).mul_(x)

            out[f"msca {name} {c}×{h}², six depth-wise convs"] = lambda m=m, x=x: m(x)
            out[f"msca {name} {c}×{h}², merged strips"] = merged
    if want("segnext"):
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from latency import photo
        from train_speed import batch, segkit_step

        from segkit import build_model

        x, _ = photo((512, 512))
        torch.manual_seed(0)
        fused = build_model("segnext-t", num_classes=150).eval().fused()
        torch.manual_seed(0)
        model = build_model("segnext-t", num_classes=150).train()
        opt = torch.optim.AdamW(model.parameters(), lr=6e-5)
        xb, yb = batch(8, 256, 150)

        def switch(fn, on):
            def call():
                ChannelsLastGELU.use_nhwc_view = on
                try:
                    return fn()
                finally:
                    ChannelsLastGELU.use_nhwc_view = True

            return call

        def infer():
            with torch.inference_mode():
                return fused.encode_decode(x)

        for on in (True, False):
            label = "GELU on NHWC view" if on else "GELU on channels-last"
            out[f"segnext SegNeXt-T encode_decode 512², {label}"] = switch(infer, on)
            out[f"segnext SegNeXt-T train step 8×256², {label}"] = switch(lambda: segkit_step(model, opt, xb, yb), on)
    return out


def worker(only: list[str] | None) -> None:
    import torch

    torch.set_num_threads(2)
    from segkit.runtime import tune_cpu_allocator

    tune_cpu_allocator()
    fns = calls(only)
    sys.stdout.write(json.dumps({"names": list(fns), "machine": __import__("latency").machine()}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        name = line.rstrip("\n")
        t0 = time.perf_counter()
        fns[name]()
        sys.stdout.write(json.dumps((time.perf_counter() - t0) * 1e3) + "\n")
        sys.stdout.flush()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--only", nargs="*", default=None, help="groups: gelu upsample conv1x1 msca segnext")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    if args.worker:
        worker(args.only)
        return 0
    cmd = [sys.executable, __file__, "--worker"] + (["--only", *args.only] if args.only else [])
    envs = {"native": dict(os.environ), "avx2": {**os.environ, **isa.AVX2_ENV}}
    procs, info = {}, {}
    for key, env in envs.items():
        procs[key] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
        info[key] = json.loads(procs[key].stdout.readline())
    names = info["native"]["names"]

    def run(key: str, name: str) -> float:
        procs[key].stdin.write(name + "\n")
        procs[key].stdin.flush()
        return json.loads(procs[key].stdout.readline())

    load_before = os.getloadavg()[0]
    times = {key: {n: [] for n in names} for key in procs}
    for r in range(args.warmup + args.rounds):
        for key in list(procs) if r % 2 == 0 else list(procs)[::-1]:
            for n in names if r % 2 == 0 else names[::-1]:
                t = run(key, n)
                if r >= args.warmup:
                    times[key][n].append(round(t, 3))
        print(f"round {r + 1}/{args.warmup + args.rounds}", flush=True)
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()
    res = dict(
        command="python benchmarks/avx2_kernels.py " + " ".join(sys.argv[1:] if argv is None else argv),
        date=time.strftime("%Y-%m-%d %H:%M:%S"),
        machine={k: v["machine"] for k, v in info.items()},
        threads=2,
        warmup=args.warmup,
        rounds=args.rounds,
        load_before=round(load_before, 2),
        load_after=round(os.getloadavg()[0], 2),
        times_ms=times,
        median_ms={k: {n: round(statistics.median(v), 3) for n, v in t.items()} for k, t in times.items()},
        min_ms={k: {n: round(min(v), 3) for n, v in t.items()} for k, t in times.items()},
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "avx2_kernels.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "avx2_kernels.md").write_text(markdown(res))
    print(markdown(res))
    return 0


def markdown(res: dict) -> str:
    m = res["machine"]["native"]
    lines = [
        f"<!-- generated by `{res['command']}` -->",
        "",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs; native = {isa.isa_label(m)}; AVX2 = "
        f"{isa.isa_label(res['machine']['avx2'])}. 2 threads, float32; the two ISAs in two processes, "
        f"alternating call by call; {res['warmup']} warm-up + {res['rounds']} rounds; load average "
        f"{res['load_before']} before, {res['load_after']} after ({res['date']}).",
        "",
        "| call | native median ms | native min ms | AVX2 median ms | AVX2 min ms | AVX2 / native (min) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for n in res["median_ms"]["native"]:
        a, b = res["min_ms"]["native"][n], res["min_ms"]["avx2"][n]
        lines.append(
            f"| {n} | {res['median_ms']['native'][n]:.2f} | {a:.2f} | {res['median_ms']['avx2'][n]:.2f} | "
            f"{b:.2f} | {b / a:.2f}× |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
