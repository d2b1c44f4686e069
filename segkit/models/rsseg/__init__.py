"""RSSeg — representation separation for semantic segmentation with ViTs (Hong et al., rsseg.md).

Modules: :mod:`.two_pathway` (overlapping patch embedding, LSB, LHF, attention-guided fusion),
:mod:`.sasm` (spatially adaptive separation module), :mod:`.dca` (discriminative
cross-attention decoder and its two auxiliary losses), :mod:`.head` (plain-ViT RSSeg),
:mod:`.pyramid` (CSWin RSSeg with boundary loss), :mod:`.baselines` (ViT-Linear, Segmenter),
:mod:`.builders` (zoo entries and ablation presets). Design notes: ``docs/rsseg.md``.
"""
from .builders import (PLAIN_ABLATIONS, PLAIN_VARIANTS, PYRAMID_ABLATIONS, PYRAMID_VARIANTS, RSSEG_MODELS,
                       build_linear, build_rsseg_plain, build_rsseg_pyramid, build_segmenter)

__all__ = ["RSSEG_MODELS", "PLAIN_VARIANTS", "PYRAMID_VARIANTS", "PLAIN_ABLATIONS", "PYRAMID_ABLATIONS",
           "build_rsseg_plain", "build_rsseg_pyramid", "build_linear", "build_segmenter"]
