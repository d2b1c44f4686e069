"""Plain Vision Transformer (ViT) encoder for dense prediction, timm/AugReg layout.

Paper: Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021; AugReg weights:
Steiner et al., "How to train your ViT?", 2021 (the ViT backbones of RSSeg, RSSeg paper §4.2).
Sizes: ViT paper Table 1 (ViT-B/16: 768 wide, 12 blocks, 12 heads, MLP 3072; ViT-L/16:
1024, 24, 16, 4096; LayerNorm eps 1e-6, qkv bias, cls token, learned absolute position
embedding).

Module names reproduce the timm state-dict keys, so timm/AugReg checkpoints load without
renaming (the ImageNet classifier ``head.*`` is the only thing dropped;
:mod:`segkit.models.rsseg.convert`)::

    cls_token (1, 1, C)        pos_embed (1, 1 + N, C)     patch_embed.proj (Conv k=p, s=p)
    blocks.{i}.norm1 / .attn.qkv / .attn.proj / .norm2 / .mlp.fc1 / .mlp.fc2
    norm                        (final LayerNorm)

Blocks are pre-norm: ``x + DropPath(Attn(LN(x)))`` then ``x + DropPath(MLP(LN(x)))``; attention
runs through :func:`torch.nn.functional.scaled_dot_product_attention` (scale ``head_dim^-0.5``).
"""

from __future__ import annotations

import re
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from segkit.errors import UsageError

from ..contract import Features
from ..layers import DropPath, drop_path_rates, init_trunc_normal

# Plain ViT sizes (ViT paper Table 1; Ti/S from DeiT Table 1).
VIT_VARIANTS: dict[str, dict] = {
    "vit-ti": dict(embed_dim=192, depth=12, num_heads=3),
    "vit-s": dict(embed_dim=384, depth=12, num_heads=6),
    "vit-b": dict(embed_dim=768, depth=12, num_heads=12),
    "vit-l": dict(embed_dim=1024, depth=24, num_heads=16),
}


def to_2tuple(value: int | Sequence[int], name: str = "size") -> tuple[int, int]:
    """``512`` → ``(512, 512)``; ``(512, 1024)`` unchanged. ``ValueError`` for anything else."""
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise UsageError(f"{name} must be an int or a pair (H, W), got {value}")
    return value


def check_out_indices(out_indices: Sequence[int], depth: int) -> tuple[int, ...]:
    """Validate 0-based block indices: strictly increasing, each in ``[0, depth)``."""
    out = tuple(int(i) for i in out_indices)
    if not out:
        raise UsageError("out_indices must name at least one block")
    if any(i < 0 or i >= depth for i in out):
        raise UsageError(f"out_indices {list(out)} must be 0-based block indices in [0, {depth - 1}]")
    if any(b <= a for a, b in zip(out, out[1:])):
        raise UsageError(f"out_indices {list(out)} must be strictly increasing")
    return out


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad ``(B, C, H, W)`` at the bottom and right so that H and W are multiples of ``multiple``.

    Same convention as mmseg's ``AdaptivePadding(padding='corner')``. Returns ``x`` itself
    when no padding is needed.
    """
    ph, pw = (-x.shape[-2]) % multiple, (-x.shape[-1]) % multiple
    return F.pad(x, (0, pw, 0, ph)) if ph or pw else x


def layer_id_bert(name: str, num_layers: int) -> int:
    """Layer id for layer-wise lr decay, BEiT convention.

    ``cls_token`` / ``pos_embed`` / ``patch_embed.*`` → 0; ``blocks.{i}.*`` → ``i + 1``;
    everything else (final ``norm``, anything outside the encoder) → ``num_layers + 1``.
    ``name`` is a parameter name relative to the encoder; a leading prefix such as
    ``backbone.`` is tolerated (the component must follow a ``.`` or start the name).
    """
    m = re.search(r"(?:^|\.)blocks\.(\d+)\.", name)
    if m:
        return int(m.group(1)) + 1
    if re.search(r"(?:^|\.)(?:cls_token|pos_embed|mask_token)$", name) or re.search(r"(?:^|\.)patch_embed\.", name):
        return 0
    return num_layers + 1


def resize_pos_embed(
    pos_embed: torch.Tensor, src_grid: Sequence[int], dst_grid: Sequence[int], num_extra_tokens: int = 1
) -> torch.Tensor:
    """Resize an absolute position embedding to another patch grid.

    ``pos_embed`` is ``(1, E + Hs·Ws, C)`` whose first ``E = num_extra_tokens`` entries (the
    cls token's) are kept unchanged; the grid part is resized with bicubic interpolation
    (``align_corners=False``, computed in float32, then cast back), as mmseg and the BEiT
    code do (timm ``resize_pos_embed``, mmseg ``VisionTransformer.resize_pos_embed``). Grids may
    be non-square. Returns ``(1, E + Hd·Wd, C)``.

    Raises:
        ValueError: the token count does not match ``src_grid``.
    """
    hs, ws = (int(v) for v in src_grid)
    hd, wd = (int(v) for v in dst_grid)
    if pos_embed.ndim != 3 or pos_embed.shape[1] != num_extra_tokens + hs * ws:
        raise UsageError(
            f"pos_embed of shape {tuple(pos_embed.shape)} does not hold {num_extra_tokens} extra "
            f"token(s) + a {hs}x{ws} grid"
        )
    if (hs, ws) == (hd, wd):
        return pos_embed
    extra, grid = pos_embed[:, :num_extra_tokens], pos_embed[:, num_extra_tokens:]
    c = grid.shape[-1]
    grid = grid.float().reshape(1, hs, ws, c).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(hd, wd), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, hd * wd, c).to(pos_embed.dtype)
    return torch.cat([extra, grid], dim=1)


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding: Conv(k = s = patch_size) → tokens.

    ``(B, C_in, H, W)`` with H, W multiples of ``patch_size`` → ``(tokens (B, h·w, C), (h, w))``.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)
        h, w = x.shape[-2:]
        return x.flatten(2).transpose(1, 2), (h, w)


class Mlp(nn.Module):
    """``fc1 → GELU (exact erf form) → fc2``: ``(B, N, C)`` → ``(B, N, C)``."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` Linear(C, 3C) (rows: q, k, v) and ``proj``.

    ``(B, N, C)`` → ``(B, N, C)``; ``softmax(q kᵀ / sqrt(head_dim)) v`` through
    :func:`~torch.nn.functional.scaled_dot_product_attention`.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise UsageError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm ViT block (LayerNorm eps ``norm_eps``): ``(B, N, C)`` → ``(B, N, C)``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """Plain ViT encoder returning feature maps of chosen blocks (ViT paper; timm ``vision_transformer.py``).

    Args:
        img_size: ``(H, W)`` (or int) the position embedding is made for; its patch grid is
            ``(H // patch_size, W // patch_size)``. Other input sizes work: the embedding is
            resized on the fly (bicubic, ``align_corners=False``, cls entry kept; nothing is
            cached, so changing sizes between calls is safe).
        patch_size: patch side p (16).
        in_chans: input channels.
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias: transformer size
            (:data:`VIT_VARIANTS`).
        drop_path_rate: stochastic depth, ``linspace(0, rate, depth)`` over the blocks.
        out_indices: 0-based indices of the blocks whose outputs are returned, strictly
            increasing. Blocks after the last one listed are not run (their parameters then
            get no gradient).
        norm_eps: LayerNorm eps (timm: 1e-6).
        final_norm: apply the final LayerNorm ``norm`` to the output of the **last** block
            (index ``depth - 1``) when it is tapped. Other taps are raw block outputs
            (no normalisation), as in mmseg's multi-level ViT.

    Input: ``(B, in_chans, H, W)`` float, any H, W ≥ 1. Sizes that are not multiples of p are
    zero-padded at the bottom/right (mmseg ``padding='corner'`` convention; padded patches
    take part in attention), so each output map is ``(B, C, ceil(H/p), ceil(W/p))``; the cls
    token is dropped. Returns a list with one map per ``out_indices`` entry.

    Attributes: ``embed_dim``, ``patch_size``, ``num_layers`` (= depth), ``out_indices``,
    ``img_size``, ``grid_size``; :meth:`layer_id` for layer-wise lr decay.

    Initialisation (scratch): ``pos_embed`` and ``cls_token`` truncated normal (std .02),
    Linear and the patch-embedding conv truncated normal (std .02) with zero bias, LayerNorm
    1/0 (mmseg ViT; pretrained weights replace all of it).
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = (512, 512),
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.1,
        out_indices: Sequence[int] = (11,),
        norm_eps: float = 1e-6,
        final_norm: bool = True,
    ):
        super().__init__()
        self.img_size = to_2tuple(img_size, "img_size")
        self.patch_size = int(patch_size)
        self.grid_size = (self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size)
        if min(self.grid_size) < 1:
            raise UsageError(f"img_size {self.img_size} is smaller than one patch of {patch_size}")
        self.embed_dim = int(embed_dim)
        self.num_layers = int(depth)
        self.out_indices = check_out_indices(out_indices, depth)
        self.final_norm = bool(final_norm)

        self.patch_embed = PatchEmbed(self.patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid_size[0] * self.grid_size[1], embed_dim))
        dpr = drop_path_rates(drop_path_rate, [depth])
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, dpr[i], norm_eps) for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps) if final_norm else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        """Scratch initialisation (see class docstring)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        init_trunc_normal(self, conv=True)

    def layer_id(self, param_name: str) -> int:
        """0 for cls_token/pos_embed/patch_embed, ``i + 1`` for ``blocks.i``, else ``num_layers + 1``."""
        return layer_id_bert(param_name, self.num_layers)

    def interpolate_pos_embed(self, h: int, w: int) -> torch.Tensor:
        """Position embedding ``(1, 1 + h·w, C)`` for an ``h × w`` patch grid (resized when it differs)."""
        return resize_pos_embed(self.pos_embed, self.grid_size, (h, w))

    def forward(self, x: torch.Tensor) -> Features:
        if x.ndim != 4:
            raise UsageError(f"expected input of shape (B, C, H, W), got {tuple(x.shape)}")
        x, (h, w) = self.patch_embed(pad_to_multiple(x, self.patch_size))
        b = x.shape[0]
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1) + self.interpolate_pos_embed(h, w)
        outs = []
        for i, blk in enumerate(self.blocks[: self.out_indices[-1] + 1]):
            x = blk(x)
            if i in self.out_indices:
                y = self.norm(x) if i == self.num_layers - 1 else x
                outs.append(y[:, 1:].transpose(1, 2).reshape(b, self.embed_dim, h, w))
        return Features(stages=outs)


__all__ = [
    "VIT_VARIANTS",
    "VisionTransformer",
    "resize_pos_embed",
    "layer_id_bert",
    "pad_to_multiple",
    "check_out_indices",
    "to_2tuple",
]
