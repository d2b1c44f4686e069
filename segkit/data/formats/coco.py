"""COCO JSON annotations (``type: coco``): what CVAT, Label Studio, Roboflow and most tools export.

The file (https://cocodataset.org/#format-data) has ``images`` (``id``, ``file_name``, ``width``,
``height``), ``categories`` (``id``, ``name``) and ``annotations`` (``image_id``, ``category_id``,
``segmentation``, ``iscrowd``, ``area``). A ``segmentation`` is a list of polygons ``[x1, y1, x2,
y2, …]`` in pixel coordinates, or a run-length encoding ``{"size": [H, W], "counts": …}``
(uncompressed list, crowd regions, or compressed string). Both are decoded with ``pycocotools``
(``frPyObjects`` / ``decode``), the reference implementation, so polygons are rasterised exactly
as COCO's own evaluation does.

Classes: by default ``background`` (class 0, pixels no annotation covers) then the categories in
the order of their ids; ``classes`` gives another list and order, ``category_map`` maps category
names or ids to those classes (several to one merges them; ``null`` drops one). Pixels of a
dropped or unmapped category are ``ignore_index`` — not background, since something is there.
``background: null``: uncovered pixels are ignored too. Crowd regions (``iscrowd: 1``) are
ignored by default (``crowd: class`` draws them as their category).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from segkit.data.datasets import seeded_split
from segkit.data.formats.base import AnnotatedDataset, ImageEntry, Shape, background_classes
from segkit.data.io import DataError


def _coco_mask():
    from segkit.utils import require

    return require("pycocotools.mask", "coco", "the coco dataset type")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: COCO annotation file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the COCO annotation file ({e})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: not a COCO annotation file (no 'images' list)")
    for key in ("annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: not a COCO annotation file (no {key!r} list)")
    return data


def _category_classes(
    path: Path, categories: list, classes, category_map, background
) -> tuple[list[str], dict[int, int]]:
    """The class list and ``{category id: class id (ignore for dropped)}``."""
    cats = {}
    for c in categories:
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise DataError(f"{path}: a category without 'id' and 'name': {c!r}")
        cid, cname = int(c["id"]), str(c["name"])
        if cats.get(cid, cname) != cname:
            raise DataError(f"{path}: category id {cid} is given twice, as {cats[cid]!r} and {cname!r}")
        cats[cid] = cname
    if not cats and classes is None:
        raise DataError(f"{path}: 'categories' is empty: no class to segment besides the background")
    names = [cats[k] for k in sorted(cats)]
    classes = list(classes) if classes is not None else background_classes(names, background)
    if background is not None and classes and classes[0] != background and background in classes:
        raise DataError(f"{path}: background class {background!r} must be class 0 of classes {classes}")
    index = {name: k for k, name in enumerate(classes)}
    mapping = {}
    for cid, cname in cats.items():
        target = cname
        if category_map is not None:
            for key in (cname, cid, str(cid)):
                if key in category_map:
                    target = category_map[key]
                    break
        if target is None:
            mapping[cid] = None  # dropped
        elif str(target) in index:
            mapping[cid] = index[str(target)]
        elif category_map is not None and (cname in category_map or cid in category_map or str(cid) in category_map):
            raise DataError(f"{path}: category_map sends category {cname!r} to {target!r}, which is not in {classes}")
        else:
            mapping[cid] = None  # not in the given classes: dropped
    return classes, mapping


class CocoDataset(AnnotatedDataset):
    """Images of a COCO JSON file with label maps drawn from its annotations (module docstring).

    Args:
        annotations: the COCO ``.json`` file.
        images: the folder ``file_name`` is relative to.
        classes: class names in class-id order (default: ``background`` + the categories by id).
        category_map: ``{category name or id: class name | None}``: merge or drop categories.
        background: name of class 0 for uncovered pixels, or ``None`` to ignore them.
        crowd: ``"ignore"`` (default) or ``"class"``.
        order: ``"file"`` (later annotations on top) or ``"area"`` (smaller on top).
        split: ``None`` / ``"all"``, or ``"train"`` / ``"val"`` of a seeded random split
            (:func:`~segkit.data.datasets.seeded_split`; COCO exports usually come one file per split).
        ignore_index, palette, label_map, transform, name: as :class:`~segkit.data.datasets.SegDataset`.

    Raises:
        DataError: an unreadable file, an image id with no file, an annotation of an unknown image
            or category, a polygon of fewer than 3 points or an odd coordinate count, an RLE whose
            size is not its image's — each naming the JSON file and the annotation / image id.
    """

    def __init__(
        self,
        annotations: str | os.PathLike,
        images: str | os.PathLike,
        *,
        classes: Sequence[str] | None = None,
        category_map: Mapping | None = None,
        background: str | None = "background",
        crowd: str = "ignore",
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
        path, images = Path(annotations), Path(images)
        if crowd not in ("ignore", "class"):
            raise DataError(f"{path}: crowd must be 'ignore' or 'class', got {crowd!r}")
        if not images.is_dir():
            raise DataError(f"{images}: images folder not found (of {path})")
        data = _read_json(path)
        classes, mapping = _category_classes(path, data["categories"], classes, category_map, background)
        entries = _entries(path, images, data, mapping, ignore_index, crowd)
        entries = seeded_split(entries, split, val_fraction, seed)
        fill = 0 if background is not None else ignore_index
        super().__init__(
            entries,
            classes,
            palette,
            fill=fill,
            order=order,
            ignore_index=ignore_index,
            label_map=label_map,
            transform=transform,
            name=name or f"{path.stem}" + (f"/{split}" if split else ""),
        )
        self.annotations_file = str(path)

    def draw(self, label: np.ndarray, shape: Shape, value: int, i: int) -> None:
        mask_utils = _coco_mask()
        h, w = label.shape
        seg = shape.geometry
        if isinstance(seg, list):  # polygons: one RLE per polygon, merged
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
        elif isinstance(seg.get("counts"), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(seg, h, w)
        else:
            rle = dict(seg, counts=seg["counts"].encode() if isinstance(seg["counts"], str) else seg["counts"])
        with warnings.catch_warnings():  # pycocotools 2.0 under NumPy 2: a DeprecationWarning per call
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                mask = mask_utils.decode(rle)
            except (ValueError, TypeError) as e:  # e.g. counts that are not a COCO RLE string
                raise DataError(f"{self.entries[i].ref}: pycocotools cannot decode an RLE segmentation ({e})") from None
        if mask.shape[:2] != (h, w):
            raise DataError(f"{self.entries[i].ref}: a mask of {mask.shape[1]}x{mask.shape[0]} on a {w}x{h} image")
        label[mask.astype(bool)] = value


def _entries(path: Path, images: Path, data: dict, mapping: dict, ignore_index: int, crowd: str) -> list[ImageEntry]:
    """One :class:`ImageEntry` per image of the file (in file order), its annotations checked."""
    entries: dict[int, ImageEntry] = {}
    for img in data["images"]:
        try:
            iid, file_name = int(img["id"]), str(img["file_name"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path}: an image entry without 'id' / 'file_name': {img!r}") from None
        file = images / file_name
        if not file.is_file():
            raise DataError(f"{path}: image id {iid}: {file} not found")
        size = (int(img["height"]), int(img["width"])) if "height" in img and "width" in img else None
        if iid in entries:
            raise DataError(f"{path}: image id {iid} is given twice ({entries[iid].path}, {file})")
        entries[iid] = ImageEntry(str(file), [], size, ref=f"{path} image {iid} ({file_name})")
    for ann in data["annotations"]:
        shape = _shape(path, ann, entries, mapping, ignore_index, crowd)
        if shape is not None:
            entries[int(ann["image_id"])].shapes.append(shape)
    return list(entries.values())


def _shape(path: Path, ann: dict, entries: dict, mapping: dict, ignore_index: int, crowd: str) -> Shape | None:
    aid = ann.get("id", "?")
    where = f"{path}: annotation {aid}"
    if ann.get("image_id") not in entries and int(ann.get("image_id", -1)) not in entries:
        raise DataError(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
    cid = ann.get("category_id")
    if cid is None or int(cid) not in mapping:
        raise DataError(f"{where}: category_id {cid!r} is not in 'categories' ({sorted(mapping)})")
    seg = ann.get("segmentation")
    entry = entries[int(ann["image_id"])]
    if isinstance(seg, list):
        if not seg:
            return None  # a box-only (detection) annotation: nothing to draw
        for poly in seg:
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                n = len(poly) if isinstance(poly, list) else "?"
                raise DataError(f"{where}: a polygon of {n} coordinates; polygons need at least 3 points (x, y pairs)")
            bad = [v for v in poly if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)]
            if bad:
                raise DataError(f"{where}: polygon coordinates must be finite numbers, got {bad[0]!r}")
    elif isinstance(seg, dict):
        size = seg.get("size")
        if "counts" not in seg or not isinstance(size, list) or len(size) != 2:
            raise DataError(f"{where}: an RLE segmentation needs 'size' [H, W] and 'counts'")
        if entry.size is not None and tuple(int(v) for v in size) != entry.size:
            raise DataError(
                f"{where}: RLE of size {size[0]}x{size[1]} (HxW) on image {ann['image_id']} of "
                f"{entry.size[0]}x{entry.size[1]}"
            )
    else:
        raise DataError(f"{where}: 'segmentation' must be a list of polygons or an RLE dict, got {type(seg).__name__}")
    is_crowd = bool(ann.get("iscrowd", 0)) and crowd == "ignore"
    class_id = mapping[int(cid)]
    return Shape(
        ignore_index if class_id is None else class_id, seg, float(ann.get("area", 0.0) or 0.0), crowd=is_crowd
    )


__all__ = ["CocoDataset"]
