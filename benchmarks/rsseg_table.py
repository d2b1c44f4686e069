"""Regenerate the RSSeg parameters / GFLOPs table against the paper (rsseg.md Tables 4, 5, 7, 9).

    python benchmarks/rsseg_table.py      # writes benchmarks/results/rsseg_flops.{json,md} and the
                                          # table between the markers in docs/model_zoo.md and docs/rsseg.md

Every model is built on the ``meta`` device and counted with :func:`segkit.tools.flops.count_flops`
(one multiply-add = one FLOP) in two conventions: ``torch`` (every convolution, linear layer,
matrix product and attention; the default for RSSeg) and ``mmcv`` (mmcv's module hooks, what
mmseg's ``get_flops.py`` prints; functional products are invisible to it). About a minute on one core.
The acceptance bound of the RSSeg issue is 2 % on params and GFLOPs; ``tests/test_rsseg.py`` checks it.
"""
from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch

from segkit.models.rsseg.builders import PLAIN_ABLATIONS, PYRAMID_ABLATIONS
from segkit.models.zoo import build_model
from segkit.tools.flops import count_flops

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = (ROOT / "docs" / "model_zoo.md", ROOT / "docs" / "rsseg.md")
START, END = "<!-- rsseg-table:start -->", "<!-- rsseg-table:end -->"

A, P = PLAIN_ABLATIONS, PYRAMID_ABLATIONS
# (label, model, builder kwargs, classes, input side, paper params M or None, paper GFLOPs or None)
ROWS = [
    ("ViT-Linear-B (ADE, 512²)", "vit-linear-b", {}, 150, 512, 86.6, 107.2),
    ("+ transformer decoder", "rsseg-vit-b", A["transformer-decoder"], 150, 512, 95.5, 110.7),
    ("+ decoupled two-pathway network", "rsseg-vit-b", A["two-pathway"], 150, 512, 99.7, 129.5),
    ("+ SASMs", "rsseg-vit-b", A["sasm"], 150, 512, 99.8, 127.5),
    ("+ DCA = **RSSeg-ViT-B**", "rsseg-vit-b", {}, 150, 512, 99.8, 127.5),
    ("1 SASM (Table 5)", "rsseg-vit-b", A["1-sasm"], 150, 512, 99.7, 127.0),
    ("Filter Norm (Table 5)", "rsseg-vit-b", A["filter-norm"], 150, 512, 99.8, 127.5),
    ("group number 1 (Table 5)", "rsseg-vit-b", A["groups-1"], 150, 512, 99.5, 126.9),
    ("BEiT-Linear-B (Context, 480², K 59)", "beit-linear-b", dict(img_size=480), 59, 480, 86.2, 92.1),
    ("RSSeg-BEiT-B (Context, 480², K 59)", "rsseg-beit-b", dict(img_size=480), 59, 480, 99.5, 109.0),
    ("RSSeg-ViT-B (City, 768², K 19)", "rsseg-vit-b", dict(img_size=768), 19, 768, 100.7, 338),
    ("RSSeg-ViT-L (City, 768²)", "rsseg-vit-l", dict(img_size=768), 19, 768, 330.1, 1039),
    ("Segmenter-B (City, 768²)", "segmenter-vit-b", dict(img_size=768), 19, 768, 103.4, 350),
    ("Segmenter-L (City, 768²)", "segmenter-vit-l", dict(img_size=768), 19, 768, 333.2, 1045),
    ("RSSeg-CSWin-T (City, 1024²)", "rsseg-cswin-t", {}, 19, 1024, 23.2, 170),
    ("RSSeg-CSWin-S (City, 1024²)", "rsseg-cswin-s", {}, 19, 1024, 36.3, 262),
    ("CSWin-T + MLP decoder (Table 7)", "rsseg-cswin-t", P["mlp-decoder"], 19, 1024, None, 146.3),
    ("CSWin-T + 3 LSBs (Table 7)", "rsseg-cswin-t", P["3-lsbs"], 19, 1024, None, 153.2),
    ("CSWin-T + 5 LSBs (Table 7)", "rsseg-cswin-t", P["5-lsbs"], 19, 1024, None, 158.0),
    ("CSWin-T + 9 LSBs, AF, dw 3×3 (Table 7)", "rsseg-cswin-t", P["9-lsbs-af"], 19, 1024, None, 167.6),
    ("CSWin-S + MLP decoder (Table 7)", "rsseg-cswin-s", P["mlp-decoder"], 19, 1024, None, 211.5),
    ("CSWin-S + 10 LSBs, AF, dw 3×3 (Table 7)", "rsseg-cswin-s", P["9-lsbs-af"], 19, 1024, None, 259.1),
    ("RSSeg-ViT-L (ADE, 640²)", "rsseg-vit-l", dict(img_size=640), 150, 640, None, 670),
    ("RSSeg-BEiT-L (ADE, 640²)", "rsseg-beit-l", dict(img_size=640), 150, 640, None, 670),
    ("ViT-Linear-L (ADE, 640²)", "vit-linear-l", dict(img_size=640), 150, 640, None, 612),
    ("BEiT-Linear-L (ADE, 640²)", "beit-linear-l", dict(img_size=640), 150, 640, None, 613),
    ("RSSeg-ViT-Ti (CamVid, 352², K 11)", "rsseg-vit-ti", dict(img_size=352), 11, 352, None, None),
    ("ViT-Linear-Ti (CamVid, 352², K 11)", "vit-linear-ti", dict(img_size=352), 11, 352, None, None),
]


def rel(measured: float, paper: float | None) -> float | None:
    return None if paper is None else round(100.0 * (measured / paper - 1.0), 2)


def measure_row(label, name, kwargs, classes, side, paper_params, paper_gflops) -> dict:
    with torch.device("meta"):
        model = build_model(name, classes, **kwargs)
    params = sum(p.numel() for p in model.parameters())
    # the CSWin boundary head is training-only (boundary loss); reported separately
    infer_params = sum(p.numel() for n, p in model.named_parameters() if ".boundary." not in n)
    torch_g = count_flops(model, (side, side), mode="torch")["gmacs"]
    mmcv_g = count_flops(model, (side, side), mode="mmcv")["gmacs"]
    return dict(label=label, model=name, kwargs=kwargs, classes=classes, shape=[side, side],
                params_m=round(params / 1e6, 2), inference_params_m=round(infer_params / 1e6, 2),
                paper_params_m=paper_params, params_rel_err_pct=rel(params / 1e6, paper_params),
                gflops_torch=round(torch_g, 2), gflops_mmcv=round(mmcv_g, 2), paper_gflops=paper_gflops,
                gflops_rel_err_pct=rel(torch_g, paper_gflops))


def _pct(v: float | None) -> str:
    return "" if v is None else f"{v:+.1f} %".replace("-", "−")


def markdown(rows: list[dict]) -> str:
    lines = ["| model (dataset, input) | params (M) | paper | Δ | GFLOPs torch | GFLOPs mmcv | paper | Δ torch |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        params = f"{r['params_m']:.2f}"
        if r["inference_params_m"] != r["params_m"]:
            params += f" ({r['inference_params_m']:.2f})"
        # mmcv's hooks miss BEiT's qkv (an F.linear with the q/v biases): not comparable, shown in brackets
        mmcv = f"({r['gflops_mmcv']:.1f})*" if "beit" in r["model"] else f"{r['gflops_mmcv']:.1f}"
        lines.append(f"| {r['label']} | {params} | {r['paper_params_m'] or '—'} | {_pct(r['params_rel_err_pct'])} | "
                     f"{r['gflops_torch']:.1f} | {mmcv} | {r['paper_gflops'] or '—'} | {_pct(r['gflops_rel_err_pct'])} |")
    return "\n".join(lines) + "\n"


def insert(doc: Path, table: str) -> None:
    text = doc.read_text()
    if START not in text or END not in text:
        print(f"note: {doc} has no {START} … {END} markers; table not inserted", file=sys.stderr)
        return
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{START}\n{table}{END}{tail}")


def main() -> int:
    torch.set_num_threads(1)
    t0 = time.time()
    rows = []
    for spec in ROWS:
        rows.append(measure_row(*spec))
        r = rows[-1]
        print(f"{r['label']:42s} {r['params_m']:8.2f} M {r['gflops_torch']:8.1f} G  {_pct(r['gflops_rel_err_pct'])}",
              flush=True)
    meta = dict(command="python benchmarks/rsseg_table.py", torch=torch.__version__, python=platform.python_version(),
                seconds=round(time.time() - t0, 1))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "rsseg_flops.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=2) + "\n")
    table = markdown(rows)
    (RESULTS / "rsseg_flops.md").write_text(f"<!-- generated by `{meta['command']}` (torch {meta['torch']}) -->\n\n"
                                            + table)
    for doc in DOCS:
        insert(doc, table)
    print(f"wrote {RESULTS / 'rsseg_flops.json'}, {RESULTS / 'rsseg_flops.md'} ({meta['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
