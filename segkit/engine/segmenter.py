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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from segkit.data.protocol import TestProtocol
from segkit.runtime import autocast, check_amp

from .result_formats import API_OUTPUT_POLICY

# images above this many pixels (after the test resize) use slide inference when mode="auto"
AUTO_SLIDE_PIXELS = 1024 * 1024


@dataclass
class SegResult:
    """The segmentation of one image.

    Attributes:
        label: ``(H, W)`` class indices (``uint8`` for ≤ 256 classes, else ``int64``) at the image's size.
        classes: class names (index = class id). palette: RGB colour per class (0–255).
        image: the ``(H, W, 3)`` uint8 RGB image that was segmented.
        path: the file it came from, if any.
        name: the default stem of :meth:`save`: the file's stem, ``image_0000``, ``image_0001`` … (the
            input's index in the call) for in-memory inputs; unique within one call of :class:`Segmenter`;
            ``<video stem>_<frame:06d>`` (``camera<N>_<frame:06d>``) for a video frame of :meth:`Segmenter.stream`.
        frame_index: :meth:`Segmenter.stream`: the frame number in its video (from 0), or the image's number in
            its folder / glob / iterable; ``None`` from a plain call.
        timestamp: :meth:`Segmenter.stream`: seconds from the start of the video (the decoder's position), or
            since a camera was opened; ``None`` for still images.
    """

    label: np.ndarray
    classes: list[str]
    palette: list[list[int]]
    image: np.ndarray
    path: str | None = None
    name: str | None = None
    _probs: Any = field(default=None, repr=False)
    mask_values: list[int] | None = None  # a binary model's [background, foreground] values: save() writes them
    frame_index: int | None = None
    timestamp: float | None = None

    def probs(self) -> np.ndarray:
        """Class probabilities ``(K, H, W)`` float32 (softmax of the protocol's inference; binary: ``[1 - p, p]``).

        Kept from the forward pass when the result was made with ``probs=True`` (``seg(x, probs=True)``,
        ``seg.stream(src, probs=True)``); otherwise computed on request, which runs the network a second time."""
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
        if "/" in stem or os.sep in stem or stem in (".", "..") or "\x00" in stem:
            raise UsageError(f"stem {stem!r}: a file name, not a path (the files go into directory={str(directory)!r})")
        label_path, overlay_path = directory / f"{stem}_label.png", directory / f"{stem}_overlay.png"
        for path in (label_path, overlay_path):  # both checked before either is written
            claim_output(path, overwrite=overwrite, **API_OUTPUT_POLICY)
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
        batch_size: at most this many images per forward in whole mode (images of the same network input size
            are batched; slide inference runs one image at a time, its windows ``window_batch`` at a time). Default
            8, a choice: it bounds the memory of one call over a long list (a list used to go through as a single
            batch) while keeping GPU batches full; on a CPU batching brought no speed-up where it was measured
            (``benchmarks/segmenter_batch.md``), so ``batch_size=1`` costs nothing there and gives each image sooner.
            :meth:`stream` also reads this many frames ahead.
        progress: show a progress bar (``tqdm``) over the images of a call, a stream or a video; default off
            (on in ``segkit predict``). Each call can override it.
        revision: for a Hub repo id, the branch, tag or commit to load (:func:`segkit.hub.from_pretrained`).

    Calling it with one input returns a :class:`SegResult`; with a list, a list. ``probs=True`` keeps each
    image's class probabilities from the same forward pass (:meth:`SegResult.probs` then costs nothing).
    :meth:`stream` segments a folder, a glob, a video file or a camera frame by frame; :meth:`video` writes an
    overlay video (what ``segkit predict`` does for videos). Raises ``TypeError`` / ``ValueError`` for inputs it
    cannot read, naming them.
    """

    def __init__(
        self,
        model,
        device: str | torch.device = "auto",
        amp: str | None = None,
        protocol: TestProtocol | None = None,
        mode: str | None = None,
        window_batch: int = 4,
        batch_size: int = 8,
        progress: bool = False,
        revision: str | None = None,
    ):
        from segkit.models.fuse import for_inference

        if not isinstance(model, torch.nn.Module):
            from segkit.hub import load_model

            model = load_model(model, revision=revision)
        from segkit.errors import UsageError

        if mode not in (None, "auto", "whole", "slide"):
            raise UsageError(f"mode must be None, 'auto', 'whole' or 'slide', got {mode!r}")
        if isinstance(window_batch, bool) or int(window_batch) < 1:
            raise UsageError(f"window_batch must be >= 1, got {window_batch!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UsageError(f"batch_size must be an integer >= 1, got {batch_size!r}")
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
        self.batch_size = batch_size
        self.progress = bool(progress)
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
        """Label maps of ``(H, W, 3)`` uint8 RGB images, each at its own size (same-size images batched, at most
        :attr:`batch_size` per forward).

        A whole-image inference that cannot fit in memory is refused before it runs (:meth:`check_memory`;
        a CUDA out-of-memory error is reported the same way): :class:`~segkit.errors.InsufficientMemoryError`."""
        return self._run(images, keep_probs=False)[0]

    @torch.inference_mode()
    def _run(self, images: Sequence[np.ndarray], keep_probs: bool) -> tuple[list[np.ndarray], list | None]:
        """``(labels, probs)`` of uint8 images: the labels of :meth:`labels`; with ``keep_probs`` the labels are the
        arg-max (binary: the threshold) of the probabilities of :meth:`Segmentor.inference`, which are returned too
        (``(K, H, W)`` float32 each), from the one forward pass. Images are grouped by network input size and run
        :attr:`batch_size` at a time; each chunk is resized and normalised only when it runs."""
        from segkit.errors import InsufficientMemoryError

        out: list[np.ndarray | None] = [None] * len(images)
        probs: list[np.ndarray | None] | None = [None] * len(images) if keep_probs else None
        groups: dict[tuple, list[int]] = {}
        self.check_memory([img.shape[:2] for img in images])
        for i, img in enumerate(images):
            groups.setdefault((self.transform.output_size(*img.shape[:2]), img.shape[:2]), []).append(i)
        dtype = torch.uint8 if self.model.num_classes <= 256 else torch.int64
        for (shape, size), idx in groups.items():
            kw = self._kwargs(shape)
            step = self.batch_size if kw["mode"] == "whole" else 1  # slide runs its windows in batches already
            for start in range(0, len(idx), step):
                chunk = idx[start : start + step]
                x = torch.stack([self.transform(images[i])["image"] for i in chunk]).to(self.device)
                try:
                    with self._autocast():
                        if keep_probs:
                            p = self.runner.inference(x, out_size=size, window_batch=self.window_batch, **kw).float()
                            if getattr(self.model, "is_binary", False):
                                pred = (p[:, 1] >= self.model.threshold).long()
                            else:
                                pred = p.argmax(dim=1)
                            for i, pi in zip(chunk, p.cpu().numpy()):
                                probs[i] = pi
                        else:
                            pred = self.runner.predict(x, out_size=size, window_batch=self.window_batch, **kw)
                except torch.OutOfMemoryError as e:
                    first = (str(e).splitlines() or [""])[0][:160]
                    raise InsufficientMemoryError(
                        f"{kw['mode']} inference of {len(chunk)} image(s) of {size[0]}x{size[1]} px (network input "
                        f"{shape[-2]}x{shape[-1]}) ran out of {self.device.type.upper()} memory ({first}); use slide "
                        f"inference (--mode slide) with a smaller --crop, a test resize (--scale), or fewer images "
                        f"per call (batch_size)"
                    ) from None
                for i, lab in zip(chunk, pred.to(dtype).cpu().numpy()):
                    out[i] = lab
        return out, probs

    @torch.inference_mode()
    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """Class probabilities ``(K, H, W)`` float32 of one uint8 RGB image (the protocol's inference)."""
        x = self.transform(image)["image"][None].to(self.device)
        kw = self._kwargs(tuple(x.shape[-2:]))
        with self._autocast():
            probs = self.runner.inference(x, out_size=image.shape[:2], window_batch=self.window_batch, **kw)
        return probs[0].float().cpu().numpy()

    def _decode(self, x, index: int) -> tuple[np.ndarray, str | None]:
        channels = int(getattr(self.model, "in_channels", 3))
        return to_rgb(x, index) if channels == 3 else _to_bands(x, index, channels)

    def _results(self, decoded, names, probs: bool, frames=None) -> list[SegResult]:
        """:class:`SegResult` s of decoded ``(image, path)`` pairs (one forward pass per chunk)."""
        labels, kept = self._run([img for img, _ in decoded], keep_probs=probs)
        if int(getattr(self.model, "in_channels", 3)) != 3:  # a multi-band image is shown by its first three bands
            decoded = [(_display_rgb(img), path) for img, path in decoded]
        frames = frames or [None] * len(decoded)
        return [
            SegResult(
                label=lab,
                classes=self.classes,
                palette=self.palette,
                image=img,
                path=path,
                name=name,
                _probs=kept[i] if probs else (lambda img=img: self.probabilities(img)),
                mask_values=self.mask_values,
                frame_index=None if frame is None else frame.index,
                timestamp=None if frame is None else frame.timestamp,
            )
            for i, ((img, path), lab, name, frame) in enumerate(zip(decoded, labels, names, frames))
        ]

    def __call__(self, inputs, *, probs: bool = False, progress: bool | None = None):
        """Segment one input (→ a :class:`SegResult`) or a list / tuple of inputs (→ a list, in order).

        Inputs: paths, ``PIL.Image`` s, ``(H, W, 3)`` uint8 RGB arrays, ``(3, H, W)`` uint8 tensors
        (:func:`to_rgb`). ``probs=True`` keeps the class probabilities of the forward pass in each result
        (``(K, H, W)`` float32 per image, ``4·K·H·W`` bytes: 1.8 MB for 150 classes at 64×48) and takes the labels
        as their arg-max, equal to the default labels except at float32 near-ties; without it, :meth:`SegResult.probs`
        runs the network again. ``progress`` overrides the segmenter's setting (a bar over the chunks of a list).

        Image conversions (grayscale, palette, RGBA, CMYK, 16-bit: :func:`segkit.data.io.read_image`) are said in one
        ``UserWarning`` per list ("N input(s): M image(s) are not 8-bit RGB and were converted when read: grayscale
        -> RGB (M)"), not one per image; a single input's warning names its file. :meth:`stream` says it once at
        the end of the stream."""
        from segkit.data.io import summarise_conversions

        single = not isinstance(inputs, (list, tuple))
        items = [inputs] if single else list(inputs)
        if single:  # one input: its conversion (grayscale, 16-bit …) is named in a warning of its own
            decoded = [self._decode(inputs, 0)]
        else:  # a list: one summary line for its conversions, not one warning per image
            with summarise_conversions(f"{len(items)} input(s)"):
                decoded = [self._decode(x, i) for i, x in enumerate(items)]
        names = default_names([path for _, path in decoded])
        show = self.progress if progress is None else progress
        if not show or single:
            results = self._results(decoded, names, probs)
        else:
            from tqdm.auto import tqdm

            results = []
            with tqdm(total=len(items), desc="segment", unit="image") as bar:
                for start in range(0, len(items), self.batch_size):
                    part = slice(start, start + self.batch_size)
                    results += self._results(decoded[part], names[part], probs)
                    bar.update(len(decoded[part]))
        return results[0] if single else results

    def stream(
        self,
        source,
        *,
        probs: bool = False,
        progress: bool | None = None,
        on_error: str = "warn",
        max_frames: int | None = None,
    ) -> SegStream:
        """Segment a source frame by frame: an iterable :class:`SegStream` of :class:`SegResult` s, one per image or
        frame, in order, with ``frame_index`` and ``timestamp`` (seconds; ``None`` for still images).

        Args:
            source: a folder (its images, then its videos), a glob pattern (``"photos/*.jpg"``), an image or video
                file, a camera index (``0``, ``"1"``) or an iterable of in-memory images (a generator is consumed
                lazily) — :func:`segkit.engine.stream.frames`.
            probs: keep each result's probabilities from the forward pass (see :meth:`__call__`).
            progress: a bar over the frames (total from the folder listing or the video's header).
            on_error: ``"warn"`` (default): an image or frame that cannot be decoded is skipped with a warning
                naming the file and the frame numbers, the stream goes on, and a last warning counts the errors;
                ``"raise"``: :class:`~segkit.errors.DataError` at the first one.
            max_frames: stop each video or camera after this many frames.

        Only :attr:`batch_size` frames are read ahead and only the result being consumed is held: memory does not
        grow with the length of the source (``tests/test_stream.py`` measures it over 300 frames). Labels equal those
        of calling the segmenter on the same decoded frames. The stream's :attr:`SegStream.errors` lists what could
        not be read. Raises :class:`~segkit.errors.NotFoundError` for a missing path or a glob that matches nothing,
        :class:`~segkit.errors.DataError` for a single video that cannot be opened or gives no frame at all."""
        from .stream import frames, source_length

        if on_error not in ("warn", "raise"):
            from segkit.errors import UsageError

            raise UsageError(f"on_error must be 'warn' or 'raise', got {on_error!r}")
        self._check_rgb_source(source)
        return SegStream(
            self,
            frames(source, max_frames, read_images=int(getattr(self.model, "in_channels", 3)) == 3),
            str(source) if isinstance(source, (str, os.PathLike, int)) else type(source).__name__,
            length=source_length(source) if (self.progress if progress is None else progress) else None,
            probs=probs,
            progress=self.progress if progress is None else progress,
            on_error=on_error,
        )

    def _check_rgb_source(self, source) -> None:
        from .stream import is_video

        channels = int(getattr(self.model, "in_channels", 3))
        if channels != 3 and isinstance(source, (str, os.PathLike, int)) and is_video(source):
            from segkit.errors import UsageError

            raise UsageError(f"{source}: video frames are RGB; this model takes {channels}-band images")

    def video(
        self,
        source,
        out: str | os.PathLike,
        *,
        alpha: float = 0.5,
        save_labels: bool = False,
        stem: str | None = None,
        max_frames: int | None = None,
        overwrite: bool = False,
        progress: bool | None = None,
    ) -> list[Path]:
        """Segment every frame of a video file or a camera (``source`` an int or digit string) and write the overlay
        video ``out`` (the frames blended with the class colours, ``alpha``; the input's size and frame rate — a
        camera's reported rate or 25 fps; codec by suffix: ``mp4v`` for ``.mp4`` / ``.m4v`` / ``.mov``, ``MJPG`` for
        ``.avi``). ``save_labels`` also writes ``<stem>_<frame:06d>_label.png`` per frame next to ``out`` (palette
        PNGs of class indices; ``stem`` default: the video's stem, ``camera<N>``). What ``segkit predict`` runs.

        Frames come from :meth:`stream` (the same labels, the same lazy reading). A camera is read until it stops
        delivering frames, ``max_frames``, or Ctrl-C. The video is written to a hidden ``.part`` file and moved into
        place once its frame count reads back. An existing output is refused (:class:`~segkit.errors.OutputExistsError`)
        unless ``overwrite`` moves it aside first (:func:`segkit.utils.claim_output`).

        A frame that cannot be decoded is skipped (the next ones are still tried): the readable frames are written,
        then :class:`~segkit.engine.stream.VideoFramesError` (a :class:`~segkit.errors.DataError`) names the missing
        frames, what was written and where. (A shortfall of one frame at the end is only a warning: some containers
        store an estimated count.) Raises :class:`~segkit.errors.DataError` naming the source and the reason when it
        cannot be opened or no frame can be read. Returns the written paths, the video first."""
        from segkit.errors import DataError
        from segkit.utils import atomic_write_bytes, claim_output

        from .stream import VideoFramesError, VideoReader, VideoWriter, frame_ranges
        from .visualize import label_png, overlay, png_bytes

        self._check_rgb_source(source)
        reader = VideoReader(source)
        out = Path(out)
        stem = stem or reader.name
        claim_output(out, overwrite=overwrite, **API_OUTPUT_POLICY)
        show = self.progress if progress is None else progress
        stream = SegStream(
            self,
            reader.frames(max_frames),
            str(source),
            length=reader.total,
            progress=show,
            desc=f"segment {stem}",
            warn=False,
        )
        writer = VideoWriter(out, reader.fps)
        labels: list[Path] = []
        try:
            for res in stream:
                lab = res.label.astype(np.int64)
                writer.write(overlay(res.image, lab, self.palette, alpha=alpha, ignore_index=-1))
                if save_labels:
                    path = out.parent / f"{stem}_{res.frame_index:06d}_label.png"
                    claim_output(path, overwrite=overwrite, **API_OUTPUT_POLICY)
                    atomic_write_bytes(path, png_bytes(label_png(res.label, self.palette, self.mask_values)))
                    labels.append(path)
        except KeyboardInterrupt:
            if not reader.camera:
                writer.discard()
                raise
        except BaseException:
            writer.discard()
            raise
        finally:
            stream.close()
        if writer.frames == 0:  # a camera stopped (Ctrl-C) before its first frame
            writer.discard()
            raise DataError(f"{source}: no frame could be read")
        written = [writer.finish(), *labels]
        bad = [e.index for e in stream.errors]
        if bad:
            raise VideoFramesError(
                f"{source}: frame(s) {frame_ranges(bad)} of {reader.total} (counting from 0) could not be decoded: the "
                f"file is damaged or truncated there; wrote the {writer.frames} readable frame(s) to {out}",
                written,
                bad,
            )
        return written


@dataclass
class FrameError:
    """An image or video frame of a stream that could not be read: its file (``None`` for a camera or an in-memory
    image), its index (the frame number, or the image's number; ``-1`` for a whole video that gave nothing) and
    why."""

    path: str | None
    index: int
    reason: str


class SegStream:
    """The iterable of :meth:`Segmenter.stream`: :class:`SegResult` s one by one; :attr:`errors` lists the images and
    frames that could not be read (filled as the stream goes), :attr:`count` the results given so far.

    Iterate it once (it reads its source as it goes). :meth:`close` (or leaving a ``with`` block, or breaking out of
    the loop and dropping it) releases a video or camera."""

    def __init__(
        self,
        seg: Segmenter,
        frames,
        source: str,
        *,
        length: int | None = None,
        probs: bool = False,
        progress: bool = False,
        on_error: str = "warn",
        desc: str = "segment",
        warn: bool = True,
    ):
        self.seg, self.source, self.frames = seg, source, frames
        self.length, self.probs, self.progress, self.on_error = length, probs, progress, on_error
        self.desc, self.warn = desc, warn
        self.errors: list[FrameError] = []
        self.conversions: Counter = Counter()  # images converted when read (grayscale -> RGB …): counted, said once
        self.count = 0
        self._unreported: list[FrameError] = []
        self._names: set[str] = set()
        self._iterating = False

    def __enter__(self) -> SegStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop reading: releases a video or camera (the frames generator is closed)."""
        close = getattr(self.frames, "close", None)
        if close is not None:
            close()

    def __iter__(self):
        from tqdm.auto import tqdm

        if self._iterating:
            from segkit.errors import UsageError

            raise UsageError(f"a stream over {self.source} is read once; call Segmenter.stream again to restart")
        self._iterating = True
        from segkit.data.io import count_conversions

        pending: list = []
        bar = tqdm(total=self.length, desc=self.desc, unit="frame", disable=not self.progress)
        frames = iter(self.frames)
        try:
            while True:
                with count_conversions(self.conversions):  # one summary line at the end, not a warning per image
                    frame = next(frames, None)
                    if frame is None:
                        break
                    decoded = self._decoded(frame) if frame.image is not None else None
                if frame.image is not None:
                    if decoded is not None:
                        self._report()
                        pending.append((frame, decoded))
                if len(pending) >= self.seg.batch_size:
                    yield from self._flush(pending, bar)
                    pending = []
                if frame.image is None:
                    self._failed(FrameError(frame.path, frame.index, frame.error or "could not be read"))
            if pending:
                yield from self._flush(pending, bar)
            self._report(end=True)
        finally:
            bar.close()
            self.close()

    def _decoded(self, frame):
        """``(image, path)`` of a frame: a decoded one as it is; an in-memory item of an iterable through
        :func:`to_rgb`; ``None`` (recorded as an error) for an item that is an unreadable image."""
        from segkit.errors import DataError

        image = frame.image
        if isinstance(image, np.ndarray) and frame.path is not None:  # a decoded file or video frame
            return image, frame.path
        if frame.camera is not None:
            return image, None
        try:
            return self.seg._decode(image, frame.index)
        except DataError as e:
            self._failed(FrameError(frame.path, frame.index, str(e)))
            return None

    def _name(self, frame) -> str:
        if frame.camera is not None:
            return f"camera{frame.camera}_{frame.index:06d}"
        if frame.path is None:
            return f"image_{frame.index:04d}"
        stem = Path(frame.path).stem
        from .stream import is_video

        if is_video(frame.path):
            return f"{stem}_{frame.index:06d}"
        name = stem if stem not in self._names else f"{stem}_{Path(frame.path).suffix.lstrip('.').lower()}"
        name = name if name not in self._names else f"{stem}_{frame.index:04d}"
        self._names.add(name)
        return name

    def _flush(self, pending, bar):
        results = self.seg._results(
            [d for _, d in pending], [self._name(f) for f, _ in pending], self.probs, [f for f, _ in pending]
        )
        pending.clear()
        for res in results:
            self.count += 1
            bar.update(1)
            yield res

    def _failed(self, err: FrameError) -> None:
        from segkit.errors import DataError

        self.errors.append(err)
        if self.on_error == "raise":
            where = f"frame {err.index}" if err.index >= 0 else "the video"
            raise DataError(f"{err.path or self.source}: {where}: {err.reason}")
        self._unreported.append(err)

    def _report(self, end: bool = False) -> None:
        """Warn about the errors met since the last readable frame (frame numbers per file); at the end, count them
        all."""
        import warnings

        if self.warn and self._unreported:
            by_file: dict = {}
            for e in self._unreported:
                by_file.setdefault(e.path, []).append(e)
            for path, errs in by_file.items():
                what = path or self.source
                if path is not None and not _is_video_path(path):
                    text = f"{what}: {errs[0].reason}"
                elif errs[0].index < 0:
                    text = f"{what}: {errs[0].reason}"
                else:
                    text = f"{what}: frame(s) {_ranges([e.index for e in errs])}: {errs[0].reason}"
                warnings.warn(f"{text} (skipped; the stream goes on)", UserWarning, stacklevel=3)
        self._unreported = []
        if end and self.warn and self.conversions:
            from segkit.data.io import conversion_summary

            warnings.warn(
                f"stream over {self.source}: {conversion_summary(self.conversions)}", UserWarning, stacklevel=3
            )
        if end and self.warn and self.errors:
            files = sorted({e.path or self.source for e in self.errors})
            warnings.warn(
                f"stream over {self.source}: {len(self.errors)} image(s) or frame(s) could not be read, in "
                f"{', '.join(files[:5])}{' …' if len(files) > 5 else ''}; {self.count} segmented",
                UserWarning,
                stacklevel=3,
            )


def _is_video_path(path: str) -> bool:
    from .stream import is_video

    return is_video(path)


def _ranges(frames: list[int]) -> str:
    from .stream import frame_ranges

    return frame_ranges(frames)


__all__ = ["Segmenter", "SegResult", "SegStream", "FrameError", "default_names", "to_rgb", "AUTO_SLIDE_PIXELS"]
