"""Predict label maps for image files and write them as PNGs (class indices + colour overlay).

For each image: read (``segkit.data.io.read_image``: RGB, EXIF orientation applied), optionally
resize with the test transform, normalise with the model's mean/std, run
:meth:`Segmentor.inference`, resize the probabilities back to the original size and arg-max.
Two files per image go to ``out_dir``:

* ``<stem>_label.png``: 8-bit palette PNG (mode ``P``); pixel value = class index in
  ``[0, K)``, the palette holds the model's class colours, so it opens in colour in a viewer
  and as indices with ``np.array(Image.open(path))``.
* ``<stem>_overlay.png``: the image blended with the colour mask (alpha 0.5) and, to its
  right, a legend of the classes present.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from segkit.utils import IMAGE_SUFFIXES, list_images  # noqa: F401 (re-exported)

# mode="auto": images above this many pixels (after the optional test resize) use slide inference.
# 1024² keeps every ADE20K/COCO-Stuff test image (<= 2048×512 after resize) in whole mode and
# sends Cityscapes-sized images (2048×1024) to slide mode, as in the reference protocols (§6.3).
AUTO_SLIDE_PIXELS = 1024 * 1024
DEFAULT_CROP = 512
MIN_SIDE = 32  # smallest side the encoders take (overall stride 32)



def train_crop_size(model) -> tuple[int, int]:
    """The window for slide inference in ``mode="auto"``: the model's training crop if recorded, else 512².

    Looked up as ``model.crop_size`` then ``model.config()["crop_size"]`` (neither is set by the
    zoo builders; a trainer or user may set it), falling back to ``(512, 512)``, the crop of the
    ADE20K / COCO-Stuff / VOC configs (architectures.md §6.2).
    """
    crop = getattr(model, "crop_size", None)
    if crop is None and callable(getattr(model, "config", None)):
        crop = model.config().get("crop_size")
    if crop is None:
        return DEFAULT_CROP, DEFAULT_CROP
    if isinstance(crop, int):
        return crop, crop
    return int(crop[0]), int(crop[1])


def _output_stems(files: Sequence[Path]) -> list[str]:
    """File stems; files sharing a stem (``a.jpg``, ``a.png``) get their suffix appended (``a_jpg``)."""
    stems = [f.stem for f in files]
    dup = {s for s in stems if stems.count(s) > 1}
    return [f"{f.stem}_{f.suffix.lstrip('.').lower()}" if f.stem in dup else f.stem for f in files]


def _png_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def label_png(label: np.ndarray, palette: Sequence[Sequence[int]]):
    """``PIL.Image`` mode ``P`` of an ``(H, W)`` class-index map with ``palette`` (K <= 256)."""
    from PIL import Image

    if len(palette) > 256:
        raise ValueError(f"{len(palette)} classes do not fit an 8-bit label PNG")
    img = Image.fromarray(label.astype(np.uint8), mode="L").convert("P")
    flat = [int(v) for colour in palette for v in colour]
    img.putpalette(flat + [0] * (768 - len(flat)))
    return img


def preprocess(model, image: np.ndarray, scale: Sequence[int] | None = None, device="cpu") -> torch.Tensor:
    """uint8 ``(H, W, 3)`` RGB → normalised float32 ``(1, 3, h, w)`` on ``device``.

    With ``scale=(long, short)``: the test transform (keep-ratio resize into that box, then
    each side rounded up to a multiple of 32; ``segkit.data.transforms.TestTransform``) with
    the model's mean/std. Without: original size, except that an image with a side below 32
    px is upscaled (keep ratio) so that its short side is 32 — the encoders downsample 32×.
    """
    if scale is not None:
        from segkit.data.transforms import TestTransform

        tf = TestTransform(scale=tuple(scale), keep_ratio=True, size_divisor=32, mean=model.mean, std=model.std)
        x = tf(image, np.zeros(image.shape[:2], dtype=np.uint8))["image"]
        return x[None].to(device, torch.float32)
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(device)
    x = model.normalize(x)
    h, w = x.shape[-2:]
    if min(h, w) < MIN_SIDE:
        from segkit.models.segmentor import resize

        f = MIN_SIDE / min(h, w)
        x = resize(x, (max(MIN_SIDE, round(h * f)), max(MIN_SIDE, round(w * f))), model.align_corners)
    return x


def predict_paths(model, inputs: str | Path, out_dir: str | Path, *, mode: str = "auto",
                  crop_size: Sequence[int] | None = None, stride: Sequence[int] | None = None,
                  scale: Sequence[int] | None = None, device: str | torch.device = "cpu", progress: bool = True,
                  scales: Sequence[float] = (1.0,), flip: bool = False, alpha: float = 0.5,
                  window_batch: int = 4) -> list[Path]:
    """Segment an image file or every image in a folder; write label and overlay PNGs.

    Args:
        model: a :class:`~segkit.models.segmentor.Segmentor`; its ``mean``/``std``,
            ``palette`` and ``class_names`` are used. Put in ``eval()`` (restored afterwards) and
            moved to ``device``.
        inputs: image file or folder (non-recursive; suffixes in ``IMAGE_SUFFIXES``).
        out_dir: created if needed; gets ``<stem>_label.png`` and ``<stem>_overlay.png`` per image.
        mode: ``"whole"``, ``"slide"`` or ``"auto"``: whole unless the (resized) image has more
            than ``AUTO_SLIDE_PIXELS`` (1024²) pixels, then slide.
        crop_size, stride: slide window ``(h, w)``; default the model's training crop
            (:func:`train_crop_size`, else 512) and a stride of 3/4 of it (the Cityscapes
            ratio 768/1024, architectures.md §6.3).
        scale: ``(long, short)`` test resize (keep ratio, sides to multiples of 32), e.g.
            ``(2048, 512)`` for ADE20K-trained models; default: no resize.
        scales, flip: multi-scale / flip test-time augmentation (see ``Segmentor.inference``).
        alpha: overlay opacity.

    Predictions always come back at the original image size, whatever resizing was applied.
    Returns the written paths in input order (label, overlay, label, overlay, …).
    Raises ``FileNotFoundError`` / ``ValueError`` for missing input or an empty folder, and the
    reader's ``DataError`` (naming the file) for an unreadable image.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    from segkit.data.io import read_image
    from segkit.utils import atomic_write_bytes

    from .visualize import overlay_with_legend

    if mode not in ("auto", "whole", "slide"):
        raise ValueError(f"mode must be 'auto', 'whole' or 'slide', got {mode!r}")
    if model.num_classes > 256:
        raise ValueError(f"{model.num_classes} classes do not fit an 8-bit label PNG (max 256)")
    files = list_images(inputs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    crop = tuple(int(c) for c in crop_size) if crop_size is not None else train_crop_size(model)
    step = tuple(int(s) for s in stride) if stride is not None else tuple(max(1, c * 3 // 4) for c in crop)
    palette, names = model.palette, model.class_names

    written: list[Path] = []
    was_training = model.training
    model.to(device).eval()
    try:
        with torch.inference_mode():
            for path, stem in zip(tqdm(files, desc="predict", disable=not progress), _output_stems(files)):
                image = read_image(path)
                x = preprocess(model, image, scale, device)
                h, w = x.shape[-2:]
                run_mode = mode if mode != "auto" else ("slide" if h * w > AUTO_SLIDE_PIXELS else "whole")
                if run_mode == "slide" and tuple(scales) == (1.0,) and not flip and (h, w) == image.shape[:2]:
                    # no resize and no test-time augmentation: the bounded-memory streaming slide
                    # (logits kept for a band of rows only) handles arbitrarily large images
                    label = model.slide_predict(x, crop, step, window_batch=window_batch)[0].to(torch.uint8)
                else:
                    probs = model.inference(x, mode=run_mode, crop_size=crop if run_mode == "slide" else None,
                                            stride=step if run_mode == "slide" else None, scales=scales, flip=flip,
                                            out_size=image.shape[:2], window_batch=window_batch)
                    label = probs.argmax(dim=1)[0].to(torch.uint8)
                label = label.cpu().numpy()
                label_path = out_dir / f"{stem}_label.png"
                overlay_path = out_dir / f"{stem}_overlay.png"
                atomic_write_bytes(label_path, _png_bytes(label_png(label, palette)))
                # predictions have no ignore pixels: ignore_index=-1 matches nothing
                vis = overlay_with_legend(image, label.astype(np.int64), palette, names, alpha=alpha, ignore_index=-1)
                atomic_write_bytes(overlay_path, _png_bytes(Image.fromarray(vis)))
                written += [label_path, overlay_path]
    finally:
        model.train(was_training)
    return written
