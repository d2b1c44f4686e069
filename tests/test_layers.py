"""Layers shared by the model families (``segkit/models/layers.py``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segkit.models.backbones.mscan import LKA
from segkit.models.layers import DilatedDepthwiseConv2d


def _weight_grad_error(conv: torch.nn.Conv2d, x: torch.Tensor, g: torch.Tensor) -> float:
    """Relative max error of ``conv.weight.grad`` (bf16 autocast, channels-last input) against float64."""
    w = conv.weight.detach().double().requires_grad_()
    y = F.conv2d(x.detach().double(), w, None, conv.stride, conv.padding, conv.dilation, conv.groups)
    y.backward(g.double())
    return float((conv.weight.grad.double() - w.grad).abs().max() / w.grad.abs().max())


@pytest.mark.parametrize(
    "dim, size, kernel, dilation", [(32, 64, 7, 3), (64, 32, 7, 3), (128, 32, 7, 3), (64, 32, 3, 2)]
)
def test_dilated_depthwise_bf16_weight_grad(dim, size, kernel, dilation):
    """The weight gradient in bf16 autocast with a channels-last input agrees with float64 to bf16 precision
    (PyTorch 2.13's oneDNN kernel returned relative errors up to 1e35 for these shapes on an AMX Xeon)."""
    torch.manual_seed(0)
    pad = kernel // 2 * dilation
    conv = DilatedDepthwiseConv2d(dim, dim, kernel, padding=pad, dilation=dilation, groups=dim)
    x = torch.randn(4, dim, size, size).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    g = torch.randn_like(y, dtype=torch.float32)
    y.backward(g)
    assert _weight_grad_error(conv, x, g) < 0.02


def test_lka_trains_in_bf16():
    """VAN's LKA (SegNeXt Tab. 8 "w/o MSCA") in bf16 autocast: finite, float64-close gradients for every
    parameter, and the same forward as ``nn.Conv2d`` (the workaround changes no result, only the layout)."""
    torch.manual_seed(0)
    lka = LKA(64)
    x = torch.randn(2, 64, 32, 32).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = lka(x)
    y.float().square().mean().backward()
    ref = LKA(64).double()
    ref.load_state_dict(lka.state_dict())
    ref(x.double()).square().mean().backward()
    for (name, p), q in zip(lka.named_parameters(), ref.parameters()):
        err = float((p.grad.double() - q.grad).abs().max() / q.grad.abs().max())
        assert err < 0.05, name
    with torch.no_grad():
        plain = F.conv2d(x, lka.conv_spatial.weight, lka.conv_spatial.bias, padding=9, dilation=3, groups=64)
        assert torch.allclose(lka.conv_spatial(x), plain, atol=1e-5)
