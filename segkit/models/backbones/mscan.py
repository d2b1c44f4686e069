"""MSCAN: the multi-scale convolutional attention encoder of SegNeXt (Guo et al., NeurIPS 2022).

Paper §3.1 (eqs. 1–2, Fig. 2, Tab. 2); exact structure and hyper-parameters from the official
code (``Visual-Attention-Network/SegNeXt: mmseg/models/backbones/mscan.py``). Parameter and buffer
names are the official SegNeXt checkpoint keys without the ``backbone.`` prefix, e.g.
``block1.0.attn.spatial_gating_unit.conv0_1.weight`` and ``block1.0.mlp.dwconv.dwconv.weight``.

Layout: unlike the reference, which flattens every stage to ``(B, N, C)`` tokens and reshapes
back in every block, the features stay ``(B, C, H, W)`` from stem to stage end; only the
stage-end LayerNorm views them as tokens (a permute, free for ``torch.channels_last``
tensors). The arithmetic is the reference's. Every module accepts contiguous or
``channels_last`` input. On CPU, :class:`MSCAN` switches its input to ``channels_last``
(attribute ``cpu_channels_last``, default True): oneDNN's depth-wise and 1×1 convolutions are
several times faster in that layout there, and the rest of the network (head included)
follows the layout of its input. Other devices keep the caller's layout. The GELUs are
:class:`~segkit.models.layers.ChannelsLastGELU`: ATen's GELU of a channels-last map is about
1.5× slower than that of the same memory seen as a contiguous NHWC tensor (AVX-512 and AVX2
alike, ``benchmarks/results/avx2_kernels.md``), so they run on that view (same values as the
reference's NCHW GELU, bit for bit).

Inference speed: :meth:`Segmentor.fused <segkit.models.segmentor.Segmentor.fused>` (used by
segkit's inference entry points, :mod:`segkit.models.fuse`) returns an eval-only copy in which
every BatchNorm and the blocks' layer scales are folded into the
neighbouring convolutions (:func:`fuse_conv_bn`, :class:`FusedMSCABlock`): the same function
with fewer passes over the feature maps. The modules themselves have one forward path each
(the reference math, in training and eval); the fused copy is tested against it.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from segkit.errors import UsageError

from ..contract import Features
from ..layers import ChannelsLastGELU, DilatedDepthwiseConv2d, DropPath, drop_path_rates, init_weights_reference


def bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as a per-channel affine map ``y = a·x + b``: returns ``(a, b)``, each ``[C]``."""
    a = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return a, bn.bias - bn.running_mean * a


def _conv_like(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    """A new ``nn.Conv2d`` with ``conv``'s geometry and the given weight and bias (detached copies)."""
    out = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        out.weight.copy_(weight)
        out.bias.copy_(bias)
    return out.requires_grad_(False)


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """``bn(conv(x))`` in eval mode as one convolution (weights scaled per output channel; exact)."""
    a, b = bn_affine(bn)
    bias = b if conv.bias is None else conv.bias * a + b
    return _conv_like(conv, conv.weight * a.view(-1, 1, 1, 1), bias)


@torch.no_grad()
def fuse_bn_conv1x1(a: torch.Tensor, b: torch.Tensor, conv: nn.Conv2d) -> nn.Conv2d:
    """``conv(a·x + b)`` (an eval-mode BatchNorm given by :func:`bn_affine`, then a 1×1 conv) as one conv.

    Exact because a 1×1 convolution has no padding: ``W(a·x + b) + c = (W·a)x + (W b + c)``.
    """
    bias = conv.weight.flatten(1) @ b + (0 if conv.bias is None else conv.bias)
    return _conv_like(conv, conv.weight * a.view(1, -1, 1, 1), bias)


class StemConv(nn.Module):
    """Stage-1 down-sampling (×4): ``proj`` = [0] Conv3×3 s2 (3→C/2) [1] BN [2] GELU [3] Conv3×3 s2 (C/2→C) [4] BN.

    ``(B, in_chans, H, W)`` → ``(B, C, ⌈H/4⌉, ⌈W/4⌉)`` (padding 1, so odd sizes round up).
    """

    def __init__(self, in_chans: int, out_chans: int):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, out_chans // 2, 3, stride=2, padding=1),
            nn.BatchNorm2d(out_chans // 2),
            ChannelsLastGELU(),
            nn.Conv2d(out_chans // 2, out_chans, 3, stride=2, padding=1),
            nn.BatchNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)

    def fused(self) -> nn.Module:
        """Eval-only equivalent with both BatchNorms folded into the convolutions."""
        conv0, bn0, act, conv1, bn1 = self.proj
        return nn.Sequential(fuse_conv_bn(conv0, bn0), act, fuse_conv_bn(conv1, bn1))


class DownsampleConv(nn.Module):
    """Stages 2–4 down-sampling (×2): ``proj`` Conv3×3 s2 p1 (with bias) → ``norm`` BatchNorm.

    ``(B, C_in, H, W)`` → ``(B, C_out, ⌈H/2⌉, ⌈W/2⌉)`` (paper §3.1; official ``mscan.py``).
    """

    def __init__(self, in_chans: int, out_chans: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, out_chans, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))

    def fused(self) -> nn.Module:
        """Eval-only equivalent with the BatchNorm folded into the convolution."""
        return fuse_conv_bn(self.proj, self.norm)


class _HorizontalStripConv(torch.autograd.Function):
    """A depth-wise 1×k convolution whose weight gradient is computed on the transposed maps.

    Same values and gradients as ``F.conv2d(x, w, b, padding=(0, k // 2), groups=C)`` (up to
    fp32 summation order); only the weight gradient is computed differently: as the k×1
    weight gradient of ``xᵀ``, ``gᵀ`` (H and W swapped, copied to ``channels_last``). On
    x86 CPUs oneDNN's depth-wise weight gradient is several times slower for a 1×21 kernel
    than for 21×1 on the same maps (stages 1–2 of MSCAN at 256² crops), and the two copies cost
    less than the difference (``benchmarks/strip_conv.py``). Used by :class:`MSCA` in
    training on the CPU for maps of at least :data:`STRIP_TRICK_MIN_PIXELS` pixels.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, pad):
        ctx.save_for_backward(x, weight)
        ctx.pad = pad
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, padding=(0, pad), groups=weight.shape[0])

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        c, pad = weight.shape[0], ctx.pad
        conv_backward = torch.ops.aten.convolution_backward
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = conv_backward(
                grad, x, weight, None, [1, 1], [0, pad], [1, 1], False, [0, 0], c, [True, False, False]
            )[0]
        if ctx.needs_input_grad[1]:
            cl = torch.channels_last
            xt = x.transpose(2, 3).contiguous(memory_format=cl)
            gt = grad.transpose(2, 3).contiguous(memory_format=cl)
            wt = weight.transpose(2, 3)
            grad_w = conv_backward(gt, xt, wt, None, [1, 1], [pad, 0], [1, 1], False, [0, 0], c, [False, True, False])[
                1
            ]
            grad_w = grad_w.transpose(2, 3).contiguous()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None


STRIP_TRICK_MIN_PIXELS = 1024  # H·W from which _HorizontalStripConv is used (32×32 and up)


def _horizontal_strip(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a depth-wise 1×k conv, through :class:`_HorizontalStripConv` where that is faster.

    Under CPU autocast the operands are cast as autocast would cast them (to its dtype) and the
    function runs with autocast off, so its backward sees one dtype.
    """
    if not (
        x.device.type == "cpu"
        and torch.is_grad_enabled()
        and conv.weight.requires_grad
        and x.shape[-2] * x.shape[-1] >= STRIP_TRICK_MIN_PIXELS
    ):
        return conv(x)
    weight, bias = conv.weight, conv.bias
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
        x, weight = x.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
        with torch.autocast("cpu", enabled=False):
            return _HorizontalStripConv.apply(x, weight, bias, conv.padding[1])
    if x.dtype != weight.dtype:
        return conv(x)
    return _HorizontalStripConv.apply(x, weight, bias, conv.padding[1])


class MSCA(nn.Module):
    """Multi-scale convolutional attention (paper eqs. 1–2; ``spatial_gating_unit`` in checkpoints).

    ``a = DW5×5(u)``; three strip branches ``DW k×1 ∘ DW 1×k`` (k = 7, 11, 21), each fed by ``a``;
    ``att = Conv1×1(a + b7 + b11 + b21)``; output ``att ⊙ u``. All convs have a bias.
    Shape-preserving: ``(B, C, H, W)`` → ``(B, C, H, W)``.

    Ablation switches (SegNeXt Tab. 6; defaults = the published MSCA):
        kernel_sizes: the strip branches kept, e.g. ``(21,)`` for the "21×21 Br only" row. Branch
            ``i`` of the tuple is ``conv{i}_1`` (1×k) → ``conv{i}_2`` (k×1), so the default has the
            official names; the identity branch (``Scale_0``) is always there.
        channel_mixing: the 1×1 conv ``conv3`` ("1×1 Conv" column); without it ``att`` is the
            branch sum itself.
        attention: the element-wise product with ``u`` ("Attention" column); without it the
            output is ``att``.
    """

    def __init__(
        self,
        dim: int,
        kernel_sizes: Sequence[int] = (7, 11, 21),
        channel_mixing: bool = True,
        attention: bool = True,
    ):
        super().__init__()
        self.kernel_sizes = tuple(int(k) for k in kernel_sizes)
        if any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            raise UsageError(f"MSCA kernel sizes must be odd and positive, got {list(kernel_sizes)}")
        self.attention = bool(attention)
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self._branches: list[tuple[str, str]] = []
        for i, k in enumerate(self.kernel_sizes):
            setattr(self, f"conv{i}_1", nn.Conv2d(dim, dim, (1, k), padding=(0, k // 2), groups=dim))
            setattr(self, f"conv{i}_2", nn.Conv2d(dim, dim, (k, 1), padding=(k // 2, 0), groups=dim))
            self._branches.append((f"conv{i}_1", f"conv{i}_2"))
        self.conv3 = nn.Conv2d(dim, dim, 1) if channel_mixing else nn.Identity()

    def extra_repr(self) -> str:
        return f"kernel_sizes={self.kernel_sizes}, attention={self.attention}"

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        a = self.conv0(u)
        s = None
        for n1, n2 in self._branches:
            b = getattr(self, n2)(_horizontal_strip(getattr(self, n1), a))
            # In-place accumulation into the fresh branch output is autograd-safe (add saves
            # nothing) and avoids temporaries; ``a`` itself is left untouched (every branch needs it).
            s = b if s is None else s.add_(b)
        s = a if s is None else s.add_(a)
        att = self.conv3(s)
        return att * u if self.attention else att


class LKA(nn.Module):
    """Large-kernel attention of VAN (Guo et al., "Visual Attention Network", 2022): SegNeXt's "w/o MSCA".

    ``att = Conv1×1(DW7×7,dilation 3(DW5×5(u)))``, output ``att ⊙ u`` — one large-kernel
    branch (a 21×21 receptive field) in place of MSCA's multi-scale strips (SegNeXt §4.2,
    "Importance of our MSCA", Tab. 8: "we follow VAN and replace the multiple branches in our
    MSCA with a single convolution with a large kernel"). Names as VAN's
    ``Visual-Attention-Network/VAN-Classification: models/van.py``: ``conv0``, ``conv_spatial``,
    ``conv1``. ``(B, C, H, W)`` → same shape.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv_spatial = DilatedDepthwiseConv2d(dim, dim, 7, padding=9, groups=dim, dilation=3)
        self.conv1 = nn.Conv2d(dim, dim, 1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.conv_spatial(self.conv0(u))) * u


def spatial_unit(dim: int, kind: str = "msca", **msca_kwargs) -> nn.Module:
    """A block's attention unit: ``"msca"`` (:class:`MSCA`, with its ablation switches) or ``"lka"`` (:class:`LKA`).

    Raises ``ValueError`` for another ``kind`` or for MSCA switches given with ``"lka"``.
    """
    if kind == "msca":
        return MSCA(dim, **msca_kwargs)
    if kind == "lka":
        if msca_kwargs:
            raise UsageError(f"MSCA switches {sorted(msca_kwargs)} do not apply to the LKA unit")
        return LKA(dim)
    raise UsageError(f"unknown spatial attention unit {kind!r}; choose 'msca' or 'lka'")


class SpatialAttention(nn.Module):
    """``attn`` of a block: ``proj_1`` Conv1×1 → GELU → MSCA → ``proj_2`` Conv1×1, plus the input (shortcut).

    ``(B, C, H, W)`` → ``(B, C, H, W)`` (official ``mscan.py``). ``unit`` and ``msca_kwargs``:
    :func:`spatial_unit`.
    """

    def __init__(self, dim: int, unit: str = "msca", **msca_kwargs):
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.activation = ChannelsLastGELU()
        self.spatial_gating_unit = spatial_unit(dim, unit, **msca_kwargs)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))
        return y + x


class DWConv(nn.Module):
    """Depth-wise 3×3 conv (with bias) held as ``dwconv.dwconv`` to match the official key names."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dwconv(x)


class Mlp(nn.Module):
    """Conv-FFN: ``fc1`` Conv1×1 (C→rC) → ``dwconv`` DW3×3 → GELU → Dropout → ``fc2`` Conv1×1 (rC→C) → Dropout."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = DWConv(hidden)
        self.act = ChannelsLastGELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x))))
        return self.drop(self.fc2(x))


class MSCABlock(nn.Module):
    """MSCAN building block (paper Fig. 2c; official ``mscan.py``)::

        x = x + DropPath(layer_scale_1 ⊙ attn(norm1(x)))
        x = x + DropPath(layer_scale_2 ⊙ mlp(norm2(x)))

    ``norm1``/``norm2`` are BatchNorm2d (paper §3.1: BN instead of LN). ``layer_scale_1/2`` are
    per-channel parameters of shape ``[C]`` initialised to 1e-2. ``(B, C, H, W)`` → same shape.
    ``unit`` / ``msca_kwargs``: the attention unit and its ablation switches (:func:`spatial_unit`).
    """

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        layer_scale_init: float = 1e-2,
        unit: str = "msca",
        **msca_kwargs,
    ):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = SpatialAttention(dim, unit, **msca_kwargs)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), layer_scale_init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ls1 = self.layer_scale_1.view(-1, 1, 1)
        ls2 = self.layer_scale_2.view(-1, 1, 1)
        if isinstance(self.drop_path, nn.Identity) or not self.training:
            # x + ls ⊙ f(x) in one fused op (no separate product tensor).
            x = torch.addcmul(x, ls1, self.attn(self.norm1(x)))
            return torch.addcmul(x, ls2, self.mlp(self.norm2(x)))
        x = x + self.drop_path(ls1 * self.attn(self.norm1(x)))
        return x + self.drop_path(ls2 * self.mlp(self.norm2(x)))

    def fused(self) -> "FusedMSCABlock":
        """Eval-only equivalent with the BatchNorms and layer scales folded (:class:`FusedMSCABlock`)."""
        return FusedMSCABlock(self)


class FusedMSCABlock(nn.Module):
    """An :class:`MSCABlock` in eval mode with its BatchNorms and layer scales folded into the 1×1 convs.

    Same function as the block's eval forward (fp32 rounding differences only; tested against
    it). With ``norm1 x = a₁·x + b₁`` and the attention shortcut ``attn(n) = proj_2(g(proj_1 n)) + n``::

        x + ls₁ ⊙ attn(norm1 x) = [ls₁·proj_2](g([proj_1·a₁] x)) + ls₁·b₁ + (1 + ls₁·a₁) ⊙ x
        x + ls₂ ⊙ mlp(norm2 x)  = x + [ls₂·fc2](act(dw([fc1·a₂] x)))

    which saves both BatchNorm passes and the shortcut add over the feature map. ``g`` (GELU →
    MSCA) and the FFN's depth-wise conv are the block's own modules (shared, not copied).
    Built by :meth:`MSCABlock.fused`; raises ``RuntimeError`` if run in training mode.
    """

    def __init__(self, block: MSCABlock):
        super().__init__()
        attn, mlp = block.attn, block.mlp
        with torch.no_grad():
            ls1, ls2 = block.layer_scale_1.detach(), block.layer_scale_2.detach()
            a1, b1 = bn_affine(block.norm1)
            self.proj_1 = fuse_bn_conv1x1(a1, b1, attn.proj_1)
            self.activation, self.spatial_gating_unit = attn.activation, attn.spatial_gating_unit
            self.proj_2 = _conv_like(
                attn.proj_2, attn.proj_2.weight * ls1.view(-1, 1, 1, 1), (attn.proj_2.bias + b1) * ls1
            )
            self.register_buffer("shortcut_scale", (1 + ls1 * a1).view(-1, 1, 1).clone())
            self.fc1 = fuse_bn_conv1x1(*bn_affine(block.norm2), mlp.fc1)
            self.dwconv, self.act, self.drop = mlp.dwconv, mlp.act, mlp.drop
            self.fc2 = _conv_like(mlp.fc2, mlp.fc2.weight * ls2.view(-1, 1, 1, 1), mlp.fc2.bias * ls2)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError(
                "FusedMSCABlock is for inference only: train the unfused model (Segmentor, not .fused())"
            )
        y = self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))
        x = torch.addcmul(y, x, self.shortcut_scale)
        y = self.fc2(self.drop(self.act(self.dwconv(self.fc1(x)))))
        return y.add_(x)


class MSCAN(nn.Module):
    """Multi-Scale Convolutional Attention Network (SegNeXt encoder; paper §3.1, Tab. 2).

    Args:
        embed_dims: channels of the 4 stages (e.g. ``(32, 64, 160, 256)`` for T).
        depths: blocks per stage (e.g. ``(3, 3, 5, 2)``).
        mlp_ratios: FFN expansion per stage (``(8, 8, 4, 4)`` for all variants).
        drop_rate: dropout inside the FFN (reference 0).
        drop_path_rate: maximum stochastic-depth rate; rates rise linearly over all blocks
            (``linspace(0, drop_path_rate, sum(depths))``).
        in_chans: input channels (3).
        cpu_channels_last: convert CPU inputs to ``torch.channels_last`` (values unchanged;
            speed only, see module docstring). Outputs are then ``channels_last`` tensors.
        attention_unit: ``"msca"`` (default) or ``"lka"`` (VAN's large-kernel attention, the
            "w/o MSCA" encoder of SegNeXt Tab. 8); :func:`spatial_unit`.
        msca_kernel_sizes, msca_channel_mixing, msca_attention: MSCA's ablation switches
            (SegNeXt Tab. 6; :class:`MSCA`), the same in every block. Only for ``"msca"``.

    Input: ``(B, in_chans, H, W)`` float (normalised image); any H, W ≥ 1.
    Output: :class:`~segkit.models.contract.Features` whose ``stages`` are 4 tensors
    ``(B, C_i, H_i, W_i)`` with strides 4, 8, 16, 32
    (``H_1 = ⌈H/4⌉``, then ``H_{i+1} = ⌈H_i/2⌉``), each after its stage-end LayerNorm
    (``norm{i}``, eps 1e-5, over channels). ``out_channels`` = ``embed_dims``.
    Weights are initialised as the reference scratch init (:func:`init_weights_reference`).
    """

    def __init__(
        self,
        embed_dims: Sequence[int] = (32, 64, 160, 256),
        depths: Sequence[int] = (3, 3, 5, 2),
        mlp_ratios: Sequence[float] = (8, 8, 4, 4),
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        in_chans: int = 3,
        cpu_channels_last: bool = True,
        attention_unit: str = "msca",
        msca_kernel_sizes: Sequence[int] = (7, 11, 21),
        msca_channel_mixing: bool = True,
        msca_attention: bool = True,
    ):
        super().__init__()
        self.cpu_channels_last = bool(cpu_channels_last)
        unit_kwargs = {}
        if attention_unit == "msca":
            unit_kwargs = dict(
                kernel_sizes=msca_kernel_sizes, channel_mixing=msca_channel_mixing, attention=msca_attention
            )
        elif (tuple(msca_kernel_sizes), msca_channel_mixing, msca_attention) != ((7, 11, 21), True, True):
            raise UsageError(f"the msca_* switches apply to attention_unit='msca', not {attention_unit!r}")
        if not (len(embed_dims) == len(depths) == len(mlp_ratios) == 4):
            raise UsageError(
                f"embed_dims, depths and mlp_ratios need 4 entries each, got "
                f"{list(embed_dims)}, {list(depths)}, {list(mlp_ratios)}"
            )
        self.embed_dims = tuple(int(d) for d in embed_dims)
        self.depths = tuple(int(d) for d in depths)
        self.mlp_ratios = tuple(mlp_ratios)
        self.out_channels = list(self.embed_dims)
        self.num_stages = 4
        dpr = drop_path_rates(drop_path_rate, self.depths)
        cur = 0
        for i in range(4):
            dim = self.embed_dims[i]
            embed = StemConv(in_chans, dim) if i == 0 else DownsampleConv(self.embed_dims[i - 1], dim)
            blocks = nn.ModuleList(
                MSCABlock(dim, self.mlp_ratios[i], drop_rate, dpr[cur + j], unit=attention_unit, **unit_kwargs)
                for j in range(self.depths[i])
            )
            cur += self.depths[i]
            setattr(self, f"patch_embed{i + 1}", embed)
            setattr(self, f"block{i + 1}", blocks)
            setattr(self, f"norm{i + 1}", nn.LayerNorm(dim, eps=1e-5))
        self.apply(init_weights_reference)

    def forward(self, x: torch.Tensor) -> Features:
        if x.ndim != 4:
            raise UsageError(f"MSCAN expects (B, C, H, W) input, got shape {tuple(x.shape)}")
        if self.cpu_channels_last and x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        outs = []
        for i in range(1, 5):
            x = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"block{i}"):
                x = blk(x)
            norm = getattr(self, f"norm{i}")
            # LayerNorm over channels on the NHWC view. For channels_last input the view is
            # contiguous (no copy) and permuting back gives a channels_last NCHW tensor again;
            # otherwise the output is made contiguous like the input (as the reference does).
            x = F.layer_norm(x.permute(0, 2, 3, 1), norm.normalized_shape, norm.weight, norm.bias, norm.eps).permute(
                0, 3, 1, 2
            )
            if not channels_last:
                x = x.contiguous()
            outs.append(x)
        return Features(stages=outs)
