"""FLOP counter (segkit.tools.flops): hand-computable modules, the papers' figures, the CLI."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from segkit.cli import main as cli_main
from segkit.models.zoo import build_model
from segkit.tools.flops import count_flops

H, W = 16, 12


def macs(model, mode, shape=(H, W), batch=1):
    return round(count_flops(model, shape, batch=batch, mode=mode)["gmacs"] * 1e9)


def test_conv_counts_by_convention():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    per_pixel = 8 * 3 * 9
    assert macs(conv, "torch") == H * W * per_pixel
    assert macs(conv, "torchprofile") == H * W * per_pixel
    assert macs(conv, "mmcv") == H * W * (per_pixel + 8)  # mmcv adds the bias
    assert macs(conv, "torch", batch=2) == 2 * H * W * per_pixel
    dw = nn.Conv2d(3, 3, 5, padding=2, groups=3, bias=False)
    assert macs(dw, "mmcv") == macs(dw, "torch") == H * W * 3 * 25


def test_conv_matches_flopcountermode_on_real_tensors():
    conv = nn.Conv2d(3, 5, (3, 1), stride=2, padding=(1, 0))
    with FlopCounterMode(display=False) as fc:
        conv(torch.randn(1, 3, H, W))
    assert macs(conv, "torch") == fc.get_total_flops() // 2


class TokenLinear(nn.Module):
    def __init__(self, bias=True):
        super().__init__()
        self.fc = nn.Linear(W, 20, bias=bias)

    def forward(self, x):  # (B, 3, H, W): W is the feature dim
        return self.fc(x)


def test_linear_counts_without_bias_in_every_convention():
    expected = 3 * H * W * 20
    for mode in ("torch", "mmcv", "torchprofile"):
        assert macs(TokenLinear(), mode) == expected, mode


class Attention(nn.Module):
    def forward(self, x):  # (B, 3, H, W) = (B, heads, L, E)
        return F.scaled_dot_product_attention(x, x, x)


def test_cpu_attention_is_counted():
    # FlopCounterMode has no entry for the CPU attention kernel; Q·Kᵀ and A·V are added: 3·H·H·2W.
    expected = 3 * H * H * 2 * W
    assert macs(Attention(), "torch") == expected
    assert macs(Attention(), "mmcv") == expected  # the NVlabs script's sra_flops term
    assert count_flops(Attention(), (H, W), mode="torch")["breakdown"] == {"attention": expected / 1e9}


class Extras(nn.Module):
    def __init__(self, affine=True):
        super().__init__()
        self.norm = nn.LayerNorm(W, elementwise_affine=affine)
        self.bn = nn.BatchNorm2d(3)
        self.scale = nn.Parameter(torch.ones(3, 1, 1))

    def forward(self, x):
        y = self.scale * self.bn(self.norm(x))
        return F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)


def test_torchprofile_extras():
    n = 3 * H * W
    # LayerNorm n + BatchNorm n + mul n + bilinear 4·(4n); no matmul at all
    assert macs(Extras(), "torchprofile") == n + n + n + 16 * n
    assert macs(Extras(affine=False), "torchprofile") == n + n + 16 * n
    assert macs(Extras(), "torch") == 0
    # mmcv: norm modules numel ×2 (affine), functional mul / interpolate invisible
    assert macs(Extras(), "mmcv") == 2 * n + 2 * n
    assert macs(Extras(affine=False), "mmcv") == n + 2 * n


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        count_flops(nn.Conv2d(3, 3, 1), (8, 8), mode="fvcore")
    with pytest.raises(ValueError, match="shape"):
        count_flops(nn.Conv2d(3, 3, 1), (0, 8))


def test_model_untouched_and_meta_equals_real():
    model = build_model("segnext-t").train()
    model.backbone.patch_embed1.eval()  # a frozen part stays frozen
    before = {k: v.clone() for k, v in model.state_dict().items()}
    real = count_flops(model, (256, 256))
    assert model.training and model.decode_head.training and not model.backbone.patch_embed1.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.device("meta"):
        meta_model = build_model("segnext-t")
    assert count_flops(meta_model, (256, 256)) == real


def test_segnext_head_nmf_is_counted():
    # SegNeXt's figures include the NMF bmm iterations (torchprofile counts torch.bmm): without
    # them SegNeXt-L would be ~6 % under the paper. At 256² every term is 1/4 of the 512² one.
    with torch.device("meta"):
        model = build_model("segnext-l")
    res = count_flops(model, (256, 256))
    assert res["breakdown"]["matmul"] / res["gmacs"] > 0.05
    assert (res["gmacs"] - res["breakdown"]["matmul"]) < 0.95 * 70.0 / 4


def test_cli_prints_gflops(capsys):
    assert cli_main(["flops", "segnext-t", "--shape", "512", "512"]) == 0
    out = capsys.readouterr().out
    gflops = float(re.search(r"([\d.]+) GFLOPs", out).group(1))
    params = float(re.search(r"([\d.]+) M params", out).group(1))
    assert gflops == pytest.approx(6.6, rel=0.05)
    assert params == pytest.approx(4.26, abs=0.01)
    assert cli_main(["flops", "segnext-t", "--shape", "512", "512", "--mode", "torch"]) == 0
    torch_gflops = float(re.search(r"([\d.]+) GFLOPs", capsys.readouterr().out).group(1))
    assert torch_gflops < gflops  # no norms / products / upsampling in the pure FlopCounterMode count
