"""``segkit predict``: segment image files, folders, videos and cameras, and write the results.

Each image goes through :class:`~segkit.engine.segmenter.Segmenter` — the model's test protocol
(:class:`~segkit.data.protocol.TestProtocol`: the test resize and whole / slide inference it was
trained for, the same that ``segkit eval`` uses), the labels brought back to the original size.
Two files per image go to ``out_dir``:

* ``<stem>_label.png``: 8-bit palette PNG (mode ``P``); pixel value = class index in
  ``[0, K)``, the palette holds the model's class colours, so it opens in colour in a viewer
  and as indices with ``np.array(Image.open(path))``;
* ``<stem>_overlay.png``: the image blended with the colour mask (alpha 0.5) and, to its
  right, a legend of the classes present.

A video file (``.mp4``, ``.avi``, ``.mov``, ``.mkv``, ``.webm``, ``.m4v``) or a camera index gives
``<stem>_overlay.mp4`` — the overlay at the input's size and frame rate (OpenCV, ``mp4v``) — and,
with ``save_labels``, one ``<stem>_<frame>_label.png`` per frame.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from segkit.data.protocol import TestProtocol
from segkit.utils import IMAGE_SUFFIXES, list_images, output_stems  # noqa: F401 (re-exported)

from .segmenter import AUTO_SLIDE_PIXELS, Segmenter  # noqa: F401 (AUTO_SLIDE_PIXELS re-exported)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


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
    p = protocol if protocol is not None else TestProtocol.of(model)
    if scale is not None and (scale == 0 or list(scale) in ([0], [0, 0])):
        p, scale = dataclasses.replace(p, scale=None), None
    return p.replace(
        mode=None if mode == "auto" else mode, crop_size=crop_size, stride=stride, scale=scale, scales=scales, flip=flip
    )


def is_video(source) -> bool:
    """A camera index (``0``, ``"1"``) or a file with a video suffix."""
    return str(source).isdigit() or Path(str(source)).suffix.lower() in VIDEO_SUFFIXES


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
    amp: str | None = None,
    save_labels: bool = False,
) -> list[Path]:
    """Segment an image file, every image in a folder, a video file or a camera; write the results.

    Args:
        model: a :class:`~segkit.models.segmentor.Segmentor`; put in ``eval()`` (restored
            afterwards), moved to ``device`` and run as its fused copy.
        inputs: image file, folder (non-recursive; suffixes in ``IMAGE_SUFFIXES``), video file or
            camera index (``"0"``).
        out_dir: created if needed (see the module doc for the files).
        protocol: test resize and inference mode; default the model's own.
        mode: override ``"whole"`` / ``"slide"``, or ``"auto"`` (slide only above
            :data:`AUTO_SLIDE_PIXELS` pixels after the resize).
        crop_size, stride, scale, scales, flip: protocol overrides (:func:`resolve_protocol`).
        amp: ``None``, ``"bf16"``, ``"fp16"`` autocast. alpha: overlay opacity.
        save_labels: for videos, also write the per-frame label PNGs.

    Predictions always come back at the original image size. Returns the written paths in input
    order. Raises ``FileNotFoundError`` / ``ValueError`` for missing input or an empty folder, and
    the reader's ``DataError`` (naming the file) for an unreadable image or video.
    """
    from tqdm.auto import tqdm

    if mode not in (None, "auto", "whole", "slide"):
        raise ValueError(f"mode must be 'auto', 'whole' or 'slide', got {mode!r}")
    if model.num_classes > 256:
        raise ValueError(f"{model.num_classes} classes do not fit an 8-bit label PNG (max 256)")
    proto = resolve_protocol(
        model, protocol, mode=mode, crop_size=crop_size, stride=stride, scale=scale, scales=scales, flip=flip
    )
    out_dir = Path(out_dir)
    was_training = model.training
    seg = Segmenter(
        model,
        device=device,
        amp=amp,
        protocol=proto,
        mode="auto" if mode == "auto" else None,
        window_batch=window_batch,
    )
    try:
        if is_video(inputs):
            return predict_video(seg, inputs, out_dir, alpha=alpha, save_labels=save_labels, progress=progress)
        files = list_images(inputs)
        out_dir.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        for path, stem in zip(tqdm(files, desc="predict", disable=not progress), output_stems(files)):
            written += seg(path).save(out_dir, stem, alpha=alpha)
        return written
    finally:
        model.train(was_training)


def predict_video(
    seg: Segmenter,
    source,
    out_dir: str | Path,
    *,
    alpha: float = 0.5,
    save_labels: bool = False,
    progress: bool = True,
    max_frames: int | None = None,
) -> list[Path]:
    """Segment every frame of a video file or camera (``source`` an int or digit string) with ``seg``.

    Writes ``<stem>_overlay.mp4`` (input size and frame rate; ``camera<N>_overlay.mp4`` for a
    camera, at its reported rate or 25 fps) and, with ``save_labels``, ``<stem>_<frame:06d>_label.png``
    per frame. A camera is read until it stops delivering frames, ``max_frames``, or Ctrl-C.
    Raises :class:`~segkit.errors.DataError` naming the source when it cannot be opened or read.
    """
    import cv2
    from tqdm.auto import tqdm

    from segkit.errors import DataError
    from segkit.utils import atomic_write_bytes

    from .visualize import label_png, overlay, png_bytes

    camera = str(source).isdigit()
    cap = cv2.VideoCapture(int(source) if camera else str(source))
    if not cap.isOpened():
        raise DataError(f"{source}: cannot open this {'camera' if camera else 'video'} with OpenCV")
    stem = f"camera{source}" if camera else Path(str(source)).stem
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    video_path = out_dir / f"{stem}_overlay.mp4"
    tmp_path = out_dir / f".{stem}_overlay.part.mp4"
    writer = None
    written: list[Path] = []
    bar = tqdm(total=None if camera else total, desc=f"predict {stem}", unit="frame", disable=not progress)
    frame_index = 0
    try:
        while max_frames is None or frame_index < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            label = seg.labels([rgb])[0]
            if writer is None:
                h, w = rgb.shape[:2]
                writer = cv2.VideoWriter(str(tmp_path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                if not writer.isOpened():
                    raise DataError(f"{video_path}: OpenCV cannot write an mp4v video here")
            vis = overlay(rgb, label.astype(np.int64), seg.palette, alpha=alpha, ignore_index=-1)
            writer.write(cv2.cvtColor(vis, cv2.COLOR_RGB2BGR))
            if save_labels:
                path = out_dir / f"{stem}_{frame_index:06d}_label.png"
                atomic_write_bytes(path, png_bytes(label_png(label, seg.palette)))
                written.append(path)
            frame_index += 1
            bar.update(1)
    except KeyboardInterrupt:
        if not camera:
            raise
    finally:
        bar.close()
        cap.release()
        if writer is not None:
            writer.release()
    if frame_index == 0:
        tmp_path.unlink(missing_ok=True)
        raise DataError(f"{source}: no frame could be read")
    tmp_path.replace(video_path)
    return [video_path, *written]


__all__ = ["predict_paths", "predict_video", "resolve_protocol", "is_video", "VIDEO_SUFFIXES", "AUTO_SLIDE_PIXELS"]
