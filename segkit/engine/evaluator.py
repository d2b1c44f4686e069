"""Dataset evaluation: run a model over a segmentation dataset and compute mIoU & co.

Protocol (the official ``mmseg/apis/test.py`` + ``EncoderDecoder``; docs/protocols.md): each
image goes through the dataset's test transform (resize + normalise), :meth:`Segmentor.predict`
(whole / slide / multi-scale + flip), the labels come back at the *original* label size, and the pixels are
added to one dataset-wide :class:`~segkit.engine.metrics.ConfusionMatrix`. Nothing but that
``K × K`` matrix is accumulated, so memory does not grow with the dataset.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from segkit.errors import DataError
from segkit.models.fuse import for_inference
from segkit.runtime import autocast, check_amp

from .metrics import ABSENT_RULES, ConfusionMatrix, binary_metrics, format_table


def _dist_info() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _prepare(model, item: dict, index: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1, 3, h, w)`` normalised float image and ``(H, W)`` int64 label on ``device`` from a dataset item.

    Accepts the interface dict with tensors (dataset with a ``TestTransform``) or raw numpy
    arrays (dataset without transform: the image is normalised with the model's mean/std).
    """
    where = item.get("image_path", f"item {index}")
    if "image" not in item or "label" not in item:
        raise DataError(f"dataset item {index} ({where}) lacks 'image' or 'label'; got keys {sorted(item)}")
    image, label = item["image"], item["label"]
    c = int(getattr(model, "in_channels", 3))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != c:
            raise DataError(f"{where}: numpy image must be uint8 (H, W, {c}), got {image.dtype} {image.shape}")
        image = model.normalize(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(device))
    else:
        image = torch.as_tensor(image)
        if image.ndim != 3 or image.shape[0] != c or not image.dtype.is_floating_point:
            raise DataError(f"{where}: image tensor must be float ({c}, H, W), got {image.dtype} {tuple(image.shape)}")
        image = image[None].to(device, torch.float32)
    label = torch.as_tensor(np.ascontiguousarray(label) if isinstance(label, np.ndarray) else label)
    if label.ndim != 2:
        raise DataError(f"{where}: label must be (H, W), got shape {tuple(label.shape)}")
    return image, label.to(device, torch.int64)


def _first(batch):
    return batch[0]


def evaluate(
    model,
    dataset,
    *,
    mode: str = "whole",
    crop_size: Sequence[int] | None = None,
    stride: Sequence[int] | None = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
    out_dir: str | Path | None = None,
    max_images: int | None = None,
    window_batch: int = 4,
    num_workers: int = 0,
    class_names: Sequence[str] | None = None,
    amp: str | None = None,
    on_image: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
    absent: str = "union",
) -> dict:
    """Evaluate ``model`` on ``dataset`` and return the metrics.

    Args:
        model: a :class:`~segkit.models.segmentor.Segmentor` (anything with ``predict``,
            ``normalize``, ``num_classes``). Put in ``eval()`` for the run and returned to its
            previous training mode afterwards; run under ``torch.inference_mode()``, as its
            fused copy when it has fusable modules (:func:`segkit.models.fuse.for_inference`).
        dataset: items are dicts with ``"image"`` (float ``(3, h, w)`` normalised by the test
            transform, or uint8 ``(H, W, 3)`` numpy without transform) and ``"label"`` (integer
            ``(H, W)`` at original size); ``ignore_index``, ``classes``, ``num_classes`` are read
            from it when present. Batch size is 1 (images differ in size).
        mode, crop_size, stride, scales, flip, window_batch: passed to ``model.predict`` (labels
            without a full-resolution softmax unless ``scales`` / ``flip`` average probabilities)
            (docs/protocols.md; e.g. Cityscapes ``mode="slide", crop_size=(1024, 1024),
            stride=(768, 768)``; multi-scale ``scales=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75), flip=True``).
        device: where the model and images go (the model is moved there).
        progress: tqdm bar (rank 0 only).
        out_dir: if given, rank 0 writes ``metrics.json`` (NaN → null, with the confusion
            matrix) and ``confusion_matrix.png`` (row-normalised) there.
        max_images: evaluate only the first N images (quick checks).
        num_workers: DataLoader workers for loading/transforming images.
        class_names: names for the table; default ``dataset.classes`` then ``model.class_names``.
        amp: ``None`` (float32), ``"bf16"`` or ``"fp16"`` autocast for the network (checked by
            :func:`segkit.runtime.check_amp`: bf16 on the CPU only where it is native); the label
            path and the metrics stay in float32.
        on_image: called as ``on_image(pred, label)`` with each image's ``(H, W)`` int64 prediction
            and label (on ``device``) after it is counted — for extra statistics over the same
            predictions (e.g. :func:`segkit.tools.analysis.object_size_iou`).
        absent: how classes absent from the ground truth count in the class means, passed to
            :func:`~segkit.engine.metrics.metrics_from_matrix`: ``"union"`` (default,
            mmsegmentation's rule: a metric is NaN only where its denominator is 0, so a class
            predicted but never in the ground truth scores IoU 0) or ``"gt"`` (every class
            without ground-truth pixels left out). Checked before any image is run.

    Under ``torch.distributed`` each rank evaluates images ``rank::world_size`` and the
    confusion matrices (and image counts) are summed with ``all_reduce``; every rank returns
    the same metrics.

    Returns:
        dict with the :func:`~segkit.engine.metrics.metrics_from_matrix` entries (percentages
        0–100, NaN for the classes ``absent`` leaves out) — for a binary model (``task="binary"``) over its two
        classes, plus :func:`~segkit.engine.metrics.binary_metrics` (``fgIoU``, ``fgDice``, ``fgPrecision``,
        ``fgRecall``) and ``"threshold"`` —, ``"per_class"`` (Markdown
        table), ``"confusion_matrix"`` (K×K nested list), ``"num_images"``, ``"time_s"``
        (wall time of this rank) and ``"sec_per_image"``; plus the evaluation settings.

    Raises :class:`~segkit.errors.UsageError` for ``max_images < 1`` or an unknown ``absent`` rule (before
    any image is run), :class:`~segkit.errors.DataError` (a ``ValueError``) if the dataset's class count
    differs from the model's, for an empty dataset, a malformed item, or label values outside ``[0, K)``
    (naming the image file).
    """
    from segkit.errors import UsageError
    from segkit.runtime import resolve_device

    if absent not in ABSENT_RULES:
        raise UsageError(f"absent must be one of {ABSENT_RULES} ('union': mmseg's rule), got {absent!r}")
    if max_images is not None and (isinstance(max_images, bool) or int(max_images) < 1):
        raise UsageError(f"max_images must be >= 1 (or None for all images), got {max_images!r}")
    if len(dataset) == 0:
        raise DataError(f"dataset {getattr(dataset, 'name', '')!r} holds no images: nothing to evaluate")
    device = resolve_device(device)
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    num_classes, ignore_index, class_names = _class_info(model, dataset, class_names)

    rank, world = _dist_info()
    indices, loader = _rank_loader(dataset, max_images, rank, world, num_workers)
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index, device=device)

    check_amp(amp, device)
    predict_kwargs = dict(
        mode=mode, crop_size=crop_size, stride=stride, scales=scales, flip=flip, window_batch=window_batch
    )
    show_bar = progress and rank == 0
    elapsed = _predict_all(model, loader, indices, cm, device, amp, predict_kwargs, on_image, show_bar)
    num_images = _sum_over_ranks(cm, len(indices), world)

    result = cm.compute(absent=absent)
    if getattr(model, "is_binary", False):  # the binary task: foreground metrics at the model's threshold
        result.update(binary_metrics(cm.matrix), threshold=float(model.threshold))
    result["per_class"] = format_table(result, class_names)
    result["confusion_matrix"] = cm.matrix.cpu().tolist()
    result["num_images"] = num_images
    result["time_s"] = elapsed
    result["sec_per_image"] = elapsed / max(len(indices), 1)
    result["settings"] = _settings(predict_kwargs, amp, absent, max_images, world, dataset)
    if class_names is not None:
        result["class_names"] = list(class_names)

    if out_dir is not None and rank == 0:
        write_results(result, out_dir)
    return result


def _class_info(model, dataset, class_names) -> tuple[int, int, Sequence[str] | None]:
    """``(num_classes, ignore_index, class_names)`` of an evaluation: the model's class count (the
    dataset's must match it: ``ValueError``), the dataset's ignore index, and the table names
    (``class_names``, else the dataset's, else the model's; ``None`` where their count is wrong)."""
    num_classes = int(getattr(model, "num_labels", model.num_classes))  # 2 for a one-logit binary model
    ds_classes = getattr(dataset, "num_classes", None)
    if ds_classes is not None and int(ds_classes) != num_classes:
        raise DataError(
            f"dataset {getattr(dataset, 'name', '')!r} has {ds_classes} classes but the model predicts {num_classes}"
        )
    ignore_index = int(getattr(dataset, "ignore_index", getattr(model, "ignore_index", 255)))
    if class_names is None:
        class_names = getattr(dataset, "classes", None) or getattr(model, "class_names", None)
    if class_names is not None and len(class_names) != num_classes:
        class_names = None
    return num_classes, ignore_index, class_names


def _rank_loader(dataset, max_images, rank: int, world: int, num_workers: int):
    """``(indices, loader)``: the dataset indices this rank evaluates (``rank::world`` of the first
    ``max_images``) and a batch-size-1 DataLoader over them yielding the items themselves."""
    n_total = len(dataset) if max_images is None else min(len(dataset), int(max_images))
    indices = list(range(n_total))[rank::world]
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, indices),
        batch_size=1,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_first,
    )
    return indices, loader


def _predict_all(
    model, loader, indices: list[int], cm: ConfusionMatrix, device, amp, predict_kwargs, on_image, show_bar
) -> float:
    """Predict every image of ``loader`` (dataset indices ``indices``) and count it in ``cm``; returns the
    wall time in seconds. The model runs in eval mode (its training flag restored afterwards), fused
    where it can be, under ``torch.inference_mode()``."""
    was_training = model.training
    model.to(device).eval()
    runner = for_inference(model)  # BN / layer-scale folded copy where the model has any (SegNeXt)
    start = time.perf_counter()
    try:
        from tqdm.auto import tqdm

        bar = tqdm(loader, total=len(indices), desc="eval", disable=not show_bar, dynamic_ncols=True)
        with torch.inference_mode():
            for j, item in enumerate(bar):
                i = indices[j]
                image, label = _prepare(model, item, i, device)
                with autocast(amp, device):
                    pred = runner.predict(image, out_size=label.shape[-2:], **predict_kwargs)
                _count(cm, pred[0], label, item, i)
                if on_image is not None:
                    on_image(pred[0], label)
        bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    finally:
        model.train(was_training)
    return time.perf_counter() - start


def _count(cm: ConfusionMatrix, pred: torch.Tensor, label: torch.Tensor, item: dict, index: int) -> None:
    """Add one ``(H, W)`` prediction and label to ``cm``; a bad label value names the label file."""
    try:
        cm.update(pred, label)
    except ValueError as e:
        raise DataError(f"{item.get('label_path', f'item {index}')}: {e}") from None


def _sum_over_ranks(cm: ConfusionMatrix, num_local: int, world: int) -> int:
    """Under ``torch.distributed`` (``world > 1``) sum ``cm`` over the ranks in place; returns the
    number of images evaluated by all ranks together."""
    count = torch.tensor([num_local], dtype=torch.int64, device=cm.matrix.device)
    if world > 1:
        import torch.distributed as dist

        cm.all_reduce()
        if dist.get_backend() == "nccl" and not count.is_cuda:
            count = count.cuda()
        dist.all_reduce(count)
    return int(count.item())


def _settings(predict_kwargs: dict, amp, absent: str, max_images, world: int, dataset) -> dict:
    """The evaluation settings recorded in the result (JSON-ready)."""
    crop_size, stride = predict_kwargs["crop_size"], predict_kwargs["stride"]
    return {
        "mode": predict_kwargs["mode"],
        "crop_size": list(crop_size) if crop_size is not None else None,
        "stride": list(stride) if stride is not None else None,
        "scales": list(predict_kwargs["scales"]),
        "flip": bool(predict_kwargs["flip"]),
        "amp": amp,
        "absent": absent,
        "max_images": max_images,
        "world_size": world,
        "dataset": getattr(dataset, "name", None),
    }


def write_results(result: dict, out_dir: str | Path) -> list[Path]:
    """Write ``metrics.json`` (NaN → null, confusion matrix included) and ``confusion_matrix.png``
    (row-normalised) of an :func:`evaluate` result to ``out_dir`` (created); returns the paths."""
    from segkit.utils import atomic_write_bytes, json_safe

    from .visualize import plot_confusion_matrix

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    safe = json_safe(result)  # one top-level key per line, values compact (K×K matrix on one line)
    text = "{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in safe.items()) + "\n}\n"
    atomic_write_bytes(out_dir / "metrics.json", text.encode())
    png = plot_confusion_matrix(
        np.asarray(result["confusion_matrix"]),
        result.get("class_names"),
        out_dir / "confusion_matrix.png",
        title=f"mIoU {result['mIoU']:.2f}",
    )
    return [out_dir / "metrics.json", Path(png)]
