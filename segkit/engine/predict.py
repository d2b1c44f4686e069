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
with ``save_labels``, one ``<stem>_<frame>_label.png`` per frame. A folder may hold both: its images
and its videos are segmented; what else it holds is listed in a warning, never dropped silently.

Nothing is skipped or cut short without a word: frames of a video that cannot be decoded are
reported by number (:class:`~segkit.errors.DataError`, after the readable ones are written), a
video that cannot be opened says why where that can be told (empty, not a video, truncated, no
decoder), and an image too large for whole-image inference in the available memory is refused
before the first image, suggesting slide inference.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from segkit.data.protocol import TestProtocol
from segkit.errors import DataError
from segkit.utils import (  # noqa: F401 (IMAGE_SUFFIXES, VIDEO_SUFFIXES, list_images re-exported)
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    claim_output,
    list_images,
    list_inputs,
    output_stems,
)

from .result_formats import ResultWriter
from .segmenter import _API_POLICY, AUTO_SLIDE_PIXELS, Segmenter  # noqa: F401 (AUTO_SLIDE_PIXELS re-exported)


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
    return is_camera(source) or Path(str(source)).suffix.lower() in VIDEO_SUFFIXES


def is_camera(source) -> bool:
    """A camera index: an int or a digit string (``0``, ``"1"``)."""
    return (isinstance(source, int) and not isinstance(source, bool)) or str(source).isdigit()


def image_sizes(files) -> list[tuple[int, int]]:
    """``(H, W)`` of image files from their headers (no decode); ``(0, 0)`` where the header cannot be read
    (the file's own error comes when it is read)."""
    import warnings

    from PIL import Image

    sizes = []
    for f in files:
        try:
            with warnings.catch_warnings():  # a huge image is what the caller checks these sizes for
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(f) as img:
                    sizes.append((img.height, img.width))
        except Exception:  # reported with its reason when the image is read
            sizes.append((0, 0))
    return sizes


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
    overwrite: bool = False,
    formats: Sequence[str] = ("png",),
    coco_gt: str | Path | None = None,
    polygons: bool = False,
    tolerance: float = 1.0,
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
        overwrite: an output file that already exists is refused before any image is segmented
            (:class:`~segkit.errors.OutputExistsError` naming it) unless this moves it aside to
            ``<name>.prev-<time>.png`` (:func:`segkit.utils.claim_output`).
        formats: what is written per image (:class:`~segkit.engine.result_formats.ResultWriter`): ``"png"``
            (label + overlay PNGs), ``"json"`` (``<stem>.json``: per class present its area, box and COCO
            RLE, and with ``polygons`` its polygons simplified by ``tolerance`` px), ``"coco"``
            (``coco_results.json`` for the whole input, ``image_id`` = file name, or the id in ``coco_gt``).
            Videos and cameras write ``png`` only (an overlay video).

    Predictions always come back at the original image size. Returns the written paths in input
    order (a folder's images, then its videos). Raises :class:`~segkit.errors.NotFoundError` (a
    ``FileNotFoundError``) for a missing input, :class:`~segkit.errors.DataError` (a ``ValueError``) for
    a folder with nothing to read, an unreadable image or video (naming the file) or video frames that
    could not be decoded (after writing the readable ones and every other input, naming the frames),
    :class:`~segkit.errors.InsufficientMemoryError` for an image too large for whole-image inference
    (before the first image).
    """
    from tqdm.auto import tqdm

    from segkit.errors import UsageError

    if mode not in (None, "auto", "whole", "slide"):
        raise UsageError(f"mode must be 'auto', 'whole' or 'slide', got {mode!r}")
    if model.num_classes > 256:
        raise UsageError(f"{model.num_classes} classes do not fit an 8-bit label PNG (max 256)")
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
    video_kw = dict(alpha=alpha, save_labels=save_labels, progress=progress, overwrite=overwrite)
    try:
        if is_camera(inputs):
            if list(formats) != ["png"]:
                raise UsageError(
                    f"camera {inputs}: --format {' '.join(formats)} is for image files "
                    "(a camera gives an overlay video)"
                )
            return predict_video(seg, inputs, out_dir, **video_kw)
        files, videos = list_inputs(inputs, videos=True)
        stems, video_stems = output_stems(files), output_stems(videos)
        if videos and list(formats) != ["png"]:
            raise UsageError(
                f"{videos[0]}: --format {' '.join(formats)} is for images; a video gives an overlay video "
                "(--format png, and --save-labels for the label PNGs)"
            )
        writer = ResultWriter(
            out_dir,
            formats,
            seg.classes,
            seg.palette,
            coco_gt=coco_gt,
            polygons=polygons,
            tolerance=tolerance,
            alpha=alpha,
            overwrite=overwrite,
            policy=dict(what="", kind="file", **_API_POLICY),
        )
        writer.mask_values = seg.mask_values  # a binary model: 0/255 or 0/1 masks as its training data
        writer.claim(stems, files)  # every output name checked before the first image is segmented
        for stem in video_stems:
            claim_output(out_dir / f"{stem}_overlay.mp4", overwrite=overwrite, what="", kind="file", **_API_POLICY)
        seg.check_memory(image_sizes(files), [str(f) for f in files])  # a huge image: refused before the first
        written: list[Path] = []
        for path, stem in zip(tqdm(files, desc="predict", disable=not progress or not files), stems):
            res = seg(path)
            written += writer.add(stem, res.label, res.image, path)
        written += writer.finish()
        problems: list[VideoFramesError] = []
        for video, stem in zip(videos, video_stems):
            try:
                written += predict_video(seg, video, out_dir, stem=stem, **video_kw)
            except VideoFramesError as e:  # the readable frames are written; the others are reported at the end
                written += e.written
                problems.append(e)
        if len(problems) == 1 and len(videos) + len(files) == 1:
            raise problems[0]
        if problems:
            raise VideoFramesError(
                "; ".join(map(str, problems)) + f"; {len(written)} file(s) written in all",
                written,
                [f for e in problems for f in e.frames],
            )
        return written
    finally:
        model.train(was_training)


class VideoFramesError(DataError):
    """Frames of a video could not be decoded; the readable frames were written (``written``), the message
    names the missing frames (``frames``, counting from 0) and the file with the rest."""

    def __init__(self, message: str, written: list[Path], frames: list[int]):
        super().__init__(message)
        self.written, self.frames = written, frames


def _frame_ranges(frames: list[int]) -> str:
    """``[3, 4, 5, 9]`` → ``"3-5, 9"``."""
    parts, start = [], None
    for i, f in enumerate(frames):
        if start is None:
            start = f
        if i + 1 == len(frames) or frames[i + 1] != f + 1:
            parts.append(str(start) if start == f else f"{start}-{f}")
            start = None
    return ", ".join(parts)


def video_problem(path) -> str:
    """Why OpenCV cannot open the video file ``path``, as far as can be told from the file: missing, empty,
    not a video container, a truncated / unfinished MP4 (no ``moov`` index), no decoder in this OpenCV."""
    import cv2

    path = Path(str(path))
    if not path.exists():
        return "no such file"
    if path.is_dir():
        return "a folder, not a video file"
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(64)
        f.seek(0)
        start = f.read(1 << 20)
        f.seek(max(0, size - (1 << 20)))
        has_moov = b"moov" in start or b"moov" in f.read()  # the index of an MP4 sits at its start or end
    backends = [cv2.videoio_registry.getBackendName(b) for b in cv2.videoio_registry.getStreamBackends()]
    if "FFMPEG" not in backends and "GSTREAMER" not in backends:
        return f"this OpenCV build has no video decoder backend (only {', '.join(backends) or 'none'})"
    if head[4:8] == b"ftyp":  # MP4 / MOV / M4V
        if not has_moov:
            return (
                "an MP4/MOV file without its 'moov' index: truncated, or a recording that was not finished "
                f"({size} bytes)"
            )
        return "an MP4/MOV file that OpenCV's FFmpeg cannot decode (an unsupported codec, or damaged)"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "an AVI file that OpenCV cannot decode (an unsupported codec, or a damaged header)"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "a Matroska/WebM file that OpenCV cannot decode (an unsupported codec, or damaged)"
    return f"not a video container OpenCV knows ({size} bytes, starting with {head[:12]!r})"


def predict_video(
    seg: Segmenter,
    source,
    out_dir: str | Path,
    *,
    alpha: float = 0.5,
    save_labels: bool = False,
    progress: bool = True,
    max_frames: int | None = None,
    overwrite: bool = False,
    stem: str | None = None,
) -> list[Path]:
    """Segment every frame of a video file or camera (``source`` an int or digit string) with ``seg``.

    Writes ``<stem>_overlay.mp4`` (input size and frame rate; ``camera<N>_overlay.mp4`` for a
    camera, at its reported rate or 25 fps) and, with ``save_labels``, ``<stem>_<frame:06d>_label.png``
    per frame. A camera is read until it stops delivering frames, ``max_frames``, or Ctrl-C.
    An existing output file is refused (:class:`~segkit.errors.OutputExistsError`) unless
    ``overwrite`` moves it aside (:func:`segkit.utils.claim_output`).

    A frame that cannot be decoded is skipped (the next ones are still tried) and counted: when the
    video ends short of the frame count of its header, or frames in it failed, the readable frames are
    written and :class:`VideoFramesError` (a :class:`~segkit.errors.DataError`) names the missing frames,
    what was written and where. (A shortfall of one frame at the end is only a warning: some containers
    store an estimated count.) Raises :class:`~segkit.errors.DataError` naming the source and the reason
    (:func:`video_problem`) when it cannot be opened or no frame can be read.
    """
    import warnings

    import cv2
    from tqdm.auto import tqdm

    from segkit.utils import atomic_write_bytes

    from .visualize import label_png, overlay, png_bytes

    camera = is_camera(source)
    cap = cv2.VideoCapture(int(source) if camera else str(source))
    if not cap.isOpened():
        why = "no such camera, or it is in use" if camera else video_problem(source)
        raise DataError(f"{source}: cannot open this {'camera' if camera else 'video'} with OpenCV: {why}")
    stem = stem or (f"camera{source}" if camera else Path(str(source)).stem)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    total = None if camera else int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    if total is not None and total < 0:
        total = None
    video_path = out_dir / f"{stem}_overlay.mp4"
    tmp_path = out_dir / f".{stem}_overlay.part.mp4"
    claim_output(video_path, overwrite=overwrite, what="", kind="file", **_API_POLICY)
    writer = None
    written: list[Path] = []
    bad: list[int] = []
    failed_in_a_row = 0
    bar = tqdm(total=total, desc=f"predict {stem}", unit="frame", disable=not progress)
    frame_index = decoded = 0
    try:
        while max_frames is None or frame_index < max_frames:
            ok, frame = cap.read()
            if not ok:
                if camera or total is None or frame_index >= total or failed_in_a_row >= 25:
                    break  # the end (or 25 undecodable frames in a row: the rest is counted as missing below)
                bad.append(frame_index)  # an undecodable frame: skip it and try the next one
                failed_in_a_row += 1
                frame_index += 1
                cap.set(cv2.CAP_PROP_POS_FRAMES, frame_index)
                continue
            failed_in_a_row = 0
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
                claim_output(path, overwrite=overwrite, what="", kind="file", **_API_POLICY)
                atomic_write_bytes(path, png_bytes(label_png(label, seg.palette)))
                written.append(path)
            frame_index += 1
            decoded += 1
            bar.update(1)
    except KeyboardInterrupt:
        if not camera:
            raise
    finally:
        bar.close()
        cap.release()
        if writer is not None:
            writer.release()
    if decoded == 0:
        tmp_path.unlink(missing_ok=True)
        why = "" if camera else f": {_no_frame_reason(source, total)}"
        raise DataError(f"{source}: no frame could be read{why}")
    if total is not None and max_frames is None:
        bad += list(range(frame_index, total))  # the stream ended before the count of its header
    _check_written_video(tmp_path, video_path, decoded)
    tmp_path.replace(video_path)
    written = [video_path, *written]
    if bad == [total - 1] and total is not None and decoded == total - 1:
        warnings.warn(
            f"{source}: {decoded} frames decoded, its header announces {total} (an estimated count in some "
            f"containers; otherwise the last frame is damaged)",
            UserWarning,
            stacklevel=2,
        )
    elif bad:
        raise VideoFramesError(
            f"{source}: frame(s) {_frame_ranges(bad)} of {total} (counting from 0) could not be decoded: the file "
            f"is damaged or truncated there; wrote the {decoded} readable frame(s) to {video_path}",
            written,
            bad,
        )
    return written


def _check_written_video(tmp_path: Path, video_path: Path, frames: int) -> None:
    """OpenCV's writer reports no write error (a full disk leaves a short or unreadable file): read the count
    back; :class:`~segkit.errors.OutputError` naming the file (the partial one removed) when it falls short."""
    import shutil

    import cv2

    from segkit.errors import OutputError

    cap = cv2.VideoCapture(str(tmp_path))
    found = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    cap.release()
    if found < frames:
        free = shutil.disk_usage(tmp_path.parent).free
        tmp_path.unlink(missing_ok=True)
        why = "no space left on device" if free < 1 << 20 else "the written file does not read back"
        raise OutputError(
            f"{why} writing {video_path}: it holds {found} of the {frames} frames (the partial file was removed; "
            f"{free} bytes free)"
        )


def _no_frame_reason(source, total) -> str:
    if total:
        return (
            f"its header announces {total} frames, none decodes (a truncated or damaged file, or an unsupported codec)"
        )
    return video_problem(source) if Path(str(source)).exists() else "no such file"


__all__ = [
    "predict_paths",
    "predict_video",
    "resolve_protocol",
    "is_video",
    "is_camera",
    "video_problem",
    "VideoFramesError",
    "VIDEO_SUFFIXES",
    "AUTO_SLIDE_PIXELS",
]
