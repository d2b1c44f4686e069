"""Small building blocks shared by the encoders and heads.

Everything here is generic (stochastic depth, weight initialisation, conv + norm + act);
the paper-specific components live in their own modules (``mit.py``, ``mscan.py``, ...).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from segkit.errors import UsageError

_INIT_FUNCTIONS = (
    "normal_",
    "trunc_normal_",
    "uniform_",
    "kaiming_normal_",
    "kaiming_uniform_",
    "xavier_normal_",
    "xavier_uniform_",
    "constant_",
    "ones_",
    "zeros_",
    "orthogonal_",
)


@contextlib.contextmanager
def skip_init():
    """Within the block, ``torch.nn.init`` functions leave tensors untouched (and return them).

    For building models whose weights are never used: shapes only on the ``meta`` device
    (``segkit models``, FLOP counts), or models about to receive a checkpoint. Random
    initialisation on ``meta`` tensors goes through PyTorch's reference implementations and
    costs seconds for the zoo; skipping it changes nothing observable there.
    """
    saved = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS if hasattr(nn.init, name)}

    def untouched(tensor, *args, **kwargs):
        return tensor

    try:
        for name in saved:
            setattr(nn.init, name, untouched)
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


class ChannelsLastGELU(nn.GELU):
    """``nn.GELU`` that evaluates channels-last 4-D maps on their contiguous ``(B, H, W, C)`` view.

    Same function, same output layout (channels-last in, channels-last out), no copy: only the
    kernel ATen picks differs. With PyTorch 2.13 on x86 the element-wise GELU of a
    channels-last ``(B, C, H, W)`` tensor takes another loop than that of a contiguous tensor;
    through the permuted (contiguous) view it is about 1.5× faster, forward and backward, with
    AVX-512 and with AVX2 alike (``benchmarks/results/gelu_layout.md``), and its values are
    bit-for-bit those of the reference's NCHW GELU (the channels-last loop differs from both by
    up to 1 ulp). Any other input goes to ``F.gelu`` unchanged. Set the class attribute
    ``use_nhwc_view = False`` to measure or fall back to the plain call.
    """

    use_nhwc_view = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            self.use_nhwc_view
            and x.ndim == 4
            and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last)
        ):
            return F.gelu(x.permute(0, 2, 3, 1), approximate=self.approximate).permute(0, 3, 1, 2)
        return F.gelu(x, approximate=self.approximate)


def _cpu_bf16(x: torch.Tensor) -> bool:
    """``x`` is computed in bfloat16 on the CPU: a bf16 tensor, or CPU autocast to bf16 is on."""
    if x.device.type != "cpu":
        return False
    return x.dtype == torch.bfloat16 or (
        torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )


class DilatedDepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` for depth-wise convolutions with ``dilation > 1`` (VAN's LKA, RSSeg's multi-dilation
    variant), with a workaround for a wrong weight gradient on the CPU.

    PyTorch 2.13's CPU kernel (oneDNN) returns a wrong ``weight.grad`` for a *channels-last* dilated
    depth-wise convolution in bfloat16 (autocast or a bf16 model): on an Intel Xeon with AMX /
    ``avx512_bf16``, relative errors of 1 to 1e35 against a float64 reference (7×7, dilation 3,
    32–128 channels at 32²–64²), which made ``segnext-t-lka`` diverge to NaN within 25 steps of the
    README recipe. The forward, the input gradient, NCHW inputs, float32 and non-dilated kernels
    are right (``tests/test_layers.py`` checks the gradient against float64). So, when the input is
    channels-last, bf16 on the CPU and a gradient will be taken, it is made NCHW-contiguous first
    (a copy; output NCHW); everything else runs unchanged. Same parameters and state-dict keys as
    ``nn.Conv2d``. ``(B, C, H, W)`` → ``(B, C, H', W')``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            torch.is_grad_enabled()
            and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last)
            and _cpu_bf16(x)
        ):
            x = x.contiguous()
        return super().forward(x)


class DropPath(nn.Module):
    """Stochastic depth (Huang et al., 2016) applied per sample on the residual branch.

    Input and output: any shape ``(B, ...)``, any float dtype. In training each sample's
    branch is zeroed with probability ``drop_prob`` and the survivors are scaled by
    ``1 / (1 - drop_prob)``; in eval it is the identity.
    """

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise UsageError(f"drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def drop_path_rates(total: float, depths) -> list[float]:
    """Linearly increasing stochastic-depth rates over all blocks, ``linspace(0, total, sum(depths))``.

    Source: SegFormer / SegNeXt official code (``mix_transformer.py`` ``_init_weights``, ``mscan.py``).
    """
    n = int(sum(depths))
    return [x.item() for x in torch.linspace(0, total, n, device="cpu")] if n else []


def init_weights_reference(module: nn.Module) -> None:
    """Scratch initialisation used by the MiT and MSCAN reference code (``mix_transformer.py`` ``_init_weights``).

    Linear: truncated normal (std 0.02), bias 0. LayerNorm / BatchNorm / GroupNorm: weight 1,
    bias 0. Conv2d: normal(0, sqrt(2 / fan_out)) with ``fan_out = k_h * k_w * out / groups``,
    bias 0. Apply with ``model.apply(init_weights_reference)``.
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def init_trunc_normal(module: nn.Module, conv: bool = False) -> None:
    """Transformer-style scratch initialisation over all submodules of ``module`` (ViT/BEiT/CSWin/Segmenter):
    Linear (and Conv2d when ``conv``) weight truncated normal std 0.02, bias 0; LayerNorm weight 1, bias 0."""
    types = (nn.Linear, nn.Conv2d) if conv else (nn.Linear,)
    for m in module.modules():
        if isinstance(m, types):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ConvModule(nn.Sequential):
    """1×1 (or k×k) conv → optional norm → optional ReLU, named like mmcv's ``ConvModule``.

    Submodule names follow the reference checkpoints: ``conv`` then ``bn`` (BatchNorm) or
    ``gn`` (GroupNorm), then ``activate``. The conv has a bias iff there is no norm, as in
    mmcv. Input ``(B, C_in, H, W)`` → output ``(B, C_out, H', W')``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        *,
        norm: str | None = None,
        num_groups: int = 32,
        act: bool = True,
        bias: bool | None = None,
    ):
        super().__init__()
        if bias is None:
            bias = norm is None
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
        if norm == "bn":
            self.bn = nn.BatchNorm2d(out_channels)
        elif norm == "gn":
            self.gn = nn.GroupNorm(num_groups, out_channels)
        elif norm is not None:
            raise UsageError(f"norm must be 'bn', 'gn' or None, got {norm!r}")
        if act:
            self.activate = nn.ReLU(inplace=True)
