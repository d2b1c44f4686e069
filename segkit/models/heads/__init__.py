"""Decode heads. Each is a :class:`~segkit.models.contract.DecodeHead`: ``forward(features) -> logits``
and ``loss(features, labels, seg_loss) -> dict``.

* :mod:`.segformer_head` — SegFormer's All-MLP decoder.
* :mod:`.ham_head` — SegNeXt's LightHamHead (NMF2D Hamburger).
* :mod:`.vit_baselines` — ViT-Linear and Segmenter's mask transformer (RSSeg's baselines).
* :mod:`.rsseg` — RSSeg's heads: the plain-ViT head (LSB, LHF, AF, SASM, DCA) and the CSWin head.
"""
