"""Every parameter / GFLOP figure the three papers publish, checked against segkit's models.

The rows live once, in the families (``Family.paper_rows``: SegFormer Tab. 1a, SegNeXt Tab. 9,
RSSeg Tables 4, 5, 7, 9, 11, 12); ``benchmarks/flops_table.py`` writes the same rows into
``docs/model_zoo.md``. GFLOPs are counted in the family's own convention (``flops_convention``),
within the family's ``paper_tolerance`` (5 % SegFormer / SegNeXt — SegNeXt-L at 2048×1024 is
−4.1 %, see docs/model_zoo.md —, 2 % RSSeg).
"""

import pytest
import torch

from segkit.models.layers import skip_init
from segkit.models.zoo import FAMILIES, build_model
from segkit.tools.flops import count_flops

ROWS = [(f, r) for f in FAMILIES.values() for r in f.paper_rows]
PARAMS = [(f, r) for f, r in ROWS if r.params_m is not None]
GFLOPS = [(f, r) for f, r in ROWS if r.gflops is not None]


def _meta(row):
    with torch.device("meta"), skip_init():
        return build_model(row.model, row.classes, **row.kwargs)


def test_every_family_has_paper_rows():
    assert {f.name for f, _ in ROWS} == set(FAMILIES)
    assert len(PARAMS) >= 30 and len(GFLOPS) >= 45


@pytest.mark.parametrize("family,row", PARAMS, ids=[f"{f.name}:{r.label}" for f, r in PARAMS])
def test_parameter_counts_match_the_paper(family, row):
    n = sum(p.numel() for p in _meta(row).parameters()) / 1e6
    assert abs(n - row.params_m) / row.params_m < family.paper_tolerance, (
        f"{row.label}: {n:.2f} M vs {row.params_m} M ({row.source})"
    )


@pytest.mark.parametrize("family,row", GFLOPS, ids=[f"{f.name}:{r.label}" for f, r in GFLOPS])
def test_gflops_match_the_paper(family, row):
    model = _meta(row)
    res = count_flops(model, row.shape)  # mode "paper" = the family's convention
    assert res["mode"] == family.flops_convention
    assert abs(res["gmacs"] - row.gflops) / row.gflops < family.paper_tolerance, (
        f"{row.label}: {res['gmacs']:.2f} G vs {row.gflops} G ({row.source})"
    )
    assert sum(res["breakdown"].values()) == pytest.approx(res["gmacs"])
