"""Plain-ViT baselines of the RSSeg paper: ViT-Linear and Segmenter's mask transformer.

Source: Segmenter (Strudel et al., ICCV 2021; ``rstrudel/segmenter: segm/model/decoder.py``); RSSeg
uses ViT-Linear as its baseline (RSSeg paper Table 4, Tables 11–14) and compares to Segmenter.
Module names follow the official Segmenter decoder keys (``head``; ``proj_dec``, ``cls_emb``,
``blocks.{i}.*``, ``decoder_norm``, ``mask_norm``); ``proj_patch`` / ``proj_classes`` are
Linear layers here (official: bare ``(d, d)`` parameters used as ``x @ P``, i.e. our weight
is their parameter transposed — as in mmseg's port).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..contract import DecodeHead, Features
from ..layers import DropPath, drop_path_rates
from .rsseg.dca import DecoderMlp


class LinearHead(DecodeHead):
    """ViT-Linear: ``Linear(C, K)`` on the patch tokens of the last encoder map.

    Input: :class:`~segkit.models.contract.Features` whose last stage is ``(B, C, h, w)`` (1/16).
    Output logits ``(B, K, h, w)``.
    Init: truncated normal std .02, bias 0 (Segmenter).
    """

    def __init__(self, in_dim: int, num_classes: int):
        super().__init__()
        self.head = nn.Linear(in_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, features: Features) -> torch.Tensor:
        x = features.stages[-1]
        b, _, h, w = x.shape
        return self.head(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, -1, h, w)


class SelfAttention(nn.Module):
    """Multi-head self-attention, fused ``qkv`` Linear(d, 3d) + ``proj`` (Segmenter block)."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))


class SegmenterBlock(nn.Module):
    """Pre-norm transformer block of the mask transformer (LayerNorm eps 1e-5)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.1, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = DecoderMlp(dim, int(dim * mlp_ratio), dropout)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SegmenterMaskHead(DecodeHead):
    """Segmenter's mask transformer (Segmenter §3.2; ``segm/model/decoder.py``).

    ``proj_dec`` Linear(C_enc, d) on the patch tokens; ``cls_emb`` (1, K, d) class embeddings
    appended; ``num_layers`` joint self-attention blocks over [patches, classes];
    ``decoder_norm``; patches → ``proj_patch``, classes → ``proj_classes``; both
    L2-normalised; masks = patches · classesᵀ → ``mask_norm`` (LayerNorm over K).
    Defaults: 2 layers, d = encoder width, heads = d/64, MLP 4d, dropout 0.1, drop path 0.

    Input: :class:`~segkit.models.contract.Features` whose last stage is ``(B, C_enc, h, w)``.
    Output ``(B, K, h, w)``.
    Init: Linear truncated normal .02 / bias 0, ``cls_emb`` truncated normal .02,
    ``proj_patch`` / ``proj_classes`` normal with std ``d^-0.5`` (official ``scale · randn``).
    """

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        dim: int | None = None,
        num_layers: int = 2,
        num_heads: int | None = None,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        dim = dim or in_dim
        num_heads = num_heads or max(dim // 64, 1)
        self.num_classes = int(num_classes)
        self.proj_dec = nn.Linear(in_dim, dim)
        self.cls_emb = nn.Parameter(torch.zeros(1, num_classes, dim))
        dpr = drop_path_rates(drop_path_rate, [num_layers])
        self.blocks = nn.ModuleList(
            SegmenterBlock(dim, num_heads, mlp_ratio, dropout, dpr[i]) for i in range(num_layers)
        )
        self.decoder_norm = nn.LayerNorm(dim)
        self.proj_patch = nn.Linear(dim, dim, bias=False)
        self.proj_classes = nn.Linear(dim, dim, bias=False)
        self.mask_norm = nn.LayerNorm(num_classes)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.cls_emb, std=0.02)
        nn.init.normal_(self.proj_patch.weight, std=1.0 / math.sqrt(dim))
        nn.init.normal_(self.proj_classes.weight, std=1.0 / math.sqrt(dim))

    def forward(self, features: Features) -> torch.Tensor:
        x = features.stages[-1]
        b, _, h, w = x.shape
        x = self.proj_dec(x.flatten(2).transpose(1, 2))
        x = torch.cat([x, self.cls_emb.expand(b, -1, -1)], dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.decoder_norm(x)
        patches = F.normalize(self.proj_patch(x[:, : -self.num_classes]), dim=-1)
        classes = F.normalize(self.proj_classes(x[:, -self.num_classes :]), dim=-1)
        masks = self.mask_norm(patches @ classes.transpose(1, 2))
        return masks.transpose(1, 2).reshape(b, self.num_classes, h, w)
