"""Frames one at a time, from a folder, a glob, a video file or a camera: the sources of
:meth:`segkit.Segmenter.stream`, and the overlay-video writer of :meth:`segkit.Segmenter.video` (what
``segkit predict`` runs for videos and cameras).

A source is read lazily: a folder or a glob is listed (names only), a video or a camera is decoded one
frame at a time with OpenCV's ``VideoCapture``, so memory does not grow with the length of the source.
Nothing is dropped without a word: an image or a video frame that cannot be decoded becomes a
:class:`Frame` with ``image=None`` and the reason, which the consumer reports; a video that ends short
of the frame count of its header yields the missing frames the same way.
"""

from __future__ import annotations

import glob as _glob
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from segkit.errors import DataError, UsageError
from segkit.utils import IMAGE_SUFFIXES, VIDEO_SUFFIXES, list_inputs

# a video that fails this many reads in a row is taken to end there (the rest is reported as missing)
MAX_FAILED_IN_A_ROW = 25


@dataclass
class Frame:
    """One image or video frame of a source.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB, or ``None`` when it could not be read (``error`` says why).
        index: its position: the frame number in its video (from 0), the image's number in a folder / glob / iterable.
        timestamp: seconds from the start of its video (the decoder's position, ``CAP_PROP_POS_MSEC``); for a camera,
            seconds since it was opened (its own clock where the driver reports one); ``None`` for still images.
        path: the file it comes from (``None`` for a camera or an in-memory image).
        error: why it could not be read (``None`` when ``image`` is set).
        camera: the camera index for a camera's frames, else ``None``.
    """

    image: np.ndarray | None
    index: int
    timestamp: float | None = None
    path: str | None = None
    error: str | None = None
    camera: int | None = None


class VideoFramesError(DataError):
    """Frames of a video could not be decoded; the readable frames were written (``written``), the message
    names the missing frames (``frames``, counting from 0) and the file with the rest."""

    def __init__(self, message: str, written: list[Path], frames: list[int]):
        super().__init__(message)
        self.written, self.frames = written, frames


def is_camera(source) -> bool:
    """A camera index: an int or a digit string (``0``, ``"1"``)."""
    return (isinstance(source, int) and not isinstance(source, bool)) or str(source).isdigit()


def is_video(source) -> bool:
    """A camera index (``0``, ``"1"``) or a file with a video suffix (:data:`~segkit.utils.VIDEO_SUFFIXES`)."""
    return is_camera(source) or Path(str(source)).suffix.lower() in VIDEO_SUFFIXES


def is_glob(source) -> bool:
    """A string with a glob pattern character (``*``, ``?``, ``[``) that is not an existing path."""
    text = str(source)
    return isinstance(source, str) and any(c in text for c in "*?[") and not Path(text).exists()


def frame_ranges(frames: list[int]) -> str:
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


def _no_frame_reason(source, total) -> str:
    if total:
        return (
            f"its header announces {total} frames, none decodes (a truncated or damaged file, or an unsupported codec)"
        )
    return video_problem(source) if Path(str(source)).exists() else "no such file"


class VideoReader:
    """A video file or a camera opened with OpenCV, read frame by frame (:meth:`frames`).

    ``total`` is the frame count of the file's header (``None`` for a camera or when the container gives none),
    ``fps`` its frame rate (a camera's reported rate, else 25), ``size`` ``(H, W)`` once a frame is decoded.
    Raises :class:`~segkit.errors.DataError` naming the source and the reason when it cannot be opened.
    """

    def __init__(self, source):
        import cv2

        self.camera = is_camera(source)
        self.source = source
        self.cap = cv2.VideoCapture(int(source) if self.camera else str(source))
        if not self.cap.isOpened():
            why = "no such camera, or it is in use" if self.camera else video_problem(source)
            raise DataError(f"{source}: cannot open this {'camera' if self.camera else 'video'} with OpenCV: {why}")
        self.fps = self.cap.get(cv2.CAP_PROP_FPS) or 25.0
        total = None if self.camera else int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        self.total = total if total is None or total > 0 else None
        self.decoded = 0

    @property
    def name(self) -> str:
        """The output stem: ``camera<N>`` or the file's stem."""
        return f"camera{int(self.source)}" if self.camera else Path(str(self.source)).stem

    def frames(self, max_frames: int | None = None) -> Iterator[Frame]:
        """Every frame, decoded and converted to RGB, as :class:`Frame` (``index`` from 0, ``timestamp`` in s).

        A frame that fails to decode in the middle is yielded with ``image=None`` and the next one is tried (the
        decoder is moved past it); after :data:`MAX_FAILED_IN_A_ROW` failures in a row, or when the video ends
        before the count of its header, the frames still missing are yielded the same way — except a shortfall of
        exactly one frame at the end, which is only a warning (some containers store an estimated count). A camera
        is read until it stops delivering frames or ``max_frames``. Raises :class:`~segkit.errors.DataError` when
        no frame at all can be read. The capture is released when the generator ends or is closed."""
        import cv2

        cap, total, camera = self.cap, self.total, self.camera
        path = None if camera else str(self.source)
        cam = int(self.source) if camera else None
        index = failed_in_a_row = 0
        bad: list[int] = []
        start = time.monotonic()
        try:
            while max_frames is None or index < max_frames:
                ok, frame = cap.read()
                if not ok:
                    if camera or total is None or index >= total or failed_in_a_row >= MAX_FAILED_IN_A_ROW:
                        break
                    bad.append(index)
                    yield Frame(None, index, None, path, "this frame could not be decoded", cam)
                    failed_in_a_row += 1
                    index += 1
                    cap.set(cv2.CAP_PROP_POS_FRAMES, index)  # skip it and try the next one
                    continue
                failed_in_a_row = 0
                if camera:
                    msec = cap.get(cv2.CAP_PROP_POS_MSEC)
                    stamp = msec / 1000.0 if msec > 0 else time.monotonic() - start
                else:
                    stamp = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                self.decoded += 1
                yield Frame(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), index, stamp, path, None, cam)
                index += 1
            if self.decoded == 0:
                why = "" if camera else f": {_no_frame_reason(self.source, total)}"
                raise DataError(f"{self.source}: no frame could be read{why}")
            if total is not None and max_frames is None and index < total:
                if index == total - 1 and not bad:
                    warnings.warn(
                        f"{self.source}: {self.decoded} frames decoded, its header announces {total} (an estimated "
                        "count in some containers; otherwise the last frame is damaged)",
                        UserWarning,
                        stacklevel=2,
                    )
                else:  # the stream ended before the count of its header
                    why = "missing: the video ends (or stops decoding) before the frame count of its header"
                    for i in range(index, total):
                        yield Frame(None, i, None, path, why, cam)
        finally:
            cap.release()


def _list_glob(pattern: str) -> list[Path]:
    """Image and video files matching ``pattern`` (``**`` recursive), sorted; a pattern that matches nothing is a
    :class:`~segkit.errors.NotFoundError`."""
    from segkit.errors import NotFoundError

    found = sorted(Path(p) for p in _glob.glob(os.path.expanduser(pattern), recursive=True))
    files = [p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES]
    if not files:
        raise NotFoundError(
            f"{pattern}: no image or video file matches this pattern"
            + (f" ({len(found)} other path(s) do)" if found else "")
        )
    return files


def frames(source, max_frames: int | None = None, read_images: bool = True) -> Iterator[Frame]:
    """:class:`Frame` s of ``source``, one at a time (see the module doc).

    ``source``: a camera index (int, or a digit string), a video file (:data:`~segkit.utils.VIDEO_SUFFIXES`), an
    image file, a folder (its images, then its videos, sorted; other entries listed in a warning), a glob pattern
    (``"photos/*.jpg"``, ``"**/*.png"``), or an iterable of in-memory images (``(H, W, 3)`` uint8 arrays,
    ``PIL.Image`` s, ``(3, H, W)`` uint8 tensors or paths; consumed lazily, e.g. a generator). Images of a folder or a
    glob are numbered in listing order; the frames of each video from 0. Frames are read when the caller asks for
    the next one: only the current frame is in memory.

    Raises :class:`~segkit.errors.NotFoundError` for a missing path or a glob that matches nothing,
    :class:`~segkit.errors.DataError` for a folder with nothing to read or a single video that cannot be opened.
    A video inside a folder or a glob that cannot be opened is yielded as one error :class:`Frame` (index ``-1``).
    ``read_images=False`` yields image files unread (``image`` = the path, for a reader of multi-band files)."""
    if is_camera(source):
        yield from VideoReader(source).frames(max_frames)
        return
    if isinstance(source, (str, os.PathLike)):
        if is_glob(source):
            files = _list_glob(str(source))
            images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
            videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
        else:
            images, videos = list_inputs(source, videos=True)
        single = len(images) + len(videos) == 1
        yield from _image_frames(images, read_images)
        for video in videos:
            try:
                reader = VideoReader(video)
            except DataError as e:
                if single:
                    raise
                yield Frame(None, -1, None, str(video), str(e).split(": ", 1)[-1])
                continue
            try:
                yield from reader.frames(max_frames)
            except DataError as e:  # no frame of it could be read: one error, and the source goes on
                if single:
                    raise
                yield Frame(None, -1, None, str(video), str(e).split(": ", 1)[-1])
        return
    if isinstance(source, (bytes, np.ndarray)) or not hasattr(source, "__iter__"):
        raise UsageError(
            f"stream source: a folder, a glob pattern, an image or video file, a camera index or an iterable of "
            f"images, got {type(source).__name__}"
        )
    for index, item in enumerate(source):  # in-memory images (or paths), converted by the caller
        yield Frame(item, index, None, str(item) if isinstance(item, (str, os.PathLike)) else None)


def _image_frames(images: list[Path], read: bool = True) -> Iterator[Frame]:
    from segkit.data.io import read_image

    for index, path in enumerate(images):
        if not read:
            yield Frame(str(path), index, None, str(path))
            continue
        try:
            image = read_image(path)
        except (DataError, OSError, ValueError) as e:
            yield Frame(None, index, None, str(path), str(e).replace(f"{path}: ", "", 1))
            continue
        yield Frame(image, index, None, str(path))


def source_length(source) -> int | None:
    """How many frames ``source`` gives, when that is known without reading it (a list, a folder of images, a
    single video's header); ``None`` otherwise (a camera, a generator, a folder with videos)."""
    if is_camera(source):
        return None
    if isinstance(source, (str, os.PathLike)):
        try:
            if is_glob(source):
                files = _list_glob(str(source))
                images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
                videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
            else:
                with warnings.catch_warnings():  # frames() gives the listing's warning
                    warnings.simplefilter("ignore")
                    images, videos = list_inputs(source, videos=True, warn=False)
        except (DataError, OSError):
            return None
        if not videos:
            return len(images)
        if len(videos) == 1 and not images:
            import cv2

            cap = cv2.VideoCapture(str(videos[0]))
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
            cap.release()
            return n if n > 0 else None
        return None
    return len(source) if hasattr(source, "__len__") else None


# ----------------------------------------------------------------------------- writing an overlay video
FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}


class VideoWriter:
    """An OpenCV video writer that starts at the first frame (its size), writes into ``.<name>.part<suffix>`` and
    moves the file to ``path`` at :meth:`finish` once its frame count reads back (OpenCV reports no write error: a
    full disk leaves a short file). Codec by suffix (:data:`FOURCC`: ``mp4v`` for ``.mp4`` / ``.m4v`` / ``.mov``,
    ``MJPG`` for ``.avi``; the codecs every OpenCV build with FFmpeg writes)."""

    def __init__(self, path: Path, fps: float):
        if path.suffix.lower() not in FOURCC:
            raise UsageError(f"{path}: an overlay video is written as {', '.join(FOURCC)}, not {path.suffix!r}")
        self.path, self.fps = path, fps
        self.tmp = path.with_name(f".{path.stem}.part{path.suffix}")
        self.writer = None
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        import cv2

        if self.writer is None:
            h, w = rgb.shape[:2]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fourcc = cv2.VideoWriter_fourcc(*FOURCC[self.path.suffix.lower()])
            self.writer = cv2.VideoWriter(str(self.tmp), fourcc, self.fps, (w, h))
            if not self.writer.isOpened():
                raise DataError(f"{self.path}: OpenCV cannot write a {FOURCC[self.path.suffix.lower()]} video here")
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None

    def discard(self) -> None:
        self.close()
        self.tmp.unlink(missing_ok=True)

    def finish(self) -> Path:
        """Close, check the frame count of the written file, move it into place; returns ``path``. Raises
        :class:`~segkit.errors.OutputError` naming the file (the partial one removed) when it falls short."""
        import shutil

        import cv2

        from segkit.errors import OutputError

        self.close()
        cap = cv2.VideoCapture(str(self.tmp))
        found = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        cap.release()
        if found < self.frames:
            free = shutil.disk_usage(self.tmp.parent).free
            self.tmp.unlink(missing_ok=True)
            why = "no space left on device" if free < 1 << 20 else "the written file does not read back"
            raise OutputError(
                f"{why} writing {self.path}: it holds {found} of the {self.frames} frames (the partial file was "
                f"removed; {free} bytes free)"
            )
        self.tmp.replace(self.path)
        return self.path


__all__ = [
    "Frame",
    "VideoReader",
    "VideoWriter",
    "VideoFramesError",
    "frames",
    "frame_ranges",
    "is_camera",
    "is_glob",
    "is_video",
    "source_length",
    "video_problem",
    "MAX_FAILED_IN_A_ROW",
]
