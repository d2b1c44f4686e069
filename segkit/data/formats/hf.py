"""A Hugging Face ``datasets`` dataset (``type: hf``), as the transformers SegFormer fine-tuning
tutorial starts from it (``load_dataset(...)`` with an image and a label-map column).

``path`` is one of:

* a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (``load_from_disk``);
* a folder or file of parquet / arrow files (``load_dataset(path)``, the packaged builders);
* a Hub id (``org/name``), read from the local Hugging Face cache only (``datasets`` in offline
  mode for the call). Nothing is downloaded while training and nothing waits on a network: if the
  cache does not hold it, the error names the id, the cache folder and how to fetch it once on a
  machine with network.

Columns: the image column is the first of ``image``, ``pixel_values``, ``img`` present (or
``image_column``), the label map the first of ``label``, ``annotation``, ``semantic_segmentation``,
``segmentation``, ``mask`` (or ``label_column``); both ``datasets.Image`` features (PNG/JPEG bytes,
read with segkit's readers, so the same guard-rails apply) or 2-D arrays (labels).
Class names: ``classes``, else ``id2label.json`` beside the data (the Hub convention), else the
label feature's ``ClassLabel`` names, else discovered from the labels with a warning.
``reduce_labels: true`` is transformers' ``do_reduce_labels`` (0 → ignore, k → k−1).
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from segkit.data.datasets import SegDataset, make_label_lut
from segkit.data.io import DataError, read_label
from segkit.errors import UsageError

IMAGE_COLUMNS = ("image", "pixel_values", "img")
LABEL_COLUMNS = ("label", "annotation", "semantic_segmentation", "segmentation", "mask")


def _datasets():
    from segkit.utils import require

    return require("datasets", "hf", "the hf dataset type")


def _load(path: str, split: str, revision: str | None):
    """The split as a ``datasets.Dataset``; :class:`DataError` naming ``path`` when it cannot be read."""
    ds_lib = _datasets()
    p = Path(path)
    try:
        if p.is_dir() and ((p / "dataset_dict.json").is_file() or (p / "state.json").is_file()):
            data = ds_lib.load_from_disk(str(p))
        elif p.exists():
            data = ds_lib.load_dataset(str(p)) if p.is_dir() else _load_file(ds_lib, p)
        else:
            with _offline(ds_lib):  # from the local cache only: training never waits on the network
                data = ds_lib.load_dataset(path, revision=revision)
    except (FileNotFoundError, ConnectionError, OSError, ValueError) as e:
        if p.exists():
            raise DataError(f"{path}: not a readable Hugging Face dataset ({str(e).splitlines()[0][:200]})") from None
        cache = ds_lib.config.HF_DATASETS_CACHE
        raise DataError(
            f"{path}: Hugging Face dataset not found locally and not downloadable here "
            f"({type(e).__name__}: {str(e).splitlines()[0][:160]}). segkit reads Hub datasets from the cache "
            f'{cache}; on a machine with network run `python -c "import datasets; '
            f"datasets.load_dataset('{path}').save_to_disk('DIR')\"` and give DIR as path"
        ) from None
    if isinstance(data, ds_lib.DatasetDict):
        if split not in data:
            raise DataError(f"{path}: no split {split!r}; it holds {sorted(data)}")
        return data[split]
    return data


@contextlib.contextmanager
def _offline(ds_lib):
    """``datasets`` (and ``huggingface_hub``) in offline mode for the duration: cached data only."""
    import huggingface_hub.constants as hub_constants

    saved = ds_lib.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    ds_lib.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        ds_lib.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def _load_file(ds_lib, p: Path):
    kinds = {".parquet": "parquet", ".arrow": "arrow"}
    if p.suffix not in kinds:
        raise UsageError(f"expected a folder, a .parquet or an .arrow file, got {p.suffix!r}")
    return ds_lib.load_dataset(kinds[p.suffix], data_files={"train": str(p)})


def _column(data, given: str | None, candidates: Sequence[str], what: str, path: str) -> str:
    if given is not None:
        if given not in data.column_names:
            raise DataError(f"{path}: no {what} column {given!r}; columns: {data.column_names}")
        return given
    for c in candidates:
        if c in data.column_names:
            return c
    raise DataError(
        f"{path}: no {what} column (looked for {list(candidates)}); columns: {data.column_names} — "
        f"name it with {what}_column: ..."
    )


class HFDataset(SegDataset):
    """One split of a Hugging Face dataset with an image and a label-map column (module docstring).

    Args:
        path: a ``save_to_disk`` folder, parquet / arrow files, or a cached Hub id.
        split: the split of a ``DatasetDict`` (``train`` by default).
        image_column, label_column: column names (default: the first of the usual names present).
        classes: class names (default: ``id2label.json``, the ``ClassLabel`` names, or discovered).
        reduce_labels: transformers' ``do_reduce_labels`` (0 → ignore, k → k−1).
        revision: the Hub revision of a Hub id.
        ignore_index, palette, label_map, transform, name: as :class:`~segkit.data.datasets.SegDataset`.

    Raises:
        DataError: an unreadable path, a missing split or column, a Hub id not in the local cache.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        split: str = "train",
        *,
        image_column: str | None = None,
        label_column: str | None = None,
        classes: Sequence[str] | None = None,
        reduce_labels: bool = False,
        revision: str | None = None,
        ignore_index: int = 255,
        palette: Sequence[Sequence[int]] | None = None,
        label_map: Mapping[int, int] | None = None,
        transform: Callable | None = None,
        name: str | None = None,
    ):
        ds_lib = _datasets()
        path = str(path)
        data = _load(path, split, revision)
        self.image_column = _column(data, image_column, IMAGE_COLUMNS, "image", path)
        self.label_column = _column(data, label_column, LABEL_COLUMNS, "label", path)
        feature = data.features[self.label_column]
        for col in (self.image_column, self.label_column):
            if isinstance(data.features[col], ds_lib.Image):
                data = data.cast_column(col, ds_lib.Image(decode=False))  # bytes: segkit's readers decode
        self.data, self.ref = data, f"{path}[{split}]"
        samples = [(f"{self.ref}[{i}].{self.image_column}", f"{self.ref}[{i}].{self.label_column}")
                   for i in range(len(data))]  # fmt: skip
        discovered = False
        if classes is None:
            classes = _class_names(path, feature, ds_lib)
            discovered = classes is None
            classes = classes or self._discover(make_label_lut(reduce_labels, label_map))
        super().__init__(
            samples,
            classes,
            palette,
            ignore_index=ignore_index,
            reduce_zero_label=reduce_labels,
            label_map=label_map,
            transform=transform,
            name=f"{name or Path(path).name}/{split}",
        )
        self.classes_discovered = discovered

    def _discover(self, lut) -> list[str]:
        """``class_0..class_{n-1}`` from the largest label id found (a warning says so)."""
        present = np.zeros(256, bool)
        for i in range(len(self.data)):
            raw = self.read_raw_label(i)
            present |= np.bincount((raw if lut is None else lut[raw]).ravel(), minlength=256) > 0
        ids = np.flatnonzero(present)
        ids = ids[ids != 255]
        if not len(ids):
            raise DataError(f"{self.ref}: cannot discover classes: the labels hold only the ignore value")
        n = int(ids.max()) + 1
        warnings.warn(
            f"{self.ref}: no class names (classes:, id2label.json or ClassLabel); found label values "
            f"{ids.tolist()}, using class_0..class_{n - 1}",
            UserWarning,
            stacklevel=3,
        )
        return [f"class_{k}" for k in range(n)]

    def _cell(self, i: int, column: str):
        value = self.data[i][column]
        if isinstance(value, dict) and ("bytes" in value or "path" in value):
            if value.get("bytes"):
                return value["bytes"], value.get("path")
            if value.get("path") and os.path.isfile(value["path"]):
                return Path(value["path"]).read_bytes(), value["path"]
            if value.get("path"):
                raise DataError(f"{self.ref}[{i}].{column}: holds no bytes and its file {value['path']} does not exist")
            raise DataError(f"{self.ref}[{i}].{column}: an empty cell")
        return value, None

    def image_bytes(self, i: int) -> bytes | None:
        value, _ = self._cell(i, self.image_column)
        if not isinstance(value, (bytes, bytearray)):
            raise DataError(f"{self.ref}[{i}].{self.image_column}: the column holds no encoded image")
        return bytes(value)

    def read_raw_label(self, i: int) -> np.ndarray:
        value, _ = self._cell(i, self.label_column)
        where = f"{self.ref}[{i}].{self.label_column}"
        if isinstance(value, (bytes, bytearray)):
            return read_label(where, data=bytes(value))
        arr = np.asarray(value)
        if (
            arr.ndim != 2
            or not np.issubdtype(arr.dtype, np.integer)
            or (arr.size and (arr.min() < 0 or arr.max() > 255))
        ):
            raise DataError(
                f"{where}: a label map must be an image or a 2-D array of ids 0..255, got {arr.dtype} {arr.shape}"
            )
        return arr.astype(np.uint8)


def _class_names(path: str, feature, ds_lib) -> list[str] | None:
    p = Path(path)
    for cand in (p / "id2label.json", p.parent / "id2label.json"):
        if cand.is_file():
            try:
                id2label = json.loads(cand.read_text())
                return [str(id2label[str(k)] if str(k) in id2label else id2label[k]) for k in range(len(id2label))]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise DataError(f"{cand}: not a {{id: name}} mapping of ids 0..N-1 ({e})") from None
    if isinstance(feature, ds_lib.ClassLabel):
        return list(feature.names)
    return None


__all__ = ["HFDataset"]
