"""Training-step speed on the CPU: segkit SegFormer-B0 vs Hugging Face transformers and segkit SegNeXt-T vs
an mmseg-style SegNeXt-T (same weights, same loss, one process, interleaved).

    python benchmarks/train_speed.py [--runs 10] [--warmup 3] [--batch 8] [--size 256] [--compile]
                                     [--emulate-avx2] [--only-fp32] [--tag _before]

A step is what the trainer does per iteration: forward, loss, backward, ``AdamW.step`` and
``zero_grad`` — batch 8 of 3×256×256 normalised random images, 150 classes, random labels with
5 % ignored (255). Both sides get the same weights (the transformers model's ``state_dict``
loaded into segkit through its key converter) and the same loss: logits bilinearly upsampled
to the label size (``align_corners=False``), cross-entropy averaged over non-ignored pixels
(transformers' ``SegformerForSemanticSegmentation(labels=…)``; segkit ``loss_avg="valid"``).
The losses are compared at the first step.

Variants of segkit's step: float32 eager (the default), ``channels_last``, bf16 autocast (CPUs
with native bfloat16; loss in float32) and, with ``--compile``, ``torch.compile`` (inductor),
whose compile time is reported separately. Steps of all variants run round-robin, so load from
other processes hits all alike; medians are reported.

There is no mmseg in this environment (mmcv has no wheel for this torch), so SegNeXt-T is compared
with ``benchmarks/reference_segnext.py``: the official MSCAN + LightHamHead structure (token layout
between blocks, separate BN / layer-scale / strip-conv ops, NCHW float32, autograd through the NMF
iterations), loaded with the same weights as segkit's model through segkit's mmseg key converter;
the first-step losses are compared as for SegFormer. mmseg's own step time recorded on another
machine (``MMSEG_SEGNEXT_T_S``) is printed for reference only.

Writes ``benchmarks/results/train_speed.json`` and ``train_speed.md``; with ``--emulate-avx2``
(kernels capped at AVX2, ``benchmarks/isa.py``) ``train_speed_avx2.*``; ``--tag`` appends to the
names. ``--only-fp32`` times the two float32 references and segkit's float32 steps only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import isa  # noqa: E402  (before torch: --emulate-avx2 re-executes with the ISA caps set)

isa.reexec_if_requested()

import torch  # noqa: E402
from latency import busy_cpu_seconds, foreign_cpu_share, run_info, wait_for_quiet  # noqa: E402

MMSEG_SEGNEXT_T_S = 0.94  # mmseg SegNeXt-T step, batch 8, 256², recorded on an Intel Xeon (issue 13)
TARGET_HF = 1.3  # segkit SegFormer-B0 step >= 1.3x faster than transformers
TARGET_MMSEG = 1.5  # segkit SegNeXt-T step >= 1.5x faster than mmseg


def batch(n: int, size: int, classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.randint(0, classes, (n, size, size), generator=g)
    y[torch.rand(n, size, size, generator=g) < 0.05] = 255
    return x, y


def segkit_step(model, opt, x, y, amp=None):
    from segkit.runtime import autocast

    with autocast(amp, "cpu"):
        loss = model.loss(x, y)["loss"]
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def hf_step(model, opt, x, y):
    loss = model(pixel_values=x, labels=y).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def build(args):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    import segkit
    from segkit.runtime import cpu_bf16_native

    torch.manual_seed(0)
    hf = SegformerForSemanticSegmentation(SegformerConfig(num_labels=args.classes, semantic_loss_ignore_index=255))
    steps = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hf.pth"
        torch.save(hf.state_dict(), path)

        def segformer():
            m = segkit.build_model("segformer-b0", num_classes=args.classes)
            segkit.load_checkpoint(m, path)
            return m.train()

        extra = () if args.only_fp32 else ("channels_last",) + (("bf16",) if cpu_bf16_native() else ())
        variants = {"segformer-b0 fp32": (segformer, None, False)}
        for v in extra:
            variants[f"segformer-b0 {v}"] = (segformer, "bf16" if v == "bf16" else None, v == "channels_last")
        for v in ("fp32",) + extra:
            variants[f"segnext-t {v}"] = (
                lambda: segkit.build_model("segnext-t", num_classes=args.classes).train(),
                "bf16" if v == "bf16" else None,
                v == "channels_last",
            )
        for name, (make, amp, cl) in variants.items():
            torch.manual_seed(0)
            m = make()
            if cl:
                m = m.to(memory_format=torch.channels_last)
            opt = torch.optim.AdamW(m.parameters(), lr=6e-5)
            steps[name] = (m, opt, amp, cl)
        from reference_segnext import SegNeXtT

        torch.manual_seed(0)
        ref = SegNeXtT(args.classes)
        torch.save(ref.state_dict(), path)
        for name, (m, *_rest) in steps.items():
            if name.startswith("segnext-t"):
                segkit.load_checkpoint(m, path, verbose=False)
    hf.train()
    ref.train()
    return hf, torch.optim.AdamW(hf.parameters(), lr=6e-5), ref, torch.optim.AdamW(ref.parameters(), lr=6e-5), steps


def ref_step(model, opt, x, y):
    loss = model.loss(x, y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--classes", type=int, default=150)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="also time torch.compile-d segkit steps (slow to compile)")
    p.add_argument("--max-load", type=float, default=1.0)
    p.add_argument("--wait", type=float, default=600.0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--only-fp32", action="store_true", help="no channels_last / bf16 variants")
    p.add_argument(isa.FLAG, action="store_true", help="cap PyTorch's kernels at AVX2 (benchmarks/isa.py)")
    p.add_argument("--tag", default="", help="appended to the result file names, e.g. _before")
    args = p.parse_args(argv)

    from segkit.runtime import tune_cpu_allocator

    allocator = tune_cpu_allocator()
    torch.set_num_threads(args.threads)
    hf, hf_opt, ref, ref_opt, steps = build(args)
    x, y = batch(args.batch, args.size, args.classes)
    x_cl = x.contiguous(memory_format=torch.channels_last)

    # same weights, same loss: compare the first-step losses before any update, in eval mode
    # (dropout and drop path draw different random masks in the two implementations)
    sk = steps["segformer-b0 fp32"][0]
    hf.eval(), sk.eval()
    with torch.no_grad():
        l_hf = float(hf(pixel_values=x, labels=y).loss)
        l_sk = float(sk.loss(x, y)["loss"])
    hf.train(), sk.train()
    print(f"first-step loss: transformers {l_hf:.6f}, segkit {l_sk:.6f}", flush=True)
    sn = steps["segnext-t fp32"][0]
    ref.eval(), sn.eval()
    nmf = next(m for m in sn.modules() if type(m).__name__ == "NMF2D")
    ref.decode_head.hamburger.ham.bases = nmf.eval_bases(ref.decode_head.hamburger.ham_in.conv.in_channels)
    with torch.no_grad():
        l_ref = float(ref.loss(x, y))
        l_sn = float(sn.loss(x, y)["loss"])
    ref.decode_head.hamburger.ham.bases = None  # training draws fresh bases per step, as the official code
    ref.train(), sn.train()
    print(f"first-step loss: mmseg-style SegNeXt-T {l_ref:.6f}, segkit {l_sn:.6f}", flush=True)

    fns = {
        "transformers segformer-b0 fp32": lambda: hf_step(hf, hf_opt, x, y),
        "mmseg-style segnext-t fp32": lambda: ref_step(ref, ref_opt, x, y),
    }
    for name, (m, opt, amp, cl) in steps.items():
        fns[f"segkit {name}"] = lambda m=m, opt=opt, amp=amp, cl=cl: segkit_step(m, opt, x_cl if cl else x, y, amp)
    compile_s = {}
    if args.compile:
        import segkit
        from segkit.engine.trainer import compile_for_training

        for name in ("segformer-b0", "segnext-t"):
            torch.manual_seed(0)
            m = segkit.build_model(name, num_classes=args.classes).train()
            opt = torch.optim.AdamW(m.parameters(), lr=6e-5)
            compile_for_training(m)  # what train.compile does
            cm = m.loss
            t0 = time.perf_counter()

            def step(cm=cm, opt=opt):
                loss = cm(x, y)["loss"]
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                return loss.detach()

            step()
            compile_s[name] = round(time.perf_counter() - t0, 1)
            fns[f"segkit {name} compiled"] = step
            print(f"compiled {name} in {compile_s[name]} s", flush=True)

    load_before, waited = wait_for_quiet(args.max_load, args.wait)
    for _ in range(args.warmup):
        for fn in fns.values():
            fn()
    times = {n: [] for n in fns}
    busy0, own0, wall0 = busy_cpu_seconds(), sum(__import__("os").times()[:2]), time.perf_counter()
    names = list(fns)
    for r in range(args.runs):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            t = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t)
        print(f"round {r + 1}/{args.runs}", flush=True)
    foreign = foreign_cpu_share(busy0, own0, wall0)
    med = {n: round(statistics.median(ts), 4) for n, ts in times.items()}
    hf_s = med["transformers segformer-b0 fp32"]
    ref_s = med["mmseg-style segnext-t fp32"]
    res = dict(
        **run_info("train_speed.py", argv),
        threads=args.threads,
        allocator=allocator,
        batch=args.batch,
        size=args.size,
        classes=args.classes,
        warmup=args.warmup,
        runs=args.runs,
        load_before=round(load_before, 2),
        load_after=round(__import__("os").getloadavg()[0], 2),
        waited_s=round(waited),
        foreign_cpu_share=None if foreign is None else round(foreign, 3),
        first_step_loss={"transformers": l_hf, "segkit": l_sk},
        first_step_loss_segnext={"mmseg_style": l_ref, "segkit": l_sn},
        median_s=med,
        all_s={n: [round(t, 4) for t in ts] for n, ts in times.items()},
        compile_s=compile_s,
        speedup_vs_transformers={n: round(hf_s / v, 3) for n, v in med.items() if "segformer" in n},
        speedup_vs_mmseg_style={n: round(ref_s / v, 3) for n, v in med.items() if "segnext" in n},
        speedup_vs_mmseg_recorded={n: round(MMSEG_SEGNEXT_T_S / v, 3) for n, v in med.items() if "segnext" in n},
        mmseg_segnext_t_recorded_s=MMSEG_SEGNEXT_T_S,
        targets={"segformer_vs_transformers": TARGET_HF, "segnext_vs_mmseg": TARGET_MMSEG},
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"train_speed{isa.suffix()}{args.tag}"
    (out / f"{stem}.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(res))
    print(markdown(res))
    return 0


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        f"<!-- generated by `{res['command']}` -->",
        "",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, {isa.isa_label(m)}; torch {res['torch']}, "
        "transformers "
        f"{res['transformers']}; {res['threads']} threads; batch {res['batch']} × 3×{res['size']}×{res['size']}, "
        f"{res['classes']} classes; step = forward + loss + backward + AdamW step; {res['warmup']} warm-up + "
        f"{res['runs']} round-robin rounds; load average {res['load_before']} before, "
        f"{res.get('load_after', '?')} after; other processes used "
        f"{'n/a' if res['foreign_cpu_share'] is None else format(res['foreign_cpu_share'], '.0%')} of the CPUs "
        f"({res['date']}). First-step loss: transformers {res['first_step_loss']['transformers']:.5f}, segkit "
        f"{res['first_step_loss']['segkit']:.5f}; mmseg-style SegNeXt-T "
        f"{res['first_step_loss_segnext']['mmseg_style']:.5f}, segkit {res['first_step_loss_segnext']['segkit']:.5f} "
        "(same weights, same loss, eval mode).",
        "",
        "| step | median s | vs transformers SegFormer-B0 | vs mmseg-style SegNeXt-T (same process) "
        f"| vs mmseg SegNeXt-T recorded elsewhere ({res['mmseg_segnext_t_recorded_s']} s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for n, v in res["median_s"].items():
        a = res["speedup_vs_transformers"].get(n)
        b = res["speedup_vs_mmseg_style"].get(n)
        c = res["speedup_vs_mmseg_recorded"].get(n)
        cells = " | ".join(f"{s:.2f}×" if s else "" for s in (a, b, c))
        lines.append(f"| {n} | {v:.3f} | {cells} |")
    if res["compile_s"]:
        times = ", ".join(f"{k} {v} s" for k, v in res["compile_s"].items())
        lines += ["", f"torch.compile time (first step): {times}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
