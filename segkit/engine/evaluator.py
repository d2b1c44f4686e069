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

from segkit.models.fuse import for_inference
from segkit.runtime import autocast, check_amp

from .metrics import ConfusionMatrix, format_table


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
        raise ValueError(f"dataset item {index} ({where}) lacks 'image' or 'label'; got keys {sorted(item)}")
    image, label = item["image"], item["label"]
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{where}: numpy image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
        image = model.normalize(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(device))
    else:
        image = torch.as_tensor(image)
        if image.ndim != 3 or image.shape[0] != 3 or not image.dtype.is_floating_point:
            raise ValueError(f"{where}: image tensor must be float (3, H, W), got {image.dtype} {tuple(image.shape)}")
        image = image[None].to(device, torch.float32)
    label = torch.as_tensor(np.ascontiguousarray(label) if isinstance(label, np.ndarray) else label)
    if label.ndim != 2:
        raise ValueError(f"{where}: label must be (H, W), got shape {tuple(label.shape)}")
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

    Under ``torch.distributed`` each rank evaluates images ``rank::world_size`` and the
    confusion matrices (and image counts) are summed with ``all_reduce``; every rank returns
    the same metrics.

    Returns:
        dict with the :func:`~segkit.engine.metrics.metrics_from_matrix` entries (percentages
        0–100, NaN for classes absent from the ground truth), ``"per_class"`` (Markdown
        table), ``"confusion_matrix"`` (K×K nested list), ``"num_images"``, ``"time_s"``
        (wall time of this rank) and ``"sec_per_image"``; plus the evaluation settings.

    Raises ``ValueError`` if the dataset's class count differs from the model's, for a
    malformed item, or for label values outside ``[0, K)`` (naming the image file).
    """
    device = torch.device(device)
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    num_classes = int(model.num_classes)
    ds_classes = getattr(dataset, "num_classes", None)
    if ds_classes is not None and int(ds_classes) != num_classes:
        raise ValueError(
            f"dataset {getattr(dataset, 'name', '')!r} has {ds_classes} classes but the model predicts {num_classes}"
        )
    ignore_index = int(getattr(dataset, "ignore_index", getattr(model, "ignore_index", 255)))
    if class_names is None:
        class_names = getattr(dataset, "classes", None) or getattr(model, "class_names", None)
    if class_names is not None and len(class_names) != num_classes:
        class_names = None

    rank, world = _dist_info()
    n_total = len(dataset) if max_images is None else min(len(dataset), int(max_images))
    indices = list(range(n_total))[rank::world]
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, indices),
        batch_size=1,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_first,
    )
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index, device=device)

    check_amp(amp, device)
    was_training = model.training
    model.to(device).eval()
    runner = for_inference(model)  # BN / layer-scale folded copy where the model has any (SegNeXt)
    start = time.perf_counter()
    try:
        from tqdm.auto import tqdm

        bar = tqdm(loader, total=len(indices), desc="eval", disable=not progress or rank != 0, dynamic_ncols=True)
        with torch.inference_mode():
            for j, item in enumerate(bar):
                i = indices[j]
                image, label = _prepare(model, item, i, device)
                with autocast(amp, device):
                    pred = runner.predict(
                        image,
                        mode=mode,
                        crop_size=crop_size,
                        stride=stride,
                        scales=scales,
                        flip=flip,
                        out_size=label.shape[-2:],
                        window_batch=window_batch,
                    )
                try:
                    cm.update(pred[0], label)
                except ValueError as e:
                    raise ValueError(f"{item.get('label_path', f'item {i}')}: {e}") from None
                if on_image is not None:
                    on_image(pred[0], label)
        bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    finally:
        model.train(was_training)
    elapsed = time.perf_counter() - start

    count = torch.tensor([len(indices)], dtype=torch.int64, device=cm.matrix.device)
    if world > 1:
        import torch.distributed as dist

        cm.all_reduce()
        if dist.get_backend() == "nccl" and not count.is_cuda:
            count = count.cuda()
        dist.all_reduce(count)
    num_images = int(count.item())

    result = cm.compute()
    result["per_class"] = format_table(result, class_names)
    result["confusion_matrix"] = cm.matrix.cpu().tolist()
    result["num_images"] = num_images
    result["time_s"] = elapsed
    result["sec_per_image"] = elapsed / max(len(indices), 1)
    result["settings"] = {
        "mode": mode,
        "crop_size": list(crop_size) if crop_size is not None else None,
        "stride": list(stride) if stride is not None else None,
        "scales": list(scales),
        "flip": bool(flip),
        "amp": amp,
        "max_images": max_images,
        "world_size": world,
        "dataset": getattr(dataset, "name", None),
    }
    if class_names is not None:
        result["class_names"] = list(class_names)

    if out_dir is not None and rank == 0:
        write_results(result, out_dir)
    return result


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
