"""Streaming confusion matrix and the segmentation metrics derived from it.

The metric is dataset-wide (mmseg ``mean_iou`` / ``IoUMetric``; docs/protocols.md):
intersections and unions are summed over all pixels of all images *before* dividing, so a
per-class IoU is not an average of per-image IoUs. Only the ``K × K`` confusion matrix is kept
in memory, never the logits or predictions.

Conventions (our choices, stated here once):

* **Percentages.** Every metric is reported on the 0–100 scale, as in the papers' tables.
* **Classes absent from the ground truth** (``absent``, see :func:`metrics_from_matrix`).
  ``"union"`` (default) is mmsegmentation's rule (``total_area_to_metrics`` in
  ``mmseg/core/evaluation/metrics.py``), under which the papers' numbers were produced: each
  metric is computed from the dataset totals and is ``NaN`` (left out of its class mean) only
  where its own denominator is 0 — a class never in the ground truth but predicted somewhere
  scores IoU 0 and lowers mIoU; a class in neither is left out. ``"gt"`` leaves out every class
  with no ground-truth pixel, even if it was predicted: the mean over the classes that occur.
  On full benchmark splits where every class occurs, the two give the same mIoU, mAcc and
  mDice; they can differ on subsets (a few images, ``max_images``) — docs/protocols.md.
* **F-score** uses ``beta = 1`` by default: ``(1 + b²)·tp / ((1 + b²)·tp + b²·fn + fp)``, the
  same as ``(1 + b²)·P·R / (b²·P + R)``. With ``beta = 1`` it equals Dice.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from segkit.errors import DataError, UsageError

METRIC_NAMES = ("IoU", "Acc", "Dice", "Fscore", "Precision", "Recall")


class ConfusionMatrix:
    """Dataset-wide ``K × K`` confusion matrix, updated one batch at a time.

    Args:
        num_classes: K (>= 1).
        ignore_index: label value whose pixels are skipped (default 255).
        device: where the matrix lives; put it on the predictions' device (on GPU with NCCL
            the all-reduce needs a CUDA tensor; a CPU matrix is moved there and back).

    Attributes:
        matrix: ``(K, K)`` int64 tensor; ``matrix[g, p]`` counts pixels of ground-truth class
            ``g`` predicted as ``p`` (rows = ground truth, columns = prediction).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: str | torch.device = "cpu"):
        if int(num_classes) < 1:
            raise UsageError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.matrix = torch.zeros((self.num_classes, self.num_classes), dtype=torch.int64, device=device)

    def reset(self) -> None:
        """Set every count back to 0."""
        self.matrix.zero_()

    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        """Add the pixels of ``pred`` vs ``label`` (integer tensors of the same shape, any batch).

        Pixels whose label equals ``ignore_index`` are skipped. Raises ``ValueError`` if the
        shapes differ, a tensor is not integer, a label is outside ``[0, K)`` (ignore excepted)
        or a prediction is outside ``[0, K)``.
        """
        pred, label = torch.as_tensor(pred), torch.as_tensor(label)
        if pred.shape != label.shape:
            raise UsageError(f"prediction shape {tuple(pred.shape)} != label shape {tuple(label.shape)}")
        for name, t in (("prediction", pred), ("label", label)):
            if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
                raise UsageError(f"{name} must be an integer tensor, got {t.dtype}")
        k = self.num_classes
        pred = pred.reshape(-1).to(self.matrix.device, torch.int64)
        label = label.reshape(-1).to(self.matrix.device, torch.int64)
        keep = label != self.ignore_index
        pred, label = pred[keep], label[keep]
        if label.numel() == 0:
            return
        bad = (label < 0) | (label >= k)
        if bool(bad.any()):
            values = torch.unique(label[bad])[:10].tolist()
            raise DataError(f"label values {values} outside [0, {k}) and not ignore_index={self.ignore_index}")
        if bool(((pred < 0) | (pred >= k)).any()):
            raise UsageError(f"prediction values outside [0, {k}): min {int(pred.min())}, max {int(pred.max())}")
        self.matrix += torch.bincount(label * k + pred, minlength=k * k).view(k, k)

    def all_reduce(self) -> None:
        """Sum the matrix over all ranks when ``torch.distributed`` is initialised (no-op otherwise)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        if dist.get_backend() == "nccl" and not self.matrix.is_cuda:
            buf = self.matrix.cuda()
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            self.matrix.copy_(buf.cpu())
        else:
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)

    def compute(self, beta: float = 1.0, absent: str = "union") -> dict:
        """Metrics of the current matrix; see :func:`metrics_from_matrix`."""
        return metrics_from_matrix(self.matrix, beta=beta, absent=absent)


def _nanmean(values: torch.Tensor) -> float:
    valid = values[~torch.isnan(values)]
    return float(valid.mean()) if valid.numel() else math.nan


ABSENT_RULES = ("union", "gt")


def metrics_from_matrix(matrix: torch.Tensor, beta: float = 1.0, absent: str = "union") -> dict:
    """Segmentation metrics (percentages, 0–100) from a ``(K, K)`` confusion matrix.

    Per class ``c`` with ``tp = M[c, c]``, ``gt = Σ_p M[c, p]`` (row), ``pr = Σ_g M[g, c]`` (column):
    IoU = tp / (gt + pr − tp); Acc = Recall = tp / gt; Dice = 2·tp / (gt + pr);
    Precision = tp / pr; Fscore = (1 + β²)·tp / ((1 + β²)·tp + β²·(gt − tp) + (pr − tp)).
    aAcc = Σ tp / Σ gt (all non-ignored pixels).

    Args:
        matrix: ``(K, K)`` counts, rows = ground truth, columns = prediction.
        beta: F-score β (1 → F1).
        absent: which classes a metric leaves out (``NaN`` per class, skipped by the class
            means); aAcc is the same under both.

            * ``"union"`` (default) — mmsegmentation's rule (``total_area_to_metrics``,
              ``mmseg/core/evaluation/metrics.py``; the papers' tables): every metric is its
              formula above on the dataset totals, ``NaN`` only where its own denominator is 0.
              IoU and Dice: NaN iff ``gt + pr = 0`` (the class is in neither ground truth nor
              prediction); a class predicted but never in the ground truth scores IoU 0 and
              Dice 0 and counts in the means. Acc = Recall: NaN iff ``gt = 0``. Precision: NaN
              iff ``pr = 0`` (also for a class in the ground truth that is never predicted).
              Fscore: from P and R as mmseg's ``f_score``, ``(1 + β²)·P·R / (β²·P + R)``, so
              NaN where P or R is NaN and where ``tp = 0`` (0/0): left out of mFscore.
            * ``"gt"`` — leave out every class with no ground-truth pixel (``gt = 0``) from
              every per-class metric, even if it was predicted: the means are over the classes
              that occur. For the others IoU, Dice, Acc = Recall are as above (never NaN);
              Precision is 0 where ``pr = 0`` (scikit-learn's ``zero_division=0``) and Fscore
              uses the ``tp``/``fn``/``fp`` form above, so it is 0 (not NaN) where ``tp = 0``.

            Acc = Recall (so mAcc, mRecall) and aAcc are the same under both rules. Where every
            class has ground-truth pixels, IoU and Dice agree too; Precision / Fscore still
            differ for a class never predicted / never hit (NaN under ``"union"``, 0 under
            ``"gt"``).

    Returns:
        ``{"aAcc", "mIoU", "mAcc", "mDice", "mFscore", "mPrecision", "mRecall"}`` (floats; NaN
        if no class can be scored) plus per-class lists ``"IoU", "Acc", "Dice", "Fscore",
        "Precision", "Recall"`` (length K, NaN where left out), ``"gt_pixels"`` and
        ``"pred_pixels"`` (per-class int counts) and ``"num_pixels"`` (non-ignored pixels).
    """
    if absent not in ABSENT_RULES:
        raise UsageError(f"absent must be one of {ABSENT_RULES} ('union': mmseg's rule), got {absent!r}")
    m = torch.as_tensor(matrix).detach().cpu().to(torch.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise UsageError(f"confusion matrix must be square (K, K), got {tuple(m.shape)}")
    tp = m.diag()
    gt = m.sum(dim=1)
    pr = m.sum(dim=0)
    fp, fn = pr - tp, gt - tp
    b2 = float(beta) ** 2
    iou = tp / (gt + pr - tp)  # 0 / 0 -> NaN
    recall = tp / gt
    dice = 2 * tp / (gt + pr)
    precision = tp / pr
    fscore = (1 + b2) * tp / ((1 + b2) * tp + b2 * fn + fp)
    if absent == "union":  # mmseg: F-score from P and R, so NaN whenever P or R is NaN (or both are 0)
        fscore = (1 + b2) * precision * recall / (b2 * precision + recall)
    else:
        present = gt > 0
        precision = torch.where(present & (pr == 0), torch.zeros_like(precision), precision)
        nan = torch.full_like(iou, math.nan)
        iou, recall, dice, precision, fscore = (
            torch.where(present, v, nan) for v in (iou, recall, dice, precision, fscore)
        )
    per_class = {"IoU": iou, "Acc": recall, "Dice": dice, "Fscore": fscore, "Precision": precision, "Recall": recall}
    total = float(gt.sum())
    out: dict = {"aAcc": 100.0 * float(tp.sum()) / total if total > 0 else math.nan}
    for name, values in per_class.items():
        out[f"m{name}"] = 100.0 * _nanmean(values)
    for name, values in per_class.items():
        out[name] = [100.0 * float(v) for v in values]
    out["gt_pixels"] = [int(v) for v in gt]
    out["pred_pixels"] = [int(v) for v in pr]
    out["num_pixels"] = int(total)
    return out


BINARY_KEYS = ("fgIoU", "fgDice", "fgPrecision", "fgRecall")


def binary_metrics(matrix: torch.Tensor) -> dict:
    """The binary task's foreground metrics (percentages, 0–100) from a ``(2, 2)`` confusion matrix
    (rows = ground truth, columns = prediction; class 1 = foreground), with ``tp = M[1, 1]``,
    ``fp = M[0, 1]``, ``fn = M[1, 0]``: ``fgIoU = tp / (tp + fp + fn)``, ``fgDice = 2·tp / (2·tp + fp + fn)``
    (= F1), ``fgPrecision = tp / (tp + fp)``, ``fgRecall = tp / (tp + fn)``; NaN where a denominator is 0
    (no foreground in the ground truth nor the prediction). Raises :class:`~segkit.errors.UsageError` for
    another shape."""
    m = torch.as_tensor(matrix).detach().cpu().to(torch.float64)
    if tuple(m.shape) != (2, 2):
        raise UsageError(f"binary metrics need a (2, 2) confusion matrix, got {tuple(m.shape)}")
    tp, fp, fn = float(m[1, 1]), float(m[0, 1]), float(m[1, 0])

    def pct(a: float, b: float) -> float:
        return 100.0 * a / b if b > 0 else math.nan

    return {
        "fgIoU": pct(tp, tp + fp + fn),
        "fgDice": pct(2 * tp, 2 * tp + fp + fn),
        "fgPrecision": pct(tp, tp + fp),
        "fgRecall": pct(tp, tp + fn),
    }


def _fmt(value: float, digits: int) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def format_table(result: dict, class_names: Sequence[str] | None = None, digits: int = 2) -> str:
    """Per-class metrics as a Markdown table (readable as plain text too).

    One row per class (``IoU | Acc | Dice | Fscore | Precision | Recall | GT pixels``), NaN
    written ``nan``, then a ``mean`` row with the class means and a line with aAcc.
    ``class_names`` defaults to ``class_0 … class_{K-1}``; a wrong length is a ``ValueError``.
    """
    k = len(result["IoU"])
    names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(k)]
    if len(names) != k:
        raise UsageError(f"{len(names)} class names given for {k} classes")
    header = ["Class", *METRIC_NAMES]
    has_pixels = "gt_pixels" in result
    if has_pixels:
        header.append("GT pixels")
    rows = []
    for i, name in enumerate(names):
        row = [str(name), *(_fmt(result[m][i], digits) for m in METRIC_NAMES)]
        if has_pixels:
            row.append(str(result["gt_pixels"][i]))
        rows.append(row)
    mean = ["**mean**", *(_fmt(result[f"m{m}"], digits) for m in METRIC_NAMES)]
    if has_pixels:
        mean.append(str(result.get("num_pixels", sum(result["gt_pixels"]))))
    rows.append(mean)
    widths = [max(len(header[j]), *(len(r[j]) for r in rows)) for j in range(len(header))]

    def line(cells):
        return (
            "| "
            + " | ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(cells, widths)))
            + " |"
        )

    sep = "|" + "|".join(("-" * (w + 2)) if j == 0 else ("-" * (w + 1) + ":") for j, w in enumerate(widths)) + "|"
    text = [line(header), sep, *(line(r) for r in rows)]
    text.append("")
    text.append(f"aAcc: {_fmt(result['aAcc'], digits)}")
    return "\n".join(text)
