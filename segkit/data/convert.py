"""Any dataset written out in segkit's split layout (``segkit convert-data``): index PNGs, ``meta.json``
and ``splits/<split>.txt``, what ``type: split`` reads (:class:`~segkit.data.datasets.SplitDataset`).

For those who want to look at or version the labels that the annotation formats draw on the fly
(:mod:`segkit.data.formats`), or freeze any dataset type into one plain layout:

* ``images/<split>/<stem><suffix>``: the image files as they are, hard-linked when the output is on
  the same file system (else copied; ``link=False`` always copies). The layout names one image
  suffix: when the images come in several formats, those that are not PNG are written as PNG (the
  pixels segkit reads, so nothing changes for training; a warning says so), and in-memory images
  (a Hugging Face dataset's, LabelMe's embedded ``imageData``) are encoded as PNG.
* ``labels/<split>/<stem>.png``: 8-bit palette PNGs whose values are the class ids after the
  dataset's label convention (``label_map``, ``reduce_zero_label``), ``ignore_index`` kept; the
  PNG palette is the dataset's, so an image viewer shows the classes in their colours.
* ``meta.json``: ``name``, ``classes``, ``palette``, ``ignore_index``, ``layout``, ``splits`` (image
  counts), ``pixel_counts`` per split and the ``source`` specs.

Stems come from the image file names; two samples of a split with the same stem get ``_2``, ``_3`` …
(one warning per split). Nothing is written half: everything goes into a hidden sibling folder
``.<name>.partial-<pid>`` that is renamed to ``out_dir`` at the end, and removed on any error.

Imports no PyTorch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import cv2
import numpy as np

from segkit.data.build import build_dataset
from segkit.data.datasets import SegDataset
from segkit.data.io import DataError
from segkit.errors import SegkitError, UsageError
from segkit.utils import IMAGE_SUFFIXES, claim_output, fsync_dir

__all__ = ["convert_to_split_layout", "partial_dir"]

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.partial-(?P<pid>\d+)$")


@dataclass
class _Split:
    """One split to write: its dataset, the output stems and how each image is written."""

    name: str
    dataset: SegDataset
    source: object
    stems: list[str] = field(default_factory=list)
    in_memory: list[bool] = field(default_factory=list)
    suffixes: list[str] = field(default_factory=list)  # lower-case suffix of each image file ("" in memory)
    counts: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
    linked: int = 0
    copied: int = 0
    encoded: int = 0


def partial_dir(out_dir: str | os.PathLike) -> Path:
    """Where :func:`convert_to_split_layout` writes before the final rename: ``.<name>.partial-<pid>``
    next to ``out_dir``."""
    out_dir = Path(os.path.abspath(out_dir))  # "." and "data/" have a name too
    return out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")


def convert_to_split_layout(
    specs: Mapping[str, Mapping | SegDataset],
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    link: bool = True,
    name: str | None = None,
    workers: int | None = None,
    what: str = "",
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write datasets as one split-layout dataset in ``out_dir`` (module docstring) and return its path.

    Args:
        specs: ``{split name: dataset spec (a dict for build_dataset) or a dataset}``, e.g.
            ``{"train": {"type": "coco", "annotations": "a.json", "images": "imgs"}}``. The splits
            must agree on ``classes`` and ``ignore_index`` (one ``meta.json``).
        out_dir: the folder to create; it must not hold files unless ``overwrite`` (segkit's output
            policy, :func:`segkit.utils.claim_output`): the old folder is then moved to
            ``<out_dir>.prev-<time>``, once the conversion has succeeded.
        link: hard-link image files when possible (same file system), else copy; False: always copy.
        name: the ``name`` in ``meta.json`` (default: the folder's name).
        workers: threads that read and write samples (default: up to 4).
        what: how messages name ``out_dir`` (``"--out"`` for the CLI).
        log: called with one summary line per split (default: silent).

    Raises:
        UsageError: no split, or a split name that is not a plain file name.
        OutputExistsError: ``out_dir`` holds files and ``overwrite`` is false (nothing touched).
        DataError: a bad sample or spec (naming the file and the problem); nothing is left behind.
    """
    out_dir = Path(out_dir)
    if not specs:
        raise UsageError("no split to convert")
    for split in specs:
        if not _SPLIT_NAME.match(str(split)):
            raise UsageError(f"split name {split!r}: use letters, digits, '_', '-' or '.' (e.g. train, val)")
    target = Path(os.path.abspath(out_dir))
    if target.exists() and target.resolve() == Path.cwd().resolve():
        where = f"{what} {out_dir}".strip()
        raise UsageError(f"{where}: the current folder; name a new folder (the output is renamed into place)")
    existed = target.exists()
    holds_files = existed and target.is_dir() and any(target.iterdir())
    if not holds_files:
        claim_output(out_dir, what=what)  # refuse a file in the way now, before any work
    _remove_stale_partials(target)
    partial = partial_dir(target)
    try:
        splits = []
        for split, spec in specs.items():
            splits.append(_plan(str(split), spec))
        if holds_files:
            _refuse_input_inside(target, splits, f"{what} {out_dir}".strip())
            if not overwrite:
                claim_output(out_dir, what=what)  # refuse an output with results, before the writing
        meta = _meta(splits, name or target.name)
        suffix, reencode = _image_suffix(splits)
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        for sp in splits:
            _write_split(sp, partial, suffix, reencode, link, workers)
            if log:
                log(_summary(sp, out_dir))
        meta["layout"]["image"] = f"images/{{split}}/{{stem}}{suffix}"
        meta["splits"] = {sp.name: len(sp.stems) for sp in splits}
        meta["pixel_counts"] = {sp.name: _pixel_counts(sp) for sp in splits}
        meta["source"] = {sp.name: sp.source for sp in splits}
        (partial / "meta.json").write_text(_meta_json(meta))
        claim_output(out_dir, overwrite=overwrite, what=what)  # --overwrite: the old results move aside now
        target.rmdir()  # the empty folder claim_output made sure of
        partial.rename(target)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        if not existed and target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        raise
    return out_dir


# ----------------------------------------------------------------------------- planning
def _plan(split: str, spec) -> _Split:
    """The dataset of ``spec`` and its unique stems (a warning when some had to be renamed)."""
    if isinstance(spec, SegDataset):
        ds, source = spec, repr(spec)
    else:
        ds, source = build_dataset(spec), dict(spec)
    if len(ds) == 0:
        raise DataError(f"{ds.name}: no samples to convert (split {split})")
    sp = _Split(split, ds, source)
    taken: set[str] = set()
    renamed = []
    for i in range(len(ds)):
        in_memory = ds.image_bytes(i) is not None
        file_name = _file_name(ds, i, in_memory)
        stem = _clean_stem(Path(file_name).stem)
        unique, n = stem, 1
        while unique.lower() in taken:  # case-insensitive: a checkout on macOS / Windows must not merge them
            n += 1
            unique = f"{stem}_{n}"
        if unique != stem:
            renamed.append((file_name, unique))
        taken.add(unique.lower())
        sp.stems.append(unique)
        sp.in_memory.append(in_memory)
        sp.suffixes.append("" if in_memory else Path(ds.samples[i][0]).suffix.lower())
    if renamed:
        first, stem = renamed[0]
        warnings.warn(
            f"split {split}: {len(renamed)} image(s) share a file name stem with an earlier one and were given a "
            f"numbered stem (e.g. {first} → {stem})",
            UserWarning,
            stacklevel=3,
        )
    return sp


_PATH_KEYS = ("root", "annotations", "images", "images_dir", "labels_dir", "path", "data_yaml")


def _refuse_input_inside(target: Path, splits: list[_Split], where: str) -> None:
    """A UsageError when the output folder holds the input (its images, labels or annotation files):
    ``--overwrite`` would move the input aside, and the conversion replace it."""
    inputs: list[str] = []
    for sp in splits:
        inputs += [p for sample in sp.dataset.samples for p in sample if isinstance(p, str)]
        if isinstance(sp.source, dict):  # the spec's own folders and files (an annotation file)
            inputs += [str(sp.source[k]) for k in _PATH_KEYS if isinstance(sp.source.get(k), (str, os.PathLike))]
    real = target.resolve()
    for p in inputs:
        if os.path.exists(p) and (real == Path(p).resolve() or real in Path(p).resolve().parents):
            raise UsageError(f"{where} holds the input ({p}): write the converted data set to another folder")


def _file_name(ds: SegDataset, i: int, in_memory: bool) -> str:
    """The file name a sample's stem comes from: the image file's; for a Hugging Face row, the file
    the image was loaded from when the dataset kept it, else the row number."""
    from segkit.data.formats import HFDataset

    if isinstance(ds, HFDataset):
        cell = ds.data[i][ds.image_column]
        path = cell.get("path") if isinstance(cell, dict) else None
        return Path(path).name if path else f"{i:06d}"
    return Path(ds.samples[i][0]).name


def _clean_stem(stem: str) -> str:
    """A stem that reads back from a split list as written: no line breaks or surrounding spaces, no
    comment form (``#`` alone or followed by a space), not empty."""
    stem = re.sub(r"[\r\n\t/\\]", "_", stem).strip().lstrip("\ufeff")
    if stem == "#" or stem.startswith("# "):
        stem = "_" + stem[1:]
    return stem or "image"


def _meta(splits: list[_Split], name: str) -> dict:
    """``meta.json`` of the output; the splits must agree on the classes and the ignore value."""
    first = splits[0].dataset
    for sp in splits[1:]:
        ds = sp.dataset
        if ds.classes != first.classes:
            raise DataError(
                f"splits {splits[0].name} and {sp.name} have different classes ({first.classes} vs {ds.classes}); "
                f"one meta.json holds one class list: give the same classes: [...] in every spec"
            )
        if ds.ignore_index != first.ignore_index:
            raise DataError(
                f"splits {splits[0].name} and {sp.name} have different ignore_index "
                f"({first.ignore_index} vs {ds.ignore_index})"
            )
    return {
        "name": name,
        "classes": list(first.classes),
        "palette": [list(c) for c in first.palette],
        "num_classes": first.num_classes,
        "ignore_index": first.ignore_index,
        "layout": {"image": None, "label": "labels/{split}/{stem}.png", "list": "splits/{split}.txt"},
        "label_encoding": f"8-bit palette PNG (mode P), value = class id, {first.ignore_index} = ignore",
    }


def _image_suffix(splits: list[_Split]) -> tuple[str, bool]:
    """The one image suffix of the layout, and whether images that are not PNG files are re-encoded as PNG
    (images of several formats, or of a format segkit does not list, or in memory)."""
    files = [_same_kind(s) for sp in splits for s, mem in zip(sp.suffixes, sp.in_memory) if not mem]
    kinds = set(files)
    in_memory = sum(m for sp in splits for m in sp.in_memory)
    if len(kinds) == 1 and not in_memory and files[0] in IMAGE_SUFFIXES:
        return files[0], False
    not_png = sum(1 for s in files if s != ".png")
    if not_png:
        found = ", ".join(f"{s or '(no suffix)'}: {files.count(s)}" for s in sorted(kinds))
        found += f", in memory: {in_memory}" if in_memory else ""
        warnings.warn(
            f"the split layout names one image suffix, and these images are not all files of one format "
            f"segkit reads ({found}): the {not_png} that are not PNG files are written as PNG (the same pixels)",
            UserWarning,
            stacklevel=3,
        )
    return ".png", True


def _same_kind(suffix: str) -> str:
    return {".jpeg": ".jpg", ".tiff": ".tif"}.get(suffix, suffix)


# ----------------------------------------------------------------------------- writing
def _write_split(sp: _Split, root: Path, suffix: str, reencode: bool, link: bool, workers: int | None) -> None:
    images, labels = root / "images" / sp.name, root / "labels" / sp.name
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    palette = _png_palette(sp.dataset)

    def one(i: int):
        return _write_sample(sp, i, images / f"{sp.stems[i]}{suffix}", labels / f"{sp.stems[i]}.png",
                             reencode and (sp.in_memory[i] or sp.suffixes[i] != ".png"), link, palette)  # fmt: skip

    n = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=n) as ex:
        try:
            for how, counts in ex.map(one, range(len(sp.stems))):
                sp.counts += counts
                setattr(sp, how, getattr(sp, how) + 1)
        except BaseException:
            ex.shutdown(wait=True, cancel_futures=True)
            raise
    (root / "splits").mkdir(exist_ok=True)
    (root / "splits" / f"{sp.name}.txt").write_text("".join(f"{s}\n" for s in sp.stems))
    other = np.flatnonzero(sp.counts)
    other = [int(v) for v in other if v >= sp.dataset.num_classes and v != sp.dataset.ignore_index]
    if other:
        warnings.warn(
            f"split {sp.name}: {int(sp.counts[other].sum())} label pixels hold values that are neither a class id "
            f"(0..{sp.dataset.num_classes - 1}) nor ignore ({sp.dataset.ignore_index}): {other}; they are written "
            f"as they are (segkit check-data on the output names the files)",
            UserWarning,
            stacklevel=3,
        )


def _write_sample(sp: _Split, i: int, image_out: Path, label_out: Path, encode: bool, link: bool, palette):
    """Write sample ``i``'s image and label; returns how the image was written and the label's value counts."""
    ds = sp.dataset
    image_path = ds.samples[i][0]
    try:
        image, label = ds.load(i)
        if label is None:
            raise DataError(f"{image_path}: no label for this image; the split layout needs one for every image")
        if encode:
            ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            if not ok:
                raise DataError(f"{image_path}: cannot encode the image as PNG")
            image_out.write_bytes(buf.tobytes())
            how = "encoded"
        else:
            how = _link_or_copy(image_path, image_out, link)
        _save_label(label, palette, label_out)
    except SegkitError:
        raise
    except (OSError, ValueError) as e:
        raise DataError(f"{image_path}: {getattr(e, 'strerror', None) or e}") from None
    return how, np.bincount(label.ravel(), minlength=256)


def _link_or_copy(src: str, dst: Path, link: bool) -> str:
    if link:
        try:
            os.link(src, dst)
            return "linked"
        except OSError:  # another file system, links not supported or not allowed: copy
            pass
    shutil.copyfile(src, dst)
    return "copied"


def _png_palette(ds: SegDataset) -> list[int]:
    """The 768-value PNG palette: each class id in its colour, every other value (ignore) black."""
    pal = np.zeros((256, 3), np.uint8)
    pal[: ds.num_classes] = np.asarray(ds.palette, np.uint8)[:256]
    return pal.ravel().tolist()


def _save_label(label: np.ndarray, palette: list[int], path: Path) -> None:
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(label, dtype=np.uint8))  # mode L
    img.putpalette(palette)  # L → P with the values as indices
    img.save(path, format="PNG")


def _meta_json(meta: dict) -> str:
    """``meta.json`` text: one line per key (per sub-key for the sections), lists kept on their line."""

    def dump(v):
        return json.dumps(v, default=str, ensure_ascii=False)

    lines = []
    for key, value in meta.items():
        if isinstance(value, dict) and value:
            inner = ",\n".join(f"  {dump(k)}: {dump(v)}" for k, v in value.items())
            lines.append(f" {dump(key)}: {{\n{inner}\n }}")
        else:
            lines.append(f" {dump(key)}: {dump(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _pixel_counts(sp: _Split) -> dict:
    ds = sp.dataset
    return {
        "per_class": [int(v) for v in sp.counts[: ds.num_classes]],
        f"ignore_{ds.ignore_index}": int(sp.counts[ds.ignore_index]),
        "total": int(sp.counts.sum()),
    }


def _summary(sp: _Split, out_dir: Path) -> str:
    ds = sp.dataset
    how = ", ".join(f"{n} {w}" for w, n in (("hard-linked", sp.linked), ("copied", sp.copied),
                                           ("encoded as PNG", sp.encoded)) if n)  # fmt: skip
    total = int(sp.counts.sum())
    present = int((sp.counts[: ds.num_classes] > 0).sum())
    ignored = int(sp.counts[ds.ignore_index]) / max(total, 1)
    return (
        f"{sp.name}: {len(sp.stems)} images ({how}) → {out_dir / 'images' / sp.name}; labels: {present} of "
        f"{ds.num_classes} classes present, {total:,} pixels, {ignored:.1%} ignore"
    )


def _remove_stale_partials(out_dir: Path) -> None:
    """Remove ``.<name>.partial-<pid>`` folders of ``out_dir`` left by a killed conversion."""
    from segkit.utils import _pid_running

    parent = out_dir.parent
    if not parent.is_dir():
        return
    for p in parent.iterdir():
        m = _PARTIAL.match(p.name)
        if m and m["name"] == out_dir.name and p.is_dir() and not _pid_running(int(m["pid"])):
            shutil.rmtree(p, ignore_errors=True)
