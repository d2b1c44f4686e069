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

    Initialisation (the papers are silent; we follow the official code): ``linear_c{i}`` and
    ``linear_pred`` keep PyTorch's default init (the official head does not re-initialise
    them); ``linear_fuse`` gets mmcv ``ConvModule``'s kaiming-normal (fan_out, ReLU) conv init,
    which equals :func:`init_weights_reference`'s conv rule, and BN weight 1 / bias 0.
    """

    def __init__(self, in_channels: Sequence[int], embed_dim: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"SegFormerHead needs 4 input widths, got {list(in_channels)}")
        self.in_channels = [int(c) for c in in_channels]
        self.embed_dim = int(embed_dim)
        self.num_classes = int(num_classes)
        for i, c in enumerate(self.in_channels):
            setattr(self, f"linear_c{i + 1}", MLP(c, embed_dim))
        self.linear_fuse = ConvModule(4 * embed_dim, embed_dim, 1, norm="bn")
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, kernel_size=1)
        self.linear_fuse.apply(init_weights_reference)

    def forward(self, features: Features) -> torch.Tensor:
        features = features.stages
        if len(features) != 4:
            raise ValueError(f"SegFormerHead expects 4 feature maps, got {len(features)}")
        size = features[0].shape[-2:]
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
