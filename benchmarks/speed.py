"""Speed of the model zoo and latency scaling with input size; writes ``docs/benchmarks.md``.

Run from the repository root::

    python benchmarks/speed.py                      # zoo at 512x512 + scaling, CPU, 2 threads
    python benchmarks/speed.py --skip-zoo           # scaling only
    python benchmarks/speed.py --device cuda --threads 8 --doc docs/benchmarks_gpu.md

Every number comes from :func:`segkit.tools.benchmark.benchmark` (protocol in its module
doc: random weights, ``Segmentor.predict`` under ``inference_mode``, warm-up, median of the
timed runs), each measurement in a fresh spawned process. Outputs:

* ``benchmarks/results/<device>_zoo.json`` and ``<device>_scaling.json``: every result with
  its full latency list, the machine description, the command, the load average before and
  after (``--skip-zoo`` / ``--skip-scaling`` keep a part's earlier file and re-render the report);
* ``docs/benchmarks_<device>_scaling.png``: latency against input size (log–log);
* the Markdown report (``--doc``, default ``docs/benchmarks.md``).

The scaling part has a time budget (``--budget-s``): before each measurement its duration
is predicted from the model's previous size (latency ∝ pixels, × number of calls); a
measurement that would overrun the budget is skipped and marked so in the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import segkit  # noqa: E402
from segkit.tools.benchmark import benchmark, machine_info  # noqa: E402

SCALING_MODELS = ["segnext-t", "segnext-b", "segformer-b0", "segformer-b2"]
SCALING_SIZES = [(512, 512), (1024, 1024), (1024, 2048), (2048, 2048)]  # (H, W)


def _size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def _gmacs(model, shape) -> float | None:
    try:
        from segkit.tools.flops import count_flops

        return count_flops(model, shape)["gmacs"]
    except Exception:  # FLOPs are a courtesy column; never fail the benchmark on them
        return None


def _measure(name: str, num_classes: int, shape, with_gmacs: bool, kwargs: dict) -> dict:
    """Build ``name`` and benchmark it (runs in a fresh worker process, see :func:`measure`)."""
    from segkit.runtime import tune_cpu_allocator

    tune_cpu_allocator()  # as the segkit CLI does (segkit/runtime.py)
    model = segkit.build_model(name, num_classes=num_classes)
    t0 = time.perf_counter()
    res = benchmark(model, shape, **kwargs)
    res["wall_s"] = time.perf_counter() - t0
    if with_gmacs:
        res["gmacs"] = _gmacs(model, tuple(shape))
    return res


def measure(name: str, num_classes: int, shape, with_gmacs: bool = False, **kwargs) -> dict:
    """One measurement in a fresh (spawned) process: no allocator state, caches or threads left over
    from the previous model can bias its time or its peak-RSS growth."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_measure, name, num_classes, tuple(shape), with_gmacs, kwargs).result()


def run_zoo(args, log) -> list[dict]:
    results = []
    for name in args.models or segkit.list_models():
        res = measure(
            name,
            args.num_classes,
            args.zoo_shape,
            with_gmacs=True,
            device=args.device,
            warmup=args.zoo_warmup,
            runs=args.zoo_runs,
            threads=args.threads,
        )
        results.append(res)
        log(
            f"zoo {name:<22} {res['latency_ms']['median']:9.1f} ms (min {res['latency_ms']['min']:9.1f})  "
            f"{res['fps']:7.2f} FPS  ({res['wall_s']:.0f} s)"
        )
    return results


def run_scaling(args, log) -> list[dict]:
    """Size by size (all models at 512², then all at 1024², …) so that the time budget cuts the
    largest sizes for every model rather than whole models."""
    results = []
    start = time.perf_counter()
    prev: dict[str, tuple[int, float]] = {}  # model -> (pixels, median seconds) at its last measured size
    for h, w in args.sizes:
        runs = args.large_runs if h * w > 1024 * 1024 else args.scaling_runs
        calls = max(args.scaling_warmup, 1) + runs
        for name in args.scaling_models:
            if name in prev:
                predicted = prev[name][1] * (h * w) / prev[name][0] * calls
                left = args.budget_s - (time.perf_counter() - start)
                if predicted > left:
                    log(f"scaling {name} {h}x{w}: skipped (predicted {predicted:.0f} s > {left:.0f} s left)")
                    results.append(
                        {"model": name, "settings": {"shape": [h, w]}, "skipped": True, "predicted_s": predicted}
                    )
                    continue
            res = measure(
                name,
                args.scaling_classes,
                (h, w),
                device=args.device,
                warmup=args.scaling_warmup,
                runs=runs,
                threads=args.threads,
            )
            prev[name] = (h * w, res["latency_ms"]["median"] / 1e3)
            results.append(res)
            log(f"scaling {name:<14} {h}x{w}: {res['latency_ms']['median']:9.1f} ms")
    return results


def plot_scaling(results: list[dict], path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    models = list(dict.fromkeys(r["model"] for r in results))
    for name in models:
        pts = [
            (r["settings"]["shape"][0] * r["settings"]["shape"][1] / 1e6, r["latency_ms"]["median"] / 1e3)
            for r in results
            if r["model"] == name and not r.get("skipped")
        ]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=name)
    ticks = sorted({r["settings"]["shape"][0] * r["settings"]["shape"][1] / 1e6 for r in results})
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:.2g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("input size (megapixels): 512², 1024², 2048×1024, 2048²")
    ax.set_ylabel("latency, median (s)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def _fmt(v, digits=1):
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:,.{digits}f}"


def _run_line(part: dict) -> str:
    lb, la = part["load_before"], part["load_after"]
    line = (
        f"`{part['command']}` on {part['started']}, {part['wall_s'] / 60:.1f} min; 1/5/15-min load average "
        f"before {', '.join(f'{v:.1f}' for v in lb)}, after {', '.join(f'{v:.1f}' for v in la)} "
        f"(on {part['machine']['logical_cores']} cores)"
    )
    return line + (f". **Note:** {part['note']}" if part.get("note") else "")


def write_doc(doc_path: Path, zoo: dict | None, scaling: dict | None, png: Path | None) -> str:
    machine = (zoo or scaling)["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `benchmarks/speed.py`; raw results (every timed call, full machine description) in "
        "`benchmarks/results/`. Protocol (`segkit/tools/benchmark.py`): random weights (speed does not depend on "
        "them); one random input created once; timed call = `Segmentor.predict` (forward + bilinear upsampling "
        "to the input size + softmax + arg-max) under `torch.inference_mode()`; untimed warm-up call(s), then "
        "timed calls; latency = median of the timed calls, FPS = batch / median; batch 1, whole-image inference, "
        "float32. Each measurement runs in a fresh process (unless a run's note says otherwise), with the glibc "
        "allocator "
        "thresholds that the `segkit` CLI sets (`segkit/runtime.py`). CPU peak memory = growth of the process' peak "
        "resident set (`VmHWM`) from just before the first call.",
        "",
        "## Machine",
        "",
        f"* CPU: {machine['cpu']}, {machine['logical_cores']} logical cores ({machine['usable_cores']} usable); "
        f"PyTorch {machine['torch']} with **{machine['torch_threads']} intra-op threads**; Python "
        f"{machine['python']}, NumPy {machine['numpy']}; {machine['platform']}.",
        "* **Load:** each run below gives the load averages before and after (for 2 cores: anything above 2 "
        "means the benchmark got only part of the CPU, and its numbers are pessimistic). The *min* column is the "
        "least disturbed call; compare models within a table, not with other machines.",
        "* These are `Segmentor.predict` figures (forward + resize + softmax + arg-max over K×H×W, 1 warm-up "
        "and few timed calls in a fresh process), so they sit above the `forward`-only medians of "
        "`docs/model_zoo.md` (e.g. SegNeXt-T at 512²: ~410 ms here, 172 ms there); the gap has not been "
        "broken down further.",
        "",
    ]
    if zoo:
        res = zoo["results"]
        st = res[0]["settings"]
        lines += [
            f"## Zoo on the CPU ({st['shape'][0]}×{st['shape'][1]}, {res[0]['num_classes']} classes, "
            f"{st['warmup']} warm-up + {st['runs']} timed calls)",
            "",
            f"Run: {_run_line(zoo)}.",
            "GMACs: the papers' FLOP convention (`segkit flops`, 1 MAC = 1 FLOP), at the same size.",
            "",
            "| model | params (M) | GMACs | median (ms) | min (ms) | max (ms) | FPS (median) | peak memory (MB) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in res:
            lat = r["latency_ms"]
            lines.append(
                f"| {r['model']} | {r['params'] / 1e6:.1f} | {_fmt(r.get('gmacs'))} | {_fmt(lat['median'])} | "
                f"{_fmt(lat['min'])} | {_fmt(lat['max'])} | {_fmt(r['fps'], 2)} | "
                f"{_fmt(r['memory'].get('peak_mb'), 0)} |"
            )
        lines.append("")
    if scaling:
        res = scaling["results"]
        sizes = list(dict.fromkeys(tuple(r["settings"]["shape"]) for r in res))
        done = [r for r in res if not r.get("skipped")]
        runs = sorted({(r["settings"]["shape"][0] * r["settings"]["shape"][1], r["settings"]["runs"]) for r in done})
        lines += [
            f"## Latency against input size (CPU, {done[0]['num_classes']} classes)",
            "",
            f"Run: {_run_line(scaling)}.",
            f"Median latency in seconds (min in parentheses); {done[0]['settings']['warmup']} warm-up call, timed "
            f"calls per size: {', '.join(f'{n} at {p / 1e6:.2g} MP' for p, n in runs)} — few calls at the large "
            f"sizes to bound the time (budget {scaling['budget_s'] / 60:.0f} min; a size predicted to overrun it is "
            "skipped). Sizes are H×W. Whole-image inference at every size (Cityscapes evaluation at 1024×2048 "
            "uses sliding 1024² windows instead). Last column: latency growth from the first to the last size "
            f"measured; the pixel count grows {sizes[-1][0] * sizes[-1][1] / (sizes[0][0] * sizes[0][1]):.0f}× "
            "over the columns.",
            "",
            "| model | " + " | ".join(f"{h}×{w}" for h, w in sizes) + " | growth (×) |",
            "|---|" + "---:|" * (len(sizes) + 1),
        ]
        for name in dict.fromkeys(r["model"] for r in res):
            cells, meds = [], []
            for size in sizes:
                r = next((x for x in res if x["model"] == name and tuple(x["settings"]["shape"]) == size), None)
                if r is None:
                    cells.append("–")
                elif r.get("skipped"):
                    t = r["predicted_s"]
                    cells.append(f"skipped (~{t:.0f} s)" if t < 90 else f"skipped (~{t / 60:.0f} min)")
                else:
                    meds.append(r["latency_ms"]["median"] / 1e3)
                    cells.append(f"{meds[-1]:.2f} ({r['latency_ms']['min'] / 1e3:.2f})")
            growth = f"{meds[-1] / meds[0]:.1f}" if len(meds) > 1 else "–"
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {growth} |")
        lines.append("")
        if png is not None:
            lines += [f"![latency against input size]({os.path.relpath(png, doc_path.parent)})", ""]
    lines += [
        "## GPU",
        "",
        "Not measured: no GPU was available where these numbers were taken. `segkit benchmark MODEL --device cuda "
        "[--amp fp16|bf16] [--channels-last] [--compile]` and `python benchmarks/speed.py --device cuda` implement "
        "the GPU protocol (CUDA synchronisation around each timed call, `torch.cuda.max_memory_allocated` for the "
        "peak), but those code paths have not been run.",
        "",
    ]
    return "\n".join(lines)


def _part(command: str, args, run, log) -> dict:
    import datetime

    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    load_before, t0 = os.getloadavg(), time.perf_counter()
    results = run(args, log)
    machine = machine_info(args.device)
    machine["torch_threads"] = args.threads or machine["torch_threads"]
    return {
        "command": command,
        "started": started,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "wall_s": time.perf_counter() - t0,
        "budget_s": args.budget_s,
        "machine": machine,
        "results": results,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--models", nargs="*", help="zoo models to time (default: the whole zoo)")
    p.add_argument("--num-classes", type=int, default=150, help="classes for the zoo table (ADE20K: 150)")
    p.add_argument("--zoo-shape", type=int, nargs=2, default=[512, 512], metavar=("H", "W"))
    p.add_argument("--zoo-warmup", type=int, default=1)
    p.add_argument("--zoo-runs", type=int, default=3)
    p.add_argument("--scaling-models", nargs="+", default=SCALING_MODELS)
    p.add_argument("--sizes", type=_size, nargs="+", default=SCALING_SIZES, metavar="HxW")
    p.add_argument("--scaling-classes", type=int, default=19, help="classes for the scaling runs (Cityscapes: 19)")
    p.add_argument("--scaling-warmup", type=int, default=1)
    p.add_argument("--scaling-runs", type=int, default=3)
    p.add_argument("--large-runs", type=int, default=1, help="timed runs above 1024x1024")
    p.add_argument("--budget-s", type=float, default=600.0, help="time budget of the scaling part")
    p.add_argument("--skip-zoo", action="store_true", help="keep the zoo results already in --results")
    p.add_argument("--skip-scaling", action="store_true", help="keep the scaling results already in --results")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks.md"))
    args = p.parse_args(argv)

    def log(msg):
        print(msg, flush=True)

    start = time.perf_counter()
    argv = sys.argv[1:] if argv is None else list(argv)
    command = "python benchmarks/speed.py" + (" " + shlex.join(argv) if argv else "")
    dev = torch.device(args.device).type
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    zoo_path, scaling_path = results / f"{dev}_zoo.json", results / f"{dev}_scaling.json"
    png = Path(args.doc).parent / f"benchmarks_{dev}_scaling.png"
    if not args.skip_zoo:
        zoo_path.write_text(json.dumps(_part(command, args, run_zoo, log), indent=1) + "\n")
    if not args.skip_scaling:
        part = _part(command, args, run_scaling, log)
        scaling_path.write_text(json.dumps(part, indent=1) + "\n")
    zoo = json.loads(zoo_path.read_text()) if zoo_path.is_file() else None
    scaling = json.loads(scaling_path.read_text()) if scaling_path.is_file() else None
    if scaling:
        done = [r for r in scaling["results"] if not r.get("skipped")]
        plot_scaling(
            scaling["results"],
            png,
            f"segkit latency vs input size ({dev}, "
            f"{scaling['machine']['torch_threads']} threads, "
            f"{done[0]['num_classes']} classes)",
        )
    if zoo is None and scaling is None:
        log("nothing measured and no earlier results: no report written")
        return 1
    doc = Path(args.doc)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(write_doc(doc, zoo, scaling, png if scaling else None))
    log(
        f"wrote {doc}, {results}/"
        + (f", {png}" if scaling else "")
        + f" ({(time.perf_counter() - start) / 60:.1f} min)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
