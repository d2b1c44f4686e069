"""Where SegNeXt-T's inference time goes, part by part: segkit's fused model against the mmseg-style reference.

    python benchmarks/layer_profile.py [--runs 15] [--warmup 3] [--emulate-avx2] [--tag _avx2]

The two networks of ``benchmarks/latency.py``'s SegNeXt-T row (segkit's ``Segmentor.fused`` copy and
``benchmarks/reference_segnext.py``, same weights, 3×512×512, 150 classes, batch 1, float32, 2 threads,
``torch.inference_mode``) are timed whole and part by part: forward pre/post hooks on each stage's patch
embedding, each block, the MSCA unit inside each block (``spatial_gating_unit``), each stage's norm, and
the head's ``squeeze`` / ``hamburger`` / ``align`` / ``conv_seg``. The two models alternate call by call.
What no hook covers (layout changes between stages, the head's resize and concatenation of the four
feature maps, the final resize of the logits to 512²) is the row "between the parts". A hook costs a few
microseconds, so the parts sum to slightly more than an un-hooked call; the whole-call column is timed
without hooks.

With ``--ops`` it also prints torch.profiler's op table (self CPU time, grouped by op and input shape)
for each model. Writes ``benchmarks/results/layer_profile{tag}.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import isa  # noqa: E402  (before torch: --emulate-avx2 re-executes with the ISA caps set)

isa.reexec_if_requested()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from latency import build_segnext_pair, machine, time_round_robin  # noqa: E402

# a module's qualified name → the part it is timed under (first match wins; None = not hooked)
PARTS = [
    (r"^backbone\.patch_embed(\d)$", "stage {0}: patch embedding"),
    (r"^backbone\.block(\d)\.\d+\.(?:attn\.)?spatial_gating_unit$", "stage {0}: MSCA (inside the blocks)"),
    (r"^backbone\.block(\d)\.\d+$", "stage {0}: blocks"),
    (r"^backbone\.norm(\d)$", "stage {0}: norm"),
    (r"^decode_head\.(squeeze|hamburger|align|conv_seg)$", "head: {0}"),
]


def part_of(name: str) -> str | None:
    for pattern, label in PARTS:
        m = re.match(pattern, name)
        if m:
            return label.format(*m.groups())
    return None


def build():
    torch.manual_seed(0)
    segnext, ref = build_segnext_pair()
    fused = segnext.fused()
    return {
        "segkit SegNeXt-T, fused": (fused, fused),
        "mmseg-style SegNeXt-T": (ref, lambda t: F.interpolate(ref(t), t.shape[-2:], mode="bilinear")),
    }


class PartTimer:
    """Forward hooks that add each hooked module's wall time (ms) to ``self.ms[part]`` for the current call."""

    def __init__(self, model: torch.nn.Module):
        self.ms: dict[str, float] = defaultdict(float)
        self.handles = []
        for name, module in model.named_modules():
            part = part_of(name)
            if part is not None:
                self.handles.append(module.register_forward_pre_hook(self._start(name)))
                self.handles.append(module.register_forward_hook(self._stop(name, part)))
        self.started: dict[str, float] = {}

    def _start(self, name):
        def hook(module, args):
            self.started[name] = time.perf_counter()

        return hook

    def _stop(self, name, part):
        def hook(module, args, out):
            self.ms[part] += (time.perf_counter() - self.started.pop(name)) * 1e3

        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


@torch.inference_mode()
def profile(models: dict, x: torch.Tensor, runs: int, warmup: int) -> dict:
    timers = {name: PartTimer(module) for name, (module, _) in models.items()}
    for _ in range(warmup):
        for _, call in models.values():
            call(x)
    parts = {name: defaultdict(list) for name in models}
    totals = {name: [] for name in models}
    for r in range(runs):
        for name, (_, call) in models.items():
            timers[name].ms.clear()
            t = time.perf_counter()
            call(x)
            total = (time.perf_counter() - t) * 1e3
            for part, ms in timers[name].ms.items():
                parts[name][part].append(ms)
            covered = sum(ms for part, ms in timers[name].ms.items() if "inside" not in part)
            parts[name]["between the parts (layouts, head resize + concat, logits resize)"].append(total - covered)
            totals[name].append(total)
    for timer in timers.values():
        timer.remove()
    whole = time_round_robin({name: call for name, (_, call) in models.items()}, x, 0, runs)  # un-hooked
    return {
        name: dict(
            whole_ms=whole[name]["median_ms"],
            hooked_ms=round(statistics.median(totals[name]), 2),
            parts_ms={p: round(statistics.median(v), 2) for p, v in parts[name].items()},
        )
        for name in models
    }


@torch.inference_mode()
def op_tables(models: dict, x: torch.Tensor) -> dict:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    out = {}
    for name, (_, call) in models.items():
        call(x)
        with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(3):
                call(x)
        out[name] = prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=25)
    return out


def markdown(res: dict) -> str:
    names = list(res["models"])
    a, b = (res["models"][n] for n in names)
    parts = list(dict.fromkeys([*a["parts_ms"], *b["parts_ms"]]))
    m = res["machine"]
    lines = [
        f"<!-- generated by `{res['command']}` -->",
        "",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, {isa.isa_label(m)}; "
        f"torch {res['torch']}; {res['threads']} threads, batch 1, 3×512×512, "
        f"150 classes, float32, eval, `torch.inference_mode()`; {res['warmup']} warm-up + {res['runs']} timed "
        f"rounds, the two models alternating; load average {res['load_before']} before, {res['load_after']} "
        f"after ({res['date']}). Medians in ms.",
        "",
        f"| part | {names[0]} | {names[1]} | ratio |",
        "|---|---:|---:|---:|",
    ]
    for p in parts:
        x, y = a["parts_ms"].get(p), b["parts_ms"].get(p)
        ratio = f"{x / y:.2f}" if x is not None and y else "–"
        lines.append(f"| {p} | {x if x is not None else '–'} | {y if y is not None else '–'} | {ratio} |")
    lines.append(
        f"| **whole call, hooked** | {a['hooked_ms']} | {b['hooked_ms']} | {a['hooked_ms'] / b['hooked_ms']:.2f} |"
    )
    lines.append(
        f"| **whole call, no hooks** | {a['whole_ms']} | {b['whole_ms']} | {a['whole_ms'] / b['whole_ms']:.2f} |"
    )
    lines.append("")
    lines.append("MSCA rows are inside the block rows and are not added to the total.")
    for name, table in res.get("ops", {}).items():
        lines += ["", f"### torch.profiler ops: {name} (3 calls)", "", "```", table, "```"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    import os

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ops", action="store_true", help="also print torch.profiler's op tables")
    ap.add_argument("--tag", default="", help="suffix of the result files")
    ap.add_argument(isa.FLAG, action="store_true", help="cap PyTorch's kernels at AVX2 (benchmarks/isa.py)")
    args = ap.parse_args(argv)

    from segkit.runtime import tune_cpu_allocator

    tune_cpu_allocator()
    torch.set_num_threads(args.threads)
    models = build()
    x = torch.randn(1, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    load_before = os.getloadavg()[0]
    res = dict(
        command="python benchmarks/layer_profile.py " + " ".join(sys.argv[1:] if argv is None else argv),
        machine=machine(),
        torch=torch.__version__,
        threads=args.threads,
        runs=args.runs,
        warmup=args.warmup,
        load_before=round(load_before, 2),
        date=time.strftime("%Y-%m-%d %H:%M:%S"),
        models=profile(models, x, args.runs, args.warmup),
    )
    res["load_after"] = round(os.getloadavg()[0], 2)
    if args.ops:
        res["ops"] = op_tables(models, x)
    out = ROOT / "benchmarks" / "results" / f"layer_profile{args.tag}"
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
