"""The encoder → head contract: what an encoder returns and what a decode head implements.

A :class:`~segkit.models.segmentor.Segmentor` is ``backbone`` (the encoder) + ``decode_head``
+ loss + inference. The two halves talk through exactly two things, defined here, so a new
encoder or head can be written from this page alone.

**Encoder.** Any ``nn.Module`` whose ``forward(images)`` takes normalised images
``(B, 3, H, W)`` float and returns :class:`Features`:

* ``stages``: the feature maps the head reads, each ``(B, C_i, H_i, W_i)``, finest first.
  Pyramid encoders (MSCAN, MiT, CSWin) give their 4 stage outputs (strides 4, 8, 16, 32);
  plain ViTs give the maps of their ``out_indices`` (stride 16).
* ``taps``: extra intermediate maps for heads that need them (RSSeg's local path reads block
  outputs of the ViT or CSWin), else ``None``.
* ``image``: the image as the encoder saw it (a plain ViT pads it to a multiple of its
  patch size), for heads with a path from the pixels (RSSeg's overlapping patch embedding),
  else ``None``.

An encoder should also expose ``out_channels`` (the widths of ``stages``) so a builder can size
the head.

**Decode head.** A subclass of :class:`DecodeHead` with

* ``forward(features) -> logits``: ``(B, K, h, w)`` float at the head's own output stride
  (1/4 for SegFormer and RSSeg, 1/8 for SegNeXt, 1/16 for ViT-Linear); the ``Segmentor``
  resizes them (bilinear, ``align_corners=False``) to the image or label size;
* ``loss(features, labels, seg_loss) -> dict[str, Tensor]``: the training losses, each a
  weighted scalar. ``seg_loss(logits, labels)`` is the ``Segmentor``'s pixel-wise criterion
  (it resizes the logits to the label size, applies ``ignore_index``, class weights and the
  averaging rule). The default computes ``{"loss_seg": seg_loss(self(features), labels)}``;
  heads with auxiliary objectives (RSSeg's DCA losses, the CSWin boundary loss) override it and
  return their extra terms beside ``loss_seg``, so those cost nothing at inference. The
  ``Segmentor`` sums every entry into ``"loss"``.

A toy pair (also in ``tests/test_families.py``)::

    class TinyEncoder(nn.Module):
        out_channels = [16]
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3, stride=4, padding=1)
        def forward(self, x):
            return Features(stages=[self.conv(x)])

    class TinyHead(DecodeHead):
        def __init__(self, num_classes):
            super().__init__()
            self.cls = nn.Conv2d(16, num_classes, 1)
        def forward(self, features):
            return self.cls(features.stages[-1])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn

from segkit.errors import UsageTypeError

SegLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Features:
    """What an encoder returns (see the module docstring).

    Attributes:
        stages: list of ``(B, C_i, H_i, W_i)`` float maps, finest first.
        taps: optional list of extra ``(B, C, h, w)`` maps (intermediate blocks), or ``None``.
        image: optional ``(B, 3, H', W')`` input as the encoder saw it (e.g. padded), or ``None``.
    """

    stages: list[torch.Tensor]
    taps: Optional[list[torch.Tensor]] = None
    image: Optional[torch.Tensor] = None

    def __post_init__(self) -> None:
        if not isinstance(self.stages, (list, tuple)) or not self.stages:
            raise UsageTypeError(
                f"Features.stages must be a non-empty list of tensors, got {type(self.stages).__name__}"
            )
        self.stages = list(self.stages)
        if self.taps is not None:
            self.taps = list(self.taps)


class DecodeHead(nn.Module):
    """Base class of every decode head: ``forward(features) -> logits`` and ``loss(...) -> dict``.

    Subclasses implement :meth:`forward`; :meth:`loss` has a default for heads without
    auxiliary objectives. See the module docstring for shapes.
    """

    def forward(self, features: Features) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement forward(features) -> logits")

    def loss(self, features: Features, labels: torch.Tensor, seg_loss: SegLoss) -> dict[str, torch.Tensor]:
        """Training losses: ``{"loss_seg": seg_loss(self(features), labels)}`` (override to add terms).

        Args:
            features: the encoder's :class:`Features`.
            labels: ``(B, H, W)`` int64 class indices (``ignore_index`` for unlabelled pixels).
            seg_loss: the ``Segmentor``'s criterion ``(logits (B, K, h, w), labels) -> scalar``.

        Returns:
            ``{name: scalar tensor}``; the ``Segmentor`` adds their sum as ``"loss"``.
        """
        return {"loss_seg": seg_loss(self(features), labels)}


__all__ = ["Features", "DecodeHead", "SegLoss"]
