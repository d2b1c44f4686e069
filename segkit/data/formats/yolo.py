"""Ultralytics' segmentation format (``type: yolo``): ``data.yaml`` + images + one ``.txt`` per image.

As Ultralytics reads it (``ultralytics/data/utils.py``, https://docs.ultralytics.com/datasets/segment/):

* ``data.yaml`` holds ``names`` (a list, or ``{id: name}``), an optional ``path`` (the root; relative
  to the YAML file) and per split (``train`` / ``val`` / ``test``) a folder of images, a ``.txt``
  list of image paths, or a list of either, relative to ``path``;
* the label file of ``…/images/…/x.jpg`` is ``…/labels/…/x.txt`` (the last ``/images/`` replaced);
  no label file means an image without objects;
* each line is ``class x1 y1 x2 y2 …``: a polygon of at least 3 points in coordinates normalised to
  0–1 by the image's width and height; a line of 4 numbers is a box ``class cx cy w h``, drawn as
  a rectangle.

Polygons are drawn as Ultralytics draws them (``polygon2mask``: ``cv2.fillPoly`` on the points
scaled by the image size and truncated to integers). YOLO has no background class: segkit adds
``background`` as class 0 (uncovered pixels) and shifts YOLO's class *k* to *k* + 1;
``background: null`` keeps YOLO's ids and ignores uncovered pixels.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Mapping, Sequence

import cv2
import numpy as np

from segkit.data.formats.base import AnnotatedDataset, ImageEntry, Shape, background_classes
from segkit.data.io import IMAGE_SUFFIXES, DataError


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: data.yaml not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    if not isinstance(data, dict) or "names" not in data:
        raise DataError(f"{path}: not an Ultralytics data.yaml (no 'names')")
    return data


def _names(path: Path, names) -> list[str]:
    if isinstance(names, dict):
        try:
            ids = sorted(int(k) for k in names)
        except ValueError:
            raise DataError(f"{path}: 'names' keys must be class ids, got {list(names)}") from None
        if ids != list(range(len(ids))):
            raise DataError(f"{path}: 'names' ids must be 0..{len(ids) - 1}, got {ids}")
        return [str(names[k] if k in names else names[str(k)]) for k in ids]
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    raise DataError(f"{path}: 'names' must be a non-empty list or {{id: name}} mapping")


def _image_files(yaml_path: Path, root: Path, spec) -> list[Path]:
    """The images of one split entry (folder, list file, or a list of those), sorted per entry."""
    out: list[Path] = []
    for item in spec if isinstance(spec, list) else [spec]:
        p = Path(str(item))
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file() and p.suffix == ".txt":
            for line in p.read_text().splitlines():
                line = line.strip()
                if line:
                    f = Path(line)
                    out.append(f if f.is_absolute() else (root / f).resolve() if line.startswith(".") else root / f)
        else:
            raise DataError(f"{yaml_path}: split entry {item!r}: {p} is neither an image folder nor a .txt list")
    return out


def label_file(image: Path) -> Path:
    """Ultralytics' rule: ``…/images/…/x.jpg`` → ``…/labels/…/x.txt`` (the last ``images`` folder)."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return Path(sb.join(str(image).rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt")


def _parse_labels(file: Path, num_names: int, offset: int) -> list[Shape]:
    shapes = []
    for n, line in enumerate(file.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        where = f"{file}:{n}"
        try:
            cls, values = int(parts[0]), [float(v) for v in parts[1:]]
        except ValueError:
            raise DataError(f"{where}: expected 'class x1 y1 x2 y2 …' numbers, got {line.strip()[:80]!r}") from None
        if not 0 <= cls < num_names:
            raise DataError(f"{where}: class {cls} is not in data.yaml's names (0..{num_names - 1})")
        if len(values) % 2 or len(values) < 4:
            raise DataError(
                f"{where}: {len(values)} coordinates; a polygon needs an even count of at least 6 (x y pairs), a box 4"
            )
        bad = [v for v in values if not 0.0 <= v <= 1.0]
        if bad:
            raise DataError(f"{where}: coordinates must be normalised to 0..1, found {bad[0]}")
        pts = np.asarray(values, np.float64).reshape(-1, 2)
        if len(pts) == 2:  # a detection box cx cy w h
            (cx, cy), (w, h) = pts
            x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
            pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        area = 0.5 * abs(np.dot(pts[:, 0], np.roll(pts[:, 1], 1)) - np.dot(pts[:, 1], np.roll(pts[:, 0], 1)))
        shapes.append(Shape(cls + offset, pts, float(area)))
    return shapes


class YoloDataset(AnnotatedDataset):
    """One split of an Ultralytics segmentation data set, label maps drawn from its polygons.

    Args:
        root: the data set folder holding ``data.yaml`` (or give ``data_yaml``).
        data_yaml: the YAML file itself.
        split: ``train``, ``val`` or ``test`` — a key of the YAML.
        background: name of the added class 0, or ``None`` (YOLO ids kept, uncovered = ignore).
        order: ``"file"`` (later lines on top) or ``"area"`` (smaller on top).
        classes: other class names (default: ``background`` + the YAML's ``names``).
        ignore_index, palette, label_map, transform, name: as :class:`~segkit.data.datasets.SegDataset`.

    Raises:
        DataError: a missing ``data.yaml`` / split / image folder, or a bad label line (file:line:
            a class not in ``names``, an odd or too small coordinate count, values outside [0, 1]).
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        *,
        data_yaml: str | os.PathLike | None = None,
        split: str = "train",
        background: str | None = "background",
        order: str = "file",
        classes: Sequence[str] | None = None,
        ignore_index: int = 255,
        palette: Sequence[Sequence[int]] | None = None,
        label_map: Mapping[int, int] | None = None,
        transform: Callable | None = None,
        name: str | None = None,
    ):
        if data_yaml is None and root is None:
            raise DataError("type yolo: give root (the folder with data.yaml) or data_yaml")
        yaml_path = Path(data_yaml) if data_yaml is not None else Path(root) / "data.yaml"
        if data_yaml is None and not yaml_path.is_file() and (Path(root) / "data.yml").is_file():
            yaml_path = Path(root) / "data.yml"
        data = _read_yaml(yaml_path)
        names = _names(yaml_path, data["names"])
        base = Path(str(data.get("path") or yaml_path.parent))
        base = base if base.is_absolute() else (yaml_path.parent / base)
        if split not in data or data[split] in (None, ""):
            have = [k for k in ("train", "val", "test") if data.get(k)]
            raise DataError(f"{yaml_path}: no split {split!r}; it lists {have}")
        images = _image_files(yaml_path, base, data[split])
        if not images:
            raise DataError(f"{yaml_path}: split {split!r} ({data[split]}) holds no images")
        offset = 1 if background is not None else 0
        entries, unlabelled = [], 0
        for image in images:
            lf = label_file(image)
            shapes = _parse_labels(lf, len(names), offset) if lf.is_file() else []
            unlabelled += not lf.is_file()
            entries.append(ImageEntry(str(image), shapes, None, ref=str(lf)))
        if unlabelled:
            warnings.warn(
                f"{yaml_path} split {split!r}: {unlabelled} of {len(images)} images have no label file "
                f"(e.g. {label_file(images[0]) if not label_file(images[0]).is_file() else '…'}): taken as images "
                f"without objects, as Ultralytics does",
                UserWarning,
                stacklevel=2,
            )
        classes = list(classes) if classes is not None else background_classes(names, background)
        super().__init__(
            entries,
            classes,
            palette,
            fill=0 if background is not None else ignore_index,
            order=order,
            ignore_index=ignore_index,
            label_map=label_map,
            transform=transform,
            name=name or f"{base.name}/{split}",
        )
        self.split = split

    def draw(self, label: np.ndarray, shape: Shape, value: int, i: int) -> None:
        h, w = label.shape
        pts = (shape.geometry * np.array([w, h])).astype(np.int32)  # Ultralytics' polygon2mask
        cv2.fillPoly(label, [pts.reshape(-1, 1, 2)], color=int(value))


__all__ = ["YoloDataset", "label_file"]
