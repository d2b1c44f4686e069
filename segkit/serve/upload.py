"""The upload of ``POST /predict``: a streamed multipart body held in memory, and the image checks made
before any pixel is decoded.

* :func:`read_image_part` reads the ``multipart/form-data`` body with ``python-multipart``'s streaming
  parser and keeps the ``image`` part in memory. Starlette's own form parser is not used on purpose: it
  spools files over 1 MiB to a temporary file, and uploads must never touch the disk. The byte limit is
  enforced while the body streams in (and at once from ``Content-Length``), so an oversized upload is
  never read whole.
* :func:`open_image` identifies the format from the bytes (Pillow's ``Image.open`` reads only the
  header), refuses formats other than JPEG / PNG / WebP / TIFF and images over the pixel limit
  *before* decoding (a decompression bomb — a small file declaring 60000×60000 pixels — costs nothing),
  then decodes with :func:`segkit.data.io.read_image` (EXIF orientation, mode conversions: the pixels
  ``segkit predict`` and :class:`segkit.Segmenter` get from the same file).

Each refusal is an :class:`UploadError` carrying the HTTP status:

======  ===========================================================================================
400     no ``image`` field, an empty (0-byte) upload, a malformed multipart body, or bytes of no known
        format that are not text (random bytes), or an image whose pixels cannot be decoded (truncated)
413     more bytes than ``max_bytes``, or more pixels (width × height from the header) than ``max_pixels``
415     not ``multipart/form-data``; an upload that is text (a ``.txt`` renamed ``.png``) or declared
        as a non-image type (``Content-Type: text/plain``, ``application/pdf`` …), or an image format
        other than JPEG / PNG / WebP / TIFF (GIF, BMP …)
======  ===========================================================================================

The split between 400 and 415 (the choice): 415 says "this is some other kind of file" and is given
where that is known — a declared non-image type, bytes that decode as text, a format Pillow knows but
the server does not take; unknown binary bytes are treated as a broken image (400), since clients send
them as ``image/*`` or ``application/octet-stream``.

Torch-free.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

ACCEPTED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "TIFF": "image/tiff"}
FIELD = "image"
# room for the multipart framing and small extra fields on top of the image's byte limit
BODY_OVERHEAD = 64 * 1024


class UploadError(Exception):
    """A refused upload: ``status`` (400, 413, 415) and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Upload:
    """The ``image`` part of a request: its bytes, file name and declared content type (may be empty)."""

    data: bytes
    filename: str
    content_type: str


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


async def read_image_part(request, max_bytes: int) -> Upload:
    """The ``image`` part of a ``multipart/form-data`` request (a Starlette ``Request``), read in memory.

    Refuses (:class:`UploadError`) a body that is not multipart (415), a ``Content-Length`` or a streamed
    body over ``max_bytes`` + :data:`BODY_OVERHEAD`, or an image part over ``max_bytes`` (413), a
    malformed body or no ``image`` field (400)."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        shown = ctype.decode("latin-1") or "none"
        raise UploadError(
            415, f"expected a multipart/form-data upload with the field '{FIELD}', got Content-Type {shown}"
        )
    limit = max_bytes + BODY_OVERHEAD
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise UploadError(413, f"upload of {_mb(int(length))} is over the limit of {_mb(max_bytes)} (--max-upload-mb)")

    parts: list[dict] = []
    header: dict = {}

    def on_part_begin():
        parts.append({"headers": {}, "data": io.BytesIO(), "size": 0})

    def on_header_field(data, start, end):
        header["field"] = header.get("field", b"") + data[start:end]

    def on_header_value(data, start, end):
        header["value"] = header.get("value", b"") + data[start:end]

    def on_header_end():
        parts[-1]["headers"][header.pop("field", b"").lower()] = header.pop("value", b"")

    def on_part_data(data, start, end):
        part = parts[-1]
        part["size"] += end - start
        if part["size"] > max_bytes:
            raise UploadError(413, f"upload over the limit of {_mb(max_bytes)} (--max-upload-mb)")
        part["data"].write(data[start:end])

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
    }
    parser = MultipartParser(params[b"boundary"], callbacks)
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise UploadError(413, f"upload over the limit of {_mb(max_bytes)} (--max-upload-mb)")
            parser.write(chunk)
        parser.finalize()
    except UploadError:
        raise
    except Exception as e:  # python-multipart's parse errors
        raise UploadError(400, f"malformed multipart body ({type(e).__name__}: {e})") from None
    for part in parts:
        _, disposition = parse_options_header(part["headers"].get(b"content-disposition", b""))
        if disposition.get(b"name") == FIELD.encode():
            return Upload(
                data=part["data"].getvalue(),
                filename=disposition.get(b"filename", b"").decode("utf-8", "replace"),
                content_type=part["headers"].get(b"content-type", b"").decode("latin-1").strip().lower(),
            )
    raise UploadError(400, f"no multipart field '{FIELD}' (send the image as -F {FIELD}=@photo.jpg)")


def _looks_like_text(data: bytes) -> bool:
    """UTF-8 without NUL or other control bytes (tab, newlines and carriage returns allowed)."""
    sample = data[:4096]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(sample) - 4:  # not just a character cut at the sample's end
            return False
        text = sample[: e.start].decode("utf-8")
    return all(c >= " " or c in "\t\n\r\f" for c in text)


def _declared_other_type(content_type: str) -> bool:
    return bool(content_type) and not (
        content_type.startswith("image/") or content_type in ("application/octet-stream", "binary/octet-stream")
    )


def open_image(upload: Upload, max_pixels: int):
    """Check and decode an upload: ``uint8 (H, W, 3)`` RGB, or :class:`UploadError` (the module's table).

    The pixel limit is checked on the header's ``width × height`` before any pixel is decoded."""
    from PIL import Image, UnidentifiedImageError

    from segkit.data.io import read_image
    from segkit.errors import DataError

    name = upload.filename or FIELD
    data = upload.data
    if not data:
        raise UploadError(400, f"{name}: empty upload (0 bytes)")
    if _declared_other_type(upload.content_type):
        raise UploadError(
            415, f"{name}: declared as {upload.content_type}, not an image (send JPEG, PNG, WebP or TIFF)"
        )
    try:
        img = Image.open(io.BytesIO(data))  # lazy: header only
    except Image.DecompressionBombError as e:  # Pillow's own limit (twice Image.MAX_IMAGE_PIXELS)
        raise UploadError(413, f"{name}: image over the pixel limit of {max_pixels} ({e})") from None
    except UnidentifiedImageError:
        if _looks_like_text(data):
            raise UploadError(415, f"{name}: a text file, not an image (send JPEG, PNG, WebP or TIFF)") from None
        raise UploadError(400, f"{name}: not a decodable image (unknown format or corrupt header)") from None
    except Exception as e:  # a header Pillow recognises but cannot parse
        raise UploadError(400, f"{name}: corrupt image header ({type(e).__name__}: {e})") from None
    if img.format not in ACCEPTED_FORMATS:
        raise UploadError(415, f"{name}: {img.format} images are not accepted (send JPEG, PNG, WebP or TIFF)")
    width, height = img.size
    if width * height > max_pixels:
        raise UploadError(
            413, f"{name}: {width}x{height} = {width * height} pixels, over the limit of {max_pixels} (--max-pixels)"
        )
    if width == 0 or height == 0:
        raise UploadError(400, f"{name}: empty image ({width}x{height} pixels)")
    try:
        return read_image(name, data=data)
    except DataError as e:
        raise UploadError(400, str(e)) from None
    except Image.DecompressionBombError as e:
        raise UploadError(413, f"{name}: image over the pixel limit ({e})") from None


__all__ = ["ACCEPTED_FORMATS", "Upload", "UploadError", "open_image", "read_image_part"]
