"""The inference API: ``Segmenter(model)(image) -> SegResult`` for paths, PIL images, arrays, tensors and lists.

::

    seg = segkit.Segmenter("segformer-b0_ade20k-512")      # a registry name, Hub id, folder or a model
    result = seg("street.jpg")                             # or a PIL.Image, an (H, W, 3) uint8 array, …
    result.label                                           # (H, W) class indices at the image's size
    result.overlay().save("overlay.png"); result.areas()   # {"road": 0.31, …}
    results = seg(["a.jpg", "b.jpg", frame])               # a list in, a list out (same-size images batched)

Every image goes through the model's test protocol (:class:`~segkit.data.protocol.TestProtocol`:
its test resize and whole / slide inference, the same that ``segkit eval`` and ``segkit predict``
apply) and comes back at its own size. ``segkit predict`` is this class over files, so both give
the same labels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from segkit.data.protocol import TestProtocol
from segkit.runtime import autocast, check_amp

# images above this many pixels (after the test resize) use slide inference when mode="auto"
AUTO_SLIDE_PIXELS = 1024 * 1024
# how the Python API words the output policy (segkit.utils.claim_output)
_API_POLICY = {"flag": "overwrite=True", "elsewhere": "save under another stem or directory"}


@dataclass
class SegResult:
    """The segmentation of one image.

    Attributes:
        label: ``(H, W)`` class indices (``uint8`` for ≤ 256 classes, else ``int64``) at the image's size.
        classes: class names (index = class id). palette: RGB colour per class (0–255).
        image: the ``(H, W, 3)`` uint8 RGB image that was segmented.
        path: the file it came from, if any.
        name: the default stem of :meth:`save`: the file's stem, ``image_0000``, ``image_0001`` … (the
            input's index in the call) for in-memory inputs; unique within one call of :class:`Segmenter`.
    """

    label: np.ndarray
    classes: list[str]
    palette: list[list[int]]
    image: np.ndarray
    path: str | None = None
    name: str | None = None
    _probs: Any = field(default=None, repr=False)
    mask_values: list[int] | None = None  # a binary model's [background, foreground] values: save() writes them

    def probs(self) -> np.ndarray:
        """Class probabilities ``(K, H, W)`` float32 (softmax of the protocol's inference), computed on request."""
        if callable(self._probs):
            self._probs = self._probs()
        return self._probs

    def overlay(self, alpha: float = 0.5, legend: bool = False):
        """The image blended with the class colours (``PIL.Image``, the image's size; ``legend=True``
        adds a legend of the classes present to the right)."""
        from PIL import Image

        from .visualize import overlay, overlay_with_legend

        label = self.label.astype(np.int64)
        if legend:
            arr = overlay_with_legend(self.image, label, self.palette, self.classes, alpha=alpha, ignore_index=-1)
        else:
            arr = overlay(self.image, label, self.palette, alpha=alpha, ignore_index=-1)
        return Image.fromarray(arr)

    def areas(self) -> dict[str, float]:
        """Share of the image's pixels per class present (0–1), largest first."""
        counts = np.bincount(self.label.ravel().astype(np.int64), minlength=len(self.classes))
        total = max(int(counts.sum()), 1)
        order = np.argsort(-counts)
        return {self.classes[i]: float(counts[i] / total) for i in order if counts[i]}

    def masks(self, all_classes: bool = False) -> dict[str, np.ndarray]:
        """``{class name: bool (H, W) mask}`` for the classes present (``all_classes=True``: every class), in
        class-id order (:func:`segkit.engine.result_formats.class_masks`)."""
        from .result_formats import class_masks

        return class_masks(self.label, self.classes, all_classes=all_classes)

    def rle(self) -> dict[str, dict]:
        """``{class name: COCO RLE}`` for the classes present, in class-id order: ``{"size": [H, W], "counts":
        str}``, COCO's compressed column-major run-length encoding written by ``pycocotools.mask.encode``;
        ``pycocotools.mask.decode`` of it (``counts`` as str or bytes) equals :meth:`masks` exactly.
        Needs ``pycocotools`` (``pip install "segkit[coco]"``; :class:`~segkit.errors.MissingDependencyError`
        naming it otherwise)."""
        from .result_formats import class_rles

        return class_rles(self.label, self.classes)

    def polygons(self, tolerance: float = 1.0, min_points: int = 3) -> dict[str, list[dict]]:
        """``{class name: [{"exterior": int32 (N, 2), "holes": [int32 (M, 2), ...]}, ...]}``: each present
        class's regions as polygons with holes (OpenCV contours; ``[x, y]`` pixel centres of the border
        pixels), in drawing order. ``tolerance``: Douglas–Peucker simplification in pixels (0 = none);
        rings with fewer than ``min_points`` vertices are dropped (see
        :func:`segkit.engine.result_formats.mask_polygons` for the conventions and how to draw them back)."""
        from .result_formats import class_polygons

        return class_polygons(self.label, self.classes, tolerance=tolerance, min_points=min_points)

    def to_json(self, polygons: bool = False, tolerance: float = 1.0, indent: int | None = None) -> str:
        """A JSON document of this result: file, size, and per class present its id, name, area (px),
        fraction, ``bbox`` ``[x, y, w, h]``, COCO ``rle`` and, with ``polygons=True``, its polygons
        (:func:`segkit.engine.result_formats.result_dict`). Needs ``pycocotools``."""
        import json

        from .result_formats import result_dict

        doc = result_dict(
            self.label, self.classes, path=self.path, name=self.name, polygons=polygons, tolerance=tolerance
        )
        return json.dumps(doc, indent=indent)

    def save(
        self, directory: str | os.PathLike, stem: str | None = None, alpha: float = 0.5, overwrite: bool = False
    ) -> list[Path]:
        """Write ``<stem>_label.png`` (palette PNG of class indices) and ``<stem>_overlay.png`` (overlay + legend).

        ``stem`` defaults to :attr:`name` (the source file's stem; ``image_0000``, ``image_0001`` … by
        index in the call for in-memory inputs). An existing file is never silently replaced: it raises
        :class:`~segkit.errors.OutputExistsError` naming it before anything is written, unless
        ``overwrite=True``, which moves it to ``<stem>_label.prev-<time>.png`` first (and prints where).
        Returns the paths.
        """
        from segkit.errors import UsageError
        from segkit.utils import atomic_write_bytes, claim_output

        from .visualize import label_png, png_bytes

        directory = Path(directory)
        stem = stem or self.name or (Path(self.path).stem if self.path else "image")
        if "/" in stem or os.sep in stem or stem in (".", ".."):
            raise UsageError(f"stem {stem!r}: a file name, not a path (the files go into directory={str(directory)!r})")
        label_path, overlay_path = directory / f"{stem}_label.png", directory / f"{stem}_overlay.png"
        for path in (label_path, overlay_path):  # both checked before either is written
            claim_output(path, overwrite=overwrite, what="", kind="file", **_API_POLICY)
        atomic_write_bytes(label_path, png_bytes(label_png(self.label, self.palette, self.mask_values)))
        atomic_write_bytes(overlay_path, png_bytes(self.overlay(alpha, legend=True)))
        return [label_path, overlay_path]


def _device(device) -> torch.device:
    from segkit.runtime import resolve_device

    return resolve_device("auto" if device is None else device, what="device")


def to_rgb(x, index: int = 0) -> tuple[np.ndarray, str | None]:
    """``(uint8 (H, W, 3) RGB, path or None)`` from a path, ``PIL.Image``, ``(H, W, 3)`` uint8 array or
    ``(3, H, W)`` uint8 tensor.

    A ``PIL.Image`` goes through the conversion of image files (:func:`segkit.data.io.pil_to_rgb`), so it
    gives the same labels as its file: 16-bit gray (``I;16``, ``I``) is scaled, not saturated to white;
    ``1``, ``L``, ``LA``, ``P``, ``RGBA``, ``CMYK`` become RGB with a warning naming the input.

    Raises :class:`~segkit.errors.UsageTypeError` (a ``TypeError``) for another type,
    :class:`~segkit.errors.UsageError` (a ``ValueError``) for an array or tensor of another dtype or shape,
    :class:`~segkit.errors.DataError` for an empty image (0 pixels) or an unreadable file (naming it)."""
    from segkit.data.io import pil_to_rgb, read_image
    from segkit.errors import DataError, UsageError, UsageTypeError

    if isinstance(x, (str, os.PathLike)):
        if not str(x).strip():
            raise UsageError(f"input {index}: an empty path")
        return read_image(x), str(x)
    if isinstance(x, torch.Tensor):
        if x.dtype != torch.uint8 or x.ndim != 3 or x.shape[0] != 3:
            raise UsageError(f"input {index}: a tensor must be uint8 (3, H, W) RGB, got {x.dtype} {tuple(x.shape)}")
        if x.numel() == 0:
            raise DataError(f"input {index}: empty image tensor of shape {tuple(x.shape)} (0 pixels)")
        return np.ascontiguousarray(x.permute(1, 2, 0).cpu().numpy()), None
    if isinstance(x, np.ndarray):
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[2] != 3:
            raise UsageError(f"input {index}: an array must be uint8 (H, W, 3) RGB, got {x.dtype} {x.shape}")
        if x.size == 0:
            raise DataError(f"input {index}: empty image array of shape {x.shape} (0 pixels)")
        return np.ascontiguousarray(x), None
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        Image = None
    if Image is not None and isinstance(x, Image.Image):
        return pil_to_rgb(x, f"input {index}"), None
    raise UsageTypeError(
        f"input {index}: expected a path, PIL.Image, uint8 (H, W, 3) array or uint8 (3, H, W) tensor, "
        f"got {type(x).__name__}"
    )


def _to_bands(x, index: int, channels: int) -> tuple[np.ndarray, str | None]:
    """``(uint8 (H, W, channels), path or None)`` for a model with ``in_channels != 3``: a path read by
    :func:`segkit.data.io.read_bands` (TIFFs with ``tifffile``), or a ``uint8 (H, W, channels)`` array."""
    from segkit.data.io import read_bands
    from segkit.errors import UsageError

    if isinstance(x, (str, os.PathLike)):
        return read_bands(x, channels), str(x)
    if isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 3 and x.shape[2] == channels and x.size:
        return np.ascontiguousarray(x), None
    raise UsageError(
        f"input {index}: this model takes {channels}-band images: a path or a uint8 (H, W, {channels}) array, got "
        f"{type(x).__name__} {getattr(x, 'dtype', '')} {getattr(x, 'shape', '')}".rstrip()
    )


def _display_rgb(img: np.ndarray) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 picture of a multi-band image: its first three bands (RGB of RGB + NIR), or its
    first band as gray for fewer than three."""
    return np.ascontiguousarray(img[:, :, :3] if img.shape[2] >= 3 else np.repeat(img[:, :, :1], 3, axis=2))


def default_names(paths: Sequence[str | None]) -> list[str]:
    """Output stems of one call's inputs, unique within it: a file's stem (``a_jpg`` / ``a_png`` when
    stems clash, :func:`segkit.utils.output_stems`), ``image_<index:04d>`` for an in-memory input (no
    path); a name still taken twice gets ``_<index:04d>`` appended."""
    from segkit.utils import output_stems

    names = [f"image_{i:04d}" for i in range(len(paths))]
    files = [i for i, p in enumerate(paths) if p]
    for i, stem in zip(files, output_stems([paths[i] for i in files])):
        names[i] = stem
    taken = {n for n in names if names.count(n) > 1}
    return [f"{n}_{i:04d}" if n in taken else n for i, n in enumerate(names)]


class Segmenter:
    """Run a segmentation model on images, the way it was trained to be evaluated.

    Args:
        model: a :class:`~segkit.models.segmentor.Segmentor`, or anything :func:`segkit.load_model`
            takes (a ``save_pretrained`` folder, a training checkpoint, a registry name, a Hub id).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        amp: ``None`` (float32), ``"bf16"`` (CPUs with native bfloat16, or a GPU) or ``"fp16"`` (CUDA only)
            autocast for the network; :func:`segkit.runtime.check_amp` refuses other combinations
            (:class:`~segkit.errors.UsageError`).
        protocol: the test protocol; default the model's own (:meth:`TestProtocol.of`).
        mode: ``None`` (the protocol's), ``"whole"``, ``"slide"`` or ``"auto"`` (slide only for images
            above :data:`AUTO_SLIDE_PIXELS` pixels after the resize).
        window_batch: slide windows per forward.

    Calling it with one input returns a :class:`SegResult`; with a list, a list (images of the
    same size are run as one batch in whole mode). Raises ``TypeError`` / ``ValueError`` for
    inputs it cannot read, naming them.
    """

    def __init__(
        self,
        model,
        device: str | torch.device = "auto",
        amp: str | None = None,
        protocol: TestProtocol | None = None,
        mode: str | None = None,
        window_batch: int = 4,
    ):
        from segkit.models.fuse import for_inference

        if not isinstance(model, torch.nn.Module):
            from segkit.hub import load_model

            model = load_model(model)
        from segkit.errors import UsageError

        if mode not in (None, "auto", "whole", "slide"):
            raise UsageError(f"mode must be None, 'auto', 'whole' or 'slide', got {mode!r}")
        if isinstance(window_batch, bool) or int(window_batch) < 1:
            raise UsageError(f"window_batch must be >= 1, got {window_batch!r}")
        self.device = _device(device)
        check_amp(amp, self.device)
        self.model = model.to(self.device).eval()
        self.runner = for_inference(self.model)
        self.amp = amp
        self.protocol = protocol if protocol is not None else TestProtocol.of(model)
        if mode not in (None, "auto"):
            self.protocol = self.protocol.replace(mode=mode)
        self.auto = mode == "auto"
        self.window_batch = int(window_batch)
        self.transform = self.protocol.transform(model.mean, model.std)
        self._per_pixel: float | None | bool = False  # whole-image memory per input pixel, measured on first use

    @property
    def classes(self) -> list[str]:
        return list(self.model.class_names)

    @property
    def palette(self) -> list[list[int]]:
        return [list(c) for c in self.model.palette]

    @property
    def mask_values(self) -> list[int] | None:
        """A binary model's ``[background, foreground]`` label-file values (``[0, 255]`` or ``[0, 1]``, as its
        training masks had them; ``[0, 1]`` when not recorded); ``None`` for a multi-class model."""
        if getattr(self.model, "task", "multiclass") != "binary":
            return None
        return list(getattr(self.model, "mask_values", None) or [0, 1])

    def _autocast(self):
        return autocast(self.amp, self.device)

    def _kwargs(self, shape: tuple[int, int]) -> dict:
        kw = self.protocol.inference_kwargs()
        if self.auto and shape[0] * shape[1] > AUTO_SLIDE_PIXELS:
            kw["mode"] = "slide"
            kw["crop_size"], kw["stride"] = self.protocol.window()
        return kw

    def check_memory(self, sizes: Sequence[tuple[int, int]], names: Sequence[str] | None = None) -> None:
        """Refuse, before any work, images whose whole-image inference would not fit in memory: ``sizes`` are
        the images' ``(H, W)`` (before the test resize), ``names`` name them in the message. On the CPU,
        :func:`segkit.engine.memory.check_inference_fits` with a probe of this model (measured once, when a
        network input above :data:`AUTO_SLIDE_PIXELS` pixels is first seen; smaller ones are not checked, nor
        images that this segmenter runs with slide inference). Raises :class:`~segkit.errors.InsufficientMemoryError`
        (a ``MemoryError``; exit status 1) saying so and suggesting slide inference."""
        from segkit.engine.memory import check_inference_fits, inference_bytes_per_pixel

        if self.device.type != "cpu" or not sizes:
            return
        net = [self.transform.output_size(int(h), int(w)) if h and w else (0, 0) for h, w in sizes]  # 0: unknown
        whole = [  # small inputs always fit: the probe is made only for those above AUTO_SLIDE_PIXELS
            i for i, hw in enumerate(net) if hw[0] * hw[1] > AUTO_SLIDE_PIXELS and self._kwargs(hw)["mode"] == "whole"
        ]
        if not whole:
            return
        largest = max(whole, key=lambda i: net[i][0] * net[i][1])
        if self._per_pixel is False:
            self._per_pixel = inference_bytes_per_pixel(self.runner, {"bf16": torch.bfloat16}.get(self.amp))
        h, w = sizes[largest]
        what = f"{names[largest]} ({h}x{w} px)" if names else f"a {h}x{w} image"
        check_inference_fits(self._per_pixel, net[largest], what=what)

    @torch.inference_mode()
    def labels(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Label maps of ``(H, W, 3)`` uint8 RGB images, each at its own size (same-size images batched).

        A whole-image inference that cannot fit in memory is refused before it runs (:meth:`check_memory`;
        a CUDA out-of-memory error is reported the same way): :class:`~segkit.errors.InsufficientMemoryError`."""
        from segkit.errors import InsufficientMemoryError

        out: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple, list[int]] = {}
        self.check_memory([img.shape[:2] for img in images])
        inputs = [self.transform(img)["image"] for img in images]
        for i, (img, x) in enumerate(zip(images, inputs)):
            groups.setdefault((tuple(x.shape), img.shape[:2]), []).append(i)
        dtype = torch.uint8 if self.model.num_classes <= 256 else torch.int64
        for (shape, size), idx in groups.items():
            kw = self._kwargs(shape[-2:])
            step = len(idx) if kw["mode"] == "whole" else 1  # slide runs its windows in batches already
            for start in range(0, len(idx), step):
                chunk = idx[start : start + step]
                x = torch.stack([inputs[i] for i in chunk]).to(self.device)
                try:
                    with self._autocast():
                        pred = self.runner.predict(x, out_size=size, window_batch=self.window_batch, **kw)
                except torch.OutOfMemoryError as e:
                    first = (str(e).splitlines() or [""])[0][:160]
                    raise InsufficientMemoryError(
                        f"{kw['mode']} inference of {len(chunk)} image(s) of {size[0]}x{size[1]} px (network input "
                        f"{shape[-2]}x{shape[-1]}) ran out of {self.device.type.upper()} memory ({first}); use slide "
                        f"inference (--mode slide) with a smaller --crop, a test resize (--scale), or fewer images "
                        f"per call"
                    ) from None
                for i, lab in zip(chunk, pred.to(dtype).cpu().numpy()):
                    out[i] = lab
        return out

    @torch.inference_mode()
    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """Class probabilities ``(K, H, W)`` float32 of one uint8 RGB image (the protocol's inference)."""
        x = self.transform(image)["image"][None].to(self.device)
        kw = self._kwargs(tuple(x.shape[-2:]))
        with self._autocast():
            probs = self.runner.inference(x, out_size=image.shape[:2], window_batch=self.window_batch, **kw)
        return probs[0].float().cpu().numpy()

    def __call__(self, inputs):
        single = not isinstance(inputs, (list, tuple))
        items = [inputs] if single else list(inputs)
        channels = int(getattr(self.model, "in_channels", 3))
        decoded = [to_rgb(x, i) if channels == 3 else _to_bands(x, i, channels) for i, x in enumerate(items)]
        labels = self.labels([img for img, _ in decoded])
        if channels != 3:  # a multi-band image is shown (overlay, SegResult.image) by its first three bands
            decoded = [(_display_rgb(img), path) for img, path in decoded]
        results = [
            SegResult(
                label=lab,
                classes=self.classes,
                palette=self.palette,
                image=img,
                path=path,
                name=name,
                _probs=(lambda img=img: self.probabilities(img)),
                mask_values=self.mask_values,
            )
            for (img, path), lab, name in zip(decoded, labels, default_names([path for _, path in decoded]))
        ]
        return results[0] if single else results


__all__ = ["Segmenter", "SegResult", "default_names", "to_rgb", "AUTO_SLIDE_PIXELS"]
