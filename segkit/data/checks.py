"""Dataset guard-rails: scan every label (and image header) before training.

:func:`check_dataset` reads every label map and every image header, and

* counts pixels per class after the dataset's label convention (a readable table:
  :meth:`DatasetReport.table`);
* collects every problem, then raises one :class:`~segkit.data.io.DataError` listing them (grouped
  by kind, the first ``max_listed`` in full), so that all can be fixed in one go:
  label values outside ``[0, num_classes) ∪ {ignore_index}`` (naming the file, the offending
  train ids and the raw values they came from), 3-channel colour masks (with the conversion
  recipe), image/label size mismatch, missing image or label, unreadable / truncated files;
* reports (as warnings, not errors) images that will be converted to RGB (grayscale, RGBA,
  palette, 16-bit), classes that never occur, and label sets that look like 0/255 binary masks
  or 1-based labels.

Images are checked from the header plus an end-of-file integrity test (PNG ``IEND``, JPEG
``EOI``, WebP RIFF size); ``decode_images=True`` decodes every image fully. Files are read by a
thread pool (Pillow and OpenCV decoders release the GIL).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from segkit.data.datasets import SegDataset, size_mismatch_message
from segkit.data.io import DataError, probe_image

__all__ = ["check_dataset", "DatasetReport"]


@dataclass
class DatasetReport:
    """Result of :func:`check_dataset`. Pixel statistics are in train ids (after the label convention)."""

    name: str
    num_samples: int
    num_classes: int
    ignore_index: int
    class_names: list[str]
    pixel_counts: np.ndarray  # (num_classes,) int64 labelled pixels per class
    image_counts: np.ndarray  # (num_classes,) int64 number of labels containing the class
    ignore_pixels: int
    out_of_range_pixels: int
    image_sizes: dict  # {(W, H): count}
    conversions: dict  # {"grayscale -> RGB": count, ...}
    problems: list[str] = field(default_factory=list)
    problem_kinds: dict = field(default_factory=dict)  # {kind: count}
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def labelled_pixels(self) -> int:
        return int(self.pixel_counts.sum())

    @property
    def total_pixels(self) -> int:
        return self.labelled_pixels + self.ignore_pixels + self.out_of_range_pixels

    @property
    def frequencies(self) -> np.ndarray:
        """Fraction of labelled (non-ignore) pixels per class, float64 (num_classes,)."""
        total = max(self.labelled_pixels, 1)
        return self.pixel_counts / total

    @property
    def missing_classes(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.pixel_counts == 0)]

    def table(self) -> str:
        """Readable summary: header lines, then one row per class (id, name, pixels, %, #labels)."""
        total = self.total_pixels
        ign = 100.0 * self.ignore_pixels / total if total else 0.0
        sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sorted(self.image_sizes.items(), key=lambda t: -t[1])[:5])
        if len(self.image_sizes) > 5:
            sizes += f", ... ({len(self.image_sizes)} sizes)"
        lines = [
            f"{self.name}: {self.num_samples} samples, {self.num_classes} classes, {total:,} pixels "
            f"({ign:.2f}% ignore={self.ignore_index}), checked in {self.seconds:.1f} s",
            f"image sizes (WxH): {sizes or '-'}",
        ]
        if self.conversions:
            lines.append("converted to RGB when read: " + ", ".join(f"{k} ({n})" for k, n in self.conversions.items()))
        width = max([len(n) for n in self.class_names] + [5])
        lines.append(f"{'id':>4}  {'class':<{width}}  {'pixels':>14}  {'%':>7}  {'labels':>7}")
        freq = self.frequencies
        for i, name in enumerate(self.class_names):
            lines.append(
                f"{i:>4}  {name:<{width}}  {int(self.pixel_counts[i]):>14,}  {100 * freq[i]:>6.2f}%  "
                f"{int(self.image_counts[i]):>7}"
            )
        for w in self.warnings:
            lines.append(f"warning: {w}")
        if self.problems:
            kinds = ", ".join(f"{k} ({n})" for k, n in self.problem_kinds.items())
            lines.append(f"{len(self.problems)} problem(s): {kinds}")
            lines += [f"  - {m}" for m in self.problems[:30]]
            if len(self.problems) > 30:
                lines.append(f"  ... and {len(self.problems) - 30} more")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "num_samples": self.num_samples,
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "class_names": list(self.class_names),
            "pixel_counts": self.pixel_counts.tolist(),
            "image_counts": self.image_counts.tolist(),
            "ignore_pixels": self.ignore_pixels,
            "out_of_range_pixels": self.out_of_range_pixels,
            "image_sizes": {f"{w}x{h}": n for (w, h), n in self.image_sizes.items()},
            "conversions": dict(self.conversions),
            "problems": list(self.problems),
            "problem_kinds": dict(self.problem_kinds),
            "warnings": list(self.warnings),
            "seconds": self.seconds,
        }


@dataclass
class _SampleResult:
    raw_counts: np.ndarray | None = None  # (256,) counts of stored label values
    size: tuple[int, int] | None = None  # (W, H) of the image
    conversion: str | None = None
    problems: list = field(default_factory=list)  # [(kind, message)]


def _kind_of(message: str, default: str) -> str:
    if "colour mask" in message:
        return "colour mask"
    if "file not found" in message:
        return f"missing {default}"
    return f"unreadable {default}"


def _scan_sample(dataset: SegDataset, i: int, decode_images: bool) -> _SampleResult:
    res = _SampleResult()
    image_path, label_path = dataset.samples[i]
    info = None
    try:
        info = probe_image(image_path, decode=decode_images)
        res.size, res.conversion = (info.width, info.height), info.conversion
    except DataError as e:
        res.problems.append((_kind_of(str(e), "image"), str(e)))
    if label_path is None:
        res.problems.append(("missing label", f"{image_path}: no label file for this image"))
        return res
    try:
        raw = dataset.read_raw_label(i)
    except DataError as e:
        res.problems.append((_kind_of(str(e), "label"), str(e)))
        return res
    res.raw_counts = np.bincount(raw.ravel(), minlength=256)
    if info is not None and raw.shape != (info.height, info.width):
        res.problems.append(
            ("size mismatch", size_mismatch_message(image_path, label_path, (info.height, info.width), raw.shape))
        )
    return res


def _group_colour_masks(problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """One explanation for all colour-mask labels (with their count), not one per file."""
    colour = [m for kind, m in problems if kind == "colour mask"]
    if len(colour) < 2:
        return problems
    files = [m.split(": label is", 1)[0] for m in colour]
    shown = ", ".join(files[:3]) + (" …" if len(files) > 3 else "")
    summary = (
        f"{len(files)} label files are 3-channel colour masks (e.g. {shown}). Give the dataset its colour table — "
        f"label_colours: [[R, G, B], …] (index = class id), or colour_labels: true to use its palette — in the "
        f"data spec or meta.json, or convert them once with segkit.data.convert_colour_masks(src, dst, palette)"
    )
    return [(k, m) for k, m in problems if k != "colour mask"] + [("colour mask", summary)]


def check_dataset(
    dataset: SegDataset,
    num_classes: int | None = None,
    progress: bool = True,
    *,
    decode_images: bool = False,
    max_listed: int = 30,
    workers: int | None = None,
    raise_on_error: bool = True,
) -> DatasetReport:
    """Scan every sample of ``dataset`` and return a :class:`DatasetReport`.

    Args:
        dataset: a :class:`~segkit.data.datasets.SegDataset`.
        num_classes: valid train ids are ``0 .. num_classes-1`` (default: ``dataset.num_classes``).
        progress: show a tqdm progress bar (stderr).
        decode_images: decode every image fully instead of header + end-of-file check.
        max_listed: how many problems the error message lists in full.
        workers: reader threads (default ``min(8, 2 * cpu_count)``).
        raise_on_error: raise when problems are found (else they are only in the report).

    Raises:
        DataError: listing all problems found (``err.report`` holds the report).
    """
    t0 = time.perf_counter()
    k = int(num_classes if num_classes is not None else dataset.num_classes)
    if not 1 <= k <= 256:
        raise ValueError(f"num_classes must be in 1..256 for uint8 labels, got {k}")
    ignore = dataset.ignore_index
    lut = dataset.label_lut if dataset.label_lut is not None else np.arange(256, dtype=np.uint8)
    valid = np.zeros(256, bool)
    valid[:k] = True
    n = len(dataset)
    workers = workers or min(8, 2 * (os.cpu_count() or 1))

    train_counts = np.zeros(256, np.int64)
    image_counts = np.zeros(256, np.int64)
    raw_present = np.zeros(256, bool)
    sizes: Counter = Counter()
    conversions: Counter = Counter()
    problems: list[tuple[str, str]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"checking {dataset.name}", unit="file", leave=False)
    try:
        with ThreadPoolExecutor(max_workers=workers) as ex:
            futures = [ex.submit(_scan_sample, dataset, i, decode_images) for i in range(n)]
            try:
                for i in range(n):
                    res, futures[i] = futures[i].result(), None  # drop finished futures (large datasets)
                    if bar is not None:
                        bar.update(1)
                    problems += res.problems
                    if res.size is not None:
                        sizes[res.size] += 1
                    if res.conversion:
                        conversions[res.conversion] += 1
                    if res.raw_counts is None:
                        continue
                    raw_present |= res.raw_counts > 0
                    per_train = np.bincount(lut, weights=res.raw_counts, minlength=256).astype(np.int64)
                    train_counts += per_train
                    image_counts += per_train > 0
                    bad = np.flatnonzero((per_train > 0) & ~valid)
                    bad = bad[bad != ignore]
                    if len(bad):
                        raw_bad = [int(v) for v in np.flatnonzero(res.raw_counts) if np.isin(lut[v], bad)]
                        conv = (
                            ""
                            if dataset.label_lut is None
                            else f" (stored values {raw_bad} before the label convention)"
                        )
                        problems.append(
                            (
                                "out-of-range values",
                                f"{dataset.samples[i][1]}: label values {bad.tolist()}{conv} outside "
                                f"[0, {k}) and not the ignore value {ignore}; "
                                f"{int(per_train[bad].sum())} pixels",
                            )
                        )
            except BaseException:  # e.g. Ctrl-C: do not wait for the queued files
                for f in futures:
                    if f is not None:
                        f.cancel()
                raise
    finally:
        if bar is not None:
            bar.close()

    pixel_counts = train_counts[:k].copy()
    out_of_range = int(train_counts[~valid].sum() - (0 if valid[ignore] else train_counts[ignore]))
    names = list(dataset.classes[:k]) + [f"class_{i}" for i in range(len(dataset.classes), k)]
    warn: list[str] = []
    if conversions:
        warn.append(
            f"{sum(conversions.values())} image(s) are not 8-bit RGB and will be converted when read: "
            + ", ".join(f"{c} ({m})" for c, m in conversions.items())
        )
    raw_values = np.flatnonzero(raw_present)
    if n and set(raw_values.tolist()) == {0, 255} and ignore == 255 and dataset.label_lut is None:
        warn.append(
            "labels contain only 0 and 255; 255 is the ignore value. If 255 marks the foreground of "
            "binary masks, pass label_map={255: 1} (and 2 classes)."
        )
    bad_ids = [int(v) for v in np.flatnonzero(train_counts) if not valid[v] and v != ignore]
    if bad_ids and bad_ids == [k] and not dataset.reduce_zero_label and train_counts[0] == 0:
        warn.append(
            f"the labels use 1..{k} and never 0: they look 1-based; reduce_zero_label=True maps k -> k-1 "
            "(and 0 -> ignore)."
        )
    missing = [i for i in range(k) if pixel_counts[i] == 0]
    if missing and len(missing) < k:
        shown = ", ".join(f"{i} {names[i]}" for i in missing[:20]) + (" ..." if len(missing) > 20 else "")
        warn.append(f"{len(missing)} class(es) never occur: {shown}")

    problems = _group_colour_masks(problems)
    report = DatasetReport(
        name=dataset.name,
        num_samples=n,
        num_classes=k,
        ignore_index=ignore,
        class_names=names,
        pixel_counts=pixel_counts,
        image_counts=image_counts[:k].copy(),
        ignore_pixels=int(train_counts[ignore]),
        out_of_range_pixels=out_of_range,
        image_sizes=dict(sizes),
        conversions=dict(conversions),
        problems=[m for _, m in problems],
        problem_kinds=dict(Counter(kind for kind, _ in problems)),
        warnings=warn,
        seconds=time.perf_counter() - t0,
    )
    if problems and raise_on_error:
        kinds = ", ".join(f"{kind}: {c}" for kind, c in report.problem_kinds.items())
        listed = "\n".join(f"  - {m}" for _, m in problems[:max_listed])
        more = f"\n  ... and {len(problems) - max_listed} more" if len(problems) > max_listed else ""
        err = DataError(f"{dataset.name}: {len(problems)} problem(s) in {n} samples ({kinds}):\n{listed}{more}")
        err.report = report
        raise err
    return report
