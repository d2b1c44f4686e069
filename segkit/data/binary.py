"""The binary task's label convention: masks stored as 0/255 or 0/1 read as {0 background, 1 foreground}.

``task: binary`` (:class:`segkit.config.Config`) trains one logit per pixel. The masks people have are
either 0/1 or 0/255 (medical, microscopy and industrial data; Pillow's ``"1"`` images save as 0/255),
so the run reads the values the training masks hold (:func:`raw_label_values`) and
:func:`binary_convention` picks the rule:

* train ids already in {0, 1} (0/1 masks, or a ``label_map`` the config gave): kept;
* stored values {0, 255} with 255 not declared ``ignore_index``: ``label_map {255: 1}`` (255 is then the
  foreground, not the ignore value that mmseg and transformers default to);
* anything else (a value that is neither, or ``reduce_zero_label``, which would turn the background
  into ignore): a :class:`~segkit.errors.DataError` naming the data set and the values.

The values the masks use (``mask_values``: ``[0, 255]`` or ``[0, 1]``) are kept with the trained model, so
``segkit predict`` writes its masks the way the training data had them. Torch-free.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from segkit.data.datasets import SegDataset, make_label_lut
from segkit.errors import DataError

__all__ = ["raw_label_values", "binary_convention", "apply_binary_convention", "BINARY_CLASSES"]

BINARY_CLASSES = ["background", "foreground"]


def raw_label_values(dataset: SegDataset, workers: int | None = None) -> list[int]:
    """The sorted values stored in the label files of ``dataset`` (before its label convention), read on a
    thread pool. Raises :class:`~segkit.errors.DataError` naming the file for a missing or unreadable label."""
    present = np.zeros(256, bool)

    def values(i: int) -> np.ndarray:
        return np.bincount(dataset.read_raw_label(i).ravel(), minlength=256) > 0

    with ThreadPoolExecutor(max_workers=workers or min(8, 2 * (os.cpu_count() or 1))) as ex:
        for v in ex.map(values, range(len(dataset))):
            present |= v
    return [int(v) for v in np.flatnonzero(present)]


def binary_convention(dataset: SegDataset, values: list[int]) -> tuple[dict | None, list[int]]:
    """``(label_map, mask_values)`` that read ``dataset``'s masks, holding the stored ``values``, as
    {0 background, 1 foreground} (rules in the module doc). ``label_map`` is ``None`` when the
    dataset's own convention already gives {0, 1}; ``mask_values`` = ``[background, foreground]`` as stored.

    Raises :class:`~segkit.errors.DataError` naming the data set when the masks are not binary.
    """
    name, ignore = dataset.name, dataset.ignore_index
    folders = sorted({os.path.dirname(lb) for _, lb in getattr(dataset, "samples", []) if isinstance(lb, str)})
    if folders:  # a data set's name alone ("images") may not say which folder holds the masks
        name = f"{name} (labels in {folders[0]}{f' and {len(folders) - 1} more folder(s)' if len(folders) > 1 else ''})"
    declared = bool(getattr(dataset, "ignore_declared", True))
    if dataset.reduce_zero_label:
        raise DataError(
            f"{name}: task: binary with reduce_zero_label: 0 would become the ignore value and one class would be "
            f"left; binary masks with 0 = background need reduce_zero_label: false"
        )
    if 255 in values and set(values) <= {0, 255} and not declared and dataset.label_lut is None:
        return {255: 1}, [0, 255]
    lut = dataset.label_lut if dataset.label_lut is not None else np.arange(256, dtype=np.uint8)
    ids = {int(lut[v]) for v in values} - {ignore}
    shown = ", ".join(map(str, values[:12])) + (" …" if len(values) > 12 else "")
    if not ids <= {0, 1}:
        raise DataError(
            f"{name}: task: binary needs masks holding 0 and 1 or 0 and 255 (ignore value {ignore} allowed), but the "
            f"labels hold {shown}; map the values with label_map: {{value: 0 or 1}} or train a multi-class model"
        )
    if 1 not in ids:
        raise DataError(
            f"{name}: task: binary, but the labels hold no foreground pixel (values {shown}, ignore value {ignore}"
            f"{' declared' if declared else ''}); nothing to learn"
        )
    fg = [v for v in values if lut[v] == 1]
    bg = [v for v in values if lut[v] == 0]
    return None, [bg[0] if len(bg) == 1 else 0, fg[0] if len(fg) == 1 else 1]


def apply_binary_convention(dataset: SegDataset, label_map: dict | None) -> None:
    """Give ``dataset`` the binary task's label convention in place: ``label_map`` (from
    :func:`binary_convention`; ``None`` keeps the dataset's own) and two classes — the dataset's names when it
    has two it was given, else ``background, foreground`` (also for a list discovered from 0/1 masks, whose
    ``class_0, class_1`` name nothing) — with its palette when it has two colours."""
    if label_map is not None:
        dataset.label_map = {**(dataset.label_map or {}), **label_map}
        dataset.label_lut = make_label_lut(dataset.reduce_zero_label, dataset.label_map)
    if len(dataset.classes) != 2 or getattr(dataset, "classes_discovered", False):  # class_0, class_1: not names
        from segkit.data.meta import default_palette

        dataset.classes, dataset.palette = list(BINARY_CLASSES), default_palette(2)
    dataset.classes_discovered = False


def match_model(dataset: SegDataset, model) -> SegDataset:
    """Read ``dataset`` the way ``model`` (a :class:`~segkit.models.segmentor.Segmentor`, read by attribute) was
    trained: its input channels (``in_channels``) and, for a binary model, the binary label convention of its
    training masks (``mask_values [0, 255]``: ``label_map {255: 1}``, unless the dataset has its own). Returns
    the dataset (changed in place), for evaluation (``segkit eval``) and the other tools."""
    dataset.in_channels = int(getattr(model, "in_channels", 3))
    if getattr(model, "task", "multiclass") == "binary":
        mask = list(getattr(model, "mask_values", None) or [0, 1])
        label_map = {mask[1]: 1, mask[0]: 0} if mask != [0, 1] and dataset.label_lut is None else None
        apply_binary_convention(dataset, label_map)
        if len(getattr(model, "class_names", [])) == 2:
            dataset.classes = list(model.class_names)
    return dataset
