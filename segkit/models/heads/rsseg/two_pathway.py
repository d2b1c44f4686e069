"""RSSeg's decoupled two-pathway network: the local separation path (RSSeg paper §3.2.1, §3.3).

The local path runs beside the transformer at a higher resolution than its tokens (1/8 of the
image for plain ViTs, 1/4 for pyramid ViTs). It is a cascade of *local separation blocks*
(LSBs, eq. 4) whose depth-wise operator is the *learnable high-pass filter* (LHF, eq. 5); the
sampled backbone features are merged into the cascade by *attention-guided fusion* (AF,
eqs. 6–9)::

    Xl_1     = LSB(Xl_0)                                   (6)
    Xl'_i    = Attn([GP(Xl_i), GP(Xg_i)]) · Xl_i + Up(Xg_i)  (8)
    Xl_{i+1} = LSB(Xl'_i)                                  (7)
    Attn(·)  = Sigmoid(BN(Conv1×1(ReLU(BN(·)))))           (9)

so ``n`` backbone taps give ``n + 1`` LSBs. ``Xl_0`` comes from an overlapping patch
embedding of the image (plain ViTs) or from the first stage output (pyramid ViTs).

Choices where the paper is silent (each is a constructor switch):

* **LSB norms / activation** (eq. 4 "ignores" them): MobileNetV2-style inverted residual
  ``Conv1×1 → N → act → OP_local → N → act → Conv1×1 → N`` plus the identity, with
  ``N = BatchNorm`` and ``act = ReLU`` — BN + ReLU is what eq. 9 uses in the same path, and
  the norm right after the LHF is the "scalable BatchNorm" §3.3.1 asks for behind the filter.
  ``norm="ln"`` (channel LayerNorm) and ``act="gelu"`` are available.
* **Channel projection of the taps** (implied by eq. 8, which adds a ``C``-wide backbone map
  to a ``dim``-wide local map): ``Conv1×1(C → dim, no bias) + BN``, applied at the backbone
  resolution *before* the bilinear up-sampling (both are linear per position, so this equals
  projecting after up-sampling at 1/4 of the cost).
* **GP(Xg)** in eq. 8 pools the *projected* tap, so the gate sees two ``dim``-wide vectors.
* **LHF initialisation**: the free kernel weights start from N(0, 1), so the initial filter is
  a random zero-sum high-pass (all-zero weights would give the all-zero kernel).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from segkit.errors import UsageError
from segkit.models.layers import DilatedDepthwiseConv2d

LOCAL_OPS = ("lhf", "dw3", "dw5", "large", "dilated")
FUSIONS = ("attention", "add")


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel dimension of a ``(B, C, H, W)`` map (eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def make_norm(kind: str, channels: int) -> nn.Module:
    """``"bn"`` → BatchNorm2d, ``"ln"`` → :class:`ChannelLayerNorm`, ``"none"`` → identity."""
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "ln":
        return ChannelLayerNorm(channels)
    if kind == "none":
        return nn.Identity()
    raise UsageError(f"norm must be 'bn', 'ln' or 'none', got {kind!r}")


def make_act(kind: str) -> nn.Module:
    """``"relu"`` or ``"gelu"``."""
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "gelu":
        return nn.GELU()
    raise UsageError(f"act must be 'relu' or 'gelu', got {kind!r}")


class LearnableHighPass(nn.Module):
    """Learnable high-pass filter (LHF), RSSeg paper §3.3.1 eq. 5.

    A depth-wise ``k × k`` convolution whose effective kernel per channel is
    ``softmax(w over its k² taps) − 1/k²``: every kernel sums to zero (no DC response, i.e. a
    high-pass filter) and its taps lie in ``(−1/k², 1 − 1/k²)``. The paper uses k = 5. No
    bias (a constant would be removed by the following norm anyway). The norm that restores
    the scale lives in the enclosing :class:`LocalSeparationBlock`.

    Input/output ``(B, C, H, W)`` float, same size (padding ``k // 2``).
    """

    def __init__(self, channels: int, kernel_size: int = 5):
        super().__init__()
        if kernel_size < 2 or kernel_size % 2 == 0:
            raise UsageError(f"LHF kernel_size must be odd and >= 3, got {kernel_size}")
        self.channels = int(channels)
        self.kernel_size = int(kernel_size)
        self.weight = nn.Parameter(torch.randn(channels, 1, kernel_size, kernel_size))

    def kernel(self) -> torch.Tensor:
        """Effective zero-sum kernels ``(C, 1, k, k)`` (eq. 5)."""
        k2 = self.kernel_size**2
        w = self.weight.flatten(1).softmax(dim=-1) - 1.0 / k2
        return w.view_as(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel(), padding=self.kernel_size // 2, groups=self.channels)

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}"


class MultiDilationConv(nn.Module):
    """Sum of depth-wise 3×3 convolutions with dilations 1, 2, 3 (Table 8 "multi-dilation" variant)."""

    def __init__(self, channels: int, dilations: Sequence[int] = (1, 2, 3)):
        super().__init__()
        self.branches = nn.ModuleList(
            DilatedDepthwiseConv2d(channels, channels, 3, padding=d, dilation=d, groups=channels, bias=False)
            for d in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(b(x) for b in self.branches)


class LargeKernelConv(nn.Module):
    """Depth-wise large-kernel operator of GCN ("Large kernel matters", Table 8 variant).

    Two separable branches ``(k×1 → 1×k) + (1×k → k×1)``, depth-wise, k = 11 (our choice).
    """

    def __init__(self, channels: int, kernel_size: int = 11):
        super().__init__()
        k, p = kernel_size, kernel_size // 2

        def dw(kh, kw, ph, pw):
            return nn.Conv2d(channels, channels, (kh, kw), padding=(ph, pw), groups=channels, bias=False)

        self.left = nn.Sequential(dw(k, 1, p, 0), dw(1, k, 0, p))
        self.right = nn.Sequential(dw(1, k, 0, p), dw(k, 1, p, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.left(x) + self.right(x)


def make_local_op(kind: str, channels: int) -> nn.Module:
    """Depth-wise local operator ``OP_local`` of eq. 4.

    ``"lhf"`` (paper, 5×5 LHF), ``"dw3"`` (plain depth-wise 3×3: Table 7 rows without LHF and
    Table 8 "3×3 convolutions"), ``"dw5"`` (plain depth-wise 5×5, isolates the softmax
    constraint), ``"large"`` (:class:`LargeKernelConv`), ``"dilated"`` (:class:`MultiDilationConv`).
    """
    if kind == "lhf":
        return LearnableHighPass(channels, 5)
    if kind in ("dw3", "dw5"):
        k = int(kind[-1])
        return nn.Conv2d(channels, channels, k, padding=k // 2, groups=channels, bias=False)
    if kind == "large":
        return LargeKernelConv(channels)
    if kind == "dilated":
        return MultiDilationConv(channels)
    raise UsageError(f"local_op must be one of {LOCAL_OPS}, got {kind!r}")


class LocalSeparationBlock(nn.Module):
    """Local separation block (LSB), an inverted residual (RSSeg paper eq. 4).

    ``x + N(Conv1×1(act(N(OP_local(act(N(Conv1×1(x))))))))`` with hidden width
    ``dim · expand``; see the module docstring for the norm/activation choice.

    Input/output ``(B, dim, H, W)``.
    """

    def __init__(self, dim: int, expand: int = 2, local_op: str = "lhf", norm: str = "bn", act: str = "relu"):
        super().__init__()
        hidden = int(dim * expand)
        self.expand = nn.Conv2d(dim, hidden, 1, bias=False)
        self.norm1 = make_norm(norm, hidden)
        self.act1 = make_act(act)
        self.local = make_local_op(local_op, hidden)
        self.norm2 = make_norm(norm, hidden)
        self.act2 = make_act(act)
        self.reduce = nn.Conv2d(hidden, dim, 1, bias=False)
        self.norm3 = make_norm(norm, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.norm1(self.expand(x)))
        y = self.act2(self.norm2(self.local(y)))
        return x + self.norm3(self.reduce(y))


class AttentionFusion(nn.Module):
    """Attention-guided fusion (AF), RSSeg paper eqs. 8–9.

    ``out = gate · local + global_up`` with a per-channel gate
    ``Sigmoid(BN(Conv1×1(ReLU(BN([GP(local), GP(global_up)])))))``. With ``mode="add"``
    (Table 7 rows without AF) the gate is dropped: ``out = local + global_up``.

    Args:
        dim: width of ``local``; ``global_dim``: width of the global map (default ``dim``).
        norm: norm of eq. 9 (``"bn"`` as the paper; ``"ln"``/``"none"`` for batch size 1,
            where BatchNorm on pooled ``(B, C, 1, 1)`` vectors cannot train).

    Inputs ``local (B, dim, H, W)``, ``global_up (B, global_dim, H, W)`` (already at the same
    size); with ``global_dim != dim`` the gated local map is lifted to ``global_dim`` by
    ``lift`` (Conv1×1 + BN) before the addition. Output ``(B, global_dim, H, W)``.
    """

    def __init__(self, dim: int, global_dim: int | None = None, mode: str = "attention", norm: str = "bn"):
        super().__init__()
        if mode not in FUSIONS:
            raise UsageError(f"fusion must be one of {FUSIONS}, got {mode!r}")
        global_dim = global_dim or dim
        self.mode = mode
        if mode == "attention":
            self.gate = nn.Sequential(
                make_norm(norm, dim + global_dim),
                nn.ReLU(inplace=True),
                nn.Conv2d(dim + global_dim, dim, 1, bias=False),
                make_norm(norm, dim),
                nn.Sigmoid(),
            )
        self.lift = (
            nn.Sequential(nn.Conv2d(dim, global_dim, 1, bias=False), nn.BatchNorm2d(global_dim))
            if global_dim != dim
            else nn.Identity()
        )

    def forward(self, local: torch.Tensor, global_up: torch.Tensor) -> torch.Tensor:
        if local.shape[-2:] != global_up.shape[-2:]:
            raise UsageError(
                f"AttentionFusion: local map {tuple(local.shape)} and global map "
                f"{tuple(global_up.shape)} differ in size"
            )
        if self.mode == "attention":
            pooled = torch.cat([local.mean((2, 3), keepdim=True), global_up.mean((2, 3), keepdim=True)], dim=1)
            local = self.gate(pooled) * local
        return self.lift(local) + global_up


class ConvBN(nn.Sequential):
    """``Conv(k, stride, no bias) → BatchNorm`` (projections of the local path)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)


class OverlapPatchEmbed(nn.Module):
    """Overlapping patch embedding of the plain-ViT local path (RSSeg paper §3.2.1).

    ``proj`` has the ViT patch embedding's shape — Conv(3 → C, kernel p = 16, bias) — but
    stride ``p/2`` (padding ``p/4``), so it yields a 4× longer sequence (1/8 resolution for an
    input whose sides are multiples of p). It is initialised like the ViT patch embedding: the
    builder copies the pretrained ``patch_embed.proj`` into it when an ImageNet encoder is
    loaded (see :func:`segkit.models.rsseg.builders.copy_patch_embed_hook`); from scratch both
    start from the same truncated normal (std .02). ``reduce`` (Conv1×1 C → dim + BN, our
    choice) brings it to the LSB width.

    Input ``(B, 3, H, W)``; output ``Xl_0 (B, dim, H/8, W/8)``.
    """

    def __init__(self, in_chans: int, embed_dim: int, dim: int, patch_size: int = 16):
        super().__init__()
        if patch_size % 4:
            raise UsageError(f"patch_size must be a multiple of 4, got {patch_size}")
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size // 2, padding=patch_size // 4)
        self.reduce = ConvBN(embed_dim, dim)
        nn.init.trunc_normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduce(self.proj(x))


class LocalPath(nn.Module):
    """The cascade of LSBs with attention-guided fusion of backbone taps (eqs. 6–8).

    Args:
        dim: LSB width (Table 3 "input dimension").
        tap_channels: widths of the backbone taps ``Xg_1 … Xg_n`` in fusion order.
        expand: LSB expand ratio (Table 3).
        local_op, norm, act: LSB settings (:class:`LocalSeparationBlock`).
        fusion: ``"attention"`` (AF, paper) or ``"add"``.
        af_norm: norm inside the AF gate.

    :meth:`forward` takes ``x0 (B, dim, H, W)`` = ``Xl_0`` and the list of ``n`` taps
    ``(B, C_i, h_i, w_i)``; each tap is projected to ``dim`` (``tap_proj``), up-sampled
    bilinearly (align_corners=False) to ``H × W`` and fused. Returns the ``n + 1`` LSB
    outputs ``[Xl_1, …, Xl_{n+1}]``, each ``(B, dim, H, W)``.
    """

    def __init__(
        self,
        dim: int,
        tap_channels: Sequence[int],
        expand: int = 2,
        local_op: str = "lhf",
        norm: str = "bn",
        act: str = "relu",
        fusion: str = "attention",
        af_norm: str = "bn",
    ):
        super().__init__()
        self.dim = int(dim)
        self.tap_channels = [int(c) for c in tap_channels]
        n = len(self.tap_channels)
        self.blocks = nn.ModuleList(LocalSeparationBlock(dim, expand, local_op, norm, act) for _ in range(n + 1))
        self.tap_proj = nn.ModuleList(ConvBN(c, dim) for c in self.tap_channels)
        self.fusions = nn.ModuleList(AttentionFusion(dim, mode=fusion, norm=af_norm) for _ in range(n))

    def forward(self, x0: torch.Tensor, taps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(taps) != len(self.tap_proj):
            raise UsageError(f"LocalPath expects {len(self.tap_proj)} backbone taps, got {len(taps)}")
        size = x0.shape[-2:]
        x = self.blocks[0](x0)
        outs = [x]
        for blk, proj, fuse, tap in zip(self.blocks[1:], self.tap_proj, self.fusions, taps):
            g = proj(tap)
            if g.shape[-2:] != size:
                g = F.interpolate(g, size=size, mode="bilinear", align_corners=False)
            x = blk(fuse(x, g))
            outs.append(x)
        return outs


def init_local_weights(module: nn.Module) -> None:
    """Scratch init for the RSSeg head modules (our choice, the paper is silent).

    Conv2d: normal(0, sqrt(2 / fan_out)) (kaiming, fan-out, as mmcv ConvModule / the MiT
    reference), bias 0; Linear: truncated normal std .02, bias 0; norms 1/0. The LHF weights
    and the overlapping patch embedding's ``proj`` keep their own initialisation.
    """
    keep = {id(m.proj) for m in module.modules() if isinstance(m, OverlapPatchEmbed)}
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and id(m) not in keep:
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
