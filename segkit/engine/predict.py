"""Predict label maps for image files and write them as PNGs (class indices + colour overlay).

For each image: read (:func:`segkit.data.io.read_image`: RGB, EXIF orientation applied), run
through the model's test protocol (:class:`~segkit.data.protocol.TestProtocol`: the test resize
and whole / slide inference the model was trained for, the same that ``segkit eval`` uses),
:meth:`Segmentor.predict` with the labels brought back to the original size. Two files per image
go to ``out_dir``:

* ``<stem>_label.png``: 8-bit palette PNG (mode ``P``); pixel value = class index in
  ``[0, K)``, the palette holds the model's class colours, so it opens in colour in a viewer
  and as indices with ``np.array(Image.open(path))``;
* ``<stem>_overlay.png``: the image blended with the colour mask (alpha 0.5) and, to its
  right, a legend of the classes present.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from segkit.data.protocol import TestProtocol
from segkit.utils import IMAGE_SUFFIXES, list_images, output_stems  # noqa: F401 (re-exported)

# mode="auto": images above this many pixels (after the test resize) use slide inference.
# 1024² keeps every ADE20K / COCO-Stuff test image (<= 2048×512 after resize) in whole mode and
# sends Cityscapes-sized images (2048×1024) to slide mode, as in the reference protocols.
AUTO_SLIDE_PIXELS = 1024 * 1024


def resolve_protocol(
    model,
    protocol: TestProtocol | None = None,
    *,
    mode: str | None = None,
    crop_size: Sequence[int] | None = None,
    stride: Sequence[int] | None = None,
    scale: Sequence[int] | None = None,
    scales: Sequence[float] | None = None,
    flip: bool | None = None,
) -> TestProtocol:
    """``protocol`` (default: the model's own, :meth:`TestProtocol.of`) with the given overrides.

    ``mode="auto"`` is kept out of the protocol (the caller decides per image); ``scale=0`` or
    ``(0,)`` means no resize.
    """
    import dataclasses

    p = protocol if protocol is not None else TestProtocol.of(model)
    if scale is not None and (scale == 0 or list(scale) in ([0], [0, 0])):
        p, scale = dataclasses.replace(p, scale=None), None
    return p.replace(
        mode=None if mode == "auto" else mode, crop_size=crop_size, stride=stride, scale=scale, scales=scales, flip=flip
    )


def predict_image(
    runner, image: np.ndarray, protocol: TestProtocol, *, auto: bool = False, device="cpu", window_batch: int = 4
) -> np.ndarray:
    """Label map ``uint8 (H, W)`` (int64 above 256 classes) of one ``uint8 (H, W, 3)`` RGB image.

    ``runner``: an eval-mode model (fused or not); ``protocol``: the test resize and inference
    mode; ``auto``: slide instead of whole when the resized image has more than
    :data:`AUTO_SLIDE_PIXELS` pixels.
    """
    tf = protocol.transform(runner.mean, runner.std)
    x = tf(image)["image"][None].to(device)
    h, w = x.shape[-2:]
    kw = protocol.inference_kwargs()
    if auto and h * w > AUTO_SLIDE_PIXELS:
        kw["mode"] = "slide"
        kw["crop_size"], kw["stride"] = protocol.window()
    label = runner.predict(x, out_size=image.shape[:2], window_batch=window_batch, **kw)[0]
    return label.to(torch.uint8 if runner.num_classes <= 256 else torch.int64).cpu().numpy()


def predict_paths(
    model,
    inputs: str | Path,
    out_dir: str | Path,
    *,
    protocol: TestProtocol | None = None,
    mode: str | None = None,
    crop_size: Sequence[int] | None = None,
    stride: Sequence[int] | None = None,
    scale: Sequence[int] | None = None,
    scales: Sequence[float] | None = None,
    flip: bool | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    alpha: float = 0.5,
    window_batch: int = 4,
) -> list[Path]:
    """Segment an image file or every image in a folder; write label and overlay PNGs.

    Args:
        model: a :class:`~segkit.models.segmentor.Segmentor`; its ``mean``/``std``,
            ``palette`` and ``class_names`` are used. Put in ``eval()`` (restored afterwards),
            moved to ``device`` and run as its fused copy (:func:`segkit.models.fuse.for_inference`).
        inputs: image file or folder (non-recursive; suffixes in ``IMAGE_SUFFIXES``).
        out_dir: created if needed; gets ``<stem>_label.png`` and ``<stem>_overlay.png`` per image.
        protocol: test resize and inference mode; default the model's own
            (:meth:`TestProtocol.of`: its training config's, else the reference defaults).
        mode: override ``"whole"`` / ``"slide"``, or ``"auto"``: the protocol's window, used
            only for images with more than :data:`AUTO_SLIDE_PIXELS` pixels after the resize.
        crop_size, stride: override the slide window ``(h, w)`` (default: the protocol's, else
            the training crop, else 512²; stride = crop).
        scale: override the ``(long, short)`` keep-ratio test resize; ``0`` = no resize.
        scales, flip: multi-scale / flip test-time augmentation (see ``Segmentor.inference``).
        alpha: overlay opacity.

    Predictions always come back at the original image size, whatever resizing was applied.
    Returns the written paths in input order (label, overlay, label, overlay, …).
    Raises ``FileNotFoundError`` / ``ValueError`` for missing input or an empty folder, and the
    reader's ``DataError`` (naming the file) for an unreadable image.
    """
    from tqdm.auto import tqdm

    from segkit.data.io import read_image
    from segkit.models.fuse import for_inference
    from segkit.utils import atomic_write_bytes

    from .visualize import label_png, overlay_with_legend, png_bytes

    if mode not in (None, "auto", "whole", "slide"):
        raise ValueError(f"mode must be 'auto', 'whole' or 'slide', got {mode!r}")
    if model.num_classes > 256:
        raise ValueError(f"{model.num_classes} classes do not fit an 8-bit label PNG (max 256)")
    proto = resolve_protocol(
        model, protocol, mode=mode, crop_size=crop_size, stride=stride, scale=scale, scales=scales, flip=flip
    )
    files = list_images(inputs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    palette, names = model.palette, model.class_names

    written: list[Path] = []
    was_training = model.training
    model.to(device).eval()
    runner = for_inference(model)
    try:
        with torch.inference_mode():
            for path, stem in zip(tqdm(files, desc="predict", disable=not progress), output_stems(files)):
                image = read_image(path)
                label = predict_image(
                    runner, image, proto, auto=mode == "auto", device=device, window_batch=window_batch
                )
                label_path = out_dir / f"{stem}_label.png"
                overlay_path = out_dir / f"{stem}_overlay.png"
                atomic_write_bytes(label_path, png_bytes(label_png(label, palette)))
                # predictions have no ignore pixels: ignore_index=-1 matches nothing
                vis = overlay_with_legend(image, label.astype(np.int64), palette, names, alpha=alpha, ignore_index=-1)
                atomic_write_bytes(overlay_path, png_bytes(vis))
                written += [label_path, overlay_path]
    finally:
        model.train(was_training)
    return written
