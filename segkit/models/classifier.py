"""ImageNet classifiers of the encoders: MSCAN-T/S/B/L (SegNeXt §4.1, Table 3) and MiT-B0…B5 (SegFormer §3.1).

The encoders are pretrained as image classifiers before segmentation. Both official
classification models put one head on the encoder: the last stage's output (after its
LayerNorm, ``norm4``) averaged over positions, then ``head = Linear(C4, num_classes)``
(``mix_transformer.py`` of NVlabs/SegFormer; VAN's ``van.py``, on which MSCAN is built — the
MSCAN classification code is not published, and with this head the parameter counts equal
SegNeXt Table 3: 4.2 / 14.0 / 26.8 / 45.2 M). The official ImageNet files (``mit_b0.pth``,
``mscan_t.pth``) hold the encoder keys without prefix plus ``head.weight`` / ``head.bias``:
:meth:`Classifier.official_state_dict` writes exactly that, and segkit's checkpoint converters
read it into a segmentation model (the head is dropped).

SegNeXt Table 3 also lists "MiT" ImageNet sizes 3.7 / 14.0 / 25.4 / 45.2 M; those are the
sizes of PVTv2-B0…B3 (MLP ratios 8, 8, 4, 4), not of MiT: MiT-B0 with a 1000-class head has
3,576,392 parameters (3.6 M), MiT-B1 13.66 M, B2 24.71 M, B3 44.59 M.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from segkit.errors import UsageError


class Classifier(nn.Module):
    """Encoder + global average pooling + Linear head.

    Args:
        backbone: an encoder returning :class:`~segkit.models.contract.Features` (its last
            stage ``(B, C4, h, w)`` is pooled); kept under the attribute ``backbone`` so that its
            keys are those of the segmentation model (``backbone.*``).
        num_classes: classes of the head (ImageNet 1000).
        name: classifier name (``mscan-t``, ``mit-b0`` …).
        segmentation_model: the zoo segmentation model this encoder feeds (``segnext-t`` …).
        head_dropout: dropout before the head (DeiT / VAN: 0).

    ``forward``: ``(B, 3, H, W)`` float32 normalised images → ``(B, num_classes)`` logits.
    Head init: truncated normal std 0.02, bias 0 (official ``_init_weights``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        name: str,
        segmentation_model: str,
        head_dropout: float = 0.0,
    ):
        super().__init__()
        if num_classes < 1:
            raise UsageError(f"num_classes must be >= 1, got {num_classes}")
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.name, self.segmentation_model = name, segmentation_model
        self.drop = nn.Dropout(head_dropout) if head_dropout > 0 else nn.Identity()
        self.head = nn.Linear(backbone.out_channels[-1], num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.backbone(images).stages[-1]
        return self.head(self.drop(x.mean((2, 3))))

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder's weights under segkit's segmentation names (``backbone.*``)."""
        return {f"backbone.{k}": v.detach().clone() for k, v in self.backbone.state_dict().items()}

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """The official ImageNet layout: encoder keys without prefix, plus ``head.weight`` / ``head.bias``."""
        out = {k: v.detach().clone() for k, v in self.backbone.state_dict().items()}
        out["head.weight"] = self.head.weight.detach().clone()
        out["head.bias"] = self.head.bias.detach().clone()
        return out


__all__ = ["Classifier"]
