"""RSSeg's decode head for plain ViTs (RSSeg paper Fig. 4a, §3.2–3.5).

Split between ``Segmentor.backbone`` and ``Segmentor.decode_head`` (our choice):

* ``backbone`` = :class:`~segkit.models.backbones.tapped.PlainEncoder`, which holds only the
  pretrained ViT/BEiT (at ``backbone.vit``) and returns the padded image together with the
  tapped block outputs. Every parameter under ``backbone.`` is therefore an ImageNet-pretrained
  encoder weight, so encoder-only checkpoints load strictly and layer-wise lr decay applies to
  exactly the encoder.
* ``decode_head`` = :class:`RSSegHead`: everything randomly initialised — the local path
  (overlapping patch embedding, LSBs, AF), the SASMs, and the transformer decoder with DCA
  (``decode_head.decoder.*``, which the paper's recipe keeps at the base lr).

Data flow for ``H × W`` input (multiple of 16 after padding), ViT width C, LSB width D::

    image ─ local_embed (k16 s8) → Xl_0 (D, H/8) ─ LSB ─ AF(tap_1) ─ LSB … AF(tap_n) ─ LSB
    ViT ─ taps (C, H/16) ─────────────────────────┘                      │ Xl_n   │ Xl_{n+1}
    ViT last (C, H/16) ─ SASM-1 (guide: Conv2×2 s2 (Xl_{n+1})) → (C, H/8) ─ SASM-2 (guide Xl_n) → (C, H/4)
                                                       │ decoder input                   │ patch embeddings
                                  class queries ─ DCA decoder → mask embeddings ─ masks (K, H/4)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from segkit.errors import UsageError

from ...contract import DecodeHead, Features, SegLoss
from .dca import MaskDecoder
from .sasm import SASM
from .two_pathway import AttentionFusion, ConvBN, LocalPath, OverlapPatchEmbed, init_local_weights


class RSSegHead(DecodeHead):
    """Two-pathway local path + SASMs + DCA transformer decoder (RSSeg paper §3.2–3.5).

    Args:
        embed_dim: ViT width C (also the decoder width and the SASM channels).
        num_classes: K.
        num_taps: number of backbone taps n (n + 1 LSBs).
        patch_size: ViT patch size (the overlapping embedding uses kernel p, stride p/2).
        lsb_dim, expand: LSB width D and expand ratio (Table 3).
        sasm_groups: SASM channel groups (Table 3; group dim = C / groups).
        num_sasm: 2 (paper), 1 (Table 5 "1 SASM": patch embeddings at 1/8) or 0 (Table 4 rows
            before "+ SASMs").
        two_pathway: build the local path (Table 4 "+ decoupled two-pathway network"). Without
            it (and without SASMs) the decoder reads the last ViT map directly ("+ transformer
            decoder" row).
        local_op, lsb_norm, lsb_act, fusion, af_norm: :class:`LocalPath` switches.
        filter_norm: SASM filter normalisation (``"softmax"`` or ``"filter_norm"``).
        decoder: keyword arguments of :class:`~segkit.models.heads.rsseg.dca.MaskDecoder`
            (``num_layers``, ``num_heads``, ``dca``, ``l2_norm``, loss weights …).
        patch_proj: Segmenter's patch projection before the mask product; ``None`` = only when
            there is no SASM (then the patch map is the decoder input, as in Segmenter; with
            SASMs the 1/4 map is used as it is — a C × C projection there would cost ~10
            GFLOPs at 512², which Table 4 rules out).

    Without SASMs but with the local path (Table 4 "+ two-pathway" row, our reading): the
    last ViT map, up-sampled to 1/8, is fused with the last LSB output by one more AF whose
    gate pools both maps and whose gated local map is lifted to C (``final_fusion``); the
    result is the decoder input and patch map.

    Input: the :class:`~segkit.models.contract.Features` of
    :class:`~segkit.models.backbones.tapped.PlainEncoder` (last map, taps, padded image).
    :meth:`forward` returns logits ``(B, K, H'/4, W'/4)`` (``H'/8`` with 1 SASM, 1/8 or 1/16
    without SASMs); :meth:`loss` adds the weighted DCA losses ``loss_q2r`` and ``loss_p2r``.
    """

    def __init__(
        self,
        embed_dim: int,
        num_classes: int,
        num_taps: int,
        *,
        patch_size: int = 16,
        lsb_dim: int = 256,
        expand: int = 2,
        sasm_groups: int = 12,
        num_sasm: int = 2,
        two_pathway: bool = True,
        local_op: str = "lhf",
        lsb_norm: str = "bn",
        lsb_act: str = "relu",
        fusion: str = "attention",
        af_norm: str = "bn",
        filter_norm: str = "softmax",
        decoder: dict | None = None,
        patch_proj: bool | None = None,
    ):
        super().__init__()
        if num_sasm not in (0, 1, 2):
            raise UsageError(f"num_sasm must be 0, 1 or 2, got {num_sasm}")
        if num_sasm and not two_pathway:
            raise UsageError("SASMs are guided by the local path: num_sasm > 0 needs two_pathway=True")
        if num_sasm == 2 and num_taps < 1:
            raise UsageError("two SASMs need at least one backbone tap (SASM-2 is guided by the penultimate LSB)")
        self.num_sasm, self.two_pathway = int(num_sasm), bool(two_pathway)
        self.num_classes = int(num_classes)
        if two_pathway:
            self.local_embed = OverlapPatchEmbed(3, embed_dim, lsb_dim, patch_size)
            self.local = LocalPath(
                lsb_dim, [embed_dim] * num_taps, expand, local_op, lsb_norm, lsb_act, fusion, af_norm
            )
            if num_sasm == 0:
                self.final_fusion = AttentionFusion(lsb_dim, embed_dim, fusion, af_norm)
            else:
                self.sasm_down = ConvBN(lsb_dim, lsb_dim, kernel_size=2, stride=2)
            init_local_weights(self)  # before the SASMs, which keep their own (near-uniform filter) init
            if num_sasm >= 1:
                self.sasm1 = SASM(lsb_dim, embed_dim, sasm_groups, filter_norm)
            if num_sasm == 2:
                self.sasm2 = SASM(lsb_dim, embed_dim, sasm_groups, filter_norm)
        if patch_proj is None:
            patch_proj = num_sasm == 0
        self.decoder = MaskDecoder(embed_dim, embed_dim, num_classes, patch_proj=patch_proj, **(decoder or {}))

    def _run(self, feats: Features, labels: torch.Tensor | None):
        last, image = feats.stages[-1], feats.image
        patches = None
        if not self.two_pathway:
            tokens = last
        else:
            outs = self.local(self.local_embed(image), feats.taps)
            if self.num_sasm == 0:
                up = F.interpolate(last, size=outs[-1].shape[-2:], mode="bilinear", align_corners=False)
                tokens = self.final_fusion(outs[-1], up)
            else:
                tokens = self.sasm1(self.sasm_down(outs[-1]), last)  # (B, C, H/8, W/8)
                patches = self.sasm2(outs[-2], tokens) if self.num_sasm == 2 else tokens
        return self.decoder(tokens, patches, labels, tuple(image.shape[-2:]))

    def forward(self, features: Features) -> torch.Tensor:
        return self._run(features, None)[0]

    def loss(self, features: Features, labels: torch.Tensor, seg_loss: SegLoss) -> dict[str, torch.Tensor]:
        """``loss_seg`` on the masks plus the weighted DCA losses ``loss_q2r`` / ``loss_p2r`` (eqs. 13–16)."""
        logits, aux = self._run(features, labels)
        return {"loss_seg": seg_loss(logits, labels), **aux}
