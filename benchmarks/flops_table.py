"""Regenerate the FLOPs / parameters table of the model zoo (docs/model_zoo.md).

    python benchmarks/flops_table.py            # writes benchmarks/results/flops.{json,md}
                                                # and the table between the markers in docs/model_zoo.md

Every model is built on the ``meta`` device (no weights) and counted with
:func:`segkit.tools.flops.count_flops` on fake tensors, so the whole table takes about a minute
on 2 CPU cores. Paper figures: SegFormer Tab. 1a (ADE20K 512², B5 at 640²; Cityscapes
2048×1024), SegNeXt Tab. 9 (ADE20K 512², Cityscapes 2048×1024).
"""
from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch

from segkit.models.zoo import build_model
from segkit.tools.flops import count_flops

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "model_zoo.md"
START, END = "<!-- flops-table:start -->", "<!-- flops-table:end -->"

# name: (paper params M, paper GFLOPs ADE20K, paper GFLOPs Cityscapes 2048×1024)
PAPER = {
    "segformer-b0": (3.8, 8.4, 125.5),
    "segformer-b1": (13.7, 15.9, 243.7),
    "segformer-b2": (27.5, 62.4, 717.1),
    "segformer-b3": (47.3, 79.0, 962.9),
    "segformer-b4": (64.1, 95.7, 1240.6),
    "segformer-b5": (84.7, 183.3, 1460.4),
    "segnext-t": (4.3, 6.6, 50.5),
    "segnext-s": (13.9, 15.9, 124.6),
    "segnext-b": (27.6, 34.9, 275.7),
    "segnext-l": (48.9, 70.0, 577.5),
}
CITY = (1024, 2048)  # (H, W) of a Cityscapes image, "2048×1024" in the papers


def ade_shape(name: str) -> tuple[int, int]:
    return (640, 640) if name == "segformer-b5" else (512, 512)


def city_classes(name: str) -> int:
    """Head size that reproduces each paper's Cityscapes column.

    SegNeXt: the official Cityscapes configs (19 classes). SegFormer: the published figures
    match the 150-class ADE20K model run at 2048×1024 (within 0.1 %; with 19 classes they
    would be 0.8–3.4 % lower), so that is what the NVlabs script was evidently run on.
    """
    return 150 if name.startswith("segformer") else 19


def meta_model(name: str, num_classes: int):
    with torch.device("meta"):
        return build_model(name, num_classes=num_classes)


def rel(measured: float, paper: float) -> float:
    return 100.0 * (measured / paper - 1.0)


def measure() -> list[dict]:
    rows = []
    for name, (p_params, p_ade, p_city) in PAPER.items():
        m150 = meta_model(name, 150)
        ade = count_flops(m150, ade_shape(name))
        k = city_classes(name)
        city = count_flops(m150 if k == 150 else meta_model(name, k), CITY)
        city_other = count_flops(meta_model(name, 19 if k == 150 else 150), CITY)
        conventions = {mode: round(count_flops(m150, ade_shape(name), mode=mode)["gmacs"], 4)
                       for mode in ("torch", "mmcv", "torchprofile")}
        rows.append(dict(
            model=name, params=ade["params"], paper_params_m=p_params, mode=ade["mode"],
            ade_shape=list(ade_shape(name)), ade_gflops=round(ade["gmacs"], 4), paper_ade_gflops=p_ade,
            ade_rel_err_pct=round(rel(ade["gmacs"], p_ade), 2),
            city_classes=k, city_gflops=round(city["gmacs"], 4), paper_city_gflops=p_city,
            city_rel_err_pct=round(rel(city["gmacs"], p_city), 2),
            city_gflops_other_classes=round(city_other["gmacs"], 4),
            ade_gflops_by_convention=conventions,
            ade_breakdown={k2: round(v, 4) for k2, v in ade["breakdown"].items()},
        ))
        print(f"{name:14s} {ade['gmacs']:8.2f} ({rows[-1]['ade_rel_err_pct']:+.2f}%)  "
              f"{city['gmacs']:8.1f} ({rows[-1]['city_rel_err_pct']:+.2f}%)", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | params (K=150) | paper | convention | GFLOPs ADE20K | paper | error | GFLOPs 2048×1024 | paper | error |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        h, w = r["ade_shape"]
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['paper_params_m']} M | {r['mode']} | "
            f"{r['ade_gflops']:.2f} ({h}²) | {r['paper_ade_gflops']} | {r['ade_rel_err_pct']:+.2f} % | "
            f"{r['city_gflops']:.1f} (K={r['city_classes']}) | {r['paper_city_gflops']} | {r['city_rel_err_pct']:+.2f} % |")
    lines += [
        "",
        "Same models, ADE20K size, under each convention (GMACs):",
        "",
        "| model | torch | mmcv | torchprofile | 2048×1024 with the other head size |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        c = r["ade_gflops_by_convention"]
        other = 19 if r["city_classes"] == 150 else 150
        lines.append(f"| {r['model']} | {c['torch']:.2f} | {c['mmcv']:.2f} | {c['torchprofile']:.2f} | "
                     f"{r['city_gflops_other_classes']:.1f} (K={other}) |")
    return "\n".join(lines) + "\n"


def main() -> int:
    torch.set_num_threads(1)
    t0 = time.time()
    rows = measure()
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = dict(command="python benchmarks/flops_table.py", torch=torch.__version__, python=platform.python_version(),
                seconds=round(time.time() - t0, 1))
    (RESULTS / "flops.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=2) + "\n")
    table = markdown(rows)
    (RESULTS / "flops.md").write_text(f"<!-- generated by `{meta['command']}` (torch {meta['torch']}) -->\n\n" + table)
    if DOC.exists():
        text = DOC.read_text()
        if START in text and END in text:
            head, rest = text.split(START, 1)
            _, tail = rest.split(END, 1)
            DOC.write_text(f"{head}{START}\n{table}{END}{tail}")
        else:
            print(f"note: {DOC} has no {START} … {END} markers; table not inserted", file=sys.stderr)
    print(f"wrote {RESULTS / 'flops.json'}, {RESULTS / 'flops.md'} ({meta['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
