"""Evaluate an exported segkit ONNX model (float32 or INT8) on a data set: ``segkit eval --onnx MODEL.onnx``.

Each image goes through :class:`~segkit.tools.onnx_predict.OnnxSegmenter` — the exported test protocol and
the label path of ``segkit predict --onnx`` — and its ``(H, W)`` label map, at the image's own size, is
counted against the label file in a confusion matrix; the metrics are
:func:`segkit.engine.metrics.metrics_from_matrix`'s, so the figures compare one to one with ``segkit eval``
of the PyTorch checkpoint (whole-image inference; slide, multi-scale and flip need PyTorch).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from segkit.errors import DataError, UsageError


def confusion(pred: np.ndarray, label: np.ndarray, num_classes: int, ignore_index: int, where: str) -> np.ndarray:
    """``(K, K)`` int64 counts (rows: ground truth, columns: prediction) of one image; pixels labelled
    ``ignore_index`` are left out. Raises :class:`~segkit.errors.DataError` naming ``where`` for label values
    outside ``[0, K)`` or a prediction of another size."""
    label = np.asarray(label).astype(np.int64)
    if pred.shape != label.shape:
        raise DataError(f"{where}: prediction {pred.shape} and label {label.shape} differ in size")
    valid = label != ignore_index
    bad = valid & ((label < 0) | (label >= num_classes))
    if bad.any():
        raise DataError(
            f"{where}: label values {sorted(np.unique(label[bad]).tolist())[:5]} outside [0, {num_classes})"
        )
    idx = label[valid] * num_classes + pred[valid].astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def evaluate_onnx(
    model,
    dataset,
    *,
    max_images: int | None = None,
    absent: str = "union",
    scale: Sequence[int] | None = None,
    progress: bool = True,
) -> dict:
    """Evaluate an ONNX model on ``dataset``.

    Args:
        model: an :class:`~segkit.tools.onnx_predict.OnnxSegmenter` or the path of a ``segkit export`` file.
        dataset: a segkit data set built without a transform: items with ``"image"`` uint8 ``(H, W, 3)`` RGB
            and ``"label"`` integer ``(H, W)`` (its ``num_classes``, ``ignore_index`` are used).
        max_images: only the first N images. absent: ``"union"`` / ``"gt"`` (``segkit eval --absent``).
        scale: overrides the exported test resize (``0`` = none), as ``segkit predict --onnx --scale``.

    Returns the dict of :func:`segkit.engine.evaluator.evaluate` (metrics in %, ``per_class``,
    ``confusion_matrix``, ``num_images``, ``time_s``, ``sec_per_image``, ``settings``, ``class_names``; for a
    binary model also ``fgIoU``, ``fgDice``, ``fgPrecision``, ``fgRecall`` and ``threshold``, the data set read
    with the binary label convention, :func:`segkit.data.binary.match_model`).
    Raises :class:`~segkit.errors.DataError` for a data set whose class count differs from the model's, an
    empty one, or bad label values (naming the file), :class:`~segkit.errors.UsageError` for bad arguments.
    """
    import torch
    from tqdm.auto import tqdm

    from segkit.engine.metrics import ABSENT_RULES, binary_metrics, format_table, metrics_from_matrix
    from segkit.tools.onnx_predict import OnnxSegmenter

    if absent not in ABSENT_RULES:
        raise UsageError(f"absent must be one of {ABSENT_RULES}, got {absent!r}")
    if max_images is not None and (isinstance(max_images, bool) or int(max_images) < 1):
        raise UsageError(f"max_images must be >= 1 (or None for all images), got {max_images!r}")
    seg = model if isinstance(model, OnnxSegmenter) else OnnxSegmenter(model)
    k = 2 if seg.is_binary else seg.num_classes  # a binary model's one logit: labels 0 / 1 at its threshold
    data_k = getattr(dataset, "num_classes", None)
    if data_k is not None and int(data_k) != k:
        raise DataError(f"{seg.path}: the model has {k} classes, the data set {getattr(dataset, 'name', '')} {data_k}")
    n = len(dataset) if max_images is None else min(len(dataset), int(max_images))
    if n == 0:
        raise DataError(f"data set {getattr(dataset, 'name', '')!r} holds no images: nothing to evaluate")
    ignore = int(getattr(dataset, "ignore_index", seg.meta.get("ignore_index", 255)))
    cm = np.zeros((k, k), np.int64)
    start = time.perf_counter()
    for i in tqdm(range(n), desc="eval (onnx)", disable=not progress):
        item = dataset[i]
        where = item.get("label_path") or item.get("image_path") or f"item {i}"
        image = item["image"]
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise UsageError("evaluate_onnx needs a data set built without a transform (uint8 images)")
        cm += confusion(seg.predict(image, scale), item["label"], k, ignore, where)
    elapsed = time.perf_counter() - start
    result = metrics_from_matrix(torch.from_numpy(cm), absent=absent)
    if seg.is_binary:  # the binary task's foreground metrics at the exported threshold, as segkit eval
        result.update(binary_metrics(torch.from_numpy(cm)), threshold=float(seg.threshold))
    result["per_class"] = format_table(result, seg.class_names)
    result["confusion_matrix"] = cm.tolist()
    result["num_images"] = n
    result["time_s"] = elapsed
    result["sec_per_image"] = elapsed / n
    result["settings"] = {
        "onnx": str(Path(seg.path)),
        "quantization": seg.meta.get("quantization"),
        "mode": "whole",
        "scale": list(scale) if scale is not None else None,
        "absent": absent,
        "max_images": max_images,
        "dataset": getattr(dataset, "name", None),
    }
    result["class_names"] = list(seg.class_names)
    return result


__all__ = ["confusion", "evaluate_onnx"]
