"""Spatially adaptive separation module (SASM), RSSeg paper §3.4, eqs. 10–11, Fig. 5.

The guide (an LSB output, rich in local discrepancy) is turned into per-position filters that
up-sample the guided map (smooth but semantically rich transformer features) by 2::

    SAF  (B, G, 4, 3·3, H, W) = Softmax_taps(Reshape(MLP(F_local)))        (10)
    F_2x (B, C, 2H, 2W)       = PixelShuffle_2(F_global ⊗ SAF)              (11)

Each of the 4 filters of a position is applied to the 3×3 neighbourhood of that position in
its channel group (``C = G · group_dim``; Table 3: 12×64 for ViT-B/BEiT-B, 16×64 for
ViT-L/BEiT-L), giving the 4 sub-pixels of the 2× output.

Choices where the paper is silent: the "MLP" is one Conv1×1 with bias (guide_dim → G·4·9),
initialised with a truncated normal (std .02) and zero bias, so the filters start close to a
uniform 3×3 average; neighbourhoods are zero-padded at the border; sub-pixel ``k`` of the
4 is placed at row ``k // 2``, column ``k % 2`` (PixelShuffle's order).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from segkit.errors import UsageError

FILTER_NORMS = ("softmax", "filter_norm")


class SASM(nn.Module):
    """Guided 2× up-sampling with spatially adaptive, grouped 3×3 filters.

    Args:
        guide_dim: channels of the guide ``F_local``.
        channels: channels C of the guided map ``F_global`` (= output channels).
        groups: channel groups G (C must be divisible by G); each group gets its own filters.
        filter_norm: ``"softmax"`` (paper: convex combinations of the 9 neighbours) or
            ``"filter_norm"`` (Table 5 ablation, the Filter Norm of DDF: each 9-tap filter
            standardised to zero mean / unit std over its taps, times 1/3 = gain/kernel size).

    :meth:`forward` takes ``guide (B, guide_dim, H, W)`` and ``x (B, C, H, W)`` (same H, W;
    ``ValueError`` otherwise) and returns ``(B, C, 2H, 2W)`` float, in channels-last memory format
    (the decoder flattens it into tokens without a copy).
    """

    def __init__(self, guide_dim: int, channels: int, groups: int, filter_norm: str = "softmax"):
        super().__init__()
        if channels % groups:
            raise UsageError(f"SASM: channels {channels} not divisible by groups {groups}")
        if filter_norm not in FILTER_NORMS:
            raise UsageError(f"filter_norm must be one of {FILTER_NORMS}, got {filter_norm!r}")
        self.channels, self.groups, self.filter_norm = int(channels), int(groups), filter_norm
        self.mlp = nn.Conv2d(guide_dim, groups * 4 * 9, 1)
        nn.init.trunc_normal_(self.mlp.weight, std=0.02)
        nn.init.zeros_(self.mlp.bias)

    def filters(self, guide: torch.Tensor) -> torch.Tensor:
        """Spatially adaptive filters ``(B, G, 4, 9, H, W)`` (eq. 10); with softmax each sums to 1 over the 9 taps."""
        b, _, h, w = guide.shape
        f = self.mlp(guide).view(b, self.groups, 4, 9, h, w)
        if self.filter_norm == "softmax":
            return f.softmax(dim=3)
        f = f - f.mean(dim=3, keepdim=True)
        return f / (f.std(dim=3, keepdim=True) + 1e-10) / 3.0

    def forward(self, guide: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if guide.shape[-2:] != x.shape[-2:]:
            raise UsageError(f"SASM: guide {tuple(guide.shape)} and guided map {tuple(x.shape)} differ in size")
        if x.shape[1] != self.channels:
            raise UsageError(f"SASM: guided map has {x.shape[1]} channels, expected {self.channels}")
        b, c, h, w = x.shape
        g, cg = self.groups, c // self.groups
        # Channels-last: every position holds a small matrix product
        #   out (4, Cg) = SAF (4, 9) @ neighbourhood (9, Cg)      per (b, y, x, group)
        # computed as one batched matmul. The neighbourhoods are 9 shifted views of the padded map
        # stacked once (9x the input, like an unfold). This replaced a 9-step broadcast
        # multiply-add in NCHW, whose strided element-wise kernels dominated an RSSeg-ViT-Ti
        # training step on CPU.
        saf = self.filters(guide).permute(0, 4, 5, 1, 2, 3)  # (B, H, W, G, 4, 9)
        xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1)).reshape(b, h + 2, w + 2, g, cg)
        taps = torch.stack([xp[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)], dim=-2)
        out = torch.matmul(saf, taps)  # (B, H, W, G, 4, Cg)
        # sub-pixel k → (k // 2, k % 2) (PixelShuffle's order), written straight into a
        # channels-last (B, 2H, 2W, C) buffer and returned as a (B, C, 2H, 2W) view
        out = out.view(b, h, w, g, 2, 2, cg).permute(0, 1, 4, 2, 5, 3, 6).reshape(b, 2 * h, 2 * w, c)
        return out.permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, groups={self.groups}, filter_norm={self.filter_norm}"
