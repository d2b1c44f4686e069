"""The label path alone: ``resize_argmax`` on decoder logits against the network that produced them (CPU).

    python benchmarks/label_path.py [--runs 20] [--warmup 3] [--emulate-avx2]
                                    [--compare-with OLD_INFERENCE_PY] [--tag _x]

What ``Segmentor.predict`` adds to ``encode_decode`` at 512² with 150 classes (whole inference,
batch 1, 2 threads, float32): :func:`segkit.models.inference.resize_argmax` on the decoder's
logits (1/4 size for SegFormer-B0, 1/8 for SegNeXt-T, channels-last as the heads return them).
Timed round-robin in one process, on a CamVid photo (as ``benchmarks/latency.py``) and on
Gaussian noise (random weights on noise: the worst case, few uniform blocks), next to
``encode_decode`` itself and to the reference's ``F.interpolate(...).argmax(1)``.

``--compare-with`` loads another version of ``segkit/models/inference.py`` (e.g.
``git show <rev>:segkit/models/inference.py > /tmp/inference_old.py``) and times its
``resize_argmax`` in the same rounds: an A/B of a change to the label path. The labels of both
versions and of the reference are compared (differing pixels are reported, not hidden).

Also reported: the share of used decoder blocks whose pixels all have one arg-max (labelled
without arithmetic by the current path). Writes ``benchmarks/results/label_path{_avx2}{tag}.{json,md}``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import isa  # noqa: E402  (before torch: --emulate-avx2 re-executes with the ISA caps set)

isa.reexec_if_requested()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from latency import photo, run_info, time_round_robin  # noqa: E402


def uniform_share(logits: torch.Tensor) -> float:
    """Share of 2×2 decoder blocks (the blocks of a ×4 / ×8 resize) whose four pixels have one arg-max."""
    top = logits[0].argmax(0)
    same = (top[:-1, :-1] == top[1:, :-1]) & (top[:-1, :-1] == top[:-1, 1:]) & (top[:-1, :-1] == top[1:, 1:])
    return float(same.float().mean())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compare-with", default=None, help="path of another inference.py to A/B")
    p.add_argument(isa.FLAG, action="store_true", help="cap PyTorch's kernels at AVX2 (benchmarks/isa.py)")
    p.add_argument("--tag", default="")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)

    from segkit import build_model
    from segkit.models.inference import resize_argmax
    from segkit.runtime import tune_cpu_allocator

    tune_cpu_allocator()
    torch.set_num_threads(args.threads)
    other = None
    if args.compare_with:
        spec = importlib.util.spec_from_file_location("inference_other", args.compare_with)
        other = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(other)
    x, source = photo((512, 512))
    noise = torch.randn(1, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    sizes = [(512, 512), (512, 512)]
    res = dict(**run_info("label_path.py", argv), input=source, threads=args.threads, runs=args.runs, models={})
    res["load_before"] = round(os.getloadavg()[0], 2)
    for name in ("segformer-b0", "segnext-t"):
        torch.manual_seed(0)
        m = build_model(name, num_classes=150).eval().fused()
        with torch.inference_mode():
            logits = {"photo": m.encode_decode(x), "noise": m.encode_decode(noise)}
        entry: dict = {"logits": list(logits["photo"].shape), "uniform_block_share": {}, "differing_pixels": {}}
        fns = {"encode_decode": lambda _, m=m: m.encode_decode(x)}
        for kind, lg in logits.items():
            ref = F.interpolate(lg, (512, 512), mode="bilinear", align_corners=False).argmax(1)
            ours = resize_argmax(lg, sizes)
            entry["uniform_block_share"][kind] = round(uniform_share(lg), 4)
            entry["differing_pixels"][f"{kind}: current vs reference"] = int((ours != ref).sum())
            fns[f"resize_argmax {kind}"] = lambda _, lg=lg: resize_argmax(lg, sizes)
            fns[f"reference {kind}"] = lambda _, lg=lg: F.interpolate(
                lg, (512, 512), mode="bilinear", align_corners=False
            ).argmax(1)
            if other is not None:
                entry["differing_pixels"][f"{kind}: compared version vs current"] = int(
                    (other.resize_argmax(lg, sizes) != ours).sum()
                )
                fns[f"compared resize_argmax {kind}"] = lambda _, lg=lg: other.resize_argmax(lg, sizes)
        entry["timings"] = time_round_robin(fns, x, args.warmup, args.runs)
        res["models"][name] = entry
        print(name, {k: v["median_ms"] for k, v in entry["timings"].items()}, entry["differing_pixels"], flush=True)
    res["load_after"] = round(os.getloadavg()[0], 2)
    res["compared_with"] = args.compare_with
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"label_path{isa.suffix()}{args.tag}"
    (out / f"{stem}.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(res))
    print(markdown(res))
    return 0


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        f"<!-- generated by `{res['command']}` -->",
        "",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, {isa.isa_label(m)}; torch {res['torch']}; "
        f"{res['threads']} threads, batch 1, 512², 150 classes, fp32, fused models; {res['runs']} round-robin "
        f"rounds; load average {res['load_before']} before, {res['load_after']} after ({res['date']}). "
        f"Input: {res['input']} / Gaussian noise.",
        "",
        "| model | input | `encode_decode` ms | `resize_argmax` ms | "
        + ("compared version ms | " if res["compared_with"] else "")
        + "`interpolate().argmax` ms | uniform 2×2 blocks |",
        "|---|---|---:|---:|" + ("---:|" if res["compared_with"] else "") + "---:|---:|",
    ]
    for name, e in res["models"].items():
        t = {k: v["median_ms"] for k, v in e["timings"].items()}
        for kind in ("photo", "noise"):
            cells = [t["encode_decode"], t[f"resize_argmax {kind}"]]
            if res["compared_with"]:
                cells.append(t[f"compared resize_argmax {kind}"])
            cells.append(t[f"reference {kind}"])
            lines.append(
                f"| {name} | {kind} | "
                + " | ".join(f"{c:.1f}" for c in cells)
                + f" | {100 * e['uniform_block_share'][kind]:.1f} % |"
            )
    lines += [
        "",
        "Differing labels (pixels of 512²): "
        + "; ".join(f"{name} {k} {v}" for name, e in res["models"].items() for k, v in e["differing_pixels"].items())
        + ".",
    ]
    if res["compared_with"]:
        lines.append(f"Compared version: `{res['compared_with']}`.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
