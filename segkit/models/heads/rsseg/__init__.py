"""RSSeg's decoder components (RSSeg paper §3): :mod:`.two_pathway` (overlapping patch embedding,
LSB, LHF, attention-guided fusion), :mod:`.sasm` (SASM), :mod:`.dca` (the mask transformer with
discriminative cross-attention and its two auxiliary losses), :mod:`.plain_head` (plain ViT/BEiT)
and :mod:`.pyramid_head` (CSWin, with the boundary loss). Design notes: ``docs/rsseg.md``.
"""
