"""A folder of LabelMe annotation files (``type: labelme``; https://github.com/wkentaro/labelme).

Each ``*.json`` holds ``shapes`` (``label``, ``points``, ``shape_type``), ``imagePath`` (relative to
the JSON file), optionally the image itself as base64 ``imageData``, and ``imageHeight`` /
``imageWidth``. Shapes are drawn as LabelMe's own ``labelme/utils/shape.py`` (``shape_to_mask``)
draws them, with Pillow's ``ImageDraw``: ``polygon`` (≥ 3 points), ``rectangle`` (2 corners),
``circle`` (centre and a point on the circle) and ``mask`` (a base64 PNG inside its 2-corner box).
``line``, ``linestrip`` and ``point`` shapes have no area: they are not drawn, and a warning counts
them. The label ``_background_`` (labelme2voc's convention) is the background class.

Classes: ``classes`` from the config, or discovered — ``background`` then the labels found, sorted
(a warning says so, so that the order can be pinned in the config).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from segkit.data.datasets import seeded_split
from segkit.data.formats.base import AnnotatedDataset, ImageEntry, Shape, background_classes
from segkit.data.io import DataError
from segkit.utils import nearest_names

AREA_SHAPES = ("polygon", "rectangle", "circle", "mask")
LINE_SHAPES = ("line", "linestrip", "point", "points")
BACKGROUND_LABEL = "_background_"


def _load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a readable LabelMe file ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise DataError(f"{path}: not a LabelMe file (no 'shapes' list)")
    return data


def _check_shape(path: Path, k: int, shape: dict) -> str:
    kind = shape.get("shape_type") or "polygon"
    pts = shape.get("points")
    where = f"{path}: shape {k} ({shape.get('label')!r}, {kind})"
    if not isinstance(shape.get("label"), str):
        raise DataError(f"{path}: shape {k} has no 'label'")
    if kind in LINE_SHAPES:
        return kind
    if kind not in AREA_SHAPES:
        raise DataError(f"{where}: unknown shape_type; LabelMe's are {AREA_SHAPES + LINE_SHAPES}")
    try:
        n = len(np.asarray(pts, np.float64).reshape(-1, 2))
    except (TypeError, ValueError):
        raise DataError(f"{where}: 'points' must be a list of [x, y] pairs") from None
    need = 3 if kind == "polygon" else 2
    if n < need:
        raise DataError(f"{where}: {n} point(s); a {kind} needs {need}")
    if kind == "mask" and not shape.get("mask"):
        raise DataError(f"{where}: a mask shape without its 'mask' PNG")
    return kind


class LabelMeDataset(AnnotatedDataset):
    """The LabelMe files of a folder (and its sub-folders), label maps drawn from their shapes.

    Args:
        root: the folder of ``*.json`` files.
        classes: class names in class-id order (default: discovered, module docstring).
        background: name of class 0 (uncovered pixels and ``_background_`` shapes), or ``None``
            (uncovered pixels ignored).
        order: ``"file"`` (later shapes on top, as LabelMe draws) or ``"area"`` (smaller on top).
        split: ``None`` / ``"all"``, or ``"train"`` / ``"val"`` of a seeded random split.
        ignore_index, palette, label_map, transform, name: as :class:`~segkit.data.datasets.SegDataset`.

    Raises:
        DataError: no JSON files; an unreadable file; an image that is neither at ``imagePath``
            nor embedded; a shape with too few points or an unknown type; a label not in ``classes``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        classes: Sequence[str] | None = None,
        background: str | None = "background",
        order: str = "file",
        split: str | None = None,
        val_fraction: float = 0.2,
        seed: int = 0,
        ignore_index: int = 255,
        palette: Sequence[Sequence[int]] | None = None,
        label_map: Mapping[int, int] | None = None,
        transform: Callable | None = None,
        name: str | None = None,
    ):
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{root}: LabelMe folder not found")
        files = sorted(root.rglob("*.json"))
        if not files:
            raise DataError(f"{root}: no LabelMe *.json files found")
        docs = {f: _load(f) for f in files}
        skipped: Counter = Counter()
        labels: set[str] = set()
        for f, doc in docs.items():
            for k, shape in enumerate(doc["shapes"]):
                kind = _check_shape(f, k, shape)
                if kind in LINE_SHAPES:
                    skipped[kind] += 1
                elif shape["label"] != BACKGROUND_LABEL:
                    labels.add(shape["label"])
        if classes is None:
            classes = background_classes(sorted(labels), background)
            warnings.warn(
                f"{root}: no classes given; found labels {sorted(labels)}, using {classes} (pin this order "
                f"with classes: [...] in the data spec)",
                UserWarning,
                stacklevel=2,
            )
        classes = [str(c) for c in classes]
        index = {c: k for k, c in enumerate(classes)}
        if background is not None:
            index[BACKGROUND_LABEL] = 0
        self._embedded: dict[str, bytes] = {}
        entries = [self._entry(f, doc, index, ignore_index) for f, doc in docs.items()]
        if skipped:
            what = ", ".join(f"{n} {kind}" for kind, n in sorted(skipped.items()))
            warnings.warn(f"{root}: shapes without area not drawn: {what}", UserWarning, stacklevel=2)
        super().__init__(
            seeded_split(entries, split, val_fraction, seed),
            classes,
            palette,
            fill=0 if background is not None else ignore_index,
            order=order,
            ignore_index=ignore_index,
            label_map=label_map,
            transform=transform,
            name=name or root.name + (f"/{split}" if split else ""),
        )

    def _entry(self, f: Path, doc: dict, index: dict, ignore_index: int) -> ImageEntry:
        image_path = doc.get("imagePath")
        image = (f.parent / image_path) if image_path else None
        if image is None or not image.is_file():
            if not doc.get("imageData"):
                raise DataError(f"{f}: image {image or '(no imagePath)'} not found and no embedded imageData")
            image = f.with_suffix(".embedded.png") if image is None else image
            try:
                self._embedded[str(image)] = base64.b64decode(doc["imageData"], validate=True)
            except (binascii.Error, ValueError) as e:
                raise DataError(f"{f}: imageData is not valid base64 ({e})") from None
        shapes = []
        for k, shape in enumerate(doc["shapes"]):
            kind = shape.get("shape_type") or "polygon"
            if kind in LINE_SHAPES:
                continue
            if shape["label"] not in index:
                classes = [c for c in index if c != BACKGROUND_LABEL]
                near = nearest_names(str(shape["label"]), classes)
                raise DataError(
                    f"{f}: shape {k} has label {shape['label']!r}, which is not in classes {classes[:20]}"
                    + (f" (did you mean {' or '.join(near)}?)" if near else "")
                )
            pts = np.asarray(shape["points"], np.float64).reshape(-1, 2)
            geometry = (kind, pts, shape.get("mask"))
            shapes.append(Shape(index[shape["label"]], geometry, _area(kind, pts)))
        size = None
        if doc.get("imageHeight") and doc.get("imageWidth"):
            size = (int(doc["imageHeight"]), int(doc["imageWidth"]))
        return ImageEntry(str(image), shapes, size, ref=str(f))

    def image_bytes(self, i: int) -> bytes | None:
        return self._embedded.get(self.samples[i][0])

    def draw(self, label: np.ndarray, shape: Shape, value: int, i: int) -> None:
        from PIL import Image, ImageDraw

        kind, pts, mask_png = shape.geometry
        h, w = label.shape
        canvas = Image.new("1", (w, h), 0)
        draw = ImageDraw.Draw(canvas)
        xy = [tuple(p) for p in pts]
        if kind == "polygon":
            draw.polygon(xy=xy, outline=1, fill=1)
        elif kind == "rectangle":
            (x0, y0), (x1, y1) = pts[0], pts[1]
            draw.rectangle([(min(x0, x1), min(y0, y1)), (max(x0, x1), max(y0, y1))], outline=1, fill=1)
        elif kind == "circle":
            (cx, cy), (px, py) = pts[0], pts[1]
            r = float(np.hypot(cx - px, cy - py))
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=1, fill=1)
        else:  # mask: a PNG filling the box from the first point
            box = Image.open(io.BytesIO(base64.b64decode(mask_png))).convert("1")
            canvas.paste(box, (int(round(pts[0][0])), int(round(pts[0][1]))))
        label[np.asarray(canvas, bool)] = value


def _area(kind: str, pts: np.ndarray) -> float:
    if kind == "circle":
        return float(np.pi * np.sum((pts[0] - pts[1]) ** 2))
    if kind in ("rectangle", "mask"):
        return float(abs(np.prod(pts[1] - pts[0])))
    x, y = pts[:, 0], pts[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


__all__ = ["LabelMeDataset"]
