"""Reading images and label maps, with loud errors for bad files.

* :func:`read_image` -> ``uint8 (H, W, 3)`` RGB. EXIF orientation is applied (as the reference
  loader does: mmcv/OpenCV ``IMREAD_COLOR`` honours it). Grayscale, RGBA, palette, CMYK and
  16-bit images are converted to 8-bit RGB with a :class:`UserWarning` naming the file (at most
  :data:`WARNING_LIMIT` per kind and process; none inside :func:`quiet_conversions`, which the data
  sets use: a data set's conversions are summarised in one line by :func:`segkit.data.check_dataset`;
  inside :func:`count_conversions` they are counted for one summary line, :func:`summarise_conversions`).
* :func:`read_bands` -> ``uint8 (H, W, C)`` multi-band images (RGB + NIR TIFFs via ``tifffile``).
* :func:`read_label` -> ``uint8 (H, W)`` class indices, read "unchanged" (a palette PNG such as
  Pascal VOC's gives its indices, not its colours). A 3-channel colour mask is refused with a
  :class:`DataError` that explains how to convert it (:func:`colour_to_index`,
  :func:`convert_colour_masks`).
* :func:`probe_image` reads only the header plus a cheap end-of-file integrity check (used by
  :func:`segkit.data.checks.check_dataset`).

Every error is a :class:`DataError` whose message starts with the file path.

Speed: files are read once into memory; plain 8-bit RGB images and 8-bit grayscale labels whose
container looks complete are decoded by OpenCV (faster than Pillow for JPEG/WebP), everything
else by Pillow. Both decoders give identical pixels for these files. A truncated file
is never decoded silently: OpenCV would fill the missing part with grey, so files that fail the
end-of-file check (PNG ``IEND``, JPEG ``EOI``, WebP RIFF size) always go through Pillow, which
raises on truncation.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from segkit.errors import DataError, UsageError

__all__ = [
    "DataError",
    "IMAGE_SUFFIXES",
    "read_image",
    "read_bands",
    "TIFF_SUFFIXES",
    "quiet_conversions",
    "count_conversions",
    "conversion_summary",
    "summarise_conversions",
    "pil_to_rgb",
    "read_label",
    "probe_image",
    "image_conversion",
    "ImageInfo",
    "colour_to_index",
    "index_to_colour",
    "convert_colour_masks",
]

from segkit.utils import IMAGE_SUFFIXES  # noqa: E402 (one list for datasets, predict and ONNX predict)

_ORIENTATION_TAG = 0x0112
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_GRAY_16BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")

# At most this many conversion warnings per kind and process (a grayscale dataset would otherwise
# print one line per image); the last one says that further ones are suppressed.
WARNING_LIMIT = 10
_warn_counts: Counter = Counter()
_quiet = threading.local()


@contextlib.contextmanager
def quiet_conversions():
    """Within this block (in this thread) :func:`read_image` converts grayscale, palette, RGBA, CMYK and 16-bit
    images without a warning per file. The data sets read their images this way: ``segkit train`` and
    ``segkit check-data`` say it once per data set instead (the label scan's summary line, "N image(s) are not
    8-bit RGB and will be converted when read: grayscale -> RGB (N)", :func:`segkit.data.check_dataset`)."""
    before = getattr(_quiet, "on", False)
    _quiet.on = True
    try:
        yield
    finally:
        _quiet.on = before


@contextlib.contextmanager
def count_conversions(counts: Counter | None = None):
    """Within this block (in this thread) :func:`read_image` / :func:`pil_to_rgb` count their conversions in the
    yielded ``Counter`` (``{"grayscale -> RGB": n, "16-bit grayscale -> 8-bit RGB": n, …}``, the labels of
    :class:`ImageInfo`; ``counts`` to add to an existing one) instead of warning per file, so a caller reading a
    folder or a list says it once (:func:`conversion_summary`, :func:`summarise_conversions`). Inside
    :func:`quiet_conversions` nothing is counted."""
    counts = Counter() if counts is None else counts
    stack = getattr(_quiet, "counters", None)
    if stack is None:
        stack = _quiet.counters = []
    stack.append(counts)
    try:
        yield counts
    finally:
        stack.pop()


def conversion_summary(counts: Counter) -> str | None:
    """One line for the conversions in ``counts`` (:func:`count_conversions`), worded as ``segkit train`` and
    ``segkit check-data`` word a data set's: "12 image(s) are not 8-bit RGB and were converted when read:
    grayscale -> RGB (12)"; ``None`` when there were none."""
    if not counts:
        return None
    kinds = ", ".join(f"{k} ({n})" for k, n in counts.items())
    return f"{sum(counts.values())} image(s) are not 8-bit RGB and were converted when read: {kinds}"


@contextlib.contextmanager
def summarise_conversions(where: str):
    """:func:`count_conversions` over the block, then one ``UserWarning`` "``where``: :func:`conversion_summary`"
    when there were conversions (what ``segkit predict``, ``Segmenter`` on a list and its streams print at the end of
    a folder or list instead of a warning per file). Nothing is said when the block raises."""
    with count_conversions() as counts:
        yield counts
    line = conversion_summary(counts)
    if line:
        warnings.warn(f"{where}: {line}", UserWarning, stacklevel=3)


def _warn(kind: str, message: str, label: str | None = None) -> None:
    if getattr(_quiet, "on", False):
        return
    stack = getattr(_quiet, "counters", None)
    if stack and label is not None:  # an image conversion, counted for one summary line (count_conversions)
        stack[-1][label or kind] += 1
        return
    _warn_counts[kind] += 1
    n = _warn_counts[kind]
    if n < WARNING_LIMIT:
        warnings.warn(message, UserWarning, stacklevel=3)
    elif n == WARNING_LIMIT:
        warnings.warn(f"{message} (further '{kind}' conversion warnings are suppressed)", UserWarning, stacklevel=3)


def _read_bytes(path: str | os.PathLike) -> bytes:
    try:
        if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
            raise DataError(f"{path}: not a regular file (a FIFO, device or socket), expected an image file")
        with open(path, "rb") as f:  # (opening a FIFO would wait for a writer forever)
            return f.read()
    except FileNotFoundError:
        from segkit.errors import NotFoundError

        raise NotFoundError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected an image file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e.strerror or e})") from None


def _open(path, data: bytes) -> Image.Image:
    if not data:
        raise DataError(f"{path}: empty file (0 bytes)")
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image (unknown format or corrupt header)") from None
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: image too large to open safely ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot open image, the file is truncated or corrupt ({e})") from None


def _looks_complete(data: bytes, fmt: str | None) -> bool | None:
    """End-of-file integrity check: True / False for PNG, JPEG and WebP, None for other formats."""
    if fmt == "PNG":
        return data.endswith(_PNG_IEND) or _PNG_IEND in data[-4096:]
    if fmt == "JPEG":
        # EOI marker; in entropy-coded data 0xFF is always followed by 0x00 or RSTn, so a
        # truncated scan cannot end in FFD9. Some writers append padding after EOI.
        return b"\xff\xd9" in data[-1024:]
    if fmt == "WEBP":
        return data[:4] == b"RIFF" and len(data) >= int.from_bytes(data[4:8], "little") + 8
    return None


def _orientation(img: Image.Image) -> int:
    """EXIF orientation (1-8), 1 when absent. Reads only metadata parsed with the header."""
    if "exif" not in img.info:
        return 1
    try:
        return int(img.getexif().get(_ORIENTATION_TAG, 1) or 1)
    except Exception:  # malformed EXIF block: ignore it rather than refuse the image
        return 1


def _is_16bit_rgb(img: Image.Image) -> bool:
    if img.format != "PNG" or not img.tile:
        return False
    return "16" in str(img.tile[0][3])


def _decode(path, img: Image.Image) -> Image.Image:
    """Full Pillow decode with truncation/corruption turned into DataError."""
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise DataError(f"{path}: cannot decode image, the file is truncated or corrupt ({e})") from None
    return img


def _gray16_to_uint8(arr: np.ndarray, path) -> np.ndarray:
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise DataError(f"{path}: 32-bit integer image with values outside 0..65535 is not supported")
    # Linear 0..65535 -> 0..255 with rounding (65535 / 255 = 257).
    return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _float_gray_to_uint8(arr: np.ndarray, path) -> np.ndarray:
    """A 32-bit float gray image (mode ``F``) to 8 bits by its value range, with a warning naming the rule:
    0..1 → × 255; 0..255 → as is; 0..65535 → × 255 / 65535 (16-bit data stored as float). NaN or values
    outside 0..65535 are a :class:`DataError` (no guess)."""
    if arr.size == 0 or not np.isfinite(arr).all():
        raise DataError(f"{path}: 32-bit float image (mode 'F') with NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    for top, rule in (
        (1.0, "0..1, scaled by 255"),
        (255.0, "0..255, rounded"),
        (65535.0, "0..65535, scaled by 255/65535"),
    ):
        if lo >= 0 and hi <= top:
            _warn("float", f"{path}: 32-bit float image (mode F) read as values {rule}", "32-bit float -> 8-bit RGB")
            return np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
    raise DataError(
        f"{path}: 32-bit float image (mode 'F') with values {lo:g}..{hi:g}: not 0..1, 0..255 or 0..65535, so "
        "segkit does not guess a conversion; convert it to 8-bit RGB first"
    )


def read_image(path: str | os.PathLike, data: bytes | None = None) -> np.ndarray:
    """Read an image as ``uint8 (H, W, 3)`` RGB.

    ``data``: the file's bytes when they do not come from ``path`` (an image embedded in an
    annotation file, a Hugging Face dataset row); ``path`` then only names it in messages.

    EXIF orientation is applied. Grayscale (L, 1, LA), RGBA, palette (P), CMYK/YCbCr,
    16-bit images (gray ``I;16``/``I`` or 48-bit RGB PNG) and 32-bit float gray (``F``, by its value
    range: 0..1, 0..255 or 0..65535) are converted to 8-bit RGB with a ``UserWarning`` naming the
    file and the conversion (alpha is dropped, 16-bit values are scaled by 255/65535).

    Raises:
        DataError: missing, empty, unreadable, truncated or corrupt file, or an unsupported
            mode (float values outside those ranges); the message starts with the path.
    """
    data = _read_bytes(path) if data is None else data
    img = _open(path, data)
    frames = getattr(img, "n_frames", 1)
    if frames > 1:  # an animated GIF / WebP / PNG, a multi-page TIFF: said even where conversions are summarised
        warnings.warn(
            f"{path}: {img.format} with {frames} frames (animated or multi-page): only the first is read "
            f"(to segment every frame, convert it to a video, e.g. ffmpeg -i <file> frames.mp4)",
            UserWarning,
            stacklevel=2,
        )
    orientation = _orientation(img)
    if img.mode == "RGB" and orientation == 1 and _looks_complete(data, img.format) and not _is_16bit_rgb(img):
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if arr is not None and arr.ndim == 3 and arr.shape[:2] == (img.height, img.width):
            return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    rgb16 = _is_16bit_rgb(img)  # from the tile list, which decoding empties
    img = _decode(path, img)
    if orientation != 1:
        img = ImageOps.exif_transpose(img)
    return _to_rgb(img, path, rgb16)


TIFF_SUFFIXES = (".tif", ".tiff")


def read_bands(path: str | os.PathLike, channels: int, data: bytes | None = None) -> np.ndarray:
    """Read a multi-band image (RGB + NIR …) as ``uint8 (H, W, channels)``, for models with ``in_channels != 3``.

    * TIFF (``.tif`` / ``.tiff``): read with ``tifffile`` (the ``segkit[tiff]`` extra), not Pillow, which
      does not read most multi-band or 16-bit multi-sample TIFFs. Band-interleaved ``(H, W, C)`` and planar
      ``(C, H, W)`` layouts are both accepted (planar when the first axis is the shortest and ≤ 16).
    * Other formats: Pillow — ``channels`` 1 reads the image as gray (``L``), 3 as :func:`read_image`, 4 an RGBA
      file's four channels as four bands (a stacked RGB + NIR PNG).

    Values: uint8 as stored; 16-bit bands scaled by 255 / 65535 with rounding (as 16-bit gray images,
    :func:`read_image`), not saturated; float bands in 0..1 scaled by 255. Choice: segkit's pipeline
    (augmentation, normalisation tables) works on 8 bits, so every band is brought to 0..255 the same way;
    per-band ``mean`` / ``std`` of the model are on that scale (``segkit check-data --stats`` computes them).

    Raises:
        DataError: missing / unreadable file, another number of bands than ``channels`` (naming both), float
            values outside 0..1, or an unsupported layout; the message starts with the path.
        MissingDependencyError: a TIFF without ``tifffile`` installed (``pip install "segkit[tiff]"``).
    """
    channels = int(channels)
    data = _read_bytes(path) if data is None else data
    if str(path).lower().endswith(TIFF_SUFFIXES):
        from segkit.utils import require

        tifffile = require("tifffile", "tiff", f"{path}: reading a multi-band TIFF")
        try:
            arr = np.asarray(tifffile.imread(io.BytesIO(data)))
        except Exception as e:  # noqa: BLE001 - tifffile raises many types for corrupt files
            raise DataError(f"{path}: cannot read the TIFF ({type(e).__name__}: {e})") from None
        arr = _bands_last(arr, path)
    elif channels == 3:
        return read_image(path, data=data)
    else:
        img = _decode(path, _open(path, data))
        if channels == 1:
            gray16 = img.mode in _GRAY_16BIT_MODES
            gray = _gray16_to_uint8(np.asarray(img), path) if gray16 else np.asarray(img.convert("L"))
            return np.ascontiguousarray(gray)[:, :, None]
        arr = np.asarray(img.convert("RGBA") if channels == 4 and img.mode in ("RGBA", "RGBa", "RGBX") else img)
        arr = arr[:, :, None] if arr.ndim == 2 else arr
    if arr.shape[2] != channels:
        raise DataError(f"{path}: image has {arr.shape[2]} band(s), but the model takes in_channels={channels}")
    return np.ascontiguousarray(_bands_to_uint8(arr, path))


def _bands_last(arr: np.ndarray, path) -> np.ndarray:
    """``(H, W, C)`` from a 2-D image, ``(H, W, C)`` or planar ``(C, H, W)`` array."""
    if arr.ndim == 2:
        return arr[:, :, None]
    if arr.ndim != 3:
        raise DataError(f"{path}: TIFF with {arr.ndim} dimensions {arr.shape}; expected one (H, W, bands) image")
    if arr.shape[0] <= 16 and arr.shape[0] < min(arr.shape[1], arr.shape[2]):
        return np.moveaxis(arr, 0, -1)
    return arr


def _bands_to_uint8(arr: np.ndarray, path) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if arr.dtype.kind == "f":
        if arr.size and (not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1):
            raise DataError(f"{path}: float bands with values outside 0..1 (or NaN); scale them to 0..1 or 8/16 bits")
        return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    raise DataError(f"{path}: bands of type {arr.dtype} are not supported (expected uint8, uint16 or float 0..1)")


def pil_to_rgb(img: Image.Image, name: str | os.PathLike = "image") -> np.ndarray:
    """A ``PIL.Image`` as ``uint8 (H, W, 3)`` RGB by the conversion :func:`read_image` applies to files, so a
    picture gives the same pixels (and labels) as an image object as from its file: grayscale (``L``, ``1``,
    ``LA``), 16- and 32-bit integer gray (``I;16``, ``I``: scaled by 255/65535, not clipped), palette (``P``),
    RGBA, CMYK … with the same one-line ``UserWarning`` naming ``name``. EXIF orientation is not applied (the
    pixels are taken as the object holds them).

    Float gray (``F``) is read by its value range (0..1, 0..255 or 0..65535; :func:`read_image` does the same).

    Raises :class:`DataError` naming ``name`` for an empty image (0 pixels), a mode segkit does not read (a
    float image with values outside those ranges) or an image that cannot be decoded.
    """
    rgb16 = _is_16bit_rgb(img)  # from the tile list, which decoding empties
    img = _decode(name, img)
    if img.width == 0 or img.height == 0:
        raise DataError(f"{name}: empty image ({img.width}x{img.height} pixels)")
    return _to_rgb(img, name, rgb16)


def _to_rgb(img: Image.Image, path, rgb16: bool = False) -> np.ndarray:
    mode = img.mode
    if mode == "RGB":
        if rgb16 or _is_16bit_rgb(img):
            _warn("16-bit", f"{path}: 16-bit RGB image converted to 8 bits per channel", "16-bit RGB -> 8-bit RGB")
        return np.ascontiguousarray(np.asarray(img))
    if mode in ("L", "1", "LA", "La"):
        _warn("grayscale", f"{path}: grayscale image (mode {mode}) converted to RGB", "grayscale -> RGB")
        gray = np.asarray(img.convert("L"))
        return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    if mode in _GRAY_16BIT_MODES:
        _warn(
            "16-bit",
            f"{path}: 16-bit grayscale image (mode {mode}) converted to 8-bit RGB (value * 255 / 65535)",
            "16-bit grayscale -> 8-bit RGB",
        )
        gray = _gray16_to_uint8(np.asarray(img), path)
        return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    if mode in ("RGBA", "RGBa", "RGBX"):
        _warn(
            "alpha", f"{path}: {mode} image converted to RGB (alpha channel dropped)", f"{mode} -> RGB (alpha dropped)"
        )
        return np.ascontiguousarray(np.asarray(img)[:, :, :3])
    if mode in ("P", "PA"):
        _warn("palette", f"{path}: palette image (mode {mode}) converted to RGB", "palette -> RGB")
        return np.ascontiguousarray(np.asarray(img.convert("RGBA"))[:, :, :3])
    if mode in ("CMYK", "YCbCr", "LAB", "HSV", "I;16S"):
        _warn("colour-space", f"{path}: {mode} image converted to RGB", f"{mode} -> RGB")
        return np.ascontiguousarray(np.asarray(img.convert("RGB")))
    if mode == "F":
        return cv2.cvtColor(_float_gray_to_uint8(np.asarray(img), path), cv2.COLOR_GRAY2RGB)
    raise DataError(f"{path}: unsupported image mode {mode!r} (expected 8-bit RGB, grayscale, RGBA, palette or 16-bit)")


def read_label(
    path: str | os.PathLike,
    colours: Sequence[Sequence[int]] | None = None,
    unknown_colour: str | int = "error",
    data: bytes | None = None,
    unknown_hint: str = "",
) -> np.ndarray:
    """Read a single-channel class-index label map as ``uint8 (H, W)``.

    Accepted: 8-bit grayscale (L), palette PNG (P: the indices are returned), 1-bit, and 16-bit
    images whose values all fit in 0..255. A 3-channel image whose three channels are equal is
    accepted with a warning. EXIF orientation, if present, is applied as for images.

    ``colours``: for datasets whose masks are RGB by design (iSAID), a colour table; a colour
    mask is then converted with :func:`colour_to_index` (``unknown_colour`` as there) instead of
    being refused.

    ``data``: the file's bytes when they do not come from ``path`` (as for :func:`read_image`).
    ``unknown_hint``: appended to the message about colours outside the table (how the caller maps them).

    Raises:
        DataError: missing/unreadable/truncated file; a 3-channel colour mask (the message says
            how to convert it with the palette); 16-bit values above 255; float labels.
    """
    data = _read_bytes(path) if data is None else data
    img = _open(path, data)
    orientation = _orientation(img)
    if img.mode == "L" and orientation == 1 and _looks_complete(data, img.format):
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is not None and arr.ndim == 2 and arr.dtype == np.uint8 and arr.shape == (img.height, img.width):
            return arr
    img = _decode(path, img)
    if orientation != 1:
        img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in ("L", "P", "1"):
        return np.ascontiguousarray(np.asarray(img), dtype=np.uint8)
    if mode in _GRAY_16BIT_MODES:
        arr = np.asarray(img)
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise DataError(
                f"{path}: 16-bit label with values up to {int(arr.max())}; class indices must be 0..255 "
                "(255 = ignore) to be stored as an 8-bit label"
            )
        return arr.astype(np.uint8)
    if mode in ("LA", "La", "PA"):
        _warn("label-alpha", f"{path}: label with an alpha channel (mode {mode}); alpha ignored")
        return np.ascontiguousarray(np.asarray(img)[:, :, 0])
    if mode in ("RGB", "RGBA", "RGBX"):
        rgb = np.asarray(img)[:, :, :3]
        if colours is not None:
            return colour_to_index(rgb, colours, unknown=unknown_colour, path=path, hint=unknown_hint)
        if np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 0], rgb[:, :, 2]):
            _warn("label-3ch", f"{path}: label stored as {mode} with three equal channels; using one channel")
            return np.ascontiguousarray(rgb[:, :, 0])
        raise DataError(_colour_mask_message(path, rgb, mode))
    raise DataError(f"{path}: unsupported label mode {mode!r}; labels must be single-channel 8-bit class-index PNGs")


def _colour_mask_message(path, rgb: np.ndarray, mode: str) -> str:
    codes, counts = np.unique(_rgb_codes(rgb), return_counts=True)
    top = codes[np.argsort(-counts)[:5]]
    examples = ", ".join(str(_code_to_rgb(c)) for c in top)
    return (
        f"{path}: label is a 3-channel colour mask (mode {mode}, {len(codes)} distinct colours, e.g. {examples}). "
        "Labels must be single-channel class-index images (pixel value = class id, 255 = ignore). Convert colour "
        "masks with the dataset palette: segkit.data.io.convert_colour_masks(src_dir, dst_dir, palette) for a "
        "folder, or segkit.data.io.colour_to_index(mask, palette) for one array."
    )


def _rgb_codes(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int32, copy=False)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _code_to_rgb(code: int) -> tuple[int, int, int]:
    code = int(code)
    return (code >> 16) & 255, (code >> 8) & 255, code & 255


def colour_to_index(
    mask: np.ndarray,
    palette: Sequence[Sequence[int]],
    unknown: str | int = "error",
    path: str | os.PathLike | None = None,
    hint: str | None = None,
) -> np.ndarray:
    """Convert an RGB colour mask ``uint8 (H, W, 3)`` to class indices ``uint8 (H, W)``.

    Pixel colour ``palette[k]`` -> ``k``. ``unknown`` decides what happens to colours not in the
    palette: ``"error"`` (default) raises a :class:`DataError` listing them, an int (e.g. 255
    = ignore, or 0 as the iSAID converter does) is written instead.

    Raises:
        ValueError: the palette has duplicate colours (cannot be inverted) or more than 256 entries.
        DataError: unknown colours with ``unknown="error"``; ``path`` (if given) names the file, ``hint``
            (default: the ``unknown`` argument) says how to map them instead.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3 or mask.shape[2] < 3:
        raise UsageError(f"expected an (H, W, 3) RGB mask, got shape {mask.shape}")
    pal = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
    if len(pal) > 256:
        raise UsageError(f"palette has {len(pal)} colours; at most 256 fit in a uint8 label")
    pal_codes = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    if len(np.unique(pal_codes)) != len(pal_codes):
        raise UsageError("palette has duplicate colours, so colour -> class is ambiguous")
    order = np.argsort(pal_codes)
    sorted_codes = pal_codes[order]
    codes = _rgb_codes(mask[..., :3])
    pos = np.clip(np.searchsorted(sorted_codes, codes), 0, len(sorted_codes) - 1)
    known = sorted_codes[pos] == codes
    out = order[pos].astype(np.uint8)
    if not known.all():
        if unknown == "error":
            bad, cnt = np.unique(codes[~known], return_counts=True)
            top = ", ".join(f"{_code_to_rgb(c)} x{n}" for c, n in sorted(zip(bad, cnt), key=lambda t: -t[1])[:8])
            where = f"{path}: " if path is not None else ""
            hint = hint or " (unknown=<class id>, e.g. 255 = ignore, maps them instead)"
            raise DataError(f"{where}{len(bad)} colour(s) not in the palette ({int(cnt.sum())} pixels): {top}{hint}")
        out[~known] = int(unknown)
    return out


def index_to_colour(label: np.ndarray, palette: Sequence[Sequence[int]], ignore_colour=(0, 0, 0)) -> np.ndarray:
    """Class indices ``(H, W)`` -> RGB ``uint8 (H, W, 3)`` with ``palette``; other values get ``ignore_colour``."""
    lut = np.tile(np.asarray(ignore_colour, dtype=np.uint8), (256, 1))
    pal = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
    lut[: len(pal)] = pal
    return lut[np.asarray(label, dtype=np.uint8)]


def convert_colour_masks(
    src_dir: str | os.PathLike,
    dst_dir: str | os.PathLike,
    palette: Sequence[Sequence[int]],
    unknown: str | int = "error",
    suffix: str = ".png",
) -> int:
    """Convert every colour mask ``src_dir/**/*{suffix}`` into an 8-bit index PNG under ``dst_dir``.

    Relative paths are kept. Returns the number of files written. Unknown colours: see
    :func:`colour_to_index`.
    """
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    n = 0
    for src in sorted(src_dir.rglob(f"*{suffix}")):
        img = _decode(src, _open(src, _read_bytes(src)))
        rgb = np.asarray(img.convert("RGB"))
        index = colour_to_index(rgb, palette, unknown=unknown, path=src)
        dst = dst_dir / src.relative_to(src_dir)
        dst.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(index, mode="L").save(dst.with_suffix(".png"))
        n += 1
    return n


@dataclass
class ImageInfo:
    """Header facts of an image file: size after EXIF orientation, mode, and the conversion
    :func:`read_image` would apply (None for plain 8-bit RGB)."""

    height: int
    width: int
    mode: str
    orientation: int
    conversion: str | None


def probe_image(path: str | os.PathLike, decode: bool = False, data: bytes | None = None) -> ImageInfo:
    """Check an image file without (fully) decoding it.

    Reads the header and runs the end-of-file integrity check; a file that fails it (or any
    file when ``decode=True``, or a format without such a check) is decoded fully to confirm.

    Raises:
        DataError: missing, unreadable, truncated or corrupt file.
    """
    data = _read_bytes(path) if data is None else data  # data: the bytes, as for read_image
    img = _open(path, data)
    orientation = _orientation(img)
    if decode or not _looks_complete(data, img.format):
        _decode(path, img)
    w, h = img.size
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    return ImageInfo(height=h, width=w, mode=img.mode, orientation=orientation, conversion=_conversion_of(img))


def image_conversion(path: str | os.PathLike, data: bytes | None = None) -> str | None:
    """The conversion :func:`read_image` applies to the image file ``path`` (``"grayscale -> RGB"``, ``"16-bit RGB
    -> 8-bit RGB"`` …, the labels of :class:`ImageInfo`), ``None`` for 8-bit RGB, from the file's header only (no
    decoding, no integrity check: for a summary line over a whole data set). Raises :class:`DataError` naming
    the file when it is missing or not an image."""
    if data is not None:
        return _conversion_of(_open(path, data))
    try:
        with Image.open(path) as img:
            return _conversion_of(img)
    except FileNotFoundError:
        from segkit.errors import NotFoundError

        raise NotFoundError(f"{path}: file not found") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None


def _conversion_of(img: Image.Image) -> str | None:
    mode = img.mode
    conversion = None
    if mode in ("L", "1", "LA", "La"):
        conversion = "grayscale -> RGB"
    elif mode in _GRAY_16BIT_MODES:
        conversion = "16-bit grayscale -> 8-bit RGB"
    elif mode == "RGB" and _is_16bit_rgb(img):
        conversion = "16-bit RGB -> 8-bit RGB"
    elif mode in ("RGBA", "RGBa", "RGBX"):
        conversion = f"{mode} -> RGB (alpha dropped)"
    elif mode in ("P", "PA"):
        conversion = "palette -> RGB"
    elif mode != "RGB":
        conversion = f"{mode} -> RGB"
    return conversion
