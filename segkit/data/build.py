"""``build_dataset``: a dataset from a small ``data:`` spec, and :data:`DATASETS`, the plain dict
from ``type`` to dataset class — the papers' benchmarks, segkit's own layouts
(:mod:`segkit.data.datasets`) and the annotation tools' exports (:mod:`segkit.data.formats`)."""

from __future__ import annotations

import inspect
import os
from typing import Callable, Mapping

from segkit.data.datasets import (
    ADE20K,
    ISAID,
    Cityscapes,
    COCOStuff10k,
    COCOStuff164k,
    FolderDataset,
    PascalContext,
    PascalVOC,
    SegDataset,
    SplitDataset,
    missing_root_message,
    resolve_root,
    unknown_colour_problem,
)
from segkit.data.formats import CocoDataset, CvatMaskDataset, HFDataset, LabelMeDataset, YoloDataset
from segkit.data.io import DataError

DATASETS: dict[str, type[SegDataset]] = {
    "split": SplitDataset,
    "folder": FolderDataset,
    "ade20k": ADE20K,
    "cityscapes": Cityscapes,
    "voc": PascalVOC,
    "pascal_voc": PascalVOC,
    "pascal_context": PascalContext,
    "coco_stuff164k": COCOStuff164k,
    "coco_stuff10k": COCOStuff10k,
    "isaid": ISAID,
    "coco": CocoDataset,
    "cvat": CvatMaskDataset,
    "hf": HFDataset,
    "yolo": YoloDataset,
    "labelme": LabelMeDataset,
}


def check_spec(cfg: Mapping, where: str = "") -> None:
    """Check a dataset spec without reading any file: a known ``type`` and the keys its dataset takes.

    Raises :class:`~segkit.errors.ConfigError` (a usage mistake) naming the key under ``where`` (``data.train``)
    and the nearest valid names."""
    from segkit.errors import ConfigError
    from segkit.utils import suggest

    def fail(key: str, message: str) -> ConfigError:
        err = ConfigError(f"{where + '.' if where else ''}{key}: {message}")
        err.key = f"{where + '.' if where else ''}{key}"
        return err

    if not isinstance(cfg, Mapping):
        raise (
            fail("", f"a dataset spec must be a mapping with a 'type', got {cfg!r}")
            if where
            else ConfigError(f"a dataset spec must be a mapping with a 'type', got {cfg!r}")
        )
    kind = cfg.get("type")
    if kind not in DATASETS:
        hint = suggest(str(kind), DATASETS) if kind is not None else ""
        raise fail("type", f"a dataset spec needs 'type' in {', '.join(sorted(DATASETS))}; got {kind!r}{hint}")
    params = inspect.signature(DATASETS[kind].__init__).parameters
    allowed = [p for p in params if p not in ("self", "transform")]
    unknown = sorted(k for k in cfg if k != "type" and k not in allowed)
    if unknown:
        hint = suggest(unknown[0], allowed) if len(unknown) == 1 else ""
        raise fail(unknown[0], f"dataset type {kind!r}: unknown key(s) {unknown}{hint}; allowed: {', '.join(allowed)}")
    missing = [
        p
        for p, v in params.items()
        if p not in ("self", "transform")
        and v.default is inspect.Parameter.empty
        and v.kind is not inspect.Parameter.VAR_KEYWORD
        and p not in cfg
    ]
    if missing:
        raise fail(missing[0], f"dataset type {kind!r}: missing key(s) {missing}")
    if "unknown_colour" in cfg and unknown_colour_problem(cfg["unknown_colour"]):
        raise fail("unknown_colour", unknown_colour_problem(cfg["unknown_colour"]))


def build_dataset(cfg: Mapping, transform: Callable | None = None) -> SegDataset:
    """Build a dataset from a small dict, e.g. ``{"type": "split", "root": "${SEGKIT_DATA}/camvid",
    "split": "train"}`` or ``{"type": "ade20k", "root": ..., "split": "validation"}``.

    ``type`` is a key of :data:`DATASETS`; the other keys are the constructor arguments. Path
    values (``root``, ``images_dir``, ``labels_dir``) go through :func:`resolve_root`; a root
    that does not exist is a :class:`DataError` that says where segkit looked and how to set
    ``SEGKIT_DATA``.

    Raises:
        ConfigError: missing/unknown ``type``, or keys the dataset does not take (all named; :func:`check_spec`).
        DataError: a root that does not exist, unreadable data.
    """
    check_spec(cfg)
    cfg = dict(cfg)
    cls = DATASETS[cfg.pop("type")]
    for key in ("root", "images_dir", "labels_dir", "annotations", "images", "data_yaml"):
        if isinstance(cfg.get(key), (str, os.PathLike)):
            if not resolve_root(cfg[key]).exists():
                what = "dataset root" if key == "root" else f"{key}:"
                raise DataError(missing_root_message(cfg[key], what))
            cfg[key] = str(resolve_root(cfg[key]))
    return cls(**cfg, transform=transform)


__all__ = ["DATASETS", "build_dataset", "check_spec"]
