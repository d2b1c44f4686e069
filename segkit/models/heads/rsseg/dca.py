"""Discriminative cross-attention (DCA) and RSSeg's mask decoder, RSSeg paper §3.5, eqs. 12–16.

Learnable class queries (one per class) cross-attend to the patch tokens with L2-normalised
queries and keys and a learnable inverse temperature ``1/s`` (initialised to 10)::

    Attn = Softmax(Q_norm K_normᵀ / s) V                                      (12)

Two training-only objectives make the match discriminative (no inference cost):

* **query-to-region** (eqs. 13–14): region embeddings ``RE = Flatten(GT) K_norm`` (one per
  class, from the down-sampled one-hot label), ``Softmax(Q_norm RE_normᵀ / s)`` should be the
  identity; queries of classes absent from the image are ignored;
* **patch-to-region** (eq. 15): ``Softmax(K_norm RE_normᵀ / s)`` should be the down-sampled
  one-hot label of each patch.

Both are cross-entropies with weight 1 (eq. 16). Masks = patch embeddings · mask embeddings
(Segmenter, ``rstrudel/segmenter: segm/model/decoder.py``: both L2-normalised, then a LayerNorm over the classes).

Choices where the paper is silent (switches of :class:`MaskDecoder` / the builders):

* **Decoder size.** One layer (``num_layers=1``), width = encoder width, heads = width/64,
  MLP ratio 4, pre-norm, no self-attention among the queries, plus Segmenter's ``dec_proj``
  (input projection), ``classes_proj`` and (for the ablation rows whose patch map is the
  decoder input) ``patch_proj``. This is what Table 4's "+ transformer decoder" row pins down:
  +8.9 M parameters (= 15·C² for C = 768: a 12·C² layer + three C×C projections) and +3.5
  GFLOPs, which excludes Segmenter's 2-layer joint self-attention over patches and classes
  (+16 M, +11 GFLOPs).
* **Heads.** The paper writes single-head formulas (eq. 12: ``Q_norm ∈ R^{B,N_class,C}``,
  normalised over all C channels); we normalise Q and K per head (cosine attention), learn one
  ``1/s`` per head, and compute both losses per head, averaged over heads. ``num_heads=1`` is
  the paper's form (the builders' ``dca-literal`` preset, ``decoder_heads=1``).
* **Absent classes.** Their queries are skipped (paper) and their (all-zero) region
  embeddings are also removed from the softmax candidates of both losses (``mask_absent``).
* **Label down-sampling** to the token grid (``label_downsample``): ``"area"`` (default) — the
  fraction of each cell's valid pixels per class: region embeddings are the area-weighted sums
  of the cell keys and the patch-to-region target is that soft distribution; ``"nearest"`` —
  the label at each cell's centre, hard targets.
* **Gradients** flow through the region embeddings into the keys (nothing is detached).
* **w/o L2 normalisation** (Table 6): plain scaled dot products ``q·kᵀ/sqrt(d)`` in the
  attention, and the losses use the raw queries/keys and the mean key of each region with
  the same ``1/sqrt(d)`` scale.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from segkit.errors import UsageError

from ...layers import DropPath, init_trunc_normal

LABEL_DOWNSAMPLES = ("area", "nearest")
_NEG = -1.0e4  # finite "minus infinity" for masked logits (keeps fully-masked rows finite)


# ------------------------------------------------------------------------------ label helpers
def region_weights(
    labels: torch.Tensor,
    grid: tuple[int, int],
    stride: tuple[int, int],
    num_classes: int,
    ignore_index: int = 255,
    mode: str = "area",
) -> torch.Tensor:
    """Down-sampled one-hot label ``(B, K, h·w)`` float32 for a token grid.

    Args:
        labels: ``(B, H, W)`` int64 class ids, ``ignore_index`` (and ids ≥ K) ignored.
        grid: token grid ``(h, w)``.
        stride: pixels per token ``(sy, sx)``; pixel ``(y, x)`` belongs to cell
            ``(y // sy, x // sx)`` (pixels beyond the grid are dropped).
        mode: ``"area"`` — per cell, the number of valid pixels of each class divided by
            ``sy·sx``; ``"nearest"`` — 1 for the class of the cell's centre pixel.

    Returns: weights ``(B, K, h·w)``; a cell's column sums to its valid fraction (area) or
    to 0/1 (nearest).
    """
    if labels.ndim != 3:
        raise UsageError(f"labels must be (B, H, W), got {tuple(labels.shape)}")
    if mode not in LABEL_DOWNSAMPLES:
        raise UsageError(f"label_downsample must be one of {LABEL_DOWNSAMPLES}, got {mode!r}")
    b, hh, ww = labels.shape
    h, w = grid
    sy, sx = stride
    if mode == "nearest":
        lab = labels[:, sy // 2 :: sy, sx // 2 :: sx][:, :h, :w]
        lab = F.pad(lab, (0, w - lab.shape[2], 0, h - lab.shape[1]), value=ignore_index)
        valid = (lab != ignore_index) & (lab >= 0) & (lab < num_classes)
        onehot = F.one_hot(torch.where(valid, lab, 0), num_classes).permute(0, 3, 1, 2).float()
        return (onehot * valid[:, None].float()).flatten(2)
    dev = labels.device
    ys = torch.arange(hh, device=dev) // sy
    xs = torch.arange(ww, device=dev) // sx
    inside = (ys[:, None] < h) & (xs[None, :] < w)
    cell = ys[:, None] * w + xs[None, :]  # (H, W)
    valid = (labels != ignore_index) & (labels >= 0) & (labels < num_classes) & inside
    idx = (torch.arange(b, device=dev).view(b, 1, 1) * num_classes + labels) * (h * w) + cell
    counts = torch.bincount(idx[valid], minlength=b * num_classes * h * w).float()
    return counts.view(b, num_classes, h * w) / float(sy * sx)


def region_embeddings(keys: torch.Tensor, weights: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Region embeddings ``(B, heads, K, d)`` (eq. 13): per class, the weighted sum of the keys.

    ``keys (B, heads, N, d)``, ``weights (B, K, N)``. With ``normalize`` the result is
    L2-normalised (``RE_norm``; absent classes stay zero vectors); otherwise it is the
    weighted *mean* key (the "w/o L2 normalisation" ablation).
    """
    re = torch.einsum("bkn,bhnd->bhkd", weights.to(keys.dtype), keys)
    if normalize:
        return F.normalize(re, dim=-1)
    return re / weights.sum(-1).clamp_min(1e-6)[:, None, :, None].to(keys.dtype)


def query_to_region_loss(
    queries: torch.Tensor,
    regions: torch.Tensor,
    present: torch.Tensor,
    scale: torch.Tensor | float,
    mask_absent: bool = True,
) -> torch.Tensor:
    """Query-to-region matching loss (eq. 14): CE of ``Softmax(q · REᵀ · scale)`` against the identity.

    Args:
        queries: ``(B, heads, K, d)`` (normalised in DCA); query ``i`` belongs to class ``i``.
        regions: ``(B, heads, K, d)`` region embeddings.
        present: ``(B, K)`` bool, class present in the image.
        scale: ``1/s``, a float or a ``(heads,)`` tensor.
        mask_absent: remove absent regions from the softmax candidates.

    Returns the mean over (image, head, present class) of ``−log p(region i | query i)``;
    0 (connected to the graph) when no class is present anywhere.
    """
    logits = torch.einsum("bhqd,bhkd->bhqk", queries.float(), regions.float()) * _per_head(scale, logits_dim=4)
    if mask_absent:
        logits = logits.masked_fill(~present[:, None, None, :], _NEG)
    ce = -logits.log_softmax(dim=-1).diagonal(dim1=-2, dim2=-1)  # (B, heads, K)
    rows = present[:, None, :].expand_as(ce)
    if not rows.any():
        return logits.sum() * 0.0
    return ce[rows].mean()


def patch_to_region_loss(
    keys: torch.Tensor,
    regions: torch.Tensor,
    weights: torch.Tensor,
    scale: torch.Tensor | float,
    mask_absent: bool = True,
) -> torch.Tensor:
    """Patch-to-region matching loss (eq. 15): CE of ``Softmax(k · REᵀ · scale)`` against the patch's label.

    Args:
        keys: ``(B, heads, N, d)``; regions: ``(B, heads, K, d)``.
        weights: ``(B, K, N)`` down-sampled one-hot label (:func:`region_weights`); each
            patch's target is its column normalised to sum 1; patches without valid pixels
            are skipped.
        scale, mask_absent: as :func:`query_to_region_loss`.

    Returns the mean over (image, head, valid patch); 0 when no patch is valid.
    """
    logits = torch.einsum("bhnd,bhkd->bhnk", keys.float(), regions.float()) * _per_head(scale, logits_dim=4)
    present = weights.sum(-1) > 0  # (B, K)
    if mask_absent:
        logits = logits.masked_fill(~present[:, None, None, :], _NEG)
    mass = weights.sum(1)  # (B, N)
    valid = mass > 0
    if not valid.any():
        return logits.sum() * 0.0
    target = (weights / mass.clamp_min(1e-12)[:, None]).transpose(1, 2)  # (B, N, K)
    ce = -torch.einsum("bnk,bhnk->bhn", target.float(), logits.log_softmax(dim=-1))  # (B, heads, N)
    return ce[valid[:, None, :].expand_as(ce)].mean()


def _per_head(scale, logits_dim: int):
    if isinstance(scale, torch.Tensor) and scale.ndim == 1:
        return scale.float().view(1, -1, *([1] * (logits_dim - 2)))
    return scale


# ------------------------------------------------------------------------------ decoder layer
class CrossAttention(nn.Module):
    """Multi-head cross-attention from queries to tokens; DCA when ``l2_norm`` (eq. 12).

    ``q``, ``k``, ``v``, ``proj``: Linear(dim, dim) with bias. With ``l2_norm`` the per-head
    queries and keys are L2-normalised and the logits multiplied by ``inv_scale`` (one
    learnable ``1/s`` per head, initialised to ``init_inv_scale`` = 10); otherwise the usual
    ``1/sqrt(head_dim)``.

    Input ``queries (B, K, dim)``, ``tokens (B, N, dim)``; returns ``(out (B, K, dim), q, k)``
    with ``q (B, heads, K, d)``, ``k (B, heads, N, d)`` as used in the logits (normalised
    under DCA) for the auxiliary losses.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        l2_norm: bool = True,
        init_inv_scale: float = 10.0,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        if dim % num_heads:
            raise UsageError(f"decoder width {dim} is not divisible by {num_heads} heads")
        self.num_heads, self.l2_norm, self.attn_drop = int(num_heads), bool(l2_norm), float(attn_drop)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if self.l2_norm:
            self.inv_scale = nn.Parameter(torch.full((num_heads,), float(init_inv_scale)))

    def logit_scale(self) -> torch.Tensor | float:
        """``1/s`` per head (DCA) or ``1/sqrt(head_dim)``."""
        return self.inv_scale if self.l2_norm else 1.0 / math.sqrt(self.q.out_features // self.num_heads)

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor):
        b, nq, c = queries.shape
        n = tokens.shape[1]
        h, d = self.num_heads, c // self.num_heads
        q = self.q(queries).view(b, nq, h, d).transpose(1, 2)
        k = self.k(tokens).view(b, n, h, d).transpose(1, 2)
        v = self.v(tokens).view(b, n, h, d).transpose(1, 2)
        drop = self.attn_drop if self.training else 0.0
        if self.l2_norm:
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
            out = F.scaled_dot_product_attention(
                q * self.inv_scale.view(1, h, 1, 1).to(q.dtype), k, v, dropout_p=drop, scale=1.0
            )
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, nq, c)))
        return out, q, k


class DecoderMlp(nn.Module):
    """``fc1 → GELU → dropout → fc2 → dropout`` on ``(B, N, dim)``."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DCALayer(nn.Module):
    """Pre-norm decoder layer: ``Q += CrossAttn(LN(Q), LN(T))``; ``Q += MLP(LN(Q))``.

    Shapes: ``queries (B, K, dim)``, ``tokens (B, N, dim)`` → ``(queries, q, k)`` (see
    :class:`CrossAttention`). LayerNorm eps 1e-5 (Segmenter).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        l2_norm: bool = True,
        init_inv_scale: float = 10.0,
        dropout: float = 0.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, num_heads, l2_norm, init_inv_scale, proj_drop=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = DecoderMlp(dim, int(dim * mlp_ratio), dropout)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor):
        a, q, k = self.attn(self.norm_q(queries), self.norm_kv(tokens))
        queries = queries + self.drop_path(a)
        queries = queries + self.drop_path(self.mlp(self.norm2(queries)))
        return queries, q, k


# ------------------------------------------------------------------------------ mask decoder
class MaskDecoder(nn.Module):
    """Class-query transformer decoder with DCA and Segmenter-style mask prediction.

    Args:
        in_dim: channels of the decoder input map; ``dim``: decoder width (= encoder width).
        num_classes: K (one query per class).
        num_layers, num_heads, mlp_ratio, dropout: decoder size (see module docstring).
        dca: enable the two auxiliary losses (training only).
        l2_norm: L2-normalised Q/K with learnable ``1/s`` (default: same as ``dca``).
        q2r_weight, p2r_weight: loss weights (paper 1, 1; 0 disables one — Table 6).
        init_inv_scale: initial ``1/s`` (paper 10).
        patch_proj: project the patch embeddings with a ``C × C`` Linear before the mask
            product (Segmenter; used when the patch map is the decoder input).
        label_downsample, mask_absent: see the module docstring.
        ignore_index: label value skipped by the losses.

    :meth:`forward` takes ``tokens (B, in_dim, h, w)`` (decoder input), optional
    ``patches (B, dim, H', W')`` (final patch embeddings; default: the projected decoder input),
    optional ``labels (B, H_img, W_img)`` and the padded image size ``image_hw``; it returns
    ``(masks (B, K, H', W'), losses dict)``. The losses are computed only when ``labels`` is
    given and ``dca`` is on.
    """

    def __init__(
        self,
        in_dim: int,
        dim: int,
        num_classes: int,
        *,
        num_layers: int = 1,
        num_heads: int | None = None,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        dca: bool = True,
        l2_norm: bool | None = None,
        q2r_weight: float = 1.0,
        p2r_weight: float = 1.0,
        init_inv_scale: float = 10.0,
        patch_proj: bool = False,
        label_downsample: str = "area",
        mask_absent: bool = True,
        ignore_index: int = 255,
    ):
        super().__init__()
        if num_layers < 1:
            raise UsageError(f"num_layers must be >= 1, got {num_layers}")
        if label_downsample not in LABEL_DOWNSAMPLES:
            raise UsageError(f"label_downsample must be one of {LABEL_DOWNSAMPLES}, got {label_downsample!r}")
        num_heads = num_heads or max(dim // 64, 1)
        self.dim, self.num_classes = int(dim), int(num_classes)
        self.dca = bool(dca)
        self.l2_norm = self.dca if l2_norm is None else bool(l2_norm)
        self.q2r_weight, self.p2r_weight = float(q2r_weight), float(p2r_weight)
        self.label_downsample, self.mask_absent, self.ignore_index = label_downsample, bool(mask_absent), ignore_index
        self.dec_proj = nn.Linear(in_dim, dim)
        self.cls_emb = nn.Parameter(torch.zeros(1, num_classes, dim))
        self.layers = nn.ModuleList(
            DCALayer(dim, num_heads, mlp_ratio, self.l2_norm, init_inv_scale, dropout) for _ in range(num_layers)
        )
        self.decoder_norm = nn.LayerNorm(dim)
        self.patch_norm = nn.LayerNorm(dim)
        self.patch_proj = nn.Linear(dim, dim, bias=False) if patch_proj else None
        self.classes_proj = nn.Linear(dim, dim, bias=False)
        self.mask_norm = nn.LayerNorm(num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Linear: truncated normal std .02, bias 0; ``cls_emb`` truncated normal .02 (Segmenter); norms 1/0."""
        nn.init.trunc_normal_(self.cls_emb, std=0.02)
        init_trunc_normal(self)

    def forward(
        self,
        tokens: torch.Tensor,
        patches: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        image_hw: tuple[int, int] | None = None,
    ):
        b, _, h, w = tokens.shape
        x = self.dec_proj(tokens.flatten(2).transpose(1, 2))  # (B, h·w, dim)
        queries = self.cls_emb.repeat(b, 1, 1)  # a copy, not a view (keeps module hooks happy in inference mode)
        want_loss = labels is not None and self.dca and (self.q2r_weight or self.p2r_weight)
        weights = None
        if want_loss:
            hh, ww = image_hw if image_hw is not None else labels.shape[-2:]
            weights = region_weights(
                labels,
                (h, w),
                (max(hh // h, 1), max(ww // w, 1)),
                self.num_classes,
                self.ignore_index,
                self.label_downsample,
            )
        q2r, p2r = [], []
        for layer in self.layers:
            queries, q, k = layer(queries, x)
            if want_loss:
                scale = layer.attn.logit_scale()
                regions = region_embeddings(k, weights, normalize=self.l2_norm)
                present = weights.sum(-1) > 0
                if self.q2r_weight:
                    q2r.append(query_to_region_loss(q, regions, present, scale, self.mask_absent))
                if self.p2r_weight:
                    p2r.append(patch_to_region_loss(k, regions, weights, scale, self.mask_absent))
        losses = {}
        if q2r:
            losses["loss_q2r"] = self.q2r_weight * torch.stack(q2r).mean()
        if p2r:
            losses["loss_p2r"] = self.p2r_weight * torch.stack(p2r).mean()

        classes = F.normalize(self.classes_proj(self.decoder_norm(queries)), dim=-1)  # (B, K, dim)
        if patches is None:
            p, (ph, pw) = x, (h, w)
        else:
            if patches.shape[1] != self.dim:
                raise UsageError(f"patch embeddings have {patches.shape[1]} channels, decoder width is {self.dim}")
            ph, pw = patches.shape[-2:]
            p = patches.flatten(2).transpose(1, 2)
        p = self.patch_norm(p)
        if self.patch_proj is not None:
            p = self.patch_proj(p)
        p = F.normalize(p, dim=-1)
        masks = self.mask_norm(torch.einsum("bnc,bkc->bnk", p, classes))  # (B, N', K)
        return masks.transpose(1, 2).reshape(b, self.num_classes, ph, pw), losses
