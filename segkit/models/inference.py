"""Inference math shared by :class:`~segkit.models.segmentor.Segmentor`: bilinear resizing, slide
windows, and the label path — bilinear resize + arg-max without the full-resolution logit map.

**Why a label path.** The reference test protocol (mmseg ``EncoderDecoder.whole_inference`` /
``slide_inference``, used by the official SegFormer and SegNeXt code) resizes the decoder's
logits ``(B, K, h, w)`` bilinearly to the network input, then to the original image, takes a
softmax over all ``K`` classes and finally the arg-max. At 512² with 150 classes that is a
``150 × 512 × 512`` float map (157 MB) written and read three times to produce 262 144 labels —
more time than the network itself on a CPU. The softmax is monotonic, so it never changes an
arg-max; :func:`resize_argmax` also avoids the resize of most class maps:

1. **Composite taps.** Each bilinear resize (``align_corners=False``: source index
   ``(dst + 0.5) · in / out − 0.5`` clamped at 0, two taps; as ATen's ``upsample_bilinear2d``)
   is a 1-D two-tap filter per axis; a chain of resizes (decoder stride → network input →
   original image) composes into one filter of ``T ≤ 3`` taps per output row and column.
2. **Candidate classes per block.** An output pixel is a convex combination of the logits of a
   ``T_r × T_c`` block of decoder pixels. If every pixel of the block has the same arg-max
   ``c``, so has every convex combination: the block's output pixels get ``c`` without any
   arithmetic (most blocks of a trained model's output; one arg-max over the classes and
   integer comparisons decide it). In the other blocks a class ``k`` can be the arg-max only if
   its largest logit in the block is at least the best smallest logit of any class:
   ``max_block L_k ≥ max_c min_block L_c``; their pixels compute the interpolated logits of
   these candidates only (grouped by candidate count: 2, 4, 8, …, K).
3. **Bands.** Output rows are processed in bands, so no ``K × H × W`` map is ever held.

**Equality with the reference.** The labels equal ``resize(resize(logits)).argmax(1)`` except
where two classes' interpolated logits are equal up to float32 rounding (≈ 1e-6 relative):
ATen rounds the intermediate map and sums the taps in its own order, this path multiplies the
composite weights, so the last bit may differ, and a pixel whose top two classes are that close
may take either. Exact ties (equal values) go to the lower class index, as ``torch.argmax``.
``tests/test_label_path.py`` checks this on CamVid test images (whole, slide, multi-scale + flip)
and that every differing pixel is such a near-tie.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from segkit.data.interp import composite_taps


def resize(x: torch.Tensor, size: Sequence[int], align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of a ``(B, C, H, W)`` float tensor to ``size = (H', W')`` (reference: align_corners=False)."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def slide_windows(
    height: int, width: int, crop: Sequence[int], stride: Sequence[int]
) -> list[tuple[int, int, int, int]]:
    """Window boxes ``(y1, y2, x1, x2)`` of the reference slide inference (mmseg ``slide_inference``).

    ``grids = max(H - crop + stride - 1, 0) // stride + 1`` per axis; the last window is
    clamped to the border, so every pixel is covered at least once. A window larger than the
    image is clipped to the image.
    """
    ch, cw = int(crop[0]), int(crop[1])
    sh, sw = int(stride[0]), int(stride[1])
    if min(ch, cw, sh, sw) <= 0:
        raise ValueError(f"crop and stride must be positive, got crop={tuple(crop)} stride={tuple(stride)}")
    ny = max(height - ch + sh - 1, 0) // sh + 1
    nx = max(width - cw + sw - 1, 0) // sw + 1
    boxes = []
    for iy in range(ny):
        for ix in range(nx):
            y1, x1 = iy * sh, ix * sw
            y2, x2 = min(y1 + ch, height), min(x1 + cw, width)
            y1, x1 = max(y2 - ch, 0), max(x2 - cw, 0)
            boxes.append((y1, y2, x1, x2))
    return boxes


# ----------------------------------------------------------------------------- labels
def resize_argmax(
    logits: torch.Tensor,
    sizes: Sequence[Sequence[int]],
    *,
    align_corners: bool = False,
    band_pixels: int = 1 << 18,
    out_dtype: torch.dtype = torch.int64,
) -> torch.Tensor:
    """``argmax(resize(… resize(logits, sizes[0]) …, sizes[-1]), dim=1)`` without the resized maps.

    Args:
        logits: ``(B, K, h, w)`` float tensor (any float dtype / memory format; computed in float32).
        sizes: the chain of ``(H, W)`` bilinear resizes the reference applies, e.g.
            ``[input_size, original_size]``; steps to the current size are no-ops.
        align_corners: bilinear convention of every resize (reference: False).
        band_pixels: output pixels per band (bounds the working memory, not the result).
        out_dtype: dtype of the label map (int64, or uint8 when ``K ≤ 256``).

    Returns the label map ``(B, H, W)`` (``(H, W) = sizes[-1]``) on ``logits.device``. Equal to
    the reference except at float32 near-ties (module docstring). Raises ``ValueError`` for a
    tensor that is not 4-D or an empty ``sizes``.
    """
    if logits.ndim != 4:
        raise ValueError(f"expected logits of shape (B, K, h, w), got {tuple(logits.shape)}")
    if not sizes:
        raise ValueError("sizes must name at least one (H, W)")
    b, k, h, w = logits.shape
    if all(tuple(int(v) for v in s) == (h, w) for s in sizes):
        return torch.stack([argmax_classes(x) for x in logits]).to(out_dtype)
    rows, cols = (
        Taps.of(h, [s[0] for s in sizes], align_corners, logits.device),
        Taps.of(w, [s[1] for s in sizes], align_corners, logits.device),
    )
    out = torch.empty((b, len(rows), len(cols)), dtype=out_dtype, device=logits.device)
    for i in range(b):
        out[i] = labels_for_rows(logits[i], rows, cols, band_pixels=band_pixels)
    return out


class Taps:
    """A composite 1-D filter (:func:`segkit.data.interp.composite_taps`) as tensors: ``base (n,)``
    int64 and ``weight (n, T)`` float32; ``rows(a, b)`` is the part for outputs ``a … b − 1``."""

    def __init__(self, base: torch.Tensor, weight: torch.Tensor):
        self.base, self.weight = base, weight

    @classmethod
    def of(cls, n_in: int, sizes: Sequence[int], align_corners: bool, device) -> "Taps":
        base, weight = composite_taps(n_in, sizes, align_corners)
        return cls(torch.from_numpy(base).to(device), torch.from_numpy(weight).to(device))

    def __len__(self) -> int:
        return self.base.shape[0]

    def rows(self, a: int, b: int, shift: int = 0) -> "Taps":
        return Taps(self.base[a:b] - shift, self.weight[a:b])

    def last_source(self, n_in: int) -> torch.Tensor:
        """``(n,)`` the last source index each output reads (clipped to the input)."""
        return (self.base + self.weight.shape[1] - 1).clamp(max=n_in - 1)


def argmax_classes(logits: torch.Tensor) -> torch.Tensor:
    """``logits (K, H, W)`` → ``(H, W)`` int64 index of the largest class, the first one on ties (= ``argmax(0)``).

    ATen reduces over a non-innermost dimension slowly on the CPU (about 2.5× a pass over the
    classes with ``torch.where``), so NCHW-contiguous maps take the class-by-class pass;
    channels-last ones, whose classes are innermost, use ``argmax`` itself. NaN handling differs
    from ``argmax`` (a NaN logit never wins here).
    """
    if logits.shape[0] == 1 or logits.stride(0) == 1 or logits.device.type != "cpu":
        return logits.argmax(0)
    best = logits[0].clone()
    index = torch.zeros(logits.shape[1:], dtype=torch.int64, device=logits.device)
    for k in range(1, logits.shape[0]):
        better = logits[k] > best
        torch.where(better, logits[k], best, out=best)
        index.masked_fill_(better, k)
    return index


def labels_for_rows(logits: torch.Tensor, rows: Taps, cols: Taps, band_pixels: int = 1 << 18) -> torch.Tensor:
    """Labels ``(len(rows), len(cols))`` int64 of one image's ``logits (K, h, w)``, where ``rows`` / ``cols``
    index into ``logits`` (``rows.base`` relative to its first row); output rows in bands of ``band_pixels``.
    Computed in float32, autocast disabled (bf16 / fp16 logits are widened)."""
    height, width = len(rows), len(cols)
    out = torch.empty((height, width), dtype=torch.int64, device=logits.device)
    band = max(1, band_pixels // max(width, 1))
    with torch.autocast(logits.device.type, enabled=False):  # float32 even inside an AMP region
        for y0 in range(0, height, band):
            y1 = min(y0 + band, height)
            out[y0:y1] = _band_labels(logits, rows.base[y0:y1], rows.weight[y0:y1], cols.base, cols.weight)
    return out


def _runs(base: torch.Tensor, n_blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For a non-decreasing ``base (n,)`` with values in ``[0, n_blocks)``: the output indices of each
    block, padded, ``(n_blocks, m)`` (``-1`` = padding), and their taps' row in ``base``'s table."""
    counts = torch.bincount(base, minlength=n_blocks)
    m = max(int(counts.max()), 1)
    start = torch.cumsum(counts, 0) - counts
    idx = start[:, None] + torch.arange(m, device=base.device)[None]
    return torch.where(torch.arange(m, device=base.device)[None] < counts[:, None], idx, -1), counts


def _band_labels(
    logits: torch.Tensor,
    row_base: torch.Tensor,
    row_w: torch.Tensor,
    col_base: torch.Tensor,
    col_w: torch.Tensor,
) -> torch.Tensor:
    """Labels ``(len(row_base), len(col_base))`` int64 of one image's ``logits (K, h, w)`` for a band of output rows.

    Blocks (the ``tr × tc`` decoder pixels an output pixel reads, clipped at the border) whose
    pixels all have the same arg-max ``c`` give every output pixel in them the label ``c``: an
    interpolated logit is a convex combination of the block's logits, so ``L_c ≥ L_k`` at every
    pixel of the block (``>`` for ``k < c``, by arg-max's first-index rule) carries over to every
    interpolated point. Only the other blocks ("mixed", along class boundaries: 5–15 % of a
    photo's blocks) get the bound test of the module docstring and candidate interpolation.
    This needs one arg-max over the classes (innermost here) and integer comparisons instead of
    the block max / min of every class over the whole band, which cost about as much as the
    network's head on SegFormer-B0 at 512² (``benchmarks/results/label_path_avx2.md``).
    """
    k, h, w = logits.shape
    tr, tc = row_w.shape[1], col_w.shape[1]
    if tr == 1 and tc == 1:  # one source pixel per output (e.g. no resize): its arg-max
        return argmax_classes(logits[:, row_base][:, :, col_base])
    lo = int(row_base[0])
    hi = min(int(row_base[-1]) + tr, h)
    # the decoder rows this band reads as (rows, w, K): a view for channels-last logits
    part = logits[:, lo:hi].permute(1, 2, 0).float().contiguous()
    hp, wp = part.shape[:2]
    # (hp, wp): each decoder pixel's class. ``max(-1)`` returns the first index on ties, as ``argmax``,
    # and its kernel is faster and steadier than ``argmax``'s over the innermost dimension (PyTorch
    # 2.13 on x86: 3.3 vs 4.9–12.8 ms for 128×128×150 on one thread, AVX-512 and AVX2 alike)
    top = part.max(-1)[1]
    # uniform[i, j]: the block starting at (i, j) has one arg-max (rows, then columns; clipped at the border)
    uniform = torch.ones(hp, wp, dtype=torch.bool, device=part.device)
    for a in range(1, min(tr, hp)):
        uniform[:-a] &= top[:-a] == top[a:]
    if tc > 1:
        rows_uniform, uniform = uniform, uniform.clone()
        for c in range(1, min(tc, wp)):
            uniform[:, :-c] &= rows_uniform[:, c:] & (top[:, :-c] == top[:, c:])
    bi = row_base - lo  # block row of each output row
    labels = top[bi][:, col_base]  # right wherever a block is uniform
    used = torch.zeros(hp, wp, dtype=torch.bool, device=part.device)
    used[bi.unique()[:, None], col_base.unique()[None]] = True
    mixed_y, mixed_x = (used & ~uniform).nonzero(as_tuple=True)
    if mixed_y.numel() == 0:
        return labels
    # the mixed blocks' logits (nm, tr*tc, K), flat positions clipped at the border (a clipped
    # tap repeats a pixel of the block and has weight 0 in the interpolation)
    tap_r = torch.arange(tr, device=part.device)
    tap_c = torch.arange(tc, device=part.device)
    rows_at = (mixed_y[:, None] + tap_r).clamp(max=hp - 1)
    pos = (rows_at[:, :, None] * wp + (mixed_x[:, None] + tap_c).clamp(max=wp - 1)[:, None]).view(-1, tr * tc)
    block = part.view(hp * wp, k)[pos]
    # candidates: classes whose largest logit in the block reaches the best smallest logit
    is_cand = block.amax(1) >= block.amin(1).amax(-1, keepdim=True)  # (nm, K)
    count = is_cand.sum(-1)
    # each block's output rectangle: rows with base == block row, columns with base == block column
    out_rows, _ = _runs(bi, hp)  # (hp, my) output row indices (-1 pad)
    out_cols, _ = _runs(col_base, wp)  # (wp, mx)
    wr_blk = torch.where(out_rows[..., None] >= 0, row_w[out_rows.clamp(min=0)], 0.0)  # (hp, my, tr)
    wc_blk = torch.where(out_cols[..., None] >= 0, col_w[out_cols.clamp(min=0)], 0.0)  # (wp, mx, tc)
    far = torch.finfo(torch.float32).min / 4  # the value of unused candidate slots: below any logit, finite
    n_out = labels.numel()
    lab_flat = torch.cat([labels.flatten(), labels.new_zeros(1)])  # last slot absorbs padding
    lower = 1
    while lower < k:
        cap = min(2 * lower, k)
        group = ((count > lower) & (count <= cap)).nonzero().squeeze(1)
        lower = cap
        if group.numel() == 0:
            continue
        by, bx, nb = mixed_y[group], mixed_x[group], group.numel()
        # candidate classes of each block in ascending class order (exact ties -> lower index, as argmax);
        sel = is_cand[group]  # (nb, K)
        slot = torch.where(sel, sel.cumsum(1) - 1, cap)
        cand = torch.full((nb, cap + 1), k, dtype=torch.int64, device=part.device)
        cand.scatter_(1, slot, torch.arange(k, device=part.device).expand_as(slot))
        cand = cand[:, :cap]
        unused = cand == k
        vals = block[group].gather(2, cand.clamp(max=k - 1)[:, None, :].expand(-1, tr * tc, -1))  # (nb, tr*tc, cap)
        vals = vals.masked_fill_(unused[:, None, :], far).view(nb, tr, tc * cap)
        v = torch.bmm(wr_blk[by], vals).view(nb, -1, tc, cap)  # rows: (nb, my, tc, cap)
        my = v.shape[1]
        v = torch.bmm(wc_blk[bx], v.transpose(1, 2).reshape(nb, tc, my * cap))  # (nb, mx, my*cap)
        pred = cand.gather(1, v.view(nb, -1, cap).argmax(-1)).view(nb, -1, my)  # (nb, mx, my)
        rows, cols = out_rows[by][:, None, :], out_cols[bx][:, :, None]  # (nb, 1, my), (nb, mx, 1)
        dest = torch.where((rows >= 0) & (cols >= 0), rows * labels.shape[1] + cols, n_out)
        lab_flat[dest.flatten()] = pred.flatten()
    return lab_flat[:n_out].view_as(labels)


__all__ = ["resize", "slide_windows", "resize_argmax", "labels_for_rows", "Taps"]
