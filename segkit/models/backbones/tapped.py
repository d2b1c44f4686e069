"""Encoders that also hand intermediate block outputs (*taps*) to the head: the encoder side of RSSeg.

RSSeg's local path reads block outputs of the ViT (paper §3.2, Fig. 4a; RSSeg Table 3 lists
the tapped blocks) or of CSWin (Fig. 4b). These wrappers keep the pretrained encoder under one
attribute (``backbone.vit.*`` / ``backbone.cswin.*`` in the state dict), so every parameter
under ``backbone.`` is an ImageNet-pretrained weight: encoder-only checkpoints load strictly and
layer-wise lr decay applies to exactly the encoder.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from segkit.errors import UsageError

from ..contract import Features
from .vit import pad_to_multiple


class PlainEncoder(nn.Module):
    """A plain ViT/BEiT whose ``out_indices`` are ``taps + (depth − 1,)``, returning taps and the padded image.

    ``forward(images (B, 3, H, W))`` pads the image to a multiple of the patch size (bottom /
    right zeros, as the ViT does) and returns :class:`~segkit.models.contract.Features` with
    ``stages = [last (B, C, H'/p, W'/p)]`` (after the final norm), ``taps = [n × (B, C, H'/p,
    W'/p)]`` (raw block outputs) and ``image = padded (B, 3, H', W')``.
    Exposes ``num_layers`` and ``layer_id(name)`` (names relative to the wrapper, e.g.
    ``vit.blocks.3.attn.qkv.weight``) for layer-wise lr decay.

    Raises ``ValueError`` when the ViT's ``out_indices`` are not the taps followed by the last block.
    """

    def __init__(self, vit: nn.Module, num_taps: int):
        super().__init__()
        if len(vit.out_indices) != num_taps + 1 or vit.out_indices[-1] != vit.num_layers - 1:
            raise UsageError(
                f"encoder out_indices {list(vit.out_indices)} must be the {num_taps} taps followed by "
                f"the last block {vit.num_layers - 1}"
            )
        self.vit = vit
        self.num_taps = int(num_taps)
        self.out_channels = [vit.embed_dim]

    @property
    def num_layers(self) -> int:
        return self.vit.num_layers

    @property
    def embed_dim(self) -> int:
        return self.vit.embed_dim

    def layer_id(self, name: str) -> int:
        return self.vit.layer_id(name)

    def forward(self, images: torch.Tensor) -> Features:
        x = pad_to_multiple(images, self.vit.patch_size)
        maps = self.vit(x).stages
        return Features(stages=[maps[-1]], taps=maps[:-1], image=x)


class PyramidEncoder(nn.Module):
    """Wraps a CSWin built with ``tap_blocks``: ``images → Features(stages=[4 maps], taps=[n maps])``."""

    def __init__(self, cswin: nn.Module):
        super().__init__()
        self.cswin = cswin
        self.out_channels = list(cswin.out_channels)

    def forward(self, images: torch.Tensor) -> Features:
        return self.cswin(images)


__all__ = ["PlainEncoder", "PyramidEncoder"]
