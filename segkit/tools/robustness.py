"""Robustness to common image corruptions: mIoU on clean and corrupted test images.

Protocol (SegFormer paper §4.4 / Table 5 "Cityscapes-C", following Kamann & Rother, CVPR 2020;
RSSeg Table 15): the 16 corruptions of Hendrycks & Dietterich (ICLR 2019), in four groups,

* Blur: ``motion_blur``, ``defocus_blur``, ``glass_blur``, ``gaussian_blur``
* Noise: ``gaussian_noise``, ``impulse_noise``, ``shot_noise``, ``speckle_noise``
* Digital: ``brightness``, ``contrast``, ``saturate``, ``jpeg_compression``
* Weather: ``snow``, ``spatter``, ``fog``, ``frost``

applied with the ``imagecorruptions`` package (Michaelis et al. 2019) at severities 1–5 to the
*original* uint8 test image, which then goes through the same test transform (resize +
normalise) and the same inference as the clean image; the label is untouched. mIoU is
dataset-wide (:func:`segkit.engine.evaluator.evaluate`). Table columns, as in the papers:
``Clean``; one column per corruption = mean mIoU over the requested severities (the papers
average over severities 1–5); one per group = mean of its corruptions; ``Corr.`` = mean of all
(16) corruption columns; ``Rete.`` = Corr. / Clean (retention, in %).

Determinism. ``imagecorruptions`` draws from NumPy's *global* random state. Each
(image, corruption, severity) gets its own seed,
``SeedSequence([seed, image_index, corruption_id, severity])`` (``corruption_id`` = position in
:data:`CORRUPTIONS`, so a subset run corrupts an image exactly as the full run does); the
global state is saved before and restored after, so nothing else is disturbed. Same seed →
bit-identical corrupted images and metrics.

Compatibility with this environment (imagecorruptions 1.1.2, numpy 2, scikit-image ≥ 0.21,
setuptools ≥ 81). The package, unchanged, cannot run here; :func:`corruption_functions`
loads it with five documented fixes (only inside the package's module
namespace, nothing global is patched):

1. ``from pkg_resources import resource_filename`` fails (setuptools no longer ships
   ``pkg_resources``): during the import only, a stand-in ``pkg_resources`` module providing
   ``resource_filename`` (path next to the named module) is put in ``sys.modules`` and removed
   afterwards. Used by ``frost`` to find its bundled frost pictures.
2. ``skimage.filters.gaussian(..., multichannel=True)`` (``gaussian_blur``, ``glass_blur``):
   the argument was removed from scikit-image; the module's ``gaussian`` is replaced by a
   wrapper translating it to ``channel_axis=-1`` (the documented equivalent).
3. ``np.float_`` (removed in numpy 2) in ``plasma_fractal`` (``fog``): replaced by a copy of the
   same diamond-square algorithm with ``np.float64``; identical draws and values.
4. ``impulse_noise`` calls ``skimage.util.random_noise`` which, in current scikit-image, draws
   from a fresh ``np.random.default_rng()`` and ignores the global seed: it is replaced by the
   same salt-and-pepper noise (same amounts per severity) with ``rng`` seeded from the global
   state, so it repeats with the seed. The draws differ from an old-scikit-image run.

5. ``glass_blur`` is a Python loop over pixels (seconds per 480×360 image and severity); it is
   replaced by :func:`_glass_blur`, the same computation and random draws, bit-identical
   output, much faster.

``motion_blur`` in 1.1.2 is pure NumPy (no Wand/ImageMagick). If a corruption still fails at
run time it raises :class:`CorruptionError` naming it — nothing is silently dropped.
"""

from __future__ import annotations

import io
import json
import math
import sys
import time
import types
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from segkit.data.transforms import MIN_SIDE  # imagecorruptions also refuses sides below 32 px
from segkit.errors import DataError, UsageError
from segkit.utils import json_safe, require  # NaN -> null for JSON (shared with metrics.json)

CORRUPTION_GROUPS: dict[str, tuple[str, ...]] = {
    "Blur": ("motion_blur", "defocus_blur", "glass_blur", "gaussian_blur"),
    "Noise": ("gaussian_noise", "impulse_noise", "shot_noise", "speckle_noise"),
    "Digital": ("brightness", "contrast", "saturate", "jpeg_compression"),
    "Weather": ("snow", "spatter", "fog", "frost"),
}
CORRUPTIONS: tuple[str, ...] = tuple(c for group in CORRUPTION_GROUPS.values() for c in group)
SEVERITIES = (1, 2, 3, 4, 5)


class CorruptionError(RuntimeError):
    """A corruption cannot run here or failed on an image; the message names it."""


# ----------------------------------------------------------------------------- loading imagecorruptions
_FUNCTIONS: dict[str, Callable] | None = None
ORIGINALS: dict[str, Callable] = {}  # the package's own versions of what the fixes replace (for tests)


def _plasma_fractal(mapsize: int = 256, wibbledecay: float = 3) -> np.ndarray:
    """imagecorruptions' diamond-square height map with ``np.float64`` for the removed ``np.float_`` (fix 3)."""
    assert mapsize & (mapsize - 1) == 0
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize = mapsize
    wibble = 100.0

    def wibbledmean(array):
        return array / 4 + wibble * np.random.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        half = stepsize // 2
        corner = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]  # squares
        acc = corner + np.roll(corner, shift=-1, axis=0)
        acc += np.roll(acc, shift=-1, axis=1)
        maparray[half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(acc)
        dr = maparray[half:mapsize:stepsize, half:mapsize:stepsize]  # diamonds
        ul = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        lt = (dr + np.roll(dr, 1, axis=0)) + (ul + np.roll(ul, -1, axis=1))  # same summation order as the original
        maparray[0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(lt)
        tt = (dr + np.roll(dr, 1, axis=1)) + (ul + np.roll(ul, -1, axis=0))
        maparray[half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(tt)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def _glass_blur(x, severity: int = 1) -> np.ndarray:
    """imagecorruptions' ``glass_blur`` with the per-pixel Python loop made fast, same result (fix 5).

    The original draws ``np.random.randint(-d, d, size=(2,))`` (dx, dy) for every pixel in a
    bottom-right-to-top-left scan and then does ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on
    NumPy row views, which (views alias) amounts to ``x[h, w] = x[h', w']`` applied in scan
    order. Here the draws of one pass are taken in one ``randint`` call (the legacy generator
    yields the same sequence and leaves the same state) and the sequential copies run on a
    Python list of packed RGB values: bit-identical output (checked against the original in
    ``tests/test_tools_robustness.py``), much faster.
    """
    from skimage.filters import gaussian

    sigma, delta, iterations = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)][severity - 1]
    x = np.uint8(gaussian(np.array(x) / 255.0, sigma=sigma, channel_axis=-1) * 255)
    h, w = x.shape[:2]
    hh, ww = np.meshgrid(np.arange(h - delta, delta, -1), np.arange(w - delta, delta, -1), indexing="ij")
    dst = (hh * w + ww).ravel()
    packed = ((x[..., 0].astype(np.int64) << 16) | (x[..., 1].astype(np.int64) << 8) | x[..., 2]).ravel().tolist()
    for _ in range(iterations):
        d = np.random.randint(-delta, delta, size=(dst.size, 2))  # columns: dx, dy
        src = dst + d[:, 1] * w + d[:, 0]
        for a, b in zip(dst.tolist(), src.tolist()):
            packed[a] = packed[b]
    p = np.asarray(packed, dtype=np.int64).reshape(h, w)
    x = np.stack([(p >> 16) & 255, (p >> 8) & 255, p & 255], axis=-1).astype(np.uint8)
    return np.clip(gaussian(x / 255.0, sigma=sigma, channel_axis=-1), 0, 1) * 255


def corruption_functions() -> dict[str, Callable]:
    """``{name: fn(PIL.Image, severity) -> array-like}`` for the 16 corruptions, loaded with the fixes above.

    Raises :class:`~segkit.errors.MissingDependencyError` (naming the ``segkit[tools]`` extra) when
    ``imagecorruptions`` or ``scikit-image`` is not installed.
    """
    global _FUNCTIONS
    if _FUNCTIONS is not None:
        return _FUNCTIONS
    import os

    shim = None
    if "pkg_resources" not in sys.modules:
        try:
            import pkg_resources  # noqa: F401  (old setuptools: use the real one)
        except ImportError:
            shim = types.ModuleType("pkg_resources")
            shim.resource_filename = lambda module, name: os.path.join(
                os.path.dirname(sys.modules[module].__file__), name
            )
            sys.modules["pkg_resources"] = shim
    try:
        require("skimage", "tools", "segkit robustness")
        imagecorruptions = require("imagecorruptions", "tools", "segkit robustness")
        from imagecorruptions import corruptions as ic
    finally:
        if shim is not None and sys.modules.get("pkg_resources") is shim:
            del sys.modules["pkg_resources"]

    import inspect

    from skimage.filters import gaussian as sk_gaussian
    from skimage.util import random_noise

    ORIGINALS.update(
        gaussian=ic.gaussian, plasma_fractal=ic.plasma_fractal, impulse_noise=ic.impulse_noise, glass_blur=ic.glass_blur
    )
    if "multichannel" not in inspect.signature(sk_gaussian).parameters:  # fix 2

        def gaussian(image, *args, multichannel=None, **kwargs):
            if multichannel and "channel_axis" not in kwargs:
                kwargs["channel_axis"] = -1
            return sk_gaussian(image, *args, **kwargs)

        ic.gaussian = gaussian
    if not hasattr(np, "float_"):  # fix 3
        ic.plasma_fractal = _plasma_fractal

    def impulse_noise(x, severity=1):  # fix 4
        amount = [0.03, 0.06, 0.09, 0.17, 0.27][severity - 1]
        rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))
        out = random_noise(np.asarray(x) / 255.0, mode="s&p", amount=amount, rng=rng)
        return np.clip(out, 0, 1) * 255

    funcs = {name: getattr(ic, name) for name in CORRUPTIONS}
    funcs["impulse_noise"] = impulse_noise
    funcs["glass_blur"] = _glass_blur
    missing = [n for n in CORRUPTIONS if n not in funcs or not callable(funcs[n])]
    if missing:
        raise CorruptionError(f"imagecorruptions {getattr(imagecorruptions, '__version__', '?')} lacks {missing}")
    _FUNCTIONS = {n: funcs[n] for n in CORRUPTIONS}
    return _FUNCTIONS


def corruption_seed(seed: int, image_index: int, corruption: str, severity: int) -> int:
    """The NumPy seed for one (image, corruption, severity) — see the module doc."""
    state = np.random.SeedSequence([int(seed), int(image_index), CORRUPTIONS.index(corruption), int(severity)])
    return int(state.generate_state(1)[0])


def corrupt(image: np.ndarray, corruption: str, severity: int, seed: int = 0, image_index: int = 0) -> np.ndarray:
    """Corrupt one image, reproducibly.

    Args:
        image: ``uint8 (H, W, 3)`` RGB, H and W >= 32.
        corruption: one of :data:`CORRUPTIONS`. severity: 1–5.
        seed, image_index: select the random draws (:func:`corruption_seed`).

    Returns ``uint8 (H, W, 3)`` (values clipped to 0–255 then truncated, as
    ``imagecorruptions.corrupt`` does). Raises ``ValueError`` for a bad image / name /
    severity and :class:`CorruptionError` (naming the corruption) if the corruption fails.
    """
    from PIL import Image

    if corruption not in CORRUPTIONS:
        raise UsageError(f"unknown corruption {corruption!r}; choose from {', '.join(CORRUPTIONS)}")
    if int(severity) not in SEVERITIES or int(severity) != severity:
        raise UsageError(f"severity must be an integer in 1..5, got {severity!r}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise UsageError(f"image must be uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise UsageError(f"image of size {image.shape[1]}x{image.shape[0]}: imagecorruptions needs H, W >= {MIN_SIDE}")
    fn = corruption_functions()[corruption]
    saved = np.random.get_state()
    try:
        np.random.seed(corruption_seed(seed, image_index, corruption, int(severity)))
        out = fn(Image.fromarray(image), int(severity))
    except Exception as e:
        raise CorruptionError(
            f"corruption {corruption!r} (severity {severity}) failed on a "
            f"{image.shape[1]}x{image.shape[0]} image: {type(e).__name__}: {e}"
        ) from e
    finally:
        np.random.set_state(saved)
    out = np.asarray(out)
    if out.shape != image.shape:
        raise CorruptionError(
            f"corruption {corruption!r} returned shape {out.shape} for an image of shape {image.shape}"
        )
    return np.uint8(np.clip(out, 0, 255))


# ----------------------------------------------------------------------------- dataset wrapper
class CorruptedDataset:
    """A dataset view whose items are ``transform(corrupt(image), label)``.

    ``base`` is a :class:`~segkit.data.datasets.SegDataset` *without* transform (its
    ``load(i)`` gives the original uint8 image and label); ``corruption=None`` gives the clean
    image through the same transform. Exposes ``classes``, ``num_classes``, ``ignore_index``,
    ``name`` of ``base`` so that :func:`segkit.engine.evaluator.evaluate` accepts it.
    """

    def __init__(self, base, transform, corruption: str | None = None, severity: int = 3, seed: int = 0):
        self.base, self.transform = base, transform
        self.corruption, self.severity, self.seed = corruption, int(severity), int(seed)
        self.classes = getattr(base, "classes", None)
        self.num_classes = getattr(base, "num_classes", None)
        self.ignore_index = getattr(base, "ignore_index", 255)
        self.name = getattr(base, "name", None)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        image, label = self.base.load(i)
        if self.corruption is not None:
            image = corrupt(image, self.corruption, self.severity, self.seed, i)
        item = {"image_path": str(self.base.samples[i][0]), "label_path": str(self.base.samples[i][1])}
        item.update(self.transform(image, label))
        return item


# ----------------------------------------------------------------------------- the evaluation
def evaluate_robustness(
    model,
    dataset,
    transform,
    *,
    corruptions: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    max_images: int | None = None,
    mode: str = "whole",
    crop_size: Sequence[int] | None = None,
    stride: Sequence[int] | None = None,
    device="cpu",
    progress: bool = True,
    out_dir: str | Path | None = None,
    grid_severity: int = 3,
    window_batch: int = 4,
    amp: str | None = None,
    absent: str = "union",
) -> dict:
    """mIoU of ``model`` on clean and corrupted versions of ``dataset``.

    Args:
        model: a :class:`~segkit.models.segmentor.Segmentor`.
        dataset: a ``SegDataset`` without transform (``load(i)`` → uint8 image, label).
        transform: the test transform (e.g. ``TestTransform(scale, mean=model.mean, std=model.std)``),
            applied identically to the clean and the corrupted images.
        corruptions: names from :data:`CORRUPTIONS` (default all 16; order of the table
            follows :data:`CORRUPTIONS`). severities: subset of 1–5.
        seed: see the module doc. max_images: first N images only.
        mode, crop_size, stride, window_batch: inference settings (``Segmentor.predict``).
        amp: autocast for the network (``None``, ``"bf16"``, ``"fp16"``; :func:`segkit.runtime.check_amp`).
        absent: classes absent from the ground truth in the mIoU, ``"union"`` (default,
            mmsegmentation's rule) or ``"gt"``: :func:`segkit.engine.metrics.metrics_from_matrix`.
        out_dir: if given, writes ``robustness.json``, ``robustness.md`` and
            ``corruptions_grid.png`` (first image under every corruption at ``grid_severity``).

    Returns a dict: ``clean`` (mIoU), ``miou[corruption][str(severity)]``, ``corruption_mean``
    (per corruption, over severities), ``group_mean``, ``corr`` (mean over the corruptions),
    ``retention`` (100·corr/clean), ``table`` (Markdown, SegFormer Table 5 layout),
    ``summary_table`` (RSSeg Table 15 layout), settings. mIoU in % (0–100).

    Raises ``ValueError`` for an unknown corruption / bad severity / empty dataset and
    :class:`CorruptionError` if a corruption cannot run (nothing is skipped silently).
    """
    corruptions, severities = _check_request(corruptions, severities, dataset, max_images)
    corruption_functions()  # fail now, not after the clean pass

    kw = dict(
        mode=mode,
        crop_size=crop_size,
        stride=stride,
        device=device,
        progress=False,
        max_images=max_images,
        window_batch=window_batch,
        amp=amp,
        absent=absent,
    )
    n = len(dataset) if max_images is None else min(len(dataset), int(max_images))
    start = time.perf_counter()
    clean, miou = _evaluate_all(model, dataset, transform, corruptions, severities, seed, progress, kw)
    elapsed = time.perf_counter() - start

    result = summarize(clean, miou)
    result.update(
        num_images=n,
        seed=int(seed),
        severities=severities,
        time_s=elapsed,
        settings={
            "mode": mode,
            "crop_size": list(crop_size) if crop_size else None,
            "stride": list(stride) if stride else None,
            "absent": absent,
            "transform": repr(transform),
            "model": getattr(model, "name", None),
            "dataset": getattr(dataset, "name", None),
        },
    )
    if out_dir is not None:
        _write_outputs(result, dataset, Path(out_dir), seed=seed, grid_severity=grid_severity)
    return result


def _check_request(corruptions, severities, dataset, max_images) -> tuple[list[str], list[int]]:
    """The corruptions in :data:`CORRUPTIONS` order and the sorted distinct severities;
    ``ValueError`` for an unknown corruption, none, a severity outside 1–5 or no images."""
    corruptions = list(corruptions)
    unknown = [c for c in corruptions if c not in CORRUPTIONS]
    if unknown:
        raise UsageError(f"unknown corruption(s) {unknown}; choose from {', '.join(CORRUPTIONS)}")
    if not corruptions:
        raise UsageError("no corruptions given")
    corruptions = [c for c in CORRUPTIONS if c in corruptions]
    severities = sorted({int(s) for s in severities})
    if not severities or any(s not in SEVERITIES for s in severities):
        raise UsageError(f"severities must be integers in 1..5, got {severities}")
    if len(dataset) == 0 or (max_images is not None and max_images < 1):
        raise DataError("no images to evaluate (empty dataset or max_images < 1)")
    return corruptions, severities


def _evaluate_all(
    model, dataset, transform, corruptions: list[str], severities: list[int], seed: int, progress: bool, kw: dict
) -> tuple[float, dict[str, dict[str, float]]]:
    """The clean pass, then every (corruption, severity) pass through :func:`evaluate` (``kw``: its
    settings); returns the clean mIoU and ``{corruption: {str(severity): mIoU}}``."""
    from tqdm.auto import tqdm

    from segkit.engine.evaluator import evaluate

    runs = [(None, 0)] + [(c, s) for c in corruptions for s in severities]
    bar = tqdm(runs, desc="robustness", disable=not progress, dynamic_ncols=True)
    miou: dict[str, dict[str, float]] = {}
    clean = math.nan
    for corruption, severity in bar:
        bar.set_postfix_str("clean" if corruption is None else f"{corruption} s{severity}")
        res = evaluate(model, CorruptedDataset(dataset, transform, corruption, severity or 3, seed), **kw)
        if corruption is None:
            clean = res["mIoU"]
        else:
            miou.setdefault(corruption, {})[str(severity)] = res["mIoU"]
    return clean, miou


def _write_outputs(result: dict, dataset, out_dir: Path, *, seed: int, grid_severity: int) -> None:
    """``robustness.json`` (NaN → null), ``robustness.md`` (both tables) and ``corruptions_grid.png``
    (the first image under every corruption at ``grid_severity``) in ``out_dir`` (created)."""
    from segkit.utils import atomic_write_bytes

    severities, n = result["severities"], result["num_images"]
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / "robustness.json", (json.dumps(json_safe(result), indent=1) + "\n").encode())
    md = (
        f"mIoU (%) per corruption, mean over severities {severities}; {n} images, seed {seed}.\n\n"
        f"{result['table']}\n\nGroup means (RSSeg Table 15 layout):\n\n{result['summary_table']}\n"
    )
    atomic_write_bytes(out_dir / "robustness.md", md.encode())
    image, _ = dataset.load(0)
    save_corruption_grid(image, out_dir / "corruptions_grid.png", severity=grid_severity, seed=seed)


def _mean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def summarize(clean: float, miou: dict[str, dict[str, float]]) -> dict:
    """Table numbers from per-(corruption, severity) mIoU: per-corruption and group means, Corr., Rete."""
    corruptions = [c for c in CORRUPTIONS if c in miou]
    per = {c: _mean(miou[c].values()) for c in corruptions}
    groups = {
        g: _mean(per[c] for c in names if c in per)
        for g, names in CORRUPTION_GROUPS.items()
        if any(c in per for c in names)
    }
    corr = _mean(per.values())
    retention = 100.0 * corr / clean if clean and not math.isnan(clean) else math.nan
    out = {
        "clean": clean,
        "miou": miou,
        "corruption_mean": per,
        "group_mean": groups,
        "corr": corr,
        "retention": retention,
    }
    out["table"] = format_robustness_table(out)
    out["summary_table"] = format_summary_table(out)
    return out


def _f(v, digits: int) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def format_summary_table(result: dict, digits: int = 1) -> str:
    """RSSeg Table 15 layout: ``Clean | Corr. | Rete. | Blur | Noise | Digit. | Weath.`` (group means)."""
    short = {"Blur": "Blur", "Noise": "Noise", "Digital": "Digit.", "Weather": "Weath."}
    cols = [("Clean", result["clean"]), ("Corr.", result["corr"]), ("Rete. (%)", result["retention"])]
    cols += [(short[g], v) for g, v in result["group_mean"].items()]
    return "\n".join(
        [
            "| " + " | ".join(c for c, _ in cols) + " |",
            "|" + "|".join("---:" for _ in cols) + "|",
            "| " + " | ".join(_f(v, digits) for _, v in cols) + " |",
        ]
    )


def format_robustness_table(result: dict, digits: int = 1) -> str:
    """SegFormer Table 5 layout, one row: Clean | the corruptions by group | group means | Corr. | Rete. (%)."""

    def f(v):
        return _f(v, digits)

    per, groups = result["corruption_mean"], result["group_mean"]
    cols = [("Clean", result["clean"])]
    for g, names in CORRUPTION_GROUPS.items():
        cols += [(n, per[n]) for n in names if n in per]
    cols += [(f"{g} mean", v) for g, v in groups.items()]
    cols += [("Corr.", result["corr"]), ("Rete. (%)", result["retention"])]
    head = "| " + " | ".join(c for c, _ in cols) + " |"
    sep = "|" + "|".join("---:" for _ in cols) + "|"
    row = "| " + " | ".join(f(v) for _, v in cols) + " |"
    return "\n".join([head, sep, row])


def save_corruption_grid(
    image: np.ndarray,
    path: str | Path,
    *,
    severity: int = 3,
    seed: int = 0,
    corruptions: Sequence[str] = CORRUPTIONS,
    max_side: int = 320,
) -> Path:
    """PNG grid of ``image`` and its corruptions at ``severity``, labelled.

    Corruptions are applied at the image's full size (as evaluated, ``image_index`` 0), then
    every tile is downscaled so its long side is at most ``max_side`` for display. First row:
    the clean image; then one row per group (Blur, Noise, Digital, Weather).
    """
    from PIL import Image, ImageDraw

    from segkit.utils import atomic_write_bytes

    image = np.asarray(image)
    h, w = image.shape[:2]
    f = min(1.0, max_side / max(h, w))
    size = (max(1, round(w * f)), max(1, round(h * f)))

    def tile(a):
        return a if f == 1.0 else np.asarray(Image.fromarray(a).resize(size, Image.BILINEAR))

    rows = [[("clean", tile(image))]] + [
        [(c, tile(corrupt(image, c, severity, seed, 0))) for c in names if c in corruptions]
        for names in CORRUPTION_GROUPS.values()
    ]
    rows = [r for r in rows if r]
    columns = max(len(r) for r in rows)
    w, h = size
    label_h, gap = 16, 4
    canvas = Image.new("RGB", (columns * (w + gap) + gap, len(rows) * (h + label_h + gap) + gap), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        for c, (name, arr) in enumerate(row):
            x0, y0 = gap + c * (w + gap), gap + r * (h + label_h + gap)
            draw.text((x0 + 2, y0 + 2), name if name == "clean" else f"{name} (s{severity})", fill=(0, 0, 0))
            canvas.paste(Image.fromarray(arr), (x0, y0 + label_h))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path
