"""Segment images with an exported segkit ONNX model — onnxruntime + NumPy + OpenCV/Pillow, no PyTorch.

This module (and what it imports: :mod:`segkit.data`, ``segkit.engine.visualize``,
``segkit.utils``) never imports ``torch``, so ``segkit predict --onnx model.onnx IMAGE --out DIR``
runs where PyTorch is not installed (checked by ``tests/test_tools_export.py`` with
``sys.modules["torch"] = None``).

The model file carries what inference needs as ONNX ``metadata_props`` (written by
:func:`segkit.tools.export.export_onnx`): ``class_names``, ``palette``, ``mean``, ``std``,
``dynamic_hw``, ``export_shape``, ``logits_at`` and ``test_protocol`` (JSON). Input ``image``:
float32 ``(B, 3, H, W)`` RGB normalised as ``(x − mean) / std`` on the 0–255 scale; output
``logits``: float32 ``(B, K, h, w)`` at the decoder's output stride (``logits_at="decoder"``, the
default since 0.2) or ``(B, K, H, W)`` at input size (``"input"``, and files written before).

Pipeline per image — the one of ``segkit predict``, with the same code for steps 1–2:

1. read with :func:`segkit.data.io.read_image` (EXIF orientation applied, 8-bit RGB);
2. the model's test protocol (:class:`~segkit.data.protocol.TestProtocol`, from the metadata):
   its test resize (:class:`~segkit.data.transforms.TestTransform`); a model exported with a
   fixed size gets the image stretched to that size instead;
3. whole-image inference (slide inference needs PyTorch);
4. the label path: logits are resized to the network input and then to the original size
   (bilinear, PyTorch's ``align_corners=False`` convention, the two resizes composed into one
   filter) fused with the arg-max in bands of rows, in NumPy
   (:func:`segkit.data.interp.resize_argmax`), so no full-resolution map is held;
5. ``<stem>_label.png`` (palette PNG of class indices) and ``<stem>_overlay.png`` (overlay +
   legend) are written, as by ``segkit predict``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from segkit.data.interp import resize_argmax
from segkit.data.protocol import TestProtocol
from segkit.data.transforms import TestTransform
from segkit.errors import CheckpointError, NotFoundError, UsageError
from segkit.utils import IMAGE_SUFFIXES, list_images, output_stems, require  # noqa: F401 (re-exported)

FORMAT = "segkit-onnx-1"


class OnnxModelError(CheckpointError, ValueError):
    """An ONNX file onnxruntime cannot load, or one that is not a segkit export; names the file (exit status 1)."""


def read_metadata(path: str | Path) -> dict:
    """The segkit metadata of an exported model, JSON fields decoded.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` if the file is not a
    segkit export (no ``segkit_format`` entry) or cannot be read by ``onnx``/``onnxruntime``.
    """
    ort = require("onnxruntime", "tools", "ONNX prediction")

    session = _session(path, ort)
    return _decode_meta(session.get_modelmeta().custom_metadata_map, path)


def _session(path, ort, threads: int | None = None, providers: Sequence[str] | None = None):
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{path}: no such ONNX model file")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as e:  # onnxruntime raises its own exception types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise OnnxModelError(f"{path}: onnxruntime cannot load this model ({first})") from None


def _decode_meta(raw: dict, path) -> dict:
    if raw.get("segkit_format") != FORMAT:
        raise OnnxModelError(
            f"{path}: not a segkit ONNX export (metadata 'segkit_format' is "
            f"{raw.get('segkit_format')!r}, expected {FORMAT!r}); export it with `segkit export`"
        )
    meta = dict(raw)
    try:
        for key in (
            "class_names",
            "palette",
            "mean",
            "std",
            "export_shape",
            "num_classes",
            "dynamic_hw",
            "ignore_index",
        ):
            meta[key] = json.loads(raw[key])
        meta["test_protocol"] = json.loads(raw["test_protocol"]) if "test_protocol" in raw else None
    except (KeyError, json.JSONDecodeError) as e:
        raise OnnxModelError(f"{path}: malformed segkit metadata ({e})") from None
    return meta


# ----------------------------------------------------------------------------- the predictor
class OnnxSegmenter:
    """An exported segkit model run by onnxruntime.

    Args:
        path: the ``.onnx`` file written by ``segkit export``.
        threads: onnxruntime intra-op threads (default: onnxruntime's choice).
        providers: onnxruntime execution providers (default CPU).

    Attributes: ``meta`` (decoded metadata), ``class_names``, ``palette``, ``mean``, ``std``,
    ``dynamic`` (H/W may vary), ``export_shape`` ``(H, W)``, ``protocol`` (the exported
    :class:`~segkit.data.protocol.TestProtocol`; files exported before it was recorded get no resize),
    ``in_channels`` (3, or the bands of a multi-band model: its images are read with
    :func:`segkit.data.io.read_bands`, TIFFs with ``tifffile``), and for a binary model (``task: binary``, one
    logit) ``is_binary``, ``threshold`` and ``mask_values`` (``[background, foreground]`` as its training masks
    stored them; ``None`` for multi-class models). Raises :class:`OnnxModelError` for a one-logit file without the
    binary metadata (an export by an older segkit).
    """

    def __init__(self, path: str | Path, threads: int | None = None, providers: Sequence[str] | None = None):
        ort = require("onnxruntime", "tools", "ONNX prediction")

        self.path = Path(path)
        self.session = _session(path, ort, threads, providers)
        self.meta = _decode_meta(self.session.get_modelmeta().custom_metadata_map, path)
        self.class_names = list(self.meta["class_names"])
        self.palette = [list(c) for c in self.meta["palette"]]
        self.num_classes = int(self.meta["num_classes"])
        self.in_channels = int(json.loads(self.meta.get("in_channels", "3")))
        self.is_binary = self.meta.get("task") == "binary"
        self.task = "binary" if self.is_binary else "multiclass"
        if self.num_classes == 1 and not self.is_binary:  # one logit without the binary metadata: argmax gives 0
            raise OnnxModelError(
                f"{path}: one output logit but no 'task: binary' metadata (exported by an older segkit); the arg-max "
                f"would label every pixel background: export the model again with this segkit"
            )
        self.threshold = float(json.loads(self.meta["threshold"])) if self.is_binary else None
        self.mask_values = list(json.loads(self.meta.get("mask_values", "[0, 1]"))) if self.is_binary else None
        self.mean = tuple(float(v) for v in self.meta["mean"])
        self.std = tuple(float(v) for v in self.meta["std"])
        self.protocol = (
            TestProtocol(**self.meta["test_protocol"]) if self.meta.get("test_protocol") else TestProtocol(scale=None)
        )
        self.dynamic = bool(self.meta["dynamic_hw"])
        self.logits_at = self.meta.get("logits_at", "input")
        self.export_shape = tuple(int(v) for v in self.meta["export_shape"])
        self.input_name = self.session.get_inputs()[0].name

    def transform(self, scale: Sequence[int] | None = None) -> TestTransform:
        """The test transform: the exported protocol's (``scale`` overrides its resize, ``0`` = none), or a
        stretch to ``export_shape`` for a fixed-size export."""
        if not self.dynamic:
            h, w = self.export_shape
            return TestTransform(scale=(w, h), keep_ratio=False, size_divisor=None, mean=self.mean, std=self.std)
        protocol = self.protocol
        if scale is not None:
            protocol = dataclasses.replace(protocol, scale=None if list(scale) in ([0], [0, 0]) else tuple(scale))
        return protocol.transform(self.mean, self.std)

    def input_size(self, height: int, width: int, scale: Sequence[int] | None = None) -> tuple[int, int]:
        """Network input ``(H', W')`` for an ``height × width`` image (see the module doc, step 2)."""
        return self.transform(scale).output_size(height, width)

    def read(self, path: str | Path) -> np.ndarray:
        """An image file as this model takes it: ``uint8 (H, W, 3)`` RGB (:func:`~segkit.data.io.read_image`) or, for
        ``in_channels`` != 3, ``uint8 (H, W, C)`` bands (:func:`~segkit.data.io.read_bands`) — the readers of
        ``segkit predict`` and the data sets."""
        from segkit.data.io import read_bands, read_image

        return read_image(path) if self.in_channels == 3 else read_bands(path, self.in_channels)

    def preprocess(self, image: np.ndarray, scale: Sequence[int] | None = None) -> np.ndarray:
        """``uint8 (H, W, C)`` (``C`` = :attr:`in_channels`, 3 = RGB) → normalised float32 ``(1, C, H', W')``."""
        image = np.asarray(image)
        c = self.in_channels
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != c:
            what = "RGB" if c == 3 else f"with {c} bands"
            raise UsageError(f"image must be uint8 (H, W, {c}) {what}, got {image.dtype} {image.shape}")
        return np.ascontiguousarray(self.transform(scale).to_array(image)[None])

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Run the network on a normalised ``(B, 3, H, W)`` float32 batch → logits ``(B, K, h, w)`` at the
        decoder's stride (``logits_at == "decoder"``) or ``(B, K, H, W)``."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def predict(self, image: np.ndarray, scale: Sequence[int] | None = None) -> np.ndarray:
        """Label map ``int64 (H, W)`` at the image's original size.

        A binary model: 1 where ``sigmoid(logit) >= threshold``, decided on the resized logit against
        ``log(t / (1 − t))`` as :meth:`Segmentor.predict <segkit.models.segmentor.Segmentor.predict>` does, through
        the same fused resize as the multi-class arg-max (classes ``[0, logit − log(t / (1 − t))]``; a pixel exactly
        at the threshold is background here, foreground in PyTorch)."""
        x = self.preprocess(image, scale)
        return self.label_map(self.logits(x)[0], x.shape[-2:], image.shape[:2])

    def label_map(self, logits: np.ndarray, net_size: Sequence[int], size: Sequence[int]) -> np.ndarray:
        """Labels ``int64 (H, W)`` at ``size`` of one image's ``logits (K, h, w)`` (from :meth:`logits` of a network
        input of ``net_size``): the fused resize + arg-max, or for a binary model the threshold (:meth:`predict`)."""
        out = logits
        if self.is_binary:
            t = self.threshold
            out = np.concatenate([np.zeros_like(out[:1]), out[:1] - np.float32(np.log(t / (1.0 - t)))])
        sizes = [net_size, size] if self.logits_at == "decoder" else [size]
        return resize_argmax(out, sizes, align_corners=bool(self.meta.get("align_corners") == "true"))


def _display_rgb(img: np.ndarray) -> np.ndarray:
    """The overlay's picture of a multi-band image: its first three bands (RGB of RGB + NIR), or its first band as
    gray for fewer than three (as ``segkit predict`` shows them)."""
    return np.ascontiguousarray(img[:, :, :3] if img.shape[2] >= 3 else np.repeat(img[:, :, :1], 3, axis=2))


def predict_paths_onnx(
    model_path: str | Path,
    inputs: str | Path,
    out_dir: str | Path,
    *,
    scale: Sequence[int] | None = None,
    threads: int | None = None,
    alpha: float = 0.5,
    overwrite: bool = False,
    formats: Sequence[str] = ("png",),
    coco_gt: str | Path | None = None,
    polygons: bool = False,
    tolerance: float = 1.0,
) -> list[Path]:
    """Segment an image or a folder of images with an exported model; write label + overlay PNGs.

    Output names as ``segkit predict``: ``<stem>_label.png``, ``<stem>_overlay.png`` (files
    sharing a stem get their suffix appended); ``formats``, ``coco_gt``, ``polygons``, ``tolerance``: the
    other result formats, as :func:`segkit.engine.predict.predict_paths` (``json``, ``coco``). ``scale``
    overrides the exported test resize
    (``0`` = none). An output file that already exists is refused before the first image is
    segmented (:class:`~segkit.errors.OutputExistsError`) unless ``overwrite`` moves it aside
    (:func:`segkit.utils.claim_output`). Returns the written paths in input order. Raises ``FileNotFoundError`` /
    ``ValueError`` naming the model or image at fault.
    """
    from segkit.data.io import summarise_conversions
    from segkit.engine.result_formats import ResultWriter

    model = OnnxSegmenter(model_path, threads=threads)
    if model.num_classes > 256:
        raise UsageError(f"{model.num_classes} classes do not fit an 8-bit label PNG (max 256)")
    files = list_images(inputs)
    writer = ResultWriter(
        out_dir,
        formats,
        model.class_names,
        model.palette,
        coco_gt=coco_gt,
        polygons=polygons,
        tolerance=tolerance,
        alpha=alpha,
        overwrite=overwrite,
        mask_values=model.mask_values,  # a binary model: 0/255 or 0/1 masks as its training data
    )
    writer.claim(output_stems(files), files)  # every output name checked before the first image is segmented
    written = []
    with summarise_conversions(f"{inputs}"):  # grayscale, 16-bit …: one line for the folder, not one per file
        for f, stem in zip(files, output_stems(files)):
            image = model.read(f)
            shown = image if model.in_channels == 3 else _display_rgb(image)
            written += writer.add(stem, model.predict(image, scale), shown, f)
    return written + writer.finish()
