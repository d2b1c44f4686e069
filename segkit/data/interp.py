"""Bilinear resizing as 1-D tap tables, and a NumPy resize + arg-max — torch-free.

A bilinear resize (``align_corners=False``) maps output index ``d`` to the source coordinate
``s = max((d + 0.5) · in / out − 0.5, 0)`` and mixes the two source samples ``⌊s⌋`` and
``min(⌊s⌋ + 1, in − 1)`` with weights ``1 − (s − ⌊s⌋)`` and ``s − ⌊s⌋``; with ``align_corners=True``
``s = d · (in − 1) / (out − 1)``. :func:`bilinear_taps` computes exactly these in float32, as
ATen's ``upsample_bilinear2d`` does on the CPU (``area_pixel_compute_scale`` /
``area_pixel_compute_source_index``, ``aten/src/ATen/native/UpSample.h``); no anti-aliasing.

The reference test protocol resizes the decoder's logits twice (decoder stride → network input →
original image); :func:`composite_taps` turns such a chain into one filter per axis, of at most
3 taps. :mod:`segkit.models.inference` (PyTorch) and the ONNX predictor (NumPy,
:func:`resize_argmax`) both build on these tables, so they sample the same points.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def bilinear_taps(n_in: int, n_out: int, align_corners: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(n_out, 2)`` int64 and weights ``(n_out, 2)`` float32 of a 1-D bilinear resize ``n_in → n_out``."""
    if n_in < 1 or n_out < 1:
        raise ValueError(f"sizes must be positive, got {n_in} -> {n_out}")
    dst = np.arange(n_out, dtype=np.float32)
    if align_corners:
        scale = np.float32((n_in - 1) / (n_out - 1)) if n_out > 1 else np.float32(0.0)
        src = scale * dst
    else:
        scale = np.float32(n_in) / np.float32(n_out)
        src = np.maximum(scale * (dst + np.float32(0.5)) - np.float32(0.5), np.float32(0.0))
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    i1 = np.where(i0 < n_in - 1, i0 + 1, i0)
    l1 = (src - i0.astype(np.float32)).astype(np.float32)
    return np.stack([i0, i1], 1), np.stack([np.float32(1.0) - l1, l1], 1)


def composite_taps(n_in: int, sizes: Sequence[int], align_corners: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One 1-D filter for the chain of bilinear resizes ``n_in → sizes[0] → sizes[1] → …``.

    Returns ``(base, weights)``: ``base (n_out,)`` int64, the first source index of each output,
    and ``weights (n_out, T)`` float32 on source indices ``base … base + T − 1`` (zero where an
    index is not used; ``T ≤ 3`` for two resizes). Steps to the current size are identities.
    The composite weights are products of the steps' float32 weights, so they can differ from
    resizing step by step in the last bit (``segkit.models.inference`` explains what this means
    for labels).
    """
    idx = np.arange(n_in, dtype=np.int64)[:, None]
    w = np.ones((n_in, 1), dtype=np.float32)
    n = n_in
    for size in sizes:
        size = int(size)
        if size == n:
            continue
        i2, w2 = bilinear_taps(n, size, align_corners)
        idx = idx[i2].reshape(size, -1)
        w = (w2[:, :, None] * w[i2]).reshape(size, -1)
        n = size
    base = idx.min(1)
    off = idx - base[:, None]
    out = np.zeros((idx.shape[0], int(off.max()) + 1), dtype=np.float32)
    np.add.at(out, (np.repeat(np.arange(idx.shape[0]), idx.shape[1]), off.ravel()), w.ravel())
    return base, out


def resize_argmax(
    logits: np.ndarray, sizes: Sequence[Sequence[int]], align_corners: bool = False, band_rows: int = 64
) -> np.ndarray:
    """``argmax`` over classes of ``logits (K, h, w)`` resized through the chain ``sizes`` of ``(H, W)``; int64.

    Output rows are computed ``band_rows`` at a time from the composite taps (rows, then columns),
    so memory stays at ``K × band_rows × W`` floats. Same labels as resizing step by step with
    PyTorch, except at float32 near-ties. Used by the ONNX predictor.
    """
    k, h, w = logits.shape
    rb, rw = composite_taps(h, [s[0] for s in sizes], align_corners)
    cb, cw = composite_taps(w, [s[1] for s in sizes], align_corners)
    height, width = len(rb), len(cb)
    logits = logits.astype(np.float32, copy=False)
    out = np.empty((height, width), dtype=np.int64)
    rows_idx = np.minimum(rb[:, None] + np.arange(rw.shape[1]), h - 1)
    cols_idx = np.minimum(cb[:, None] + np.arange(cw.shape[1]), w - 1)
    for y in range(0, height, band_rows):
        sl = slice(y, min(y + band_rows, height))
        rows = sum(logits[:, rows_idx[sl, t], :] * rw[sl, t][None, :, None] for t in range(rw.shape[1]))  # (K, r, w)
        vals = np.zeros((k, rows.shape[1], width), dtype=np.float32)
        for t in range(cw.shape[1]):
            vals += rows[:, :, cols_idx[:, t]] * cw[:, t]
        out[sl] = vals.argmax(0)
    return out


__all__ = ["bilinear_taps", "composite_taps", "resize_argmax"]
