"""Regenerate the parameters / GFLOPs tables against the papers, one per model family.

    python benchmarks/flops_table.py            # writes benchmarks/results/flops.{json,md} and the
                                                # tables between the markers in docs/model_zoo.md / docs/rsseg.md

The rows are the families' paper figures (``Family.paper_rows``: SegFormer Tab. 1a, SegNeXt
Tab. 9, RSSeg Tables 4, 5, 7, 9, 11, 12) — the same list the tests check. Every model is built
on the ``meta`` device (no weights) and counted with :func:`segkit.tools.flops.count_flops` on fake
tensors in its family's convention (``Family.flops_convention``) and in the other three, so the
whole run takes a couple of minutes on one CPU core.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch

from segkit.models.layers import skip_init
from segkit.models.zoo import FAMILIES, build_model
from segkit.tools.flops import count_flops

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = {
    "segformer": [ROOT / "docs" / "model_zoo.md"],
    "segnext": [ROOT / "docs" / "model_zoo.md"],
    "rsseg": [ROOT / "docs" / "model_zoo.md", ROOT / "docs" / "rsseg.md"],
}
CONVENTIONS = ("torch", "mmcv", "torchprofile")


def rel(measured: float, paper: float | None) -> float | None:
    return None if paper is None else round(100.0 * (measured / paper - 1.0), 2)


def measure(row, convention: str) -> dict:
    with torch.device("meta"), skip_init():
        model = build_model(row.model, row.classes, **row.kwargs)
    params = sum(p.numel() for p in model.parameters())
    # training-only parameters (the CSWin boundary head) are reported separately
    infer_params = sum(p.numel() for n, p in model.named_parameters() if ".boundary." not in n)
    counts = {mode: round(count_flops(model, row.shape, mode=mode)["gmacs"], 3) for mode in CONVENTIONS}
    return dict(
        label=row.label,
        model=row.model,
        kwargs=row.kwargs,
        classes=row.classes,
        shape=list(row.shape),
        source=row.source,
        params=params,
        params_m=round(params / 1e6, 2),
        inference_params_m=round(infer_params / 1e6, 2),
        paper_params_m=row.params_m,
        params_rel_err_pct=rel(params / 1e6, row.params_m),
        convention=convention,
        gflops=counts[convention],
        gflops_by_convention=counts,
        paper_gflops=row.gflops,
        gflops_rel_err_pct=rel(counts[convention], row.gflops),
    )


def _pct(v: float | None) -> str:
    return "" if v is None else f"{v:+.2f} %".replace("-", "−")


def markdown(rows: list[dict]) -> str:
    convention = rows[0]["convention"]
    lines = [
        f"| model (input, K) | params (M) | paper | Δ | GFLOPs ({convention}) | paper | Δ | "
        + " | ".join(c for c in CONVENTIONS if c != convention)
        + " | source |",
        "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * (len(CONVENTIONS) - 1) + "---|",
    ]
    for r in rows:
        params = f"{r['params_m']:.2f}"
        if r["inference_params_m"] != r["params_m"]:
            params += f" ({r['inference_params_m']:.2f})"
        others = []
        for c in CONVENTIONS:
            if c == convention:
                continue
            v = r["gflops_by_convention"][c]
            # mmcv's hooks miss BEiT's qkv (an F.linear with the q/v biases): not comparable, bracketed
            others.append(f"({v:.1f})*" if c == "mmcv" and "beit" in r["model"] else f"{v:.2f}")
        h, w = r["shape"]
        lines.append(
            f"| {r['label']} ({h}×{w}, {r['classes']}) | {params} | {r['paper_params_m'] or '—'} | "
            f"{_pct(r['params_rel_err_pct'])} | {r['gflops']:.2f} | {r['paper_gflops'] or '—'} | "
            f"{_pct(r['gflops_rel_err_pct'])} | " + " | ".join(others) + f" | {r['source']} |"
        )
    return "\n".join(lines) + "\n"


def insert(doc: Path, family: str, table: str) -> None:
    start, end = f"<!-- flops-table:{family}:start -->", f"<!-- flops-table:{family}:end -->"
    text = doc.read_text()
    if start not in text or end not in text:
        print(f"note: {doc} has no {start} … {end} markers; table not inserted", file=sys.stderr)
        return
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    doc.write_text(f"{head}{start}\n{table}{end}{tail}")


def main() -> int:
    torch.set_num_threads(1)
    t0 = time.time()
    out: dict[str, list[dict]] = {}
    for family in FAMILIES.values():
        out[family.name] = []
        for row in family.paper_rows:
            r = measure(row, family.flops_convention)
            out[family.name].append(r)
            print(
                f"{r['label']:48s} {r['params_m']:8.2f} M {_pct(r['params_rel_err_pct']):>9}  "
                f"{r['gflops']:9.2f} G {_pct(r['gflops_rel_err_pct']):>9}",
                flush=True,
            )
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = dict(
        command="python benchmarks/flops_table.py",
        torch=torch.__version__,
        python=platform.python_version(),
        seconds=round(time.time() - t0, 1),
    )
    (RESULTS / "flops.json").write_text(json.dumps(dict(meta=meta, families=out), indent=1) + "\n")
    md = [f"<!-- generated by `{meta['command']}` (torch {meta['torch']}) -->", ""]
    for name, rows in out.items():
        table = markdown(rows)
        md += [f"## {FAMILIES[name].paper}", "", table]
        for doc in DOCS.get(name, []):
            insert(doc, name, table)
    (RESULTS / "flops.md").write_text("\n".join(md))
    print(f"wrote {RESULTS / 'flops.json'}, {RESULTS / 'flops.md'} ({meta['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
