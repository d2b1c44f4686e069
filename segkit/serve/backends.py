"""The two inference backends of ``segkit serve``: PyTorch (a segkit model) and onnxruntime (an exported
``.onnx``). Each splits inference in the two halves the batcher needs:

* ``prepare(image)`` (request thread): ``uint8 (H, W, 3)`` RGB → ``(key, item)``: the normalised network
  input after the model's test resize, and ``key`` = its shape ``(3, H', W')``, what requests must share
  to be batched;
* ``run(items)`` (worker thread): one forward pass over the stacked inputs ``(B, 3, H', W')``, then every
  label map ``(H, W)`` ``uint8`` at its own image's size.

Both apply the model's stored test protocol (:class:`~segkit.data.protocol.TestProtocol`) with the code
of :class:`segkit.Segmenter` and :class:`~segkit.tools.onnx_predict.OnnxSegmenter` (the same transform,
the same fused logits → resize → arg-max), so a served label map equals theirs on the same file; a
request alone in its batch runs exactly their computation.

The ONNX backend (and this module at import) never imports PyTorch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class TorchBackend:
    """A segkit model (anything :func:`segkit.load_model` takes) run by PyTorch through :class:`segkit.Segmenter`.

    Args:
        model: a ``final/`` folder, a checkpoint, a registry name, a Hub id, or a ``Segmentor``.
        device: ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N``. amp: ``None`` or ``"bf16"`` / ``"fp16"``
            (:func:`segkit.runtime.check_amp` refuses what the device cannot run).

    Whole inference without test-time augmentation (the usual protocol) runs a batch as one forward pass
    and resizes each image's logits to its own size; slide inference, multi-scale / flip protocols and binary
    (one-logit) models run the images of a batch one after the other through ``Segmentor.predict`` (slide
    inference batches its windows already). Models reading other than 3 bands are refused
    (:class:`~segkit.errors.UsageError`): uploads are RGB.
    """

    kind = "torch"

    def __init__(self, model, device: str = "auto", amp: str | None = None):
        from segkit.engine.segmenter import Segmenter
        from segkit.errors import UsageError

        self.segmenter = Segmenter(model, device=device, amp=amp)
        bands = int(getattr(self.segmenter.model, "in_channels", 3))
        if bands != 3:
            raise UsageError(
                f"{model}: the model reads {bands}-band images; segkit serve takes RGB uploads (JPEG, PNG, WebP, TIFF)"
            )
        self.model_name = str(getattr(self.segmenter.model, "name", type(self.segmenter.model).__name__))
        self.classes = self.segmenter.classes
        self.palette = self.segmenter.palette
        self.device = str(self.segmenter.device)
        self.amp = amp
        self.protocol = self.segmenter.protocol.describe()
        self._kwargs = self.segmenter.protocol.inference_kwargs()
        self._batched = self._kwargs["mode"] == "whole" and tuple(self._kwargs["scales"]) == (1.0,)
        self._batched = self._batched and not self._kwargs["flip"]
        # a binary model (one logit, a threshold) takes Segmentor.predict's own path, image by image
        self._batched = self._batched and not getattr(self.segmenter.model, "is_binary", False)

    def prepare(self, image: np.ndarray) -> tuple[tuple, Any]:
        """``(key, item)`` of one image; raises :class:`~segkit.errors.InsufficientMemoryError` for an image
        whose whole-image inference would not fit in memory (:meth:`Segmenter.check_memory`)."""
        self.segmenter.check_memory([image.shape[:2]])
        x = self.segmenter.transform(image)["image"]
        return tuple(x.shape), (x, image.shape[:2])

    def run(self, items: list) -> list[np.ndarray]:
        import torch

        from segkit.models.inference import resize_argmax
        from segkit.runtime import autocast

        seg = self.segmenter
        runner = seg.runner
        with torch.inference_mode(), autocast(self.amp, seg.device):
            x = torch.stack([t for t, _ in items]).to(seg.device)
            if self._batched:
                logits = runner.encode_decode(x)
                net = tuple(x.shape[-2:])
                labels = [
                    resize_argmax(logits[i : i + 1], [net, size], align_corners=runner.align_corners)[0]
                    for i, (_, size) in enumerate(items)
                ]
            else:
                labels = [
                    runner.predict(x[i : i + 1], out_size=size, window_batch=seg.window_batch, **self._kwargs)[0]
                    for i, (_, size) in enumerate(items)
                ]
        dtype = torch.uint8 if len(self.classes) <= 256 else torch.int64
        return [lab.to(dtype).cpu().numpy() for lab in labels]


class OnnxBackend:
    """An exported segkit ``.onnx`` run by onnxruntime on the CPU (:class:`~segkit.tools.onnx_predict.OnnxSegmenter`:
    the exported test protocol, whole-image inference; the batch axis of every export is dynamic)."""

    kind = "onnx"

    def __init__(self, path: str | Path, threads: int | None = None):
        from segkit.tools.onnx_predict import OnnxSegmenter

        self.session = OnnxSegmenter(path, threads=threads)
        if self.session.in_channels != 3:
            from segkit.errors import UsageError

            raise UsageError(
                f"{path}: the model reads {self.session.in_channels}-band images; segkit serve takes RGB uploads "
                "(JPEG, PNG, WebP, TIFF)"
            )
        self.model_name = str(self.session.meta.get("model") or Path(path).stem)
        self.classes = list(self.session.class_names)
        self.palette = [list(c) for c in self.session.palette]
        self.device = "cpu"
        self.amp = None
        self.protocol = self.session.protocol.describe() if self.session.dynamic else "fixed export size"
        self._align = bool(self.session.meta.get("align_corners") == "true")

    def prepare(self, image: np.ndarray) -> tuple[tuple, Any]:
        x = self.session.preprocess(image)[0]
        return tuple(x.shape), (x, image.shape[:2])

    def run(self, items: list) -> list[np.ndarray]:
        x = np.stack([a for a, _ in items])
        logits = self.session.logits(x)
        out = []
        for i, (_, size) in enumerate(items):
            label = self.session.label_map(logits[i], x.shape[-2:], size)  # arg-max, or a binary model's threshold
            out.append(label.astype(np.uint8 if len(self.classes) <= 256 else np.int64))
        return out


def load_backend(model, backend: str = "auto", device: str = "auto", amp: str | None = None):
    """The backend for ``model``: ``"onnx"`` for a ``.onnx`` file (``backend="auto"``), else ``"torch"``.

    Raises :class:`~segkit.errors.UsageError` for ``backend="onnx"`` with a model that is not a ``.onnx``
    file, or for ``--device`` / ``--amp`` other than the CPU in float32 with onnxruntime."""
    from segkit.errors import UsageError

    is_onnx = str(model).lower().endswith(".onnx")
    if backend not in ("auto", "torch", "onnx"):
        raise UsageError(f"backend must be auto, torch or onnx, got {backend!r}")
    if backend == "auto":
        backend = "onnx" if is_onnx else "torch"
    if backend == "onnx":
        if not is_onnx:
            raise UsageError(
                f"--backend onnx needs an exported .onnx model, got {model}: `segkit export {model} --dynamic --out "
                "model.onnx` first"
            )
        if device not in ("auto", "cpu") or amp:
            raise UsageError("--backend onnx runs on the CPU in float32 (--device / --amp are for PyTorch models)")
        return OnnxBackend(model)
    if is_onnx:
        raise UsageError(f"{model}: an ONNX file runs with --backend onnx (or auto), not torch")
    return TorchBackend(model, device=device, amp=amp)


__all__ = ["TorchBackend", "OnnxBackend", "load_backend"]
