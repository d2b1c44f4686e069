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

import torch

from segkit.data.protocol import TestProtocol
from segkit.utils import (  # noqa: F401 (IMAGE_SUFFIXES, VIDEO_SUFFIXES, list_images re-exported)
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    claim_output,
    list_images,
    list_inputs,
    output_stems,
)

from .result_formats import API_OUTPUT_POLICY, ResultWriter
from .segmenter import AUTO_SLIDE_PIXELS, Segmenter  # noqa: F401 (AUTO_SLIDE_PIXELS re-exported)
from .stream import VideoFramesError, is_camera, is_video, video_problem  # noqa: F401 (re-exported)


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
            _video_formats_only(formats, f"camera {inputs}", "a camera gives an overlay video")
            return predict_video(seg, inputs, out_dir, **video_kw)
        files, videos = list_inputs(inputs, videos=True)
        stems, video_stems = output_stems(files), output_stems(videos)
        if videos:
            _video_formats_only(formats, str(videos[0]), "a video gives an overlay video")
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
            mask_values=seg.mask_values,  # a binary model: 0/255 or 0/1 masks as its training data
        )
        writer.claim(stems, files)  # every output name checked before the first image is segmented
        for stem in video_stems:
            claim_output(out_dir / f"{stem}_overlay.mp4", overwrite=overwrite, **API_OUTPUT_POLICY)
        seg.check_memory(image_sizes(files), [str(f) for f in files])  # a huge image: refused before the first
        written = _predict_images(seg, files, stems, writer, str(inputs), progress)
        _predict_videos(seg, videos, video_stems, out_dir, video_kw, written, alone=len(videos) + len(files) == 1)
        return written
    finally:
        model.train(was_training)


def _video_formats_only(formats: Sequence[str], what: str, why: str) -> None:
    """Videos and cameras write an overlay video (``--format png``): :class:`~segkit.errors.UsageError` otherwise."""
    from segkit.errors import UsageError

    if list(formats) != ["png"]:
        raise UsageError(
            f"{what}: --format {' '.join(formats)} is for images ({why}; --format png, and --save-labels "
            "for the label PNGs of a video)"
        )


def _predict_images(seg: Segmenter, files: list[Path], stems: list[str], writer, inputs: str, progress: bool):
    """Segment ``files`` one by one and hand each result to ``writer``; returns the written paths (images first,
    then what ``writer.finish`` writes for the whole input, e.g. ``coco_results.json``)."""
    from tqdm.auto import tqdm

    from segkit.data.io import summarise_conversions

    written: list[Path] = []
    with summarise_conversions(inputs):  # grayscale, 16-bit …: one line for the folder, not one per file
        for path, stem in zip(tqdm(files, desc="predict", disable=not progress or not files), stems):
            res = seg(path)
            written += writer.add(stem, res.label, res.image, path)
    return written + writer.finish()


def _predict_videos(seg, videos, stems, out_dir: Path, video_kw: dict, written: list[Path], alone: bool) -> None:
    """Each video of a folder (:func:`predict_video`), its files appended to ``written``. Frames that do not decode
    stop nothing: the readable frames and the other videos are written, then one
    :class:`~segkit.errors.VideoFramesError` names every bad frame (the video's own error when it is the only
    input)."""
    problems: list[VideoFramesError] = []
    for video, stem in zip(videos, stems):
        try:
            written += predict_video(seg, video, out_dir, stem=stem, **video_kw)
        except VideoFramesError as e:  # the readable frames are written; the others are reported at the end
            written += e.written
            problems.append(e)
    if len(problems) == 1 and alone:
        raise problems[0]
    if problems:
        raise VideoFramesError(
            "; ".join(map(str, problems)) + f"; {len(written)} file(s) written in all",
            written,
            [f for e in problems for f in e.frames],
        )


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
    """Segment every frame of a video file or camera (``source`` an int or digit string) with ``seg``: writes
    ``<out_dir>/<stem>_overlay.mp4`` (``camera<N>_overlay.mp4`` for a camera) and, with ``save_labels``,
    ``<stem>_<frame:06d>_label.png`` per frame. :meth:`Segmenter.video <segkit.engine.segmenter.Segmenter.video>`,
    which holds the rules (undecodable frames: :class:`VideoFramesError` after the readable ones are written)."""
    stem = stem or (f"camera{int(source)}" if is_camera(source) else Path(str(source)).stem)
    return seg.video(
        source,
        Path(out_dir) / f"{stem}_overlay.mp4",
        alpha=alpha,
        save_labels=save_labels,
        stem=stem,
        max_frames=max_frames,
        overwrite=overwrite,
        progress=progress,
    )


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
