"""The training loss of the reference recipe, computed without full-resolution logit maps.

The official SegFormer / SegNeXt code (mmseg ``BaseDecodeHead.losses``) upsamples the decoder's
logits ``(B, K, h, w)`` bilinearly to the label size ``(H, W)`` and takes the pixel-wise
cross-entropy there. At batch 8, 256², 150 classes that is a 78 M-element map, written by the
upsampling, read and written again by ``log_softmax`` and by its backward, then scattered back by
the upsampling's backward — on a CPU more time than the rest of the SegFormer-B0 training step.

:func:`upsampled_cross_entropy` computes the same loss and gradient band by band: for a few
output rows at a time it interpolates the logits (the bilinear taps of
:func:`segkit.data.interp.bilinear_taps`, i.e. ATen's), takes the log-softmax, and in the
backward pass recomputes that band and sends ``softmax − one-hot`` back through the transposed
interpolation. Nothing of size ``K × H × W`` is stored, and each band stays in the CPU cache.
The loss and gradients equal ``F.cross_entropy(F.interpolate(logits, (H, W)), labels)`` to
float32 rounding (summation order differs); ``tests/test_losses.py`` checks both, with and
without class weights and ignored pixels. :class:`~segkit.models.segmentor.Segmentor` uses it
unless ``banded_loss`` is turned off.
"""

from __future__ import annotations

import torch

from segkit.data.interp import composite_taps
from segkit.errors import UsageError

BAND_ELEMENTS = 1 << 20  # floats per band (rows × W × K): 4 MB, a few bands fit in L2/L3
# Segmentor uses the banded loss from this many classes on: below, the full-resolution map is small and
# the banded bookkeeping costs more than it saves (the crossover measured in docs/benchmarks.md).
BANDED_LOSS_MIN_CLASSES = 48


class _Axis:
    """The bilinear taps of one axis ``n_in → n_out``.

    For an upsampling by a power of two ``s`` (every decoder stride; ``align_corners=False``)
    output ``j·s + u`` mixes inputs ``j − 1, j`` or ``j, j + 1`` with weights that depend on ``u``
    only (exactly: the source coordinates are dyadic), so the interpolation is ``s`` lerps of
    shifted slices of the edge-padded input — no gathers. Other ratios use index tables.
    """

    def __init__(self, n_in: int, n_out: int, align_corners: bool, device):
        self.n_in, self.n_out = n_in, n_out
        s = n_out // n_in if n_out % n_in == 0 else 0
        self.factor = s if (s >= 2 and s & (s - 1) == 0 and not align_corners) else 0
        if self.factor:
            # per phase u: first tap in padded coordinates (pad 1 on each side) and weight of the second
            self.phases = []
            for u in range(s):
                src = (u + 0.5) / s - 0.5
                self.phases.append((1, src) if src >= 0 else (0, 1.0 + src))
        else:
            base, weight = composite_taps(n_in, [n_out], align_corners)
            idx = torch.from_numpy(base)[:, None] + torch.arange(weight.shape[1])
            self.idx = idx.clamp(max=n_in - 1).to(device)
            self.weight = torch.from_numpy(weight).to(device)


def _pad(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x`` with its first and last slice along ``dim`` repeated once on each side."""
    return torch.cat([x.narrow(dim, 0, 1), x, x.narrow(dim, x.shape[dim] - 1, 1)], dim)


def _phase_weights(axis: _Axis, x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Second-tap weights of the first and second half of the phases, shaped to broadcast against
    a tensor whose ``dim + 1`` is the phase axis."""
    s = axis.factor
    view = [s // 2] + [1] * (x.ndim - dim - 1)
    l1 = torch.tensor([p[1] for p in axis.phases], dtype=torch.float32, device=x.device)
    return l1[: s // 2].view(view), l1[s // 2 :].view(view)


def _interp(x: torch.Tensor, axis: _Axis, dim: int, lo: int = 0, hi: int | None = None) -> torch.Tensor:
    """Outputs ``lo … hi − 1`` of the bilinear resize of ``x`` along ``dim`` (``x`` already edge-padded
    along ``dim`` for a power-of-two axis). For the power-of-two path ``lo`` / ``hi`` are multiples of the factor."""
    hi = axis.n_out if hi is None else hi
    if axis.factor:
        # phases u < s/2 mix padded inputs (j, j + 1), phases u >= s/2 mix (j + 1, j + 2)
        s = axis.factor
        j0, n = lo // s, (hi - lo) // s
        l_lo, l_hi = _phase_weights(axis, x, dim)
        shape = list(x.shape)
        shape[dim : dim + 1] = [n, s]
        out = x.new_empty(shape)
        taps = [x.narrow(dim, j0 + a, n).unsqueeze(dim + 1) for a in range(3)]
        torch.lerp(taps[0], taps[1], l_lo, out=out.narrow(dim + 1, 0, s // 2))
        torch.lerp(taps[1], taps[2], l_hi, out=out.narrow(dim + 1, s // 2, s // 2))
        return out.flatten(dim, dim + 1)
    idx, weight = axis.idx[lo:hi], axis.weight[lo:hi]
    view = [1] * x.ndim
    view[dim] = hi - lo
    out = x.index_select(dim, idx[:, 0]) * weight[:, 0].view(view)
    for t in range(1, idx.shape[1]):
        out += x.index_select(dim, idx[:, t]) * weight[:, t].view(view)
    return out


def _interp_adjoint(g: torch.Tensor, axis: _Axis, dim: int, out: torch.Tensor, lo: int = 0) -> None:
    """Add the transposed interpolation of ``g`` (outputs ``lo …`` along ``dim``) into ``out`` (the input
    gradient; edge-padded along ``dim`` for a power-of-two axis)."""
    n = g.shape[dim]
    if axis.factor:
        s = axis.factor
        j0, nj = lo // s, n // s
        shape = list(g.shape)
        shape[dim : dim + 1] = [nj, s]
        gv = g.reshape(shape)
        l_lo, l_hi = _phase_weights(axis, g, dim)
        g_lo, g_hi = gv.narrow(dim + 1, 0, s // 2), gv.narrow(dim + 1, s // 2, s // 2)
        out.narrow(dim, j0, nj).add_((g_lo * (1.0 - l_lo)).sum(dim + 1))
        out.narrow(dim, j0 + 1, nj).add_((g_lo * l_lo).sum(dim + 1) + (g_hi * (1.0 - l_hi)).sum(dim + 1))
        out.narrow(dim, j0 + 2, nj).add_((g_hi * l_hi).sum(dim + 1))
        return
    idx, weight = axis.idx[lo : lo + n], axis.weight[lo : lo + n]
    view = [1] * g.ndim
    view[dim] = n
    for t in range(idx.shape[1]):
        out.index_add_(dim, idx[:, t], g * weight[:, t].view(view))


def _unpad_(g: torch.Tensor, dim: int) -> torch.Tensor:
    """Fold the padded edge slices of a gradient back onto the first / last real slice."""
    n = g.shape[dim] - 2
    inner = g.narrow(dim, 1, n)
    inner.narrow(dim, 0, 1).add_(g.narrow(dim, 0, 1))
    inner.narrow(dim, n - 1, 1).add_(g.narrow(dim, n + 1, 1))
    return inner


class _UpsampledCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, labels, weight, ignore_index: int, avg: str, align_corners: bool):
        b, k, h, w = logits.shape
        height, width = labels.shape[-2:]
        rows = _Axis(h, height, align_corners, logits.device)
        cols = _Axis(w, width, align_corners, logits.device)
        x = logits.detach().float().permute(0, 2, 3, 1).contiguous()  # (B, h, w, K)
        valid = labels != ignore_index
        safe = torch.where(valid, labels, 0)
        pix_w = weight[safe] * valid if weight is not None else valid.float()  # (B, H, W) per-pixel weight
        total = x.new_zeros(())
        lse = x.new_empty(labels.shape)  # log-sum-exp per pixel, kept for the backward's softmax
        for i, y0, y1, u in _bands(x, rows, cols, height, width, k):
            lse[i, y0:y1] = torch.logsumexp(u, -1)
            nll = lse[i, y0:y1] - u.gather(-1, safe[i, y0:y1, :, None])[..., 0]
            total += (nll * pix_w[i, y0:y1]).sum()
        denom = pix_w.sum() if avg == "valid" else x.new_tensor(float(labels.numel()))
        ctx.save_for_backward(x, safe, pix_w, denom, lse)
        ctx.axes, ctx.dtype = (rows, cols), logits.dtype
        return total / denom

    @staticmethod
    def backward(ctx, grad_out):
        x, safe, pix_w, denom, lse = ctx.saved_tensors
        rows, cols = ctx.axes
        b, h, w, k = x.shape
        height, width = safe.shape[-2:]
        scale = grad_out.float() / denom
        grads = []
        for i in range(b):
            gx = x.new_zeros((h + 2 if rows.factor else h, w, k))
            for _, y0, y1, u in _bands(x[i : i + 1], rows, cols, height, width, k):
                g = u.sub_(lse[i, y0:y1, :, None]).exp_()  # softmax (rows, W, K); d loss/d logits = softmax - one-hot
                g.scatter_add_(-1, safe[i, y0:y1, :, None], g.new_full((y1 - y0, width, 1), -1.0))
                g *= (pix_w[i, y0:y1] * scale)[..., None]
                gr = g.new_zeros((y1 - y0, w + 2 if cols.factor else w, k))
                _interp_adjoint(g, cols, 1, gr)
                gr = _unpad_(gr, 1) if cols.factor else gr
                _interp_adjoint(gr, rows, 0, gx, lo=y0)
            grads.append(_unpad_(gx, 0) if rows.factor else gx)
        grad = torch.stack(grads).permute(0, 3, 1, 2).to(ctx.dtype)  # (B, K, h, w), channels-last memory
        return grad, None, None, None, None, None


def _bands(x: torch.Tensor, rows: _Axis, cols: _Axis, height: int, width: int, k: int):
    """Yield ``(image, y0, y1, upsampled rows (y1 − y0, W, K))`` over ``x (B, h, w, K)`` in bands of rows."""
    step = max(1, BAND_ELEMENTS // (width * k))
    if rows.factor:
        step = max(rows.factor, step - step % rows.factor)
    for i in range(x.shape[0]):
        xi = _pad(x[i], 0) if rows.factor else x[i]
        for y0 in range(0, height, step):
            y1 = min(y0 + step, height)
            band = _interp(xi, rows, 0, y0, y1)  # (rows, w, K)
            yield i, y0, y1, _interp(_pad(band, 1) if cols.factor else band, cols, 1)


def upsampled_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    ignore_index: int = 255,
    avg: str = "valid",
    align_corners: bool = False,
) -> torch.Tensor:
    """Cross-entropy of ``logits`` bilinearly upsampled to the size of ``labels``, without the upsampled map.

    Args:
        logits: ``(B, K, h, w)`` float (float32, or bf16 / fp16 under autocast: computed in float32).
        labels: ``(B, H, W)`` int64 class indices in ``[0, K)`` or ``ignore_index``.
        weight: optional ``(K,)`` float32 class weights (``F.cross_entropy``'s ``weight``).
        ignore_index: label value that takes no part.
        avg: ``"valid"`` — divide by the summed weight of the non-ignored pixels
            (``F.cross_entropy(reduction="mean")``); ``"all"`` — divide by all ``B·H·W`` pixels
            (mmseg 0.x ``avg_non_ignore=False``).
        align_corners: bilinear convention (reference: False).

    Returns a float32 scalar with a gradient for ``logits`` (not for ``weight``). Equal to
    ``F.cross_entropy(F.interpolate(logits, (H, W), mode="bilinear"), labels, …)`` to float32
    rounding (module docstring). Raises ``ValueError`` for mismatched shapes or an unknown ``avg``.
    """
    if logits.ndim != 4 or labels.ndim != 3 or logits.shape[0] != labels.shape[0]:
        raise UsageError(
            f"expected logits (B, K, h, w) and labels (B, H, W), got {tuple(logits.shape)}, {tuple(labels.shape)}"
        )
    if avg not in ("valid", "all"):
        raise UsageError(f"avg must be 'valid' or 'all', got {avg!r}")
    with torch.autocast(logits.device.type, enabled=False):
        w = None if weight is None else weight.float()
        return _UpsampledCE.apply(logits, labels.long(), w, int(ignore_index), avg, bool(align_corners))


__all__ = ["upsampled_cross_entropy"]


def ohem_pixel_weights(
    logits: torch.Tensor, labels: torch.Tensor, thresh: float, min_kept: int, ignore_index: int = 255
) -> torch.Tensor:
    """Online hard example mining: a 0/1 weight per pixel keeping the poorly classified ones.

    A valid pixel is kept when the softmax probability of its true class is below
    ``max(thresh, p_(n))``, where ``p_(n)`` is the ``n``-th smallest such probability of the batch
    and ``n = min_kept · B`` (capped at the number of valid pixels − 1): at least ``min_kept``
    pixels per image are kept even when the model is confident everywhere. This is the pixel
    sampler of mmseg (``OHEMPixelSampler`` with ``thresh``, from Shrivastava et al. 2016 via
    PSPNet/OCRNet's recipes; mmseg's configs use ``thresh=0.7, min_kept=100000``).

    Args:
        logits: ``(B, K, H, W)`` float, at the label size.
        labels: ``(B, H, W)`` int64 in ``[0, K)`` or ``ignore_index``.
        thresh: probability threshold in (0, 1].
        min_kept: pixels kept per image at least (≥ 0).

    Returns:
        ``(B, H, W)`` float weights in {0, 1} (0 on ignored pixels), no gradient.
    """
    with torch.no_grad():
        valid = labels != ignore_index
        weights = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
        n_valid = int(valid.sum())
        if n_valid == 0:
            return weights
        target = labels.masked_fill(~valid, 0).unsqueeze(1)
        prob = torch.softmax(logits.float(), dim=1).gather(1, target).squeeze(1)[valid]
        kept = min(int(min_kept) * labels.shape[0], n_valid - 1)
        threshold = max(float(torch.kthvalue(prob, kept + 1).values), float(thresh))
        weights[valid] = (prob < threshold).float()
        return weights


def dice_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255, smooth: float = 1.0) -> torch.Tensor:
    """Soft multi-class Dice loss ``1 − mean_c (2 Σ p_c t_c + s) / (Σ p_c² + Σ t_c² + s)``.

    ``p`` = softmax of ``logits (B, K, H, W)`` (float32), ``t`` = one-hot ``labels (B, H, W)``;
    sums over the valid (non-ignored) pixels of the whole batch, mean over the K classes, smoothing
    ``s`` (V-Net's squared denominator, Milletari et al. 2016). Choice: one Dice per class over the
    batch, averaged over classes, so that small classes count as much as large ones (mmseg 1.x's
    ``DiceLoss`` instead flattens classes and pixels of each image into one vector). Scalar, ≥ 0.
    """
    valid = (labels != ignore_index).unsqueeze(1)
    prob = torch.softmax(logits.float(), dim=1) * valid
    onehot = torch.zeros_like(prob).scatter_(1, labels.masked_fill(~valid.squeeze(1), 0).unsqueeze(1), 1.0) * valid
    dims = (0, 2, 3)
    inter = (prob * onehot).sum(dims)
    denom = (prob * prob).sum(dims) + onehot.sum(dims)
    return 1.0 - ((2 * inter + smooth) / (denom + smooth)).mean()


def binary_dice_loss(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255, smooth: float = 1.0
) -> torch.Tensor:
    """Soft Dice loss of the binary task: ``1 − (2 Σ p t + s) / (Σ p² + Σ t² + s)``.

    ``p = sigmoid(logits)`` of ``logits (B, H, W)`` (one logit per pixel, float32), ``t`` = 1 where
    ``labels (B, H, W)`` is 1 (foreground), 0 where it is 0; sums over the valid (non-``ignore_index``)
    pixels of the whole batch, of the foreground only (the background's Dice would reward the majority
    class), smoothing ``s`` and the squared denominator as :func:`dice_loss`. Scalar in [0, 1].
    """
    valid = (labels != ignore_index).float()
    prob = torch.sigmoid(logits.float()) * valid
    target = (labels == 1).float() * valid
    inter = (prob * target).sum()
    denom = (prob * prob).sum() + target.sum()
    return 1.0 - (2 * inter + smooth) / (denom + smooth)
