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
from segkit.data.io import DataError, ImageInfo, image_conversion, probe_image, read_bands, read_image
from segkit.errors import UsageError

__all__ = ["check_dataset", "DatasetReport", "image_statistics", "conversion_note"]


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
    raw_values: list[int] = field(default_factory=list)  # values found in the stored labels (before the convention)

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
        channels = getattr(dataset, "in_channels", 3)
        if channels == 3:
            info = probe_image(image_path, decode=decode_images, data=dataset.image_bytes(i))
        else:  # multi-band: decoded with the reader training uses (tifffile for TIFFs), band count checked
            h, w = read_bands(image_path, channels, data=dataset.image_bytes(i)).shape[:2]
            info = ImageInfo(height=h, width=w, mode=f"{channels} bands", orientation=1, conversion=None)
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


def training_trap(report: DatasetReport, dataset: SegDataset) -> str | None:
    """Why training on ``dataset`` would learn nothing useful, or ``None``: the binary-mask traps.

    * labels hold exactly {0, 255}, 255 is the ignore value only by default (not declared in the
      spec or ``meta.json``) and the classes were discovered: the foreground would be ignored and
      the model would learn one class (mmseg's and transformers' ``ignore_index=255`` trap);
    * {0, 1} masks with ``reduce_zero_label``: 0 becomes ignore, one class is left;
    * any discovered class list of length 1.

    ``segkit train`` refuses with this message; ``segkit check-data`` shows the same as a warning.
    """
    raw = set(report.raw_values)
    discovered = bool(getattr(dataset, "classes_discovered", False))
    declared = bool(getattr(dataset, "ignore_declared", True))
    name = dataset.name
    if raw == {0, 255} and report.ignore_index == 255 and dataset.label_lut is None and not declared and discovered:
        return (
            f"{name}: the labels hold only 0 and 255, and 255 is the ignore value by default, so every "
            f"foreground pixel would be ignored and the model would learn a single class. If 255 marks the "
            f"foreground of binary masks, map it: label_map: {{255: 1}} with classes: [background, foreground]; "
            f"if 255 really means 'ignore', say so: ignore_index: 255 (and give the classes)"
        )
    if raw <= {0, 1, 255} and 1 in raw and dataset.reduce_zero_label and len(dataset.classes) <= 1:
        return (
            f"{name}: the labels hold only 0 and 1 and reduce_zero_label maps 0 to ignore, so one class is "
            f"left to learn; binary masks with 0 = background need reduce_zero_label: false and classes: "
            f"[background, foreground]"
        )
    if discovered and len(dataset.classes) == 1:
        return (
            f"{name}: only one class was found in the labels ({dataset.classes[0]}); a model cannot learn "
            f"anything from one class. Check the label values (segkit check-data), or give classes: [...]"
        )
    return None


def image_statistics(dataset: SegDataset, workers: int | None = None) -> tuple[list[float], list[float], int]:
    """Per-channel ``(mean, std, pixels)`` of every image of ``dataset`` on the 0–255 scale, as read for training
    (:attr:`~segkit.data.datasets.SegDataset.in_channels` bands; 16-bit scaled), over all pixels of all images
    (population std). For a model's ``mean`` / ``std`` (``segkit check-data --stats``); images are read on a
    thread pool, sums kept in float64. Raises :class:`~segkit.errors.DataError` naming an unreadable image."""
    channels = int(getattr(dataset, "in_channels", 3))

    def sums(i: int) -> tuple[np.ndarray, np.ndarray, int]:
        path = dataset.samples[i][0]
        data = dataset.image_bytes(i)
        img = read_image(path, data=data) if channels == 3 else read_bands(path, channels, data=data)
        flat = img.reshape(-1, channels).astype(np.float64)
        return flat.sum(0), (flat * flat).sum(0), flat.shape[0]

    total, total_sq, n = np.zeros(channels), np.zeros(channels), 0
    with ThreadPoolExecutor(max_workers=workers or min(8, 2 * (os.cpu_count() or 1))) as ex:
        for s, sq, k in ex.map(sums, range(len(dataset))):
            total, total_sq, n = total + s, total_sq + sq, n + k
    if n == 0:
        raise DataError(f"{dataset.name}: no image pixels to compute statistics from")
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean * mean, 0.0))
    return [float(v) for v in mean], [float(v) for v in std], n


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
        raise UsageError(f"num_classes must be in 1..256 for uint8 labels, got {k}")
    tally = _Tally(dataset, k)
    workers = workers or min(8, 2 * (os.cpu_count() or 1))
    _scan_samples(dataset, decode_images, workers, progress, tally.add)
    report = tally.report(t0)
    if report.problems and raise_on_error:
        kinds = ", ".join(f"{kind}: {c}" for kind, c in report.problem_kinds.items())
        listed = "\n".join(f"  - {m}" for m in report.problems[:max_listed])
        more = f"\n  ... and {len(report.problems) - max_listed} more" if len(report.problems) > max_listed else ""
        err = DataError(
            f"{dataset.name}: {len(report.problems)} problem(s) in {report.num_samples} samples ({kinds}):\n"
            f"{listed}{more}"
        )
        err.report = report
        raise err
    return report


def conversion_note(dataset: SegDataset, workers: int | None = None) -> str | None:
    """The one line ``segkit train`` and ``check-data`` print about ``dataset``'s images that are not 8-bit RGB
    ("N image(s) are not 8-bit RGB and will be converted when read: grayscale -> RGB (N), …"), prefixed with the data
    set's name, for the commands that read a data set without scanning its labels (``segkit eval``); ``None`` when
    every image is 8-bit RGB, or the data set reads multi-band images (``in_channels != 3``: no conversion).

    Reads only the image headers (:func:`~segkit.data.io.image_conversion`) on a thread pool. A file that cannot be
    read is left to the reader, which names it (this note never raises a :class:`DataError`)."""
    if getattr(dataset, "in_channels", 3) != 3:
        return None

    def conversion(i: int) -> str | None:
        try:
            return image_conversion(dataset.samples[i][0], data=dataset.image_bytes(i))
        except DataError:
            return None

    with ThreadPoolExecutor(max_workers=workers or min(8, 2 * (os.cpu_count() or 1))) as ex:
        counts = Counter(c for c in ex.map(conversion, range(len(dataset))) if c)
    if not counts:
        return None
    kinds = ", ".join(f"{c} ({m})" for c, m in counts.items())
    return f"{dataset.name}: {sum(counts.values())} image(s) are not 8-bit RGB and will be converted when read: {kinds}"


def _scan_samples(dataset: SegDataset, decode_images: bool, workers: int, progress: bool, add) -> None:
    """Scan every sample on a pool of ``workers`` threads and hand the results, in sample order, to
    ``add(i, result)`` (with a tqdm bar if ``progress``); an interruption cancels the queued files."""
    n = len(dataset)
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
                    add(i, res)
            except BaseException:  # e.g. Ctrl-C: do not wait for the queued files
                for f in futures:
                    if f is not None:
                        f.cancel()
                raise
    finally:
        if bar is not None:
            bar.close()


class _Tally:
    """What :func:`check_dataset` adds up over the samples: pixel and label counts per train id
    (256 bins, after the dataset's label convention), stored values seen, image sizes,
    conversions and problems; then the warnings and the :class:`DatasetReport`."""

    def __init__(self, dataset: SegDataset, k: int):
        self.dataset, self.k = dataset, k
        self.ignore = dataset.ignore_index
        self.lut = dataset.label_lut if dataset.label_lut is not None else np.arange(256, dtype=np.uint8)
        self.valid = np.zeros(256, bool)
        self.valid[:k] = True
        self.train_counts = np.zeros(256, np.int64)
        self.image_counts = np.zeros(256, np.int64)
        self.raw_present = np.zeros(256, bool)
        self.sizes: Counter = Counter()
        self.conversions: Counter = Counter()
        self.problems: list[tuple[str, str]] = []  # [(kind, message)]

    def add(self, i: int, res: _SampleResult) -> None:
        """Count sample ``i``; label values outside ``[0, k) ∪ {ignore}`` are a problem naming the file."""
        self.problems += res.problems
        if res.size is not None:
            self.sizes[res.size] += 1
        if res.conversion:
            self.conversions[res.conversion] += 1
        if res.raw_counts is None:
            return
        self.raw_present |= res.raw_counts > 0
        per_train = np.bincount(self.lut, weights=res.raw_counts, minlength=256).astype(np.int64)
        self.train_counts += per_train
        self.image_counts += per_train > 0
        bad = np.flatnonzero((per_train > 0) & ~self.valid)
        bad = bad[bad != self.ignore]
        if len(bad):
            raw_bad = [int(v) for v in np.flatnonzero(res.raw_counts) if np.isin(self.lut[v], bad)]
            conv = "" if self.dataset.label_lut is None else f" (stored values {raw_bad} before the label convention)"
            self.problems.append(
                (
                    "out-of-range values",
                    f"{self.dataset.samples[i][1]}: label values {bad.tolist()}{conv} outside "
                    f"[0, {self.k}) and not the ignore value {self.ignore}; "
                    f"{int(per_train[bad].sum())} pixels",
                )
            )

    def warnings(self, names: list[str]) -> list[str]:
        """Not errors: images converted when read, 0/255 binary-looking or 1-based-looking labels,
        classes that never occur."""
        dataset, k, ignore, train_counts = self.dataset, self.k, self.ignore, self.train_counts
        warn: list[str] = []
        if self.conversions:
            warn.append(
                f"{sum(self.conversions.values())} image(s) are not 8-bit RGB and will be converted when read: "
                + ", ".join(f"{c} ({m})" for c, m in self.conversions.items())
            )
        raw_values = np.flatnonzero(self.raw_present)
        if len(dataset) and set(raw_values.tolist()) == {0, 255} and ignore == 255 and dataset.label_lut is None:
            warn.append(
                "labels contain only 0 and 255; 255 is the ignore value. If 255 marks the foreground of "
                "binary masks, pass label_map={255: 1} (and 2 classes)."
            )
        bad_ids = [int(v) for v in np.flatnonzero(train_counts) if not self.valid[v] and v != ignore]
        if bad_ids and bad_ids == [k] and not dataset.reduce_zero_label and train_counts[0] == 0:
            warn.append(
                f"the labels use 1..{k} and never 0: they look 1-based; reduce_zero_label=True maps k -> k-1 "
                "(and 0 -> ignore)."
            )
        missing = [i for i in range(k) if train_counts[i] == 0]
        if missing and len(missing) < k:
            shown = ", ".join(f"{i} {names[i]}" for i in missing[:20]) + (" ..." if len(missing) > 20 else "")
            warn.append(f"{len(missing)} class(es) never occur: {shown}")
        return warn

    def report(self, t0: float) -> DatasetReport:
        """The :class:`DatasetReport` (problems grouped: one entry for all colour masks; ``seconds`` since ``t0``)."""
        dataset, k, ignore, train_counts, valid = self.dataset, self.k, self.ignore, self.train_counts, self.valid
        names = list(dataset.classes[:k]) + [f"class_{i}" for i in range(len(dataset.classes), k)]
        warn = self.warnings(names)
        problems = _group_colour_masks(self.problems)
        return DatasetReport(
            name=dataset.name,
            num_samples=len(dataset),
            num_classes=k,
            ignore_index=ignore,
            class_names=names,
            pixel_counts=train_counts[:k].copy(),
            image_counts=self.image_counts[:k].copy(),
            ignore_pixels=int(train_counts[ignore]),
            out_of_range_pixels=int(train_counts[~valid].sum() - (0 if valid[ignore] else train_counts[ignore])),
            image_sizes=dict(self.sizes),
            conversions=dict(self.conversions),
            problems=[m for _, m in problems],
            problem_kinds=dict(Counter(kind for kind, _ in problems)),
            warnings=warn,
            seconds=time.perf_counter() - t0,
            raw_values=[int(v) for v in np.flatnonzero(self.raw_present)],
        )
