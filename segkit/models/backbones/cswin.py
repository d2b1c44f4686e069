"""CSWin Transformer encoder (cross-shaped window self-attention) for dense prediction.

Paper: Dong et al., "CSWin Transformer: A General Vision Transformer Backbone with
Cross-Shaped Windows", CVPR 2022; RSSeg uses CSWin-T/S as pyramid backbones (RSSeg paper §3.2.1,
Table 3, Table 9). Structure: the official code (``microsoft/CSWin-Transformer: models/cswin.py``)
and its segmentation backbone
(``microsoft/CSWin-Transformer:segmentation/backbone/cswin_transformer.py``):

* stem ``stage1_conv_embed``: Conv 7×7 stride 4 padding 2 (index 0) → tokens (index 1, no
  parameters) → LayerNorm (index 2);
* ``merge{1,2,3}``: Conv 3×3 stride 2 padding 1 (``conv``) → LayerNorm (``norm``); width doubles;
* block ``stage{s}.{i}``: ``norm1`` → ``qkv`` Linear(C, 3C, bias) → channels split in two halves
  → ``attns.0`` (windows of full height × ``split_size`` columns) and ``attns.1``
  (``split_size`` rows × full width), ``num_heads // 2`` heads each; LePE = depth-wise 3×3
  conv ``attns.{j}.get_v`` on V (inside each window) added to the attention output; concat →
  ``proj``; ``norm2`` → ``mlp.fc1`` → GELU → ``mlp.fc2``; residuals with DropPath;
* stage 4: a single full-attention branch ``attns.0`` with all heads (``last_stage``);
* ``norm1..norm4``: output LayerNorms of the segmentation backbone (eps 1e-5 everywhere).

Key names are the official ones, so ImageNet checkpoints load as they are (their final
``norm`` and ``head`` are dropped by :mod:`segkit.models.rsseg.convert`).

Attention runs through :func:`torch.nn.functional.scaled_dot_product_attention` on windows
folded into the batch dimension (scale ``head_dim^-0.5``); the LePE term is added after.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from segkit.errors import UsageError

from ..contract import Features
from ..layers import DropPath, drop_path_rates, init_trunc_normal

# microsoft/CSWin-Transformer: models/cswin.py (ImageNet models) and segmentation/configs/cswin/*.py
# (drop_path = the segmentation value).
CSWIN_VARIANTS: dict[str, dict] = {
    "t": dict(embed_dim=64, depths=(1, 2, 21, 1), num_heads=(2, 4, 8, 16), split_size=(1, 2, 7, 7), drop_path_rate=0.3),
    "s": dict(embed_dim=64, depths=(2, 4, 32, 2), num_heads=(2, 4, 8, 16), split_size=(1, 2, 7, 7), drop_path_rate=0.4),
    "b": dict(
        embed_dim=96, depths=(2, 4, 32, 2), num_heads=(4, 8, 16, 32), split_size=(1, 2, 7, 7), drop_path_rate=0.6
    ),
}


class LePEAttention(nn.Module):
    """Self-attention inside stripes (or the full map) plus the locally-enhanced positional encoding.

    Args:
        dim: channels of this branch (half the block width, or all of it for ``mode="full"``).
        num_heads: heads of this branch.
        mode: ``"col"`` (official ``idx=0``: windows of full height × ``split_size`` columns),
            ``"row"`` (``idx=1``: ``split_size`` rows × full width) or ``"full"`` (``idx=-1``,
            stage 4: one window = the whole map).
        split_size: stripe width ``sw``.

    ``forward(q, k, v)``: three ``(B, dim, H, W)`` maps → ``(B, dim, H, W)``. When the map is not
    a multiple of the stripe width it is zero-padded **centred** (``pad // 2`` before, the rest
    after, official seg backbone) *after* the qkv projection, so padded tokens have q = k = v = 0;
    they are not masked (their logits are 0, official behaviour); the output is cropped back.
    The LePE conv sees each window as its own zero-padded image (official).
    """

    def __init__(self, dim: int, num_heads: int, mode: str, split_size: int):
        super().__init__()
        if mode not in ("col", "row", "full"):
            raise UsageError(f"mode must be 'col', 'row' or 'full', got {mode!r}")
        if dim % num_heads:
            raise UsageError(f"branch width {dim} is not divisible by its {num_heads} heads")
        self.num_heads = num_heads
        self.mode = mode
        self.split_size = int(split_size)
        self.get_v = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def window_shape(self, h: int, w: int) -> tuple[int, int]:
        """``(H_sp, W_sp)`` of one window for an ``h × w`` map."""
        if self.mode == "full":
            return h, w
        return (h, self.split_size) if self.mode == "col" else (self.split_size, w)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, c, h, w = q.shape
        hs, ws = self.window_shape(h, w)
        ph, pw = (-h) % hs, (-w) % ws
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        if ph or pw:
            q, k, v = (F.pad(t, pad) for t in (q, k, v))
        hp, wp = h + ph, w + pw
        nh, nw = hp // hs, wp // ws

        def windows(t: torch.Tensor) -> torch.Tensor:  # (B, C, Hp, Wp) → (B·nh·nw, C, hs, ws)
            t = t.reshape(b, c, nh, hs, nw, ws).permute(0, 2, 4, 1, 3, 5)
            return t.reshape(b * nh * nw, c, hs, ws)

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B', C, hs, ws) → (B', heads, hs·ws, C/heads)
            return t.reshape(t.shape[0], self.num_heads, c // self.num_heads, hs * ws).transpose(-1, -2)

        q, k, v = windows(q), windows(k), windows(v)
        lepe = self.get_v(v)
        x = F.scaled_dot_product_attention(heads(q), heads(k), heads(v)) + heads(lepe)
        x = x.transpose(-1, -2).reshape(b, nh, nw, c, hs, ws).permute(0, 3, 1, 4, 2, 5).reshape(b, c, hp, wp)
        if ph or pw:
            x = x[:, :, pad[2] : pad[2] + h, pad[0] : pad[0] + w]
        return x


class CSWinBlock(nn.Module):
    """Cross-shaped window block: ``(B, h·w, C)`` tokens + ``(h, w)`` → same shape.

    Two branches (``attns.0`` column stripes on channels ``[:C/2]``, ``attns.1`` row stripes on
    ``[C/2:]``) or, with ``last_stage``, one full-attention branch on all channels.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        split_size: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        last_stage: bool = False,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        if last_stage:
            self.attns = nn.ModuleList([LePEAttention(dim, num_heads, "full", split_size)])
        else:
            if dim % 2 or num_heads % 2:
                raise UsageError(f"a two-branch CSWin block needs an even width and head count, got {dim}, {num_heads}")
            self.attns = nn.ModuleList(
                [
                    LePEAttention(dim // 2, num_heads // 2, "col", split_size),
                    LePEAttention(dim // 2, num_heads // 2, "row", split_size),
                ]
            )
        self.proj = nn.Linear(dim, dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential()
        self.mlp.add_module("fc1", nn.Linear(dim, hidden))
        self.mlp.add_module("act", nn.GELU())
        self.mlp.add_module("fc2", nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).transpose(1, 2).reshape(b, 3, c, h, w).unbind(1)
        if len(self.attns) == 1:
            y = self.attns[0](q, k, v)
        else:
            half = c // 2
            y = torch.cat(
                [
                    self.attns[0](q[:, :half], k[:, :half], v[:, :half]),
                    self.attns[1](q[:, half:], k[:, half:], v[:, half:]),
                ],
                dim=1,
            )
        x = x + self.drop_path(self.proj(y.flatten(2).transpose(1, 2)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class _ToTokens(nn.Module):
    """``(B, C, H, W)`` → ``(B, H·W, C)`` (the parameter-free slot 1 of ``stage1_conv_embed``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2)


class MergeBlock(nn.Module):
    """Conv 3×3 stride 2 padding 1 → LayerNorm: tokens of an ``h × w`` map → tokens of ``ceil(h/2) × ceil(w/2)``."""

    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim_out, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(dim_out)

    def forward(self, x: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, int, int]:
        b, n, c = x.shape
        x = self.conv(x.transpose(1, 2).reshape(b, c, h, w))
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class CSWin(nn.Module):
    """CSWin encoder with four stage outputs and optional per-block taps (CSWin paper §3; official ``cswin.py``).

    Args:
        embed_dim: stage-1 width C; stages have C, 2C, 4C, 8C channels (the ImageNet models
            double the width at every merge; the official seg backbone's ``heads[i+1]//heads[i]``
            factor is the same for T/S/B).
        depths, num_heads, split_size: per stage (4 each); see :data:`CSWIN_VARIANTS`.
        mlp_ratio: MLP hidden width factor (4).
        drop_path_rate: stochastic depth, ``linspace(0, rate, sum(depths))`` over all blocks.
        out_indices: stages (0-based) returned by :meth:`forward`.
        tap_blocks: blocks whose raw outputs :meth:`forward` returns as ``taps``, as **global
            1-based** indices over all stages (block ``k`` = the k-th block of the network;
            with ``tap_base=0`` they are read as 0-based, the convention of RSSeg Table 3,
            whose CSWin-T taps ``[2, 5, …, 23]`` then start at the stage-2 output and end at the
            stage-3 output).
        tap_base: 1 (default) or 0, the base of ``tap_blocks``.
        in_chans: input channels.

    Input ``(B, in_chans, H, W)`` float with H, W ≥ 3. The stem gives ``h1 = floor((H − 3)/4) + 1``
    (= H/4 for multiples of 4); each merge halves with ceil. Feature maps that are not
    multiples of the stripe width are padded inside attention (centred, see
    :class:`LePEAttention`).

    :meth:`forward` returns :class:`~segkit.models.contract.Features`: ``stages`` = the
    LayerNorm-ed (``norm{s}``) stage outputs ``(B, C_s, h_s, w_s)`` (strides 4, 8, 16, 32)
    listed in ``out_indices``; ``taps`` = the raw block outputs (no ``norm{s}``) of
    ``tap_blocks`` reshaped to ``(B, C, h, w)``, in ``tap_blocks`` order (``None`` without taps).

    Attributes: ``out_channels`` (4 ints), ``depths``, ``num_blocks``, ``tap_channels``.
    Scratch init (official): Linear truncated normal std .02 with zero bias, LayerNorm 1/0,
    convolutions keep PyTorch's default init.
    """

    def __init__(
        self,
        embed_dim: int = 64,
        depths: Sequence[int] = (1, 2, 21, 1),
        num_heads: Sequence[int] = (2, 4, 8, 16),
        split_size: Sequence[int] = (1, 2, 7, 7),
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.3,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        tap_blocks: Sequence[int] = (),
        tap_base: int = 1,
        in_chans: int = 3,
    ):
        super().__init__()
        for key, value in dict(depths=depths, num_heads=num_heads, split_size=split_size).items():
            if len(value) != 4:
                raise UsageError(f"{key} must have 4 entries (one per stage), got {list(value)}")
        self.depths = [int(d) for d in depths]
        self.out_channels = [int(embed_dim) * 2**i for i in range(4)]
        self.out_indices = tuple(int(i) for i in out_indices)
        if not self.out_indices or any(i not in (0, 1, 2, 3) for i in self.out_indices):
            raise UsageError(f"out_indices must be stage indices in 0..3, got {list(out_indices)}")
        self.num_blocks = sum(self.depths)
        if tap_base not in (0, 1):
            raise UsageError(f"tap_base must be 0 or 1, got {tap_base}")
        taps = [int(t) - tap_base for t in tap_blocks]  # 0-based internally
        if any(t < 0 or t >= self.num_blocks for t in taps) or len(set(taps)) != len(taps):
            raise UsageError(
                f"tap_blocks {list(tap_blocks)} must be distinct {tap_base}-based block indices in "
                f"[{tap_base}, {self.num_blocks - 1 + tap_base}] (depths {self.depths})"
            )
        self.tap_blocks = tuple(int(t) for t in tap_blocks)
        self._taps0 = taps
        stage_of = [s for s in range(4) for _ in range(self.depths[s])]
        self.tap_channels = [self.out_channels[stage_of[t]] for t in taps]

        self.stage1_conv_embed = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim, 7, stride=4, padding=2), _ToTokens(), nn.LayerNorm(embed_dim)
        )
        dpr = drop_path_rates(drop_path_rate, self.depths)
        start = 0
        for s in range(4):
            dim = self.out_channels[s]
            if s > 0:
                setattr(self, f"merge{s}", MergeBlock(self.out_channels[s - 1], dim))
            setattr(
                self,
                f"stage{s + 1}",
                nn.ModuleList(
                    CSWinBlock(dim, int(num_heads[s]), int(split_size[s]), mlp_ratio, dpr[start + i], last_stage=s == 3)
                    for i in range(self.depths[s])
                ),
            )
            setattr(self, f"norm{s + 1}", nn.LayerNorm(dim))
            start += self.depths[s]
        self.init_weights()

    def init_weights(self) -> None:
        """Scratch initialisation of the official code (see class docstring)."""
        init_trunc_normal(self)

    def _run(self, x: torch.Tensor, want_taps: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if x.ndim != 4:
            raise UsageError(f"expected input of shape (B, C, H, W), got {tuple(x.shape)}")
        stem = self.stage1_conv_embed
        x = stem[0](x)
        h, w = x.shape[-2:]
        x = stem[2](stem[1](x))
        b = x.shape[0]
        stages, taps = [], {}
        k = 0
        for s in range(4):
            if s > 0:
                x, h, w = getattr(self, f"merge{s}")(x, h, w)
            for blk in getattr(self, f"stage{s + 1}"):
                x = blk(x, h, w)
                if want_taps and k in self._taps0:
                    taps[k] = x.transpose(1, 2).reshape(b, -1, h, w)
                k += 1
            y = getattr(self, f"norm{s + 1}")(x)
            stages.append(y.transpose(1, 2).reshape(b, -1, h, w))
        return stages, [taps[t] for t in self._taps0] if want_taps else []

    def forward(self, x: torch.Tensor) -> Features:
        """``Features(stages=[the normalised stage maps of out_indices], taps=[raw maps of tap_blocks] or None)``."""
        want_taps = bool(self._taps0)
        stages, taps = self._run(x, want_taps=want_taps)
        return Features(stages=[stages[i] for i in self.out_indices], taps=taps if want_taps else None)


__all__ = ["CSWIN_VARIANTS", "CSWin", "CSWinBlock", "LePEAttention"]
