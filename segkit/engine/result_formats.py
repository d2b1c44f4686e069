"""A label map in the formats other tools read: per-class masks, COCO RLE, polygons, JSON, COCO results.

Torch-free (NumPy, OpenCV, ``pycocotools``), so :mod:`segkit.tools.onnx_predict` uses it too. Every
function takes an ``(H, W)`` integer label map (class indices ``[0, K)``; other values, such as an
ignore index, belong to no class) and the class names (index = class id); :class:`SegResult`'s
``masks()``, ``rle()``, ``polygons()`` and ``to_json()`` call them.

* **Masks**: ``{class name: bool (H, W)}`` for the classes present, in class-id order.
* **RLE**: COCO's compressed run-length encoding (``{"size": [H, W], "counts": str}``; column-major
  runs, LEB128-like ASCII), written by ``pycocotools.mask.encode`` — the reference implementation —
  so ``pycocotools.mask.decode`` gives the mask back exactly. ``counts`` is a ``str`` (the bytes
  pycocotools returns, decoded as ASCII), which ``json`` writes and pycocotools reads back.
* **Polygons**: the borders OpenCV's ``findContours`` traces (Suzuki & Abe 1985), with holes. Vertices
  are the centres of boundary pixels (``(x, y)``, x to the right, y down, integer pixels), as OpenCV
  writes them; a hole's ring runs through the foreground pixels around the hole. They are traced with
  the full nesting (``RETR_TREE``) rather than the two-level ``RETR_CCOMP`` so that an island inside a
  hole comes after the polygon whose hole holds it: drawing the polygons in order (``cv2.fillPoly``
  the exterior, ``cv2.fillPoly`` the holes with 0, ``cv2.polylines`` the holes' rings with 1) rebuilds
  the mask. ``tolerance`` (px) is the Douglas–Peucker distance of ``cv2.approxPolyDP``; 0 keeps every
  corner (``CHAIN_APPROX_SIMPLE`` still drops the points inside straight runs, which loses nothing).
* **COCO results**: the list that COCO-style evaluators and annotation tools import (``image_id``,
  ``category_id``, ``segmentation`` RLE, ``score``), one entry per class present in an image;
  :func:`coco_images` writes the matching ``images`` / ``categories`` so that
  ``COCO(images_file).loadRes(results_file)`` works without another ground truth.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from segkit.errors import UsageError

# COCO category ids count from 1 (0 is "no category" for many tools): category_id = class id + this
COCO_CATEGORY_OFFSET = 1
# hard labels carry no confidence: every COCO result gets this score (evaluators sort by it)
COCO_SCORE = 1.0
FORMATS = ("png", "json", "coco")


def _mask_utils():
    from segkit.utils import require

    return require("pycocotools.mask", "coco", "COCO RLE (SegResult.rle, segkit predict --format json/coco)")


def _label(label) -> np.ndarray:
    label = np.asarray(label)
    if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
        raise UsageError(f"a label map must be an integer (H, W) array, got {label.dtype} {label.shape}")
    return label


def present_classes(label, num_classes: int) -> list[int]:
    """Class ids in ``[0, num_classes)`` with at least one pixel in ``label``, ascending."""
    label = _label(label)
    counts = np.bincount(label[(label >= 0) & (label < num_classes)].ravel().astype(np.int64), minlength=num_classes)
    return [int(k) for k in np.flatnonzero(counts)]


def class_masks(label, classes: Sequence[str], all_classes: bool = False) -> dict[str, np.ndarray]:
    """``{class name: bool (H, W) mask}``: the classes present (``all_classes=True``: every class, empty masks
    included), in class-id order. Raises :class:`~segkit.errors.UsageError` for a label map that is not an
    integer ``(H, W)`` array."""
    label = _label(label)
    ids = range(len(classes)) if all_classes else present_classes(label, len(classes))
    return {classes[k]: label == k for k in ids}


def rle_encode(mask) -> dict:
    """COCO compressed RLE of one bool / 0-1 ``(H, W)`` mask: ``{"size": [H, W], "counts": str}``
    (``pycocotools.mask.encode``; ``pycocotools.mask.decode`` of it, ``counts`` as bytes or str, gives the
    mask back). Needs ``pycocotools`` (``pip install "segkit[coco]"``)."""
    return rle_encode_many([mask])[0]


def rle_encode_many(masks: Sequence[np.ndarray]) -> list[dict]:
    """:func:`rle_encode` of several ``(H, W)`` masks of one size in one ``pycocotools`` call."""
    mask_utils = _mask_utils()
    if not len(masks):
        return []
    stack = np.asfortranarray(np.stack([np.asarray(m, dtype=bool) for m in masks], axis=-1).astype(np.uint8))
    with warnings.catch_warnings():  # pycocotools 2.0 under NumPy 2: a DeprecationWarning per call
        warnings.simplefilter("ignore", DeprecationWarning)
        rles = mask_utils.encode(stack)
    return [{"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles]


def rle_decode(rle: Mapping) -> np.ndarray:
    """bool ``(H, W)`` mask of a COCO RLE (compressed, ``counts`` str or bytes) — ``pycocotools.mask.decode``."""
    mask_utils = _mask_utils()
    counts = rle["counts"]
    rle = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def class_rles(label, classes: Sequence[str]) -> dict[str, dict]:
    """``{class name: COCO RLE}`` for the classes present in ``label``, in class-id order."""
    masks = class_masks(label, classes)
    return dict(zip(masks, rle_encode_many(list(masks.values()))))


def mask_polygons(mask, tolerance: float = 1.0, min_points: int = 3) -> list[dict]:
    """Polygons with holes of one ``(H, W)`` mask (module doc: conventions and how to draw them back).

    Args:
        mask: bool / 0-1 ``(H, W)``.
        tolerance: Douglas–Peucker simplification distance in pixels (``cv2.approxPolyDP``), >= 0; 0 keeps
            every corner. The default 1 px drops staircase vertices of diagonal edges while keeping every
            point of the outline within a pixel of the mask's border.
        min_points: rings with fewer vertices after simplification are left out (default 3: one- and
            two-pixel-wide slivers trace to a point or a segment, which polygon formats do not take; 1 keeps
            them, and ``cv2.fillPoly`` draws them).

    Returns a list, in drawing order (outer polygons before the islands in their holes), of
    ``{"exterior": int32 (N, 2) [x, y], "holes": [int32 (M, 2), ...]}``. Raises
    :class:`~segkit.errors.UsageError` for a negative tolerance or a mask that is not 2-D.
    """
    import cv2

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise UsageError(f"a mask must be (H, W), got shape {mask.shape}")
    if not tolerance >= 0:
        raise UsageError(f"tolerance must be >= 0 pixels, got {tolerance!r}")
    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    parent = hierarchy[0][:, 3]
    depth = np.zeros(len(contours), np.int64)
    for i in range(len(contours)):
        p = parent[i]
        while p != -1:
            depth[i] += 1
            p = parent[p]

    def ring(c) -> np.ndarray:
        if tolerance > 0:
            c = cv2.approxPolyDP(c, float(tolerance), True)
        return c.reshape(-1, 2).astype(np.int32)

    polys = []
    for i in sorted(range(len(contours)), key=lambda j: depth[j]):
        if depth[i] % 2:
            continue  # a hole: listed with its polygon
        ext = ring(contours[i])
        if len(ext) < min_points:
            continue
        holes = [ring(contours[j]) for j in np.flatnonzero(parent == i)]
        polys.append({"exterior": ext, "holes": [h for h in holes if len(h) >= min_points]})
    return polys


def class_polygons(label, classes: Sequence[str], tolerance: float = 1.0, min_points: int = 3) -> dict[str, list]:
    """``{class name: mask_polygons(mask)}`` for the classes present, in class-id order."""
    return {
        name: mask_polygons(m, tolerance=tolerance, min_points=min_points)
        for name, m in class_masks(label, classes).items()
    }


def result_dict(
    label,
    classes: Sequence[str],
    *,
    path: str | None = None,
    name: str | None = None,
    polygons: bool = False,
    tolerance: float = 1.0,
) -> dict:
    """The JSON-ready description of one segmentation (what :meth:`SegResult.to_json` writes)::

        {"file": path or null, "name": stem, "height": H, "width": W, "num_classes": K,
         "classes": [{"id": k, "name": ..., "area": pixels, "fraction": 0-1, "bbox": [x, y, w, h],
                      "rle": {"size": [H, W], "counts": str}, "polygons": [...]}, ...]}

    ``classes`` lists the classes present, in class-id order; ``bbox`` in pixels (COCO's ``[x, y, w, h]``,
    from the mask); ``polygons`` (only with ``polygons=True``) as :func:`mask_polygons` with lists of
    ``[x, y]`` pairs.
    """
    label = _label(label)
    h, w = label.shape
    ids = present_classes(label, len(classes))
    masks = [label == k for k in ids]
    entries = []
    for k, m, rle in zip(ids, masks, rle_encode_many(masks)):
        ys, xs = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
        area = int(m.sum())
        entry = {
            "id": k,
            "name": classes[k],
            "area": area,
            "fraction": area / float(h * w),
            "bbox": [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)],
            "rle": rle,
        }
        if polygons:
            entry["polygons"] = [
                {"exterior": p["exterior"].tolist(), "holes": [hole.tolist() for hole in p["holes"]]}
                for p in mask_polygons(m, tolerance=tolerance)
            ]
        entries.append(entry)
    return {
        "file": path,
        "name": name,
        "height": int(h),
        "width": int(w),
        "num_classes": len(classes),
        "classes": entries,
    }


def coco_annotations(
    label,
    image_id,
    *,
    num_classes: int,
    category_ids: Mapping[int, int] | None = None,
    score: float = COCO_SCORE,
) -> list[dict]:
    """COCO results entries of one image: ``{"image_id", "category_id", "segmentation": RLE, "score"}`` per
    class present. ``category_ids`` maps class ids to category ids (default ``class id +``
    :data:`COCO_CATEGORY_OFFSET`); classes it leaves out are not written."""
    label = _label(label)
    ids = present_classes(label, num_classes)
    if category_ids is not None:
        ids = [k for k in ids if k in category_ids]
    rles = rle_encode_many([label == k for k in ids])
    cat = (lambda k: category_ids[k]) if category_ids is not None else (lambda k: k + COCO_CATEGORY_OFFSET)
    return [
        {"image_id": image_id, "category_id": int(cat(k)), "segmentation": rle, "score": float(score)}
        for k, rle in zip(ids, rles)
    ]


def coco_images(images: Iterable[tuple], classes: Sequence[str]) -> dict:
    """A COCO file without annotations for results written with file-name image ids: ``images`` (``id`` = the
    file name, ``file_name``, ``height``, ``width``) from ``(file_name, height, width)`` tuples and
    ``categories`` (``id`` = class id + :data:`COCO_CATEGORY_OFFSET`, ``name``)."""
    return {
        "info": {"description": "segkit predict --format coco: the images and categories of coco_results.json"},
        "images": [{"id": f, "file_name": f, "height": int(h), "width": int(w)} for f, h, w in images],
        "annotations": [],
        "categories": [{"id": k + COCO_CATEGORY_OFFSET, "name": c} for k, c in enumerate(classes)],
    }


def read_coco_gt(path: str | Path, classes: Sequence[str]) -> tuple[dict[str, object], dict[int, int]]:
    """``({file name: image id}, {class id: category id})`` from a COCO ground-truth file: images matched by
    ``file_name`` (its base name), categories by name. Raises :class:`~segkit.errors.DataError` naming the
    file for one that is not COCO JSON or shares no category name with ``classes``."""
    from segkit.errors import DataError

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: COCO ground-truth file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read the COCO ground-truth file ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: not a COCO file (no 'images' list)")
    images = {Path(str(im["file_name"])).name: im["id"] for im in data["images"] if "file_name" in im}
    by_name = {str(c.get("name")): c["id"] for c in data.get("categories") or [] if "id" in c}
    cats = {k: by_name[c] for k, c in enumerate(classes) if c in by_name}
    if not cats:
        raise DataError(
            f"{path}: none of the model's classes ({', '.join(classes[:5])}, ...) is a category of this file "
            f"({', '.join(list(by_name)[:5]) or 'none'})"
        )
    return images, cats


# how an existing output file is reported by the Python API (segkit.utils.claim_output): the keyword that moves it
# aside, and the other way out
API_OUTPUT_POLICY = {
    "what": "",
    "kind": "file",
    "flag": "overwrite=True",
    "elsewhere": "save under another stem or directory",
}


class ResultWriter:
    """Writes the results of ``segkit predict`` over image files in one or more :data:`FORMATS`.

    * ``png``: ``<stem>_label.png`` (palette PNG of class indices) and ``<stem>_overlay.png`` (overlay + legend);
    * ``json``: ``<stem>.json`` (:func:`result_dict`; with ``polygons``, the polygons too);
    * ``coco``: at the end, ``coco_results.json`` (:func:`coco_annotations` of every image) and, without
      ``coco_gt``, ``coco_images.json`` (:func:`coco_images`). ``image_id`` is the image's file name
      (COCO files take any JSON value as an id; the file name is what the user has), or with ``coco_gt``
      the id of the ground truth's image of that file name, and its category ids (matched by class name).

    Every output name is claimed (:func:`segkit.utils.claim_output`) by :meth:`claim` before the first image is
    segmented. Raises :class:`~segkit.errors.UsageError` for an unknown format and
    :class:`~segkit.errors.DataError` for an image the ``coco_gt`` file does not list.
    """

    def __init__(
        self,
        out_dir: str | Path,
        formats: Sequence[str],
        classes: Sequence[str],
        palette: Sequence[Sequence[int]],
        *,
        coco_gt: str | Path | None = None,
        polygons: bool = False,
        tolerance: float = 1.0,
        alpha: float = 0.5,
        overwrite: bool = False,
        policy: Mapping | None = None,
        mask_values: Sequence[int] | None = None,
    ):
        formats = list(dict.fromkeys(formats))
        bad = [f for f in formats if f not in FORMATS]
        if bad or not formats:
            raise UsageError(f"result format(s) {bad or formats}: choose from {', '.join(FORMATS)}")
        if coco_gt is not None and "coco" not in formats:
            raise UsageError("a COCO ground-truth file is for --format coco (image and category ids)")
        if "json" in formats or "coco" in formats:
            _mask_utils()  # a missing pycocotools is reported before any work
        self.out_dir, self.formats = Path(out_dir), formats
        self.classes, self.palette = list(classes), [list(c) for c in palette]
        self.polygons, self.tolerance, self.alpha, self.overwrite = polygons, tolerance, alpha, overwrite
        self.policy = dict(policy or API_OUTPUT_POLICY)
        self.mask_values = mask_values  # a binary model: its label PNGs hold 0/255 or 0/1 as its training data
        self.gt_images, self.category_ids = (None, None)
        if coco_gt is not None:
            self.coco_gt = str(coco_gt)
            self.gt_images, self.category_ids = read_coco_gt(coco_gt, self.classes)
        self.annotations: list[dict] = []
        self.images: list[tuple] = []

    def paths(self, stem: str) -> list[Path]:
        """The per-image files of ``stem``."""
        out = []
        if "png" in self.formats:
            out += [self.out_dir / f"{stem}_label.png", self.out_dir / f"{stem}_overlay.png"]
        if "json" in self.formats:
            out.append(self.out_dir / f"{stem}.json")
        return out

    def final_paths(self) -> list[Path]:
        """The files written once at the end (``coco``)."""
        if "coco" not in self.formats:
            return []
        return [self.out_dir / "coco_results.json"] + (
            [] if self.gt_images is not None else [self.out_dir / "coco_images.json"]
        )

    def claim(self, stems: Sequence[str], files: Sequence[str | Path] = ()) -> None:
        """Claim every output before any work; with a ground truth, check that it lists every file."""
        from segkit.errors import DataError
        from segkit.utils import claim_output

        for stem in stems:
            for p in self.paths(stem):
                claim_output(p, overwrite=self.overwrite, **self.policy)
        for p in self.final_paths():
            claim_output(p, overwrite=self.overwrite, **self.policy)
        if self.gt_images is not None:
            missing = [Path(f).name for f in files if Path(f).name not in self.gt_images]
            if missing:
                raise DataError(
                    f"{self.coco_gt}: no image with file_name {missing[0]!r}"
                    + (f" (nor {len(missing) - 1} other input(s))" if len(missing) > 1 else "")
                )

    def add(self, stem: str, label: np.ndarray, image: np.ndarray, path: str | Path | None = None) -> list[Path]:
        """Write the per-image files of one result (label ``(H, W)`` class indices, ``image`` ``(H, W, 3)``
        uint8 RGB) and keep its COCO entries; returns the files written."""
        from segkit.utils import atomic_write_bytes

        from .visualize import label_png, overlay_with_legend, png_bytes

        written = []
        if "png" in self.formats:
            label_path, overlay_path = self.out_dir / f"{stem}_label.png", self.out_dir / f"{stem}_overlay.png"
            atomic_write_bytes(label_path, png_bytes(label_png(label, self.palette, self.mask_values)))
            vis = overlay_with_legend(
                image, label.astype(np.int64), self.palette, self.classes, alpha=self.alpha, ignore_index=-1
            )
            atomic_write_bytes(overlay_path, png_bytes(vis))
            written += [label_path, overlay_path]
        if "json" in self.formats:
            doc = result_dict(
                label,
                self.classes,
                path=str(path) if path else None,
                name=stem,
                polygons=self.polygons,
                tolerance=self.tolerance,
            )
            json_path = self.out_dir / f"{stem}.json"
            atomic_write_bytes(json_path, (json.dumps(doc) + "\n").encode())
            written.append(json_path)
        if "coco" in self.formats:
            file_name = Path(path).name if path else f"{stem}.png"
            image_id = self.gt_images[file_name] if self.gt_images is not None else file_name
            self.annotations += coco_annotations(
                label, image_id, num_classes=len(self.classes), category_ids=self.category_ids
            )
            self.images.append((file_name, *label.shape))
        return written

    def finish(self) -> list[Path]:
        """Write the COCO files (``coco``); returns them."""
        from segkit.utils import atomic_write_bytes

        if "coco" not in self.formats:
            return []
        self.out_dir.mkdir(parents=True, exist_ok=True)
        paths = self.final_paths()
        atomic_write_bytes(paths[0], (json.dumps(self.annotations) + "\n").encode())
        if len(paths) > 1:
            atomic_write_bytes(paths[1], (json.dumps(coco_images(self.images, self.classes)) + "\n").encode())
        return paths


__all__ = [
    "FORMATS",
    "COCO_CATEGORY_OFFSET",
    "COCO_SCORE",
    "ResultWriter",
    "class_masks",
    "class_polygons",
    "class_rles",
    "coco_annotations",
    "coco_images",
    "mask_polygons",
    "present_classes",
    "read_coco_gt",
    "result_dict",
    "rle_decode",
    "rle_encode",
    "rle_encode_many",
]
