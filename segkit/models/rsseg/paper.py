"""The RSSeg paper's parameter and GFLOP figures, as model specs (RSSeg Tables 4, 5, 7, 9).

One row per figure the paper reports (plus the two CamVid ViT-Ti models, no paper figure): which
zoo model, builder keywords, number of classes and square input side reproduce it. Used by
``benchmarks/flops_table.py`` (the docs tables) and ``tests/test_paper_figures.py`` (the 2 % checks).
GFLOPs are multiply-adds at the given input (the paper's convention; ``count_flops`` mode ``torch``).
"""

from __future__ import annotations

from ..family import PaperRow
from .builders import PLAIN_ABLATIONS as A
from .builders import PYRAMID_ABLATIONS as P


def _source(label: str) -> str:
    for table in ("Table 5", "Table 7"):
        if table in label:
            return f"RSSeg {table}"
    if "ADE, 512" in label or label.startswith("+"):
        return "RSSeg Table 4"
    if "City" in label:
        return "RSSeg Table 9"
    if "Context" in label:
        return "RSSeg Table 12"
    if "ADE, 640" in label:
        return "RSSeg Table 11"
    return "ours (no paper figure)"


def _row(label, model, kwargs, classes, side, params_m, gflops):
    return PaperRow(label, model, kwargs, classes, (side, side), params_m, gflops, _source(label))


PAPER_ROWS: tuple[PaperRow, ...] = tuple(
    _row(*r)
    for r in [
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
)

__all__ = ["PAPER_ROWS"]
