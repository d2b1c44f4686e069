"""SegFormer's lightweight All-MLP decoder (paper §3.2, eq. 4; official
``NVlabs/SegFormer: mmseg/models/decode_heads/segformer_head.py``).

Layer names reproduce the official NVlabs checkpoint keys (of that file, below the
``decode_head.`` prefix): ``linear_c{1-4}.proj``, ``linear_fuse.conv`` / ``linear_fuse.bn``,
``linear_pred``. The official checkpoints also hold an unused ``conv_seg``; it is not built here
(the converter drops it).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from segkit.errors import UsageError

from ..contract import DecodeHead, Features
from ..layers import ConvModule, init_weights_reference


class MLP(nn.Module):
    """Per-stage token projection ``Linear(C_i, E)`` (no norm, no activation).

    ``(B, C_i, H, W)`` → ``(B, E, H, W)``.
    """

    def __init__(self, in_dim: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # Channels-last in and out: the token view is free for MiT's channels-last outputs,
        # and the (B, H, W, E) result is returned as a channels-last (B, E, H, W) view.
        x = self.proj(x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(b, h * w, c))
        return x.view(b, h, w, -1).permute(0, 3, 1, 2)


class SegFormerHead(DecodeHead):
    """All-MLP decoder: unify channels, upsample to 1/4, fuse, classify (paper eq. 4).

    Steps (official ``segformer_head.py``): ``linear_c{i}`` = Linear(C_i, E) on each stage's tokens;
    c2–c4 upsampled bilinearly (align_corners=False) to the size of c1; concatenated in the
    official order **[c4, c3, c2, c1]**; ``linear_fuse`` = 1×1 conv (no bias) + BatchNorm +
    ReLU; ``Dropout2d(dropout)``; ``linear_pred`` = 1×1 conv (bias) to K classes.

    Args:
        in_channels: the four encoder widths ``[C_1, C_2, C_3, C_4]``.
        embed_dim: decoder width E (256 for B0/B1, 768 for B2–B5).
        num_classes: K.
        dropout: channel dropout before the classifier (reference 0.1; the official
            ``BaseDecodeHead`` uses ``Dropout2d``, Hugging Face uses element-wise ``Dropout``;
            we follow the official code).

    Input: :class:`~segkit.models.contract.Features` whose ``stages`` are 4 tensors
    ``(B, C_i, H_i, W_i)`` (MiT outputs, strides 4–32). Output:
    logits ``(B, K, H_1, W_1)`` float, i.e. at 1/4 of the image size.

    ``fuse_first`` (default True; the papers and the official code are silent on evaluation order):
    the 1×1 ``linear_fuse`` conv is linear and acts per pixel, so it commutes with bilinear
    upsampling, and a conv over a concatenation is the sum of convs over its parts:
    ``conv([up(c4), up(c3), up(c2), c1]) = Σ_i up(W_i · c_i)`` with ``W_i`` the slice of the conv
    weight that reads part ``i``. segkit applies each slice at its stage's own resolution (1/32 …
    1/4) and upsamples the 256-channel results, instead of concatenating 4·E channels at 1/4 and
    convolving there — the same function and parameters (checkpoint keys unchanged), up to
    float32 summation order, at a fraction of the 1/4-resolution work (the fuse conv was the
    head's largest cost, forward and backward). ``fuse_first=False`` runs the official order;
    FLOP counts (:func:`segkit.tools.flops.count_flops`) always use it.

    Initialisation (the papers are silent; we follow the official code): ``linear_c{i}`` and
    ``linear_pred`` keep PyTorch's default init (the official head does not re-initialise
    them); ``linear_fuse`` gets mmcv ``ConvModule``'s kaiming-normal (fan_out, ReLU) conv init,
    which equals :func:`init_weights_reference`'s conv rule, and BN weight 1 / bias 0.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        embed_dim: int,
        num_classes: int,
        dropout: float = 0.1,
        fuse_first: bool = True,
    ):
        super().__init__()
        if len(in_channels) != 4:
            raise UsageError(f"SegFormerHead needs 4 input widths, got {list(in_channels)}")
        self.in_channels = [int(c) for c in in_channels]
        self.embed_dim = int(embed_dim)
        self.num_classes = int(num_classes)
        for i, c in enumerate(self.in_channels):
            setattr(self, f"linear_c{i + 1}", MLP(c, embed_dim))
        self.linear_fuse = ConvModule(4 * embed_dim, embed_dim, 1, norm="bn")
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, kernel_size=1)
        self.linear_fuse.apply(init_weights_reference)
        self.fuse_first = bool(fuse_first)

    def forward(self, features: Features) -> torch.Tensor:
        features = features.stages
        if len(features) != 4:
            raise UsageError(f"SegFormerHead expects 4 feature maps, got {len(features)}")
        size = features[0].shape[-2:]
        if self.fuse_first:
            return self.linear_pred(self.dropout(self._fuse_first(features, size)))
        outs = []
        for i in (4, 3, 2, 1):  # official concat order [c4, c3, c2, c1]
            x = getattr(self, f"linear_c{i}")(features[i - 1])
            if x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            # channels-last throughout: the concat and the 1x1 fuse conv then run without
            # layout conversions (faster on CPU than NCHW; benchmarks/latency.py).
            outs.append(x.contiguous(memory_format=torch.channels_last))
        x = self.linear_fuse(torch.cat(outs, dim=1))
        return self.linear_pred(self.dropout(x))

    def _fuse_first(self, features, size) -> torch.Tensor:
        """``linear_fuse`` applied part by part at each stage's resolution, then upsampled and summed."""
        conv = self.linear_fuse.conv
        e = self.embed_dim
        total = None
        for j, i in enumerate((4, 3, 2, 1)):  # official concat order [c4, c3, c2, c1]: part j of the conv weight
            x = getattr(self, f"linear_c{i}")(features[i - 1])  # (B, E, h, w), channels-last
            b, _, h, w = x.shape
            y = F.linear(x.permute(0, 2, 3, 1), conv.weight[:, j * e : (j + 1) * e, 0, 0])  # (B, h, w, E)
            y = y.permute(0, 3, 1, 2)
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            total = y if total is None else total + y
        if conv.bias is not None:  # a BN-folded copy (segkit.models.fuse) carries one
            total = total + conv.bias.view(1, -1, 1, 1)
        for module in list(self.linear_fuse)[1:]:  # BatchNorm (unless folded), ReLU
            total = module(total)
        return total
