"""Segmentation datasets: the shared split layout, generic folders and the standard benchmarks.

Every dataset is a :class:`SegDataset`: a list of ``(image_path, label_path | None)`` pairs plus
the label specification (class names, palette, ``ignore_index``, ``reduce_zero_label``, optional
``label_map``). The benchmark classes reproduce the on-disk layouts and label conventions of the
reference (mmseg) data preparation (``tools/convert_datasets/*``; docs/datasets.md):

* :class:`ADE20K`: ``images/{training,validation}/*.jpg`` ↔ ``annotations/…/*.png``; reduce_zero_label.
* :class:`Cityscapes`: ``leftImg8bit/{split}/<city>/*_leftImg8bit.png`` ↔
  ``gtFine/{split}/<city>/*_gtFine_labelTrainIds.png``; 19 train ids.
* :class:`PascalVOC`: ``JPEGImages/*.jpg`` ↔ ``SegmentationClass/*.png`` (+ ``SegmentationClassAug``
  for ``trainaug``), lists in ``ImageSets/Segmentation``; 21 classes incl. background.
* :class:`PascalContext`: ``JPEGImages`` ↔ ``SegmentationClassContext``, lists in
  ``ImageSets/SegmentationContext``; 59 classes via reduce_zero_label (or 60).
* :class:`COCOStuff164k`: ``images/{train2017,val2017}/*.jpg`` ↔ ``annotations/…/*_labelTrainIds.png``; 0-170.
* :class:`COCOStuff10k`: ``images/{train2014,test2014}/*.jpg`` ↔ ``annotations/…/*_labelTrainIds.png``;
  reduce_zero_label.
* :class:`ISAID`: ``img_dir/{train,val}/*.png`` ↔ ``ann_dir/…/*_instance_color_RGB.png``; 16 classes
  incl. background.

Construction scans directories or reads split lists but does not open any file; use
:func:`segkit.data.checks.check_dataset` to validate every file before a long training run.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
import warnings
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import cv2
import numpy as np

from segkit.data import meta
from segkit.data.io import IMAGE_SUFFIXES, DataError, quiet_conversions, read_bands, read_image, read_label
from segkit.errors import UsageError

__all__ = [
    "SegDataset",
    "SplitDataset",
    "FolderDataset",
    "ADE20K",
    "Cityscapes",
    "PascalVOC",
    "PascalContext",
    "COCOStuff164k",
    "COCOStuff10k",
    "ISAID",
    "make_label_lut",
]

Sample = tuple[str, "str | None"]


def make_label_lut(reduce_zero_label: bool = False, label_map: Mapping[int, int] | None = None) -> np.ndarray | None:
    """The 256-entry ``uint8`` lookup table raw label value -> train id, or None for identity.

    Reference order (mmseg ``LoadAnnotations``): ``label_map`` first (old -> new; values not in
    the map are unchanged), then ``reduce_zero_label`` (0 -> 255, k -> k-1 for 1..254, 255 stays 255).
    """
    if not reduce_zero_label and not label_map:
        return None
    lut = np.arange(256, dtype=np.int64)
    for old, new in (label_map or {}).items():
        if not (0 <= int(old) <= 255 and 0 <= int(new) <= 255):
            raise DataError(f"label_map entries must map 0..255 to 0..255, got {old} -> {new}")
        lut[int(old)] = int(new)
    if reduce_zero_label:
        lut = np.where(lut == 0, 255, np.where(lut == 255, 255, lut - 1))
    return lut.astype(np.uint8)


class SegDataset:
    """A list of (image, label) files with its label specification.

    Args:
        samples: ``(image_path, label_path | None)`` pairs (None: unlabelled image).
        classes: class names, index = train id.
        palette: one RGB triple (0-255) per class; default: a generated palette.
        ignore_index: label value ignored by loss and metrics (255).
        reduce_zero_label: 0 -> ignore, k -> k-1 (ADE20K, COCO-Stuff 10k, Pascal Context 59).
        label_map: optional ``{raw value: new value}`` applied before ``reduce_zero_label``.
        transform: callable ``(image, label) -> dict`` (see :mod:`segkit.data.transforms`).
        name: shown in reports and errors.
        label_colours: for datasets with RGB colour masks by design (iSAID): colour table used to
            convert 3-channel masks (index = raw id); ``unknown_colour`` handles other colours.

    ``dataset[i]`` is a dict ``{"image": uint8 (H, W, 3) RGB, "label": uint8 (H, W),
    "image_path": str, "label_path": str}`` (no ``"label"`` and ``label_path == ""`` for an
    unlabelled sample); with a transform, its output dict updates that dict, so ``"image"`` /
    ``"label"`` become tensors.
    """

    def __init__(
        self,
        samples: Iterable[Sample],
        classes: Sequence[str],
        palette: Sequence[Sequence[int]] | None = None,
        *,
        ignore_index: int = 255,
        reduce_zero_label: bool = False,
        label_map: Mapping[int, int] | None = None,
        transform: Callable | None = None,
        name: str = "custom",
        label_colours: Sequence[Sequence[int]] | None = None,
        unknown_colour: str | int = "error",
    ):
        self.samples: list[Sample] = [(str(i), None if l is None else str(l)) for i, l in samples]
        self.classes = [str(c) for c in classes]
        if not self.classes:
            raise DataError(f"{name}: no class names given")
        if palette is None:
            palette = meta.default_palette(len(self.classes))
        self.palette = [[int(v) for v in c] for c in palette]
        if len(self.palette) != len(self.classes):
            raise DataError(f"{name}: palette has {len(self.palette)} colours for {len(self.classes)} classes")
        if not 0 <= int(ignore_index) <= 255:
            raise DataError(f"{name}: ignore_index must be in 0..255 (labels are uint8), got {ignore_index}")
        self.ignore_index = int(ignore_index)
        self.reduce_zero_label = bool(reduce_zero_label)
        self.label_map = {int(k): int(v) for k, v in (label_map or {}).items()} or None
        self.label_lut = make_label_lut(self.reduce_zero_label, self.label_map)
        self.transform = transform
        self.name = name
        self.label_colours = None if label_colours is None else [list(map(int, c)) for c in label_colours]
        self.unknown_colour = unknown_colour
        self.label_hint = ""  # how to change the expected label file name (for error messages)
        self._cache: list | None = None
        self.classes_discovered = False  # the class list was read off the label values (FolderDataset)
        self.ignore_declared = True  # ignore_index was given (spec / meta.json), not taken by default
        # bands per image: 3 = RGB (read_image); another count reads multi-band files (read_bands). Set by the
        # run from the model's in_channels (segkit train / eval), not a spec key
        self.in_channels = 3

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        conv = ", reduce_zero_label" if self.reduce_zero_label else ""
        conv += ", label_map" if self.label_map else ""
        return f"{type(self).__name__}({self.name!r}, {len(self)} samples, {self.num_classes} classes{conv})"

    def label_spec(self) -> dict:
        """Class names, palette and label convention as a JSON-able dict (e.g. for a model config)."""
        return {
            "name": self.name,
            "classes": list(self.classes),
            "palette": [list(c) for c in self.palette],
            "ignore_index": self.ignore_index,
            "reduce_zero_label": self.reduce_zero_label,
            "label_map": dict(self.label_map) if self.label_map else None,
        }

    def read_raw_label(self, i: int) -> np.ndarray:
        """The label file of sample ``i`` as stored (``uint8 (H, W)``), before the label convention.

        Raises:
            DataError: unlabelled sample, or a bad label file (see :func:`segkit.data.io.read_label`).
        """
        image_path, label_path = self.samples[i]
        if label_path is None:
            raise DataError(f"{image_path}: no label file for this image")
        if not os.path.exists(label_path):
            raise DataError(
                f"{label_path}: label file not found (expected for image {image_path}){getattr(self, 'label_hint', '')}"
            )
        return read_label(
            label_path,
            colours=self.label_colours,
            unknown_colour=self.unknown_colour,
            unknown_hint=" (to map such pixels to the ignore index, set unknown_colour: ignore in the data set spec "
            "or its meta.json; a class id maps them to that class)",
        )

    def image_bytes(self, i: int) -> bytes | None:
        """The encoded image of sample ``i`` when it does not live in the file ``samples[i][0]``
        (an embedded or in-memory image); ``None`` (the default) reads the file."""
        return None

    def apply_label_convention(self, label: np.ndarray) -> np.ndarray:
        """Raw label values -> train ids (``label_map`` then ``reduce_zero_label``)."""
        return label if self.label_lut is None else cv2.LUT(label, self.label_lut)

    def preload(self, max_bytes: int = 2 << 30, workers: int | None = None) -> "SegDataset":
        """Decode every sample once and keep it in memory (read-only uint8 arrays); returns self.

        Decoding dominates the per-sample cost on CPU (a lossless WebP decode costs more than
        the whole train transform), so a small dataset trained for many epochs
        should be preloaded in the main process before the DataLoader starts its workers (they
        share the arrays copy-on-write). Raises ValueError if the
        decoded size would exceed ``max_bytes`` (nothing is kept then).
        """
        from concurrent.futures import ThreadPoolExecutor

        self._cache = None
        with ThreadPoolExecutor(max_workers=workers or min(8, 2 * (os.cpu_count() or 1))) as ex:
            cache, total = [], 0
            for image, label in ex.map(self.load, range(len(self))):
                total += image.nbytes + (0 if label is None else label.nbytes)
                if total > max_bytes:
                    raise UsageError(f"{self.name}: preloading would exceed max_bytes={max_bytes:,}")
                image.setflags(write=False)
                if label is not None:
                    label.setflags(write=False)
                cache.append((image, label))
        self._cache = cache
        return self

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``(image uint8 (H, W, 3) RGB, label uint8 (H, W) train ids | None)`` of sample ``i``
        (read-only arrays after :meth:`preload`); with ``in_channels != 3`` the image is ``(H, W, in_channels)``
        (:func:`~segkit.data.io.read_bands`).

        Raises:
            DataError: unreadable files, or image and label of different sizes (names both files).
        """
        if self._cache is not None:
            return self._cache[i]
        image_path, label_path = self.samples[i]
        channels = getattr(self, "in_channels", 3)
        if channels == 3:  # conversions (grayscale, 16-bit …) are summarised once per data set, not per file
            with quiet_conversions():
                image = read_image(image_path, data=self.image_bytes(i))
        else:
            image = read_bands(image_path, channels, data=self.image_bytes(i))
        if label_path is None:
            return image, None
        label = self.read_raw_label(i)
        if label.shape != image.shape[:2]:
            raise DataError(size_mismatch_message(image_path, label_path, image.shape[:2], label.shape))
        return image, self.apply_label_convention(label)

    def __getitem__(self, i: int) -> dict:
        image, label = self.load(i)
        image_path, label_path = self.samples[i]
        item = {"image": image, "label": label, "image_path": image_path, "label_path": label_path or ""}
        if label is None:
            del item["label"]
        if self.transform is not None:
            item.update(self.transform(image, label))
        return item


def size_mismatch_message(image_path, label_path, image_hw, label_hw) -> str:
    msg = (
        f"{image_path} and {label_path}: image is {image_hw[1]}x{image_hw[0]} (WxH) but label is "
        f"{label_hw[1]}x{label_hw[0]}; they must have the same size"
    )
    if tuple(image_hw) == tuple(label_hw)[::-1]:
        msg += (
            " (the sizes are transposed: the image probably carries an EXIF orientation tag, which is applied "
            "when reading it, while the label was drawn on the unrotated pixels)"
        )
    return msg


# --------------------------------------------------------------------------------------- scanning
def _scan(directory: Path, suffix: str | Sequence[str], exclude: Sequence[str] = ()) -> dict[str, str]:
    """``{key: path}`` for files under ``directory`` (recursive, sorted) ending with ``suffix``
    (case-insensitive); key = path relative to ``directory`` without the suffix."""
    suffixes = (suffix,) if isinstance(suffix, str) else tuple(suffix)
    suffixes_l = tuple(s.lower() for s in suffixes)
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = os.path.relpath(dirpath, directory)
        for fn in sorted(filenames):
            low = fn.lower()
            if fn.startswith(".") or not low.endswith(suffixes_l) or any(low.endswith(e.lower()) for e in exclude):
                continue
            cut = next(len(s) for s in suffixes_l if low.endswith(s))
            key = fn[: len(fn) - cut]
            key = key if rel_dir == "." else f"{Path(rel_dir).as_posix()}/{key}"
            if key in out:
                raise DataError(
                    f"{directory}: two files map to the same sample '{key}': {out[key]} and "
                    f"{os.path.join(dirpath, fn)}; keep one or pass an explicit suffix"
                )
            out[key] = os.path.join(dirpath, fn)
    return out


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{path}: {what} directory not found")
    return path


def _pair(
    images: dict[str, str],
    labels: dict[str, str],
    where: str,
    allow_missing: bool = False,
    by_stem: bool = False,
    expected: Callable[[str], str] | None = None,
    hint: str = "",
) -> list[Sample]:
    """Match images with labels by key (optionally falling back to the bare file stem).

    ``expected(key)`` names the label file that was looked for (shown in the error), ``hint`` says
    which option changes that name.
    """
    stem_map: dict[str, str] = {}
    if by_stem:
        stems: dict[str, list[str]] = {}
        for k, p in labels.items():
            stems.setdefault(k.rsplit("/", 1)[-1], []).append(p)
        stem_map = {k: v[0] for k, v in stems.items() if len(v) == 1}
    samples, missing = [], []
    for key, img in images.items():
        lbl = labels.get(key) or stem_map.get(key.rsplit("/", 1)[-1])
        if lbl is None:
            missing.append(img)
        samples.append((img, lbl))
    if missing and not allow_missing:
        keys = {v: k for k, v in images.items()}
        lines = [f"{img} (expected {expected(keys[img])})" if expected else img for img in missing[:10]]
        shown = "\n  ".join(lines) + (f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise DataError(f"{where}: {len(missing)} of {len(images)} images have no label file{hint}:\n  {shown}")
    if not samples:
        raise DataError(f"{where}: no images found")
    return samples


def _read_list(path: Path) -> list[str]:
    """The stems of a split list: one per line; blank lines and whole-line comments (``#`` followed by a
    space, or a lone ``#``) are skipped — a stem that starts with ``#`` (``#frame01``) is kept.

    Raises :class:`DataError` naming the file (and line) for a missing file, a line that is not
    UTF-8 text, or a list with no stem at all.
    """
    if not path.is_file():
        raise DataError(f"{path}: split list not found")
    stems = []
    for i, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            raise DataError(
                f"{path}:{i}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                f"split lists are UTF-8 files with one file stem per line"
            ) from None
        if not line or line == "#" or line.startswith("# "):
            continue
        stems.append(line.lstrip("\ufeff"))
    if not stems:
        raise DataError(f"{path}: the split list is empty (no file stem in it)")
    return stems


def _split_alias(split: str, aliases: Mapping[str, str], allowed: Sequence[str], name: str) -> str:
    split = aliases.get(split, split)
    if allowed and split not in allowed:
        raise DataError(f"{name}: unknown split {split!r}; expected one of {sorted(set(allowed) | set(aliases))}")
    return split


# --------------------------------------------------------------------------- data location
# The data sets are not part of the repository. Configs name their roots relative to one data
# folder, ``${SEGKIT_DATA}``: the environment variable SEGKIT_DATA, or DEFAULT_DATA_DIR.
DEFAULT_DATA_DIR = "../shared/data"


def data_dir() -> str:
    """The data folder: ``$SEGKIT_DATA`` if set and non-empty, else :data:`DEFAULT_DATA_DIR` (relative to the cwd)."""
    return os.environ.get("SEGKIT_DATA") or DEFAULT_DATA_DIR


def resolve_root(root: str | os.PathLike) -> Path:
    """A dataset root with ``${SEGKIT_DATA}`` / ``$SEGKIT_DATA`` replaced by :func:`data_dir`, other
    environment variables and ``~`` expanded (``os.path.expandvars`` / ``expanduser``)."""
    text = str(root).replace("${SEGKIT_DATA}", data_dir()).replace("$SEGKIT_DATA", data_dir())
    return Path(os.path.expanduser(os.path.expandvars(text)))


def missing_root_message(root: str | os.PathLike, what: str = "dataset root") -> str:
    """Why a dataset root does not exist and how to point segkit at the data (for error messages);
    ``what`` names the path (the spec key for a file or folder that is not the root, e.g. ``annotations``)."""
    resolved = resolve_root(root)
    where = f"{resolved}" if str(resolved) == str(root) else f"{resolved} (from {root!s})"
    hint = ""
    if "SEGKIT_DATA" in str(root):
        state = (
            f"SEGKIT_DATA={os.environ['SEGKIT_DATA']}"
            if os.environ.get("SEGKIT_DATA")
            else f"SEGKIT_DATA is not set, so the default {DEFAULT_DATA_DIR} relative to {Path.cwd()} was used"
        )
        hint = (
            f" ({state}); the data sets are not part of the repository: set SEGKIT_DATA to the folder that holds them"
        )
    return f"{what} {where} does not exist{hint}"


# --------------------------------------------------------------------------- shared layout
class SplitDataset(SegDataset):
    """The split layout of the data sets segkit is developed on (``docs/datasets.md``): ``meta.json`` +
    ``splits/<split>.txt`` stems. ``root`` may use ``${SEGKIT_DATA}`` (:func:`resolve_root`).

    ``meta.json`` gives ``classes``, ``palette``, ``ignore_index`` and ``layout`` (templates
    ``image`` / ``label`` / ``list`` with ``{split}`` and ``{stem}``); optional keys
    ``reduce_zero_label`` and ``label_map`` set the label convention, and ``label_colours`` (or
    ``colour_labels: true`` with the palette) plus ``unknown_colour`` read colour-coded RGB masks
    (see :class:`FolderDataset`). Split lists: :func:`_read_list`.

    Raises:
        DataError: missing ``meta.json`` / split list, unknown split (lists the available ones),
            an empty or non-UTF-8 split list (naming file and line).
    """

    def __init__(self, root: str | os.PathLike, split: str, transform: Callable | None = None):
        if not resolve_root(root).exists():
            raise DataError(missing_root_message(root))
        root = resolve_root(root)
        meta_path = root / "meta.json"
        if not meta_path.is_file():
            raise DataError(f"{meta_path}: not found; {root} is not a split-layout dataset (meta.json + splits/)")
        try:
            info = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{meta_path}: invalid JSON ({e})") from None
        for key in ("classes",):
            if key not in info:
                raise DataError(f"{meta_path}: missing key {key!r}")
        layout = {
            "image": "images/{split}/{stem}.jpg",
            "label": "labels/{split}/{stem}.png",
            "list": "splits/{split}.txt",
            **info.get("layout", {}),
        }
        list_path = root / layout["list"].format(split=split)
        if not list_path.is_file():
            available = sorted(info.get("splits", {})) or sorted(p.stem for p in (root / "splits").glob("*.txt"))
            raise DataError(f"{list_path}: split {split!r} not found in {root}; available splits: {available}")
        stems = _read_list(list_path)
        colour_table = _colour_table(
            info.get("label_colours"), info.get("colour_labels", False), info.get("palette"), meta_path
        )
        samples = [
            (
                str(root / layout["image"].format(split=split, stem=s)),
                str(root / layout["label"].format(split=split, stem=s)),
            )
            for s in stems
        ]
        label_map = info.get("label_map")
        super().__init__(
            samples,
            info["classes"],
            info.get("palette"),
            ignore_index=info.get("ignore_index", 255),
            reduce_zero_label=info.get("reduce_zero_label", False),
            label_map={int(k): v for k, v in label_map.items()} if label_map else None,
            transform=transform,
            name=f"{info.get('name', root.name)}/{split}",
            label_colours=colour_table,
            unknown_colour=_unknown_colour(
                info.get("unknown_colour", "error"), info.get("ignore_index", 255), f"{meta_path} (unknown_colour)"
            ),
        )
        self.root, self.split = str(root), split
        self.label_hint = f" (meta.json layout.label is {layout['label']!r})"


# -------------------------------------------------------------------------------- generic folder
def seeded_split(items: list, split: str | None, val_fraction: float = 0.2, seed: int = 0) -> list:
    """``items`` (all for ``split`` None / ``"all"``), or the ``"train"`` / ``"val"`` part of a random
    split with ``val_fraction`` of them (at least one) in val, drawn with ``random.Random(seed)``:
    deterministic, independent of the global random state, the same for every run. Order kept.

    Raises ``ValueError`` for another split name or ``val_fraction`` outside (0, 1).
    """
    if split in (None, "all"):
        return list(items)
    if split not in ("train", "val"):
        raise UsageError(f"split must be None, 'all', 'train' or 'val', got {split!r}")
    if not 0.0 < val_fraction < 1.0:
        raise UsageError(f"val_fraction must be in (0, 1), got {val_fraction}")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(items) * val_fraction)) if len(items) > 1 else 0
    chosen = sorted(order[:n_val] if split == "val" else order[n_val:])
    return [items[i] for i in chosen]


def _find_meta(*dirs: Path) -> Path | None:
    for d in dirs:
        for cand in (d / "meta.json", d.parent / "meta.json", d.parent.parent / "meta.json"):
            if cand.is_file():
                return cand
    return None


class FolderDataset(SegDataset):
    """Images and label maps in two folders, matched by file name.

    An image ``images_dir/<rel>/<key><image_suffix>`` is paired with
    ``labels_dir/<rel>/<key><label_suffix>``; if that is absent, with a label of the same bare
    stem anywhere under ``labels_dir`` (when stems are unique). Sub-folders are scanned.

    Args:
        images_dir, labels_dir: folders (``labels_dir=None``: unlabelled images, e.g. for predict).
        classes: list of names, or an int (names ``class_0`` ...). Default: ``meta.json`` (given
            by ``meta``, or found in / next to ``labels_dir`` / ``images_dir``), else discovered
            by scanning the labels (max value + 1, ``ignore_index`` excluded) with a warning.
        palette: default from ``meta.json``, else generated.
        image_suffix: e.g. ``".jpg"`` or ``"_leftImg8bit.png"``; default any of
            :data:`~segkit.data.io.IMAGE_SUFFIXES`.
        label_suffix: e.g. ``".png"`` (default) or ``"_mask.png"``.
        split: None/``"all"`` (everything), or ``"train"`` / ``"val"`` for a random split of
            ``val_fraction`` with ``seed`` (deterministic, independent of global random state).
        allow_missing_labels: keep images without a label (label None) instead of raising.
        label_colours: for colour-coded RGB masks, the colour of each class (index = class id);
            ``colour_labels=True`` uses ``palette`` (or ``meta.json``'s) for that. Class names
            default to ``class_<i>``. Both may also come from ``meta.json``.
        unknown_colour: what a mask colour outside the table becomes: ``"error"`` (default: the
            message lists the colours and their pixel counts), ``"ignore"`` (``ignore_index``) or
            a class id.

    Images and labels may share one folder (``images_dir == labels_dir``): files ending with
    ``label_suffix`` (e.g. ``_mask.png``) are then not taken as images.

    Raises:
        DataError: missing folders, no images, images without labels, ambiguous names.
    """

    def __init__(
        self,
        images_dir: str | os.PathLike,
        labels_dir: str | os.PathLike | None = None,
        *,
        classes: Sequence[str] | int | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        meta: str | os.PathLike | None = None,
        ignore_index: int | None = None,
        reduce_zero_label: bool | None = None,
        label_map: Mapping[int, int] | None = None,
        image_suffix: str | Sequence[str] | None = None,
        label_suffix: str = ".png",
        split: str | None = None,
        val_fraction: float = 0.2,
        seed: int = 0,
        allow_missing_labels: bool = False,
        label_colours: Sequence[Sequence[int]] | None = None,
        colour_labels: bool = False,
        unknown_colour: str | int = "error",
        transform: Callable | None = None,
        name: str | None = None,
    ):
        images_dir = _require_dir(Path(images_dir), "images")
        suffixes = image_suffix or IMAGE_SUFFIXES
        same_dir = labels_dir is not None and Path(labels_dir).resolve() == images_dir.resolve()
        images = _scan(images_dir, suffixes, exclude=(label_suffix,) if same_dir else ())
        if labels_dir is None:
            samples: list[Sample] = [(p, None) for p in images.values()]
            if not samples:
                raise DataError(f"{images_dir}: no images found (suffixes {suffixes})")
        else:
            labels_dir = _require_dir(Path(labels_dir), "labels")
            labels = _scan(labels_dir, label_suffix)
            samples = _pair(
                images,
                labels,
                f"{images_dir} / {labels_dir}",
                allow_missing_labels,
                by_stem=True,
                expected=lambda key: str(labels_dir / f"{key}{label_suffix}"),
                hint=f" (label_suffix is {label_suffix!r}; set data.*.label_suffix to match your files)",
            )

        info: dict = {}
        meta_path = Path(meta) if meta is not None else _find_meta(*[d for d in (labels_dir, images_dir) if d])
        if meta_path is not None:
            try:
                info = json.loads(Path(meta_path).read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise DataError(f"{meta_path}: cannot read meta.json ({e})") from None
        ignore_declared = ignore_index is not None or "ignore_index" in info
        ignore_index = int(ignore_index if ignore_index is not None else info.get("ignore_index", 255))
        reduce_zero_label = bool(
            reduce_zero_label if reduce_zero_label is not None else info.get("reduce_zero_label", False)
        )
        if label_map is None and info.get("label_map"):
            label_map = {int(k): int(v) for k, v in info["label_map"].items()}
        if isinstance(classes, int):
            classes = [f"class_{i}" for i in range(classes)]
        if classes is None:
            classes = info.get("classes")
        discovered = classes is None and not (label_colours is not None or info.get("label_colours"))
        if discovered:
            classes = _discover_classes(samples, ignore_index, make_label_lut(reduce_zero_label, label_map), images_dir)
        if palette is None:
            palette = info.get("palette")
        colour_table = _colour_table(
            label_colours if label_colours is not None else info.get("label_colours"),
            colour_labels or info.get("colour_labels", False),
            palette,
            meta_path or images_dir,
        )
        if colour_table is not None and classes is None:
            classes = [f"class_{i}" for i in range(len(colour_table))]
        if palette is None and colour_table is not None and len(colour_table) == len(classes or ()):
            palette = colour_table

        samples = seeded_split(samples, split, val_fraction, seed)
        super().__init__(
            samples,
            classes,
            palette,
            ignore_index=ignore_index,
            reduce_zero_label=reduce_zero_label,
            label_map=label_map,
            transform=transform,
            name=name or info.get("name") or f"{images_dir.name}" + (f"/{split}" if split else ""),
            label_colours=colour_table,
            unknown_colour=_unknown_colour(
                info.get("unknown_colour", unknown_colour),
                ignore_index,
                f"{meta_path} (unknown_colour)" if "unknown_colour" in info else "the data set spec (unknown_colour)",
            ),
        )
        self.split = split
        self.classes_discovered, self.ignore_declared = discovered, ignore_declared
        if labels_dir is not None:
            self.label_hint = f" (label_suffix is {label_suffix!r})"


def _colour_table(label_colours, colour_labels: bool, palette, where) -> list[list[int]] | None:
    """The RGB → class-id table of colour-coded masks: ``label_colours`` (index = class id), or the
    ``palette`` when ``colour_labels`` is true; ``None`` for ordinary class-index labels."""
    if label_colours is not None:
        table = label_colours
    elif colour_labels:
        if palette is None:
            raise DataError(f"{where}: colour_labels is true but no palette is given to map the mask colours")
        table = palette
    else:
        return None
    try:
        table = [[int(v) for v in c] for c in table]
    except (TypeError, ValueError):
        raise DataError(f"{where}: label_colours must be a list of [R, G, B] triples, got {label_colours!r}") from None
    if any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in table):
        raise DataError(f"{where}: label_colours must be [R, G, B] triples with values 0..255")
    return table


UNKNOWN_COLOUR_VALUES = "'error', 'ignore' or a class id 0..255"


def unknown_colour_problem(value) -> str | None:
    """What is wrong with an ``unknown_colour`` value, or ``None`` when it is ``"error"``, ``"ignore"`` or 0..255."""
    if value in ("error", "ignore") or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255):
        return None
    return f"unknown_colour must be {UNKNOWN_COLOUR_VALUES}, got {value!r}"


def _unknown_colour(value, ignore_index: int, where: str = "the data set spec"):
    """``"error"`` (default), ``"ignore"`` (→ ``ignore_index``) or a class id for mask colours not in the table.
    A :class:`DataError` naming ``where`` the value came from (a ``meta.json``, the data set spec) otherwise."""
    problem = unknown_colour_problem(value)
    if problem is not None:
        raise DataError(f"{where}: {problem}")
    return int(ignore_index) if value == "ignore" else value


_discovery = threading.local()


@contextlib.contextmanager
def classes_replaced():
    """Within this block (in this thread) a :class:`FolderDataset` that discovers its classes from the label values
    does so without its "found label values …, using N classes" warning: the caller replaces that class list (the
    binary task gives every data set ``background, foreground``, :mod:`segkit.data.binary`), so the note would
    name a class count the run never uses."""
    before = getattr(_discovery, "quiet", False)
    _discovery.quiet = True
    try:
        yield
    finally:
        _discovery.quiet = before


def _discover_classes(samples: list[Sample], ignore_index: int, lut: np.ndarray | None, where) -> list[str]:
    from concurrent.futures import ThreadPoolExecutor

    quiet = getattr(_discovery, "quiet", False)  # read here: the label scan below runs on other threads

    def values(sample):
        if sample[1] is None:
            return np.zeros(256, bool)
        lbl = read_label(sample[1])
        if lbl.shape == (0, 0):
            return np.zeros(256, bool)
        return np.bincount(lbl.ravel(), minlength=256) > 0

    with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 1))) as ex:
        present = np.zeros(256, bool)
        for p in ex.map(values, samples):
            present |= p
    raw = np.flatnonzero(present)
    ids = raw if lut is None else np.unique(lut[raw])
    ids = ids[ids != ignore_index]
    if len(ids) == 0:
        raise DataError(f"{where}: cannot discover classes: the labels contain only the ignore value {ignore_index}")
    n = int(ids.max()) + 1
    if quiet:
        return [f"class_{i}" for i in range(n)]
    warnings.warn(
        f"{where}: no class names given and no meta.json found; found label values {ids.tolist()}, "
        f"using {n} classes named class_0..class_{n - 1}. Pass classes=[...] or write a meta.json.",
        UserWarning,
        stacklevel=3,
    )
    return [f"class_{i}" for i in range(n)]


# ---------------------------------------------------------------------------- benchmarks
def _descend(root: Path, child: str) -> Path:
    """Accept either the data root itself or its parent (e.g. ``VOCdevkit`` for ``VOCdevkit/VOC2012``)."""
    return root / child if (root / child).is_dir() else root


class ADE20K(SegDataset):
    """ADE20K / SceneParse150 (150 classes): ``root`` = ``ADEChallengeData2016`` (or its parent).

    Layout ``images/{training,validation}/*.jpg`` ↔ ``annotations/{…}/*.png``; label 0 ("other")
    -> 255 and k -> k-1 (``reduce_zero_label``; docs/datasets.md). Split aliases: train, val.
    """

    def __init__(self, root: str | os.PathLike, split: str = "training", transform: Callable | None = None):
        root = _descend(Path(root), "ADEChallengeData2016")
        split = _split_alias(split, {"train": "training", "val": "validation"}, ("training", "validation"), "ADE20K")
        images = _scan(_require_dir(root / "images" / split, "ADE20K images"), ".jpg")
        labels = _scan(_require_dir(root / "annotations" / split, "ADE20K annotations"), ".png")
        super().__init__(
            _pair(images, labels, f"ADE20K {root}/{split}"),
            meta.ADE20K_CLASSES,
            meta.ADE20K_PALETTE,
            reduce_zero_label=True,
            transform=transform,
            name=f"ade20k/{split}",
        )


class Cityscapes(SegDataset):
    """Cityscapes (19 train ids): ``root`` contains ``leftImg8bit/`` and ``gtFine/``.

    ``leftImg8bit/{split}/<city>/<x>_leftImg8bit.png`` ↔ ``gtFine/{split}/<city>/<x>_gtFine_labelTrainIds.png``
    (made by cityscapesScripts; docs/datasets.md). ``label_type="labelIds"`` reads
    ``*_gtFine_labelIds.png`` instead and maps label ids to train ids on the fly (others -> 255;
    docs/datasets.md "Cityscapes labelId → trainId").
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable | None = None,
        label_type: str = "trainIds",
    ):
        root = Path(root)
        split = _split_alias(split, {"training": "train", "validation": "val"}, ("train", "val", "test"), "Cityscapes")
        if label_type not in ("trainIds", "labelIds"):
            raise UsageError(f"label_type must be 'trainIds' or 'labelIds', got {label_type!r}")
        images = _scan(_require_dir(root / "leftImg8bit" / split, "Cityscapes leftImg8bit"), "_leftImg8bit.png")
        suffix = {"trainIds": "_gtFine_labelTrainIds.png", "labelIds": "_gtFine_labelIds.png"}[label_type]
        labels = _scan(_require_dir(root / "gtFine" / split, "Cityscapes gtFine"), suffix)
        label_map = None
        if label_type == "labelIds":
            label_map = {i: meta.CITYSCAPES_LABELID_TO_TRAINID.get(i, 255) for i in range(256)}
        super().__init__(
            _pair(images, labels, f"Cityscapes {root}/{split}"),
            meta.CITYSCAPES_CLASSES,
            meta.CITYSCAPES_PALETTE,
            label_map=label_map,
            transform=transform,
            name=f"cityscapes/{split}",
        )


class PascalVOC(SegDataset):
    """Pascal VOC 2012 (21 classes incl. background, 255 = boundary): ``root`` = ``VOC2012`` (or ``VOCdevkit``).

    Splits ``train`` / ``val`` / ``trainval``: ``ImageSets/Segmentation/<split>.txt``,
    ``JPEGImages/<id>.jpg`` ↔ ``SegmentationClass/<id>.png`` (palette PNGs: indices are read).
    ``trainaug`` = ``train.txt`` with ``SegmentationClass`` followed by ``aug.txt`` with
    ``SegmentationClassAug`` (SBD, made by the reference ``voc_aug.py``; docs/datasets.md).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None):
        root = _descend(_descend(Path(root), "VOCdevkit"), "VOC2012")
        lists = root / "ImageSets" / "Segmentation"
        parts = {
            "trainaug": [("train", "SegmentationClass"), ("aug", "SegmentationClassAug")],
            "aug": [("aug", "SegmentationClassAug")],
        }.get(split, [(split, "SegmentationClass")])
        samples: list[Sample] = []
        for list_name, ann_dir in parts:
            list_path = lists / f"{list_name}.txt"
            if not list_path.is_file():
                hint = (
                    " (create it and SegmentationClassAug from SBD with the reference voc_aug.py)"
                    if list_name == "aug"
                    else ""
                )
                raise DataError(f"{list_path}: Pascal VOC split list not found{hint}")
            samples += [
                (str(root / "JPEGImages" / f"{i}.jpg"), str(root / ann_dir / f"{i}.png")) for i in _read_list(list_path)
            ]
        super().__init__(samples, meta.VOC_CLASSES, meta.VOC_PALETTE, transform=transform, name=f"voc2012/{split}")


class PascalContext(SegDataset):
    """Pascal Context: ``root`` = ``VOC2010`` (or ``VOCdevkit``), labels from the Detail API converter.

    ``ImageSets/SegmentationContext/{train,val}.txt``; ``JPEGImages/<id>.jpg`` ↔
    ``SegmentationClassContext/<id>.png`` (values 0..59, 0 = background). ``num_classes=59``
    (default, the benchmark setting) applies ``reduce_zero_label`` (background -> ignore);
    ``num_classes=60`` keeps background as class 0.
    """

    def __init__(
        self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None, num_classes: int = 59
    ):
        if num_classes not in (59, 60):
            raise UsageError(f"Pascal Context has 59 or 60 classes, got {num_classes}")
        root = _descend(_descend(Path(root), "VOCdevkit"), "VOC2010")
        ids = _read_list(root / "ImageSets" / "SegmentationContext" / f"{split}.txt")
        samples = [
            (str(root / "JPEGImages" / f"{i}.jpg"), str(root / "SegmentationClassContext" / f"{i}.png")) for i in ids
        ]
        classes, palette = (
            (meta.PASCAL_CONTEXT_59_CLASSES, meta.PASCAL_CONTEXT_59_PALETTE)
            if num_classes == 59
            else (meta.PASCAL_CONTEXT_60_CLASSES, meta.PASCAL_CONTEXT_60_PALETTE)
        )
        super().__init__(
            samples,
            classes,
            palette,
            reduce_zero_label=num_classes == 59,
            transform=transform,
            name=f"pascal_context{num_classes}/{split}",
        )


class COCOStuff164k(SegDataset):
    """COCO-Stuff 164k (171 classes): ``root`` contains ``images/`` and ``annotations/``.

    ``images/{train2017,val2017}/<x>.jpg`` ↔ ``annotations/{…}/<x>_labelTrainIds.png`` (ids 0-170,
    255 = unlabelled; made by the reference ``coco_stuff164k.py``). ``label_type="raw"`` reads the
    original ``stuffthingmaps`` ``<x>.png`` and maps COCO ids to train ids on the fly
    (docs/datasets.md); choice: the 11 unused COCO thing ids map to 255 (the reference script leaves
    them unchanged, which would alias real train ids; they never occur in practice).
    Split aliases: train, val.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train2017",
        transform: Callable | None = None,
        label_type: str = "trainIds",
    ):
        root = Path(root)
        split = _split_alias(split, {"train": "train2017", "val": "val2017"}, (), "COCO-Stuff 164k")
        images = _scan(_require_dir(root / "images" / split, "COCO-Stuff images"), ".jpg")
        ann = _require_dir(root / "annotations" / split, "COCO-Stuff annotations")
        if label_type == "trainIds":
            labels, label_map = _scan(ann, "_labelTrainIds.png"), None
        elif label_type == "raw":
            labels = _scan(ann, ".png", exclude=("_labelTrainIds.png",))
            label_map = {**{i: 255 for i in meta.COCO_STUFF_UNUSED_IDS}, **meta.COCO_STUFF164K_ID_TO_TRAINID}
        else:
            raise UsageError(f"label_type must be 'trainIds' or 'raw', got {label_type!r}")
        super().__init__(
            _pair(images, labels, f"COCO-Stuff 164k {root}/{split}"),
            meta.COCO_STUFF_CLASSES,
            meta.COCO_STUFF_PALETTE,
            label_map=label_map,
            transform=transform,
            name=f"coco_stuff164k/{split}",
        )


class COCOStuff10k(SegDataset):
    """COCO-Stuff 10k (171 classes): ``images/{train2014,test2014}/<x>.jpg`` ↔
    ``annotations/{…}/<x>_labelTrainIds.png`` with ids 1-171 and 0 = unlabelled, hence
    ``reduce_zero_label`` (reference ``coco_stuff10k.py`` + config). Split aliases: train, test, val (= test2014).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train2014", transform: Callable | None = None):
        root = Path(root)
        split = _split_alias(split, {"train": "train2014", "test": "test2014", "val": "test2014"}, (), "COCO-Stuff 10k")
        images = _scan(_require_dir(root / "images" / split, "COCO-Stuff 10k images"), ".jpg")
        labels = _scan(_require_dir(root / "annotations" / split, "COCO-Stuff 10k annotations"), "_labelTrainIds.png")
        super().__init__(
            _pair(images, labels, f"COCO-Stuff 10k {root}/{split}"),
            meta.COCO_STUFF_CLASSES,
            meta.COCO_STUFF_PALETTE,
            reduce_zero_label=True,
            transform=transform,
            name=f"coco_stuff10k/{split}",
        )


class ISAID(SegDataset):
    """iSAID (16 classes incl. background): ``root`` contains ``img_dir/`` and ``ann_dir/``.

    ``img_dir/{train,val}/<x>.png`` ↔ ``ann_dir/{…}/<x>_instance_color_RGB.png`` (reference naming,
    docs/datasets.md). The reference converter writes single-channel class ids under that
    name; original RGB colour masks are also accepted and converted with the iSAID colour table
    (docs/datasets.md), colours not in the table -> ``unknown_colour`` (default 0 = background, as
    the reference converter does; pass ``"error"`` to refuse them).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable | None = None,
        unknown_colour: str | int = 0,
    ):
        root = Path(root)
        split = _split_alias(split, {"training": "train", "validation": "val"}, ("train", "val", "test"), "iSAID")
        images = _scan(
            _require_dir(root / "img_dir" / split, "iSAID img_dir"), ".png", exclude=("_instance_color_RGB.png",)
        )
        labels = _scan(_require_dir(root / "ann_dir" / split, "iSAID ann_dir"), "_instance_color_RGB.png")
        super().__init__(
            _pair(images, labels, f"iSAID {root}/{split}"),
            meta.ISAID_CLASSES,
            meta.ISAID_PALETTE,
            transform=transform,
            name=f"isaid/{split}",
            label_colours=meta.ISAID_COLOURS,
            unknown_colour=unknown_colour,
        )
