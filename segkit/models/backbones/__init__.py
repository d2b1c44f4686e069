"""Encoders: MSCAN (SegNeXt), MiT (SegFormer), plain ViT and BEiT, CSWin, and RSSeg's tapped wrappers.

Every encoder maps normalised images ``(B, 3, H, W)`` to a
:class:`~segkit.models.contract.Features` and exposes ``out_channels``. Parameter names are the
official checkpoint keys (without the ``backbone.`` prefix the ``Segmentor`` adds).
"""
