"""RSSeg with pyramid ViTs (CSWin): local-patch separation only (RSSeg paper §3.2.1, Fig. 4b, eq. 17).

The stage-1 output (1/4) feeds the local path; the stage-2 output and evenly spaced stage-3
block outputs (Table 3 taps) are up-sampled to 1/4 and merged by attention-guided fusion; the
last LSB output and the stage-2/3/4 outputs are concatenated and classified by two MLP
layers; a binary boundary loss (weight 0.4) supervises the local path during training only.

Choices where the paper is silent (switches):

* **Fusion head** (``fusion_head``): ``"concat_mlp"`` (default) follows the text literally —
  the four maps (local 1/4 map and stages 2–4, bilinearly up-sampled to 1/4) are concatenated
  and two MLP layers (1×1 conv, ``head_dim`` = 512, BN + ReLU; then 1×1 conv to K) predict the
  classes. Width 512 is what Table 7 implies: CSWin-T + "MLP decoder" = 146.3 GFLOPs at 1024²
  with a 112.0 G encoder leaves 34.3 G for the decoder; concat(960) → 512 → 19 costs 33.0 G,
  whereas SegFormer's own head costs 19.5 G (E = 256) or 157 G (E = 768). ``"segformer"``
  uses :class:`~segkit.models.heads.segformer_head.SegFormerHead` (per-level Linear to
  ``head_dim``, fuse, classify).
* **Boundary loss** ([65] = STDC, "Rethinking BiSeNet"): binary cross-entropy + Dice on the
  logits of a boundary head on the last LSB output (ConvModule 3×3 D→D + BN + ReLU, then
  Conv1×1 D→1), up-sampled bilinearly to the label size. Targets: a pixel is a boundary pixel
  if a valid pixel in its 3×3 neighbourhood has another class (≈ STDC's Laplacian target at
  stride 1); ignored pixels are excluded. ``boundary_loss="bce"`` drops the Dice term.
* **Local path input**: when the stage-1 width differs from the LSB width (CSWin-S uses the
  Table 3 "CSWin-B" row, D = 128 with a 64-wide stage 1), ``in_proj`` = Conv1×1 + BN.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from segkit.errors import UsageError

from ...contract import DecodeHead, Features, SegLoss
from ...layers import ConvModule
from ..segformer_head import SegFormerHead
from .two_pathway import ConvBN, LocalPath, init_local_weights

FUSION_HEADS = ("concat_mlp", "segformer")
BOUNDARY_LOSSES = ("bce_dice", "bce")


def boundary_targets(labels: torch.Tensor, ignore_index: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary boundary map of a label map.

    ``labels (B, H, W)`` int64 → ``(target (B, H, W) float32 in {0, 1}, valid (B, H, W) bool)``:
    a valid pixel is a boundary pixel when a valid pixel of its 3×3 neighbourhood has a
    different class; ``valid`` is False on ignored pixels.
    """
    valid = labels != ignore_index
    lab = labels.float()[:, None]
    big = 1.0e6  # larger than any class id; exact in float32
    hi = F.max_pool2d(torch.where(valid[:, None], lab, torch.full_like(lab, -1.0)), 3, 1, 1)
    lo = -F.max_pool2d(-torch.where(valid[:, None], lab, torch.full_like(lab, big)), 3, 1, 1)
    edge = ((hi[:, 0] != labels.float()) | (lo[:, 0] != labels.float())) & valid
    return edge.float(), valid


def boundary_loss(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255, kind: str = "bce_dice"
) -> torch.Tensor:
    """Boundary loss of ``logits (B, 1, h, w)`` against :func:`boundary_targets` of ``labels (B, H, W)``.

    The logits are up-sampled bilinearly to ``H × W``. ``"bce_dice"``: mean binary
    cross-entropy over valid pixels + Dice loss ``1 − (2Σpt + 1)/(Σp + Σt + 1)`` per image
    (STDC's detail loss); ``"bce"``: the first term only. Returns a scalar (float32).
    """
    if kind not in BOUNDARY_LOSSES:
        raise UsageError(f"boundary_loss must be one of {BOUNDARY_LOSSES}, got {kind!r}")
    target, valid = boundary_targets(labels, ignore_index)
    x = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    if not valid.any():
        return x.sum() * 0.0
    loss = F.binary_cross_entropy_with_logits(x[valid], target[valid])
    if kind == "bce_dice":
        p = x.sigmoid() * valid
        t = target * valid
        dice = 1 - (2 * (p * t).flatten(1).sum(1) + 1) / (p.flatten(1).sum(1) + t.flatten(1).sum(1) + 1)
        loss = loss + dice.mean()
    return loss


class PyramidHead(DecodeHead):
    """Local path on a pyramid encoder + MLP fusion head + training-only boundary head.

    Args:
        in_channels: the four stage widths ``[C1, C2, C3, C4]``.
        tap_channels: widths of the taps in fusion order (CSWin ``tap_channels``).
        num_classes: K.
        dim, expand: LSB width and expand ratio (Table 3).
        local_path: build the local path (``False`` = Table 7's "CSWin + MLP decoder"
            baseline; stage 1 then goes to the fusion head directly).
        local_op, lsb_norm, lsb_act, fusion, af_norm: :class:`LocalPath` switches.
        fusion_head, head_dim, dropout: see the module docstring (dropout 0.1 before the
            classifier, as SegFormer).
        boundary_weight: weight of the boundary loss (paper 0.4; 0 disables the head).
        boundary_loss: ``"bce_dice"`` or ``"bce"``.
        ignore_index: label value excluded from the boundary loss.

    Input: the :class:`~segkit.models.contract.Features` of
    :class:`~segkit.models.backbones.tapped.PyramidEncoder` (4 stages + taps). Output logits
    ``(B, K, H/4, W/4)``; :meth:`loss` adds ``loss_boundary`` = 0.4 · l_boundary.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        tap_channels: Sequence[int],
        num_classes: int,
        *,
        dim: int = 64,
        expand: int = 4,
        local_path: bool = True,
        local_op: str = "lhf",
        lsb_norm: str = "bn",
        lsb_act: str = "relu",
        fusion: str = "attention",
        af_norm: str = "bn",
        fusion_head: str = "concat_mlp",
        head_dim: int = 512,
        dropout: float = 0.1,
        boundary_weight: float = 0.4,
        boundary_loss: str = "bce_dice",
        ignore_index: int = 255,
    ):
        super().__init__()
        if len(in_channels) != 4:
            raise UsageError(f"PyramidHead needs 4 stage widths, got {list(in_channels)}")
        if fusion_head not in FUSION_HEADS:
            raise UsageError(f"fusion_head must be one of {FUSION_HEADS}, got {fusion_head!r}")
        if boundary_loss not in BOUNDARY_LOSSES:
            raise UsageError(f"boundary_loss must be one of {BOUNDARY_LOSSES}, got {boundary_loss!r}")
        c1, c2, c3, c4 = (int(c) for c in in_channels)
        self.local_path = bool(local_path)
        self.boundary_weight = float(boundary_weight) if local_path else 0.0
        self.boundary_kind, self.ignore_index = boundary_loss, int(ignore_index)
        first = c1
        if self.local_path:
            self.in_proj = ConvBN(c1, dim) if c1 != dim else nn.Identity()
            self.local = LocalPath(dim, tap_channels, expand, local_op, lsb_norm, lsb_act, fusion, af_norm)
            first = dim
            if self.boundary_weight > 0:
                self.boundary = nn.Sequential(ConvModule(dim, dim, 3, norm="bn"), nn.Conv2d(dim, 1, 1))
        self.fusion_head = fusion_head
        if fusion_head == "concat_mlp":
            self.linear_fuse = ConvModule(first + c2 + c3 + c4, head_dim, 1, norm="bn")
            self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
            self.linear_pred = nn.Conv2d(head_dim, num_classes, 1)
        init_local_weights(self)
        if fusion_head == "segformer":
            self.segformer = SegFormerHead([first, c2, c3, c4], head_dim, num_classes, dropout=dropout)

    def _run(self, feats: Features):
        stages = feats.stages
        first, last_lsb = stages[0], None
        if self.local_path:
            last_lsb = self.local(self.in_proj(first), feats.taps)[-1]
            first = last_lsb
        maps = [first, *stages[1:]]
        if self.fusion_head == "segformer":
            return self.segformer(Features(stages=maps)), last_lsb
        size = first.shape[-2:]
        ups = [
            m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear", align_corners=False)
            for m in maps
        ]
        return self.linear_pred(self.dropout(self.linear_fuse(torch.cat(ups, dim=1)))), last_lsb

    def forward(self, features: Features) -> torch.Tensor:
        return self._run(features)[0]

    def loss(self, features: Features, labels: torch.Tensor, seg_loss: SegLoss) -> dict[str, torch.Tensor]:
        """``loss_seg`` plus, with a boundary head, ``loss_boundary`` = weight · boundary loss (eq. 17)."""
        logits, last_lsb = self._run(features)
        losses = {"loss_seg": seg_loss(logits, labels)}
        if self.boundary_weight > 0:
            l_b = boundary_loss(self.boundary(last_lsb), labels, self.ignore_index, self.boundary_kind)
            losses["loss_boundary"] = self.boundary_weight * l_b
        return losses
