"""Label maps written out as the annotation tools export them (COCO polygons / RLE, YOLO, LabelMe),
for the round-trip tests of ``segkit.data.formats`` and ``benchmarks/format_roundtrip.py``.

Regions are the connected components of each class; a polygon is the outer contour of one
(OpenCV ``findContours`` of the region at twice the resolution, so that the polygon runs a quarter
pixel outside the boundary pixels' centres and a rasteriser keeps them; coordinates are continuous,
pixel (i, j) covering [j, j+1) x [i, i+1)). Holes are other regions, which come later in the file
because the annotations are written largest first: read back with ``order: area`` they are drawn
on top, so the hierarchy is honoured."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import cv2
import numpy as np


def regions(label: np.ndarray, ignore_index: int = 255):
    """``(class_id, polygon (N, 2) float x/y, mask)`` of every connected component, largest first."""
    out = []
    for c in np.unique(label):
        if c == ignore_index:
            continue
        n, comp = cv2.connectedComponents((label == c).astype(np.uint8), connectivity=8)
        for k in range(1, n):
            mask = comp == k
            twice = np.kron(mask.astype(np.uint8), np.ones((2, 2), np.uint8))
            contours, _ = cv2.findContours(twice, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            contour = max(contours, key=len).reshape(-1, 2).astype(np.float64)
            polygon = (contour + 0.5) / 2
            if len(polygon) < 3:  # a one-pixel region: its square
                x, y = np.floor(polygon[0])
                polygon = np.array([[x, y], [x + 1, y], [x + 1, y + 1], [x, y + 1]], np.float64)
            out.append((int(c), polygon, mask))
    out.sort(key=lambda r: -int(r[2].sum()))
    return out


def to_coco(pairs, classes, out: Path, rle: bool = False, background: int | None = 0) -> Path:
    """``pairs``: ``[(image_path, label uint8 (H, W))]``. Writes ``out/images/*`` and
    ``out/annotations.json`` (category id = class id + 1, background class not exported)."""
    from pycocotools import mask as mask_utils

    (out / "images").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(classes) if k != background]
    for iid, (image_path, label) in enumerate(pairs, start=1):
        name = Path(image_path).name
        shutil.copy(image_path, out / "images" / name)
        h, w = label.shape
        images.append({"id": iid, "file_name": name, "width": w, "height": h})
        for c, contour, mask in regions(label):
            if c == background:
                continue
            ann = {"id": len(anns) + 1, "image_id": iid, "category_id": c + 1, "iscrowd": 0}
            if rle:
                enc = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                ann["segmentation"] = {"size": [h, w], "counts": enc["counts"].decode()}
                ann["area"] = float(mask.sum())
            else:
                ann["segmentation"] = [contour.ravel().round(3).tolist()]
                ann["area"] = float(mask.sum())
            anns.append(ann)
    path = out / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def to_yolo(pairs, classes, out: Path, split: str = "train", background: int | None = 0) -> Path:
    """Ultralytics layout: ``out/images/<split>/*``, ``out/labels/<split>/*.txt``, ``out/data.yaml``
    (YOLO class = class id − 1 when the background class 0 is not exported)."""
    (out / "images" / split).mkdir(parents=True, exist_ok=True)
    (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    shift = 1 if background == 0 else 0
    for image_path, label in pairs:
        name = Path(image_path).name
        shutil.copy(image_path, out / "images" / split / name)
        h, w = label.shape
        lines = []
        for c, contour, _ in regions(label):
            if c == background:
                continue
            pts = contour / np.array([w, h])
            lines.append(f"{c - shift} " + " ".join(f"{v:.6f}" for v in pts.clip(0, 1).ravel()))
        (out / "labels" / split / f"{Path(name).stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    names = [n for k, n in enumerate(classes) if k != background]
    (out / "data.yaml").write_text(
        json.dumps({"path": ".", split: f"images/{split}", "names": {k: n for k, n in enumerate(names)}})
    )
    return out / "data.yaml"


def to_labelme(pairs, classes, out: Path, embed: bool = False, background: int | None = 0) -> Path:
    """One LabelMe ``*.json`` per image in ``out`` (images copied beside, or embedded as ``imageData``)."""
    out.mkdir(parents=True, exist_ok=True)
    for image_path, label in pairs:
        name = Path(image_path).name
        h, w = label.shape
        shapes = []
        for c, contour, _ in regions(label):
            if c == background:
                continue
            pts = contour  # LabelMe points: continuous image coordinates, as the polygon tool places them
            shapes.append({"label": classes[c], "points": pts.tolist(), "shape_type": "polygon", "group_id": None})
        doc = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imageHeight": h, "imageWidth": w}
        if embed:
            doc["imagePath"] = name
            doc["imageData"] = base64.b64encode(Path(image_path).read_bytes()).decode()
        else:
            shutil.copy(image_path, out / name)
            doc["imagePath"] = name
            doc["imageData"] = None
        (out / f"{Path(name).stem}.json").write_text(json.dumps(doc))
    return out


def to_cvat(pairs, classes, palette, out: Path, split: str = "default") -> Path:
    """CVAT "Segmentation mask 1.1": ``labelmap.txt``, ``JPEGImages/``, colour masks in
    ``SegmentationClass/`` (ignored pixels black, as CVAT leaves unannotated pixels: so the class
    list starts with ``background`` 0,0,0), ``ImageSets/Segmentation/<split>.txt``."""
    from PIL import Image

    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (out / d).mkdir(parents=True, exist_ok=True)
    names = ["background", *classes]
    colours = [[0, 0, 0], *palette]
    (out / "labelmap.txt").write_text(
        "# label:color_rgb:parts:actions\n"
        + "".join(f"{n}:{','.join(map(str, c))}::\n" for n, c in zip(names, colours))
    )
    table = np.array(colours + [[0, 0, 0]] * (256 - len(colours)), np.uint8)
    stems = []
    for image_path, label in pairs:
        stem = Path(image_path).stem
        shutil.copy(image_path, out / "JPEGImages" / Path(image_path).name)
        shifted = np.where(label == 255, 0, label.astype(np.int64) + 1)
        Image.fromarray(table[shifted]).save(out / "SegmentationClass" / f"{stem}.png")
        stems.append(stem)
    (out / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(stems) + "\n")
    return out
