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


@dataclass
class SegResult:
    """The segmentation of one image.

    Attributes:
        label: ``(H, W)`` class indices (``uint8`` for ≤ 256 classes, else ``int64``) at the image's size.
        classes: class names (index = class id). palette: RGB colour per class (0–255).
        image: the ``(H, W, 3)`` uint8 RGB image that was segmented.
        path: the file it came from, if any.
    """

    label: np.ndarray
    classes: list[str]
    palette: list[list[int]]
    image: np.ndarray
    path: str | None = None
    _probs: Any = field(default=None, repr=False)

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

    def save(self, directory: str | os.PathLike, stem: str | None = None, alpha: float = 0.5) -> list[Path]:
        """Write ``<stem>_label.png`` (palette PNG of class indices) and ``<stem>_overlay.png`` (overlay + legend).

        ``stem`` defaults to the source file's stem (``"image"`` for in-memory inputs). Returns the paths.
        """
        from segkit.utils import atomic_write_bytes

        from .visualize import label_png, png_bytes

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        stem = stem or (Path(self.path).stem if self.path else "image")
        label_path, overlay_path = directory / f"{stem}_label.png", directory / f"{stem}_overlay.png"
        atomic_write_bytes(label_path, png_bytes(label_png(self.label, self.palette)))
        atomic_write_bytes(overlay_path, png_bytes(self.overlay(alpha, legend=True)))
        return [label_path, overlay_path]


def _device(device) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def to_rgb(x, index: int = 0) -> tuple[np.ndarray, str | None]:
    """``(uint8 (H, W, 3) RGB, path or None)`` from a path, ``PIL.Image``, ``(H, W, 3)`` uint8 array or
    ``(3, H, W)`` uint8 tensor. Raises ``TypeError`` / ``ValueError`` naming the input and what it got."""
    from segkit.data.io import read_image

    if isinstance(x, (str, os.PathLike)):
        return read_image(x), str(x)
    if isinstance(x, torch.Tensor):
        if x.dtype != torch.uint8 or x.ndim != 3 or x.shape[0] != 3:
            raise ValueError(f"input {index}: a tensor must be uint8 (3, H, W) RGB, got {x.dtype} {tuple(x.shape)}")
        return np.ascontiguousarray(x.permute(1, 2, 0).cpu().numpy()), None
    if isinstance(x, np.ndarray):
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[2] != 3:
            raise ValueError(f"input {index}: an array must be uint8 (H, W, 3) RGB, got {x.dtype} {x.shape}")
        return np.ascontiguousarray(x), None
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        Image = None
    if Image is not None and isinstance(x, Image.Image):
        return np.asarray(x.convert("RGB")), None
    raise TypeError(
        f"input {index}: expected a path, PIL.Image, uint8 (H, W, 3) array or uint8 (3, H, W) tensor, "
        f"got {type(x).__name__}"
    )


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
        if mode not in (None, "auto", "whole", "slide"):
            raise ValueError(f"mode must be None, 'auto', 'whole' or 'slide', got {mode!r}")
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

    @property
    def classes(self) -> list[str]:
        return list(self.model.class_names)

    @property
    def palette(self) -> list[list[int]]:
        return [list(c) for c in self.model.palette]

    def _autocast(self):
        return autocast(self.amp, self.device)

    def _kwargs(self, shape: tuple[int, int]) -> dict:
        kw = self.protocol.inference_kwargs()
        if self.auto and shape[0] * shape[1] > AUTO_SLIDE_PIXELS:
            kw["mode"] = "slide"
            kw["crop_size"], kw["stride"] = self.protocol.window()
        return kw

    @torch.inference_mode()
    def labels(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Label maps of ``(H, W, 3)`` uint8 RGB images, each at its own size (same-size images batched)."""
        out: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple, list[int]] = {}
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
                with self._autocast():
                    pred = self.runner.predict(x, out_size=size, window_batch=self.window_batch, **kw)
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
        decoded = [to_rgb(x, i) for i, x in enumerate(items)]
        labels = self.labels([img for img, _ in decoded])
        results = [
            SegResult(
                label=lab,
                classes=self.classes,
                palette=self.palette,
                image=img,
                path=path,
                _probs=(lambda img=img: self.probabilities(img)),
            )
            for (img, path), lab in zip(decoded, labels)
        ]
        return results[0] if single else results


__all__ = ["Segmenter", "SegResult", "to_rgb", "AUTO_SLIDE_PIXELS"]
