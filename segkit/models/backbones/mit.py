"""Mix Transformer (MiT) encoder of SegFormer, variants B0–B5.

Paper: Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation with
Transformers", NeurIPS 2021, §3.1. Exact hyper-parameters, layer order, LayerNorm eps and
initialisation follow the official NVlabs code (``NVlabs/SegFormer: mmseg/models/backbones/mix_transformer.py``).

Module and attribute names reproduce the official state-dict keys (of that file,
without the ``backbone.`` prefix that :class:`~segkit.models.segmentor.Segmentor` adds)::

    patch_embed{1-4}.proj / .norm
    block{1-4}.{j}.norm1 / .attn.q / .attn.kv / .attn.sr / .attn.norm / .attn.proj
    block{1-4}.{j}.norm2 / .mlp.fc1 / .mlp.dwconv.dwconv / .mlp.fc2
    norm{1-4}

so official checkpoints load without renaming.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from segkit.errors import UsageError

from ..contract import Features
from ..layers import DropPath, drop_path_rates, init_weights_reference

# LayerNorm eps of the official code (mix_transformer.py; docs/implementation_notes.md): the patch-embedding and
# sequence-reduction norms use PyTorch's default, the block and stage-end norms 1e-6.
PATCH_NORM_EPS = 1e-5
SR_NORM_EPS = 1e-5
BLOCK_NORM_EPS = 1e-6


# Token <-> feature-map layout. MiT works on tokens (B, N, C) and only its convolutions
# (patch embedding, sequence reduction, Mix-FFN's depth-wise conv) need maps (B, C, H, W).
# Viewing the tokens as a *channels-last* map is free (no copy): the memory of (B, H·W, C)
# is exactly that of a channels_last (B, C, H, W) tensor. PyTorch's convolutions accept and
# return channels-last, so the round trip costs no transposes (the speed against a
# channels-first implementation is measured by benchmarks/latency.py). Numerics are those of the
# same convolution (fp32 summation order may differ in the last bits).
def tokens_to_map(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(B, H·W, C)`` tokens → ``(B, C, H, W)`` channels-last view of the same memory."""
    b, n, c = x.shape
    return x.view(b, h, w, c).permute(0, 3, 1, 2)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` map → ``(B, H·W, C)`` tokens (a view when ``x`` is channels-last)."""
    b, c, h, w = x.shape
    return x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(b, h * w, c)


class OverlapPatchEmbed(nn.Module):
    """Overlapped patch merging (paper §3.1): strided conv (K, S, P = K // 2) → tokens → LayerNorm.

    ``(B, C_in, H, W)`` → ``(tokens (B, H'·W', C), H', W')`` with ``H' = ceil(H / S)`` for the
    reference settings (K, S) = (7, 4) in stage 1 and (3, 2) in stages 2–4; the conv's zero
    padding handles sizes that are not multiples of the stride.
    """

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim, eps=PATCH_NORM_EPS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x.contiguous(memory_format=torch.channels_last))
        h, w = x.shape[-2:]
        return self.norm(map_to_tokens(x)), h, w


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention with sequence reduction (paper §3.1, eq. 1–2).

    Queries come from all ``N = H·W`` tokens; keys and values from the tokens after a
    ``sr_ratio × sr_ratio`` strided conv (``sr``) + LayerNorm (``norm``, eps 1e-5), i.e.
    ``N / sr_ratio²`` of them (floor division of H, W for sizes that are not multiples;
    ``ValueError`` when H or W < sr_ratio).
    ``kv`` is one Linear(C, 2C): rows ``[:C]`` give K, rows ``[C:]`` give V (official layout).
    Attention is ``torch.nn.functional.scaled_dot_product_attention`` with scale
    ``head_dim^-0.5``; its dropout ``attn_drop`` is active only in training.

    Input ``(B, N, C)`` tokens plus the spatial size ``(H, W)`` with ``H·W = N`` → ``(B, N, C)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        sr_ratio: int = 1,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        if dim % num_heads:
            raise UsageError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.sr_ratio = sr_ratio
        self.attn_drop = float(attn_drop)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=SR_NORM_EPS)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        if self.sr_ratio > 1:
            if h < self.sr_ratio or w < self.sr_ratio:
                raise UsageError(
                    f"feature map {h}x{w} is smaller than the sequence-reduction kernel {self.sr_ratio}: "
                    f"use a larger input (at least 29x29 pixels with the reference sr_ratios, as in the official code)"
                )
            x = self.norm(map_to_tokens(self.sr(tokens_to_map(x, h, w))))
        k, v = self.kv(x).reshape(b, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        x = x.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class DWConv(nn.Module):
    """Depth-wise 3×3 conv (with bias) on tokens: ``(B, N, C)`` + ``(H, W)`` → ``(B, N, C)``."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return map_to_tokens(self.dwconv(tokens_to_map(x, h, w)))


class MixFFN(nn.Module):
    """Mix-FFN (paper §3.1, eq. 3): ``fc1 → DWConv 3×3 → GELU → Dropout → fc2 → Dropout``.

    No activation between ``fc1`` and the depth-wise conv (official). GELU is the exact (erf)
    form. ``(B, N, C)`` + ``(H, W)`` → ``(B, N, C)``; hidden width ``C · mlp_ratio``.
    """

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = DWConv(hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x), h, w)))
        return self.drop(self.fc2(x))


class MiTBlock(nn.Module):
    """Pre-norm Transformer block: ``x + DropPath(Attn(LN(x)))`` then ``x + DropPath(MixFFN(LN(x)))``.

    Both LayerNorms use eps 1e-6 (official ``mix_transformer.py``). ``(B, N, C)`` + ``(H, W)`` → ``(B, N, C)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        sr_ratio: int,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class MixVisionTransformer(nn.Module):
    """Hierarchical MiT encoder (paper §3.1; official ``mix_transformer.py``).

    Four stages; stage ``i`` = ``patch_embed{i}`` (overlapped patch merging, stride 4 then 2)
    → ``depths[i]`` :class:`MiTBlock` s (``block{i}``) → LayerNorm ``norm{i}`` (eps 1e-6) →
    reshape to a feature map. Stochastic-depth rates grow linearly from 0 to
    ``drop_path_rate`` over all blocks.

    Args:
        embed_dims, num_heads, mlp_ratios, depths, sr_ratios: per-stage settings (4 each);
            see :data:`segkit.models.segformer.VARIANTS` for B0–B5.
        qkv_bias: bias in the ``q`` and ``kv`` projections (reference: True).
        drop_rate: dropout after the attention projection and in Mix-FFN (reference 0).
        attn_drop_rate: dropout on the attention weights, training only (reference 0).
        drop_path_rate: maximum stochastic-depth rate (reference 0.1).
        in_chans: input channels.

    Attributes:
        out_channels: ``list[int]`` channels of the four outputs (= ``embed_dims``).

    Input: ``(B, in_chans, H, W)`` float, ``H, W`` ≥ 29 (not necessarily multiples of 32;
    smaller images make the stage-1 map smaller than the 8×8 reduction conv: ``ValueError``).
    Output: :class:`~segkit.models.contract.Features` whose ``stages`` are 4 tensors
    ``(B, C_i, H_i, W_i)`` with ``H_1 = ceil(H / 4)`` and
    ``H_{i+1} = ceil(H_i / 2)`` (strides 4, 8, 16, 32 for multiples of 32), in channels-last
    memory format (views of the stage's tokens; call ``.contiguous()`` for NCHW memory).

    Weights are initialised with :func:`~segkit.models.layers.init_weights_reference`
    (Linear trunc-normal 0.02, LayerNorm 1/0, conv normal(0, sqrt(2 / fan_out))).
    """

    def __init__(
        self,
        embed_dims: Sequence[int],
        num_heads: Sequence[int],
        mlp_ratios: Sequence[float],
        depths: Sequence[int],
        sr_ratios: Sequence[int],
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        in_chans: int = 3,
    ):
        super().__init__()
        settings = dict(
            embed_dims=embed_dims, num_heads=num_heads, mlp_ratios=mlp_ratios, depths=depths, sr_ratios=sr_ratios
        )
        for key, value in settings.items():
            if len(value) != 4:
                raise UsageError(f"{key} must have 4 entries (one per stage), got {list(value)}")
        self.embed_dims = [int(d) for d in embed_dims]
        self.depths = [int(d) for d in depths]
        self.out_channels = list(self.embed_dims)
        dpr = drop_path_rates(drop_path_rate, depths)
        patch = [(7, 4), (3, 2), (3, 2), (3, 2)]  # (kernel, stride); padding = kernel // 2 (paper §3.1)
        start = 0
        prev = in_chans
        for i in range(4):
            k, s = patch[i]
            setattr(self, f"patch_embed{i + 1}", OverlapPatchEmbed(prev, self.embed_dims[i], k, s))
            setattr(
                self,
                f"block{i + 1}",
                nn.ModuleList(
                    MiTBlock(
                        self.embed_dims[i],
                        num_heads[i],
                        mlp_ratios[i],
                        sr_ratios[i],
                        qkv_bias,
                        drop_rate,
                        attn_drop_rate,
                        dpr[start + j],
                    )
                    for j in range(self.depths[i])
                ),
            )
            setattr(self, f"norm{i + 1}", nn.LayerNorm(self.embed_dims[i], eps=BLOCK_NORM_EPS))
            start += self.depths[i]
            prev = self.embed_dims[i]
        self.apply(init_weights_reference)

    def forward(self, x: torch.Tensor) -> Features:
        outs = []
        for i in range(1, 5):
            x, h, w = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"block{i}"):
                x = blk(x, h, w)
            x = getattr(self, f"norm{i}")(x)
            x = tokens_to_map(x, h, w)  # channels-last (B, C_i, H_i, W_i), no copy
            outs.append(x)
        return Features(stages=outs)
