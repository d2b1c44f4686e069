"""Export a segkit model to ONNX, verified against PyTorch with onnxruntime.

The graph: input ``image`` float32 ``(B, 3, H, W)`` (RGB normalised with the model's mean/std on
the 0–255 scale, as :meth:`Segmentor.forward` takes it), output ``logits`` float32 — by default
``(B, K, h, w)`` at the decoder's output stride (``Segmentor.encode_decode``; 1/4 of the input
for SegFormer, 1/8 for SegNeXt; as Hugging Face's SegFormer ONNX exports), or with
``logits="input"`` ``(B, K, H, W)`` at input resolution (plus the bilinear upsampling,
``align_corners=False``). Decoder-stride logits are 16–64× smaller and let the predictor take
the label path (:func:`segkit.data.interp.resize_argmax`: resize to the input and the original
size fused with the arg-max) instead of a full-resolution map. The batch axis is always
dynamic; with ``dynamic=True`` height and width are too. What inference needs is stored as ONNX
``metadata_props`` (strings; JSON for lists): ``segkit_format``, ``model``, ``num_classes``,
``class_names``, ``palette``, ``mean``, ``std``, ``ignore_index``, ``align_corners``,
``dynamic_hw``, ``export_shape``, ``logits_at`` (``"decoder"`` / ``"input"``; files without it
hold input-size logits), ``test_protocol``, ``opset``, ``torch_version``, ``segkit_version``,
``in_channels`` (the input's bands, 3 for RGB; a 4-band model takes ``(B, 4, H, W)``) and, for a binary model
(``task: binary``, one logit ``K = 1``), ``task`` = ``"binary"``, ``threshold`` and ``mask_values`` (the values its
training masks stored, ``[0, 255]`` or ``[0, 1]``) — read by :mod:`segkit.tools.onnx_predict`, which runs without
PyTorch.

Exporter choice (torch 2.13, onnx 1.23, onnxruntime 1.31, checked on this machine):

* ``torch.onnx.export(..., dynamo=False)`` — the TorchScript tracer — is used. It records
  shape arithmetic (``x.shape[-2:]`` etc.) as graph operations, so sizes stay symbolic where
  the model computes them with tensor ops. It warns that it is deprecated; the warning is
  silenced here.
* The default ``dynamo=True`` exporter needs ``onnxscript`` (not a segkit dependency, not
  installed here). Tried with onnxscript 0.7.2 on SegFormer-B0 it was slow and silently
  specialised H and W to the example size (the models' Python-level size checks become
  guards), so a "dynamic" graph rejected any other size.
* :meth:`Segmentor.forward` turns the output size into Python ints (``resize``), which a
  trace freezes; the export therefore wraps the model as ``interpolate(encode_decode(x),
  size=x.shape[-2:])`` — the same computation with the size kept symbolic.
* SegNeXt's NMF runs in eval mode with its deterministic bases (drawn once on the CPU from
  ``torch.Generator().manual_seed(seed)``, shape ``(S, D, R)``, independent of H·W) and a
  fixed number of steps (7): the bases become a constant initializer and
  ``repeat(B, 1, 1)`` follows the dynamic batch; the unrolled updates are plain MatMul /
  Mul / Div nodes.
* Model code with Python-level size logic cannot be traced size-generically: RSSeg on plain
  ViT/BEiT (position-embedding interpolation and padding to multiples of 16 are decided in
  Python) and on CSWin (stripe-window partition sizes) export correctly at a fixed size, not
  with ``dynamic=True`` (checked here: the dynamic graphs fail at a second size). Rather than trusting
  a list, every export is **verified**: onnxruntime vs PyTorch on random input at batch 2 at
  the export size and, for ``dynamic=True``, at a second, odd size; a mismatch (max |Δ| >
  ``atol``) or a runtime error deletes the file and raises :class:`ExportError` naming the
  trace warnings' source lines (where the graph froze a size).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from segkit.data.transforms import MIN_SIDE
from segkit.errors import NotFoundError, UsageError
from segkit.models.fuse import for_inference
from segkit.utils import require

MIN_OPSET, MAX_OPSET = 17, 20  # 17: LayerNormalization op; 20: newest the TorchScript exporter writes


class ExportError(RuntimeError):
    """The export failed or the exported graph does not reproduce PyTorch; the message says where."""


class LogitsAtInputSize(nn.Module):
    """``(B, 3, H, W)`` → ``(B, K, H, W)``: ``model.encode_decode`` + bilinear upsampling with a symbolic size."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.model.encode_decode(image)
        return F.interpolate(
            logits,
            size=image.shape[-2:],
            mode="bilinear",
            align_corners=bool(getattr(self.model, "align_corners", False)),
        )


class DecoderLogits(nn.Module):
    """``(B, 3, H, W)`` → ``(B, K, h, w)``: ``model.encode_decode`` (logits at the decoder's output stride)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.encode_decode(image)


LOGITS_AT = {"decoder": DecoderLogits, "input": LogitsAtInputSize}


def _ort_session(path: Path):
    ort = require("onnxruntime", "tools", "segkit export")

    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # errors are re-raised as ExportError; keep onnxruntime quiet
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def second_size(h: int, w: int) -> tuple[int, int]:
    """The other size a dynamic export is verified at: different from ``(h, w)``, not a multiple of 16 or 32."""
    return max(MIN_SIDE + 1, h * 5 // 4 + 3), max(MIN_SIDE + 1, w * 3 // 4 + 5)


def metadata(model, *, dynamic: bool, shape: Sequence[int], opset: int, logits_at: str = "decoder") -> dict[str, str]:
    """The ``metadata_props`` written into the ONNX file (all values strings; ``test_protocol`` is the
    model's :class:`~segkit.data.protocol.TestProtocol`, which the ONNX predictor applies)."""
    import segkit
    from segkit.data.protocol import TestProtocol

    channels = int(getattr(model, "in_channels", 3))
    return {
        "segkit_format": "segkit-onnx-1",
        "model": str(getattr(model, "name", type(model).__name__)),
        "num_classes": json.dumps(int(model.num_classes)),
        "class_names": json.dumps(list(model.class_names)),
        "palette": json.dumps([list(map(int, c)) for c in model.palette]),
        "mean": json.dumps(list(map(float, model.mean))),
        "std": json.dumps(list(map(float, model.std))),
        "ignore_index": json.dumps(int(getattr(model, "ignore_index", 255))),
        "align_corners": json.dumps(bool(getattr(model, "align_corners", False))),
        "dynamic_hw": json.dumps(bool(dynamic)),
        "export_shape": json.dumps([int(shape[0]), int(shape[1])]),
        "test_protocol": json.dumps(TestProtocol.of(model).to_dict()),
        "opset": str(int(opset)),
        "in_channels": json.dumps(channels),
        **(
            {
                "task": "binary",
                "threshold": json.dumps(float(model.threshold)),
                "mask_values": json.dumps(list(getattr(model, "mask_values", None) or [0, 1])),
            }
            if getattr(model, "is_binary", False)
            else {}
        ),
        "input": (
            "image: float32 (B, 3, H, W), RGB, (pixel - mean) / std on the 0-255 scale"
            if channels == 3
            else f"image: float32 (B, {channels}, H, W), bands as read by segkit (8-bit scale), (value - mean) / std"
        ),
        "logits_at": logits_at,
        "output": (
            "logits: float32 (B, K, h, w) at the decoder's output stride"
            if logits_at == "decoder"
            else "logits: float32 (B, K, H, W) at input resolution"
        ),
        "torch_version": torch.__version__,
        "segkit_version": getattr(segkit, "__version__", "?"),
    }


def prepare_check_image(model, image: np.ndarray, shape: Sequence[int] | None) -> torch.Tensor:
    """Normalised ``(1, 3, h, w)`` float32 for ``--check``: resized to ``shape`` (fixed-size export) or as is."""
    import cv2

    from segkit.data.transforms import TestTransform

    if shape is not None and tuple(image.shape[:2]) != tuple(shape):
        image = cv2.resize(image, (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_LINEAR)
    return TestTransform(scale=None, size_divisor=None, mean=model.mean, std=model.std)(image)["image"][None]


def export_onnx(
    model,
    out: str | Path,
    *,
    shape: Sequence[int] = (512, 512),
    dynamic: bool = False,
    opset: int = 17,
    check_image: str | Path | None = None,
    verify: bool = True,
    atol: float = 1e-3,
    logits_at: str = "decoder",
) -> dict:
    """Export ``model`` to ``out`` (ONNX) and verify it with onnxruntime.

    Args:
        model: a :class:`~segkit.models.segmentor.Segmentor` (moved to the CPU, put in eval
            mode for the export, its training flag restored afterwards).
        out: destination ``.onnx`` path (parent folders created).
        shape: ``(H, W)`` of the example input (each >= 32); the fixed input size unless ``dynamic``.
        dynamic: make H and W dynamic (batch is always dynamic). Refused (ExportError) for a
            model whose traced graph does not reproduce PyTorch at another size.
        opset: ONNX opset, 17–20.
        check_image: an image file; it is run through both PyTorch and onnxruntime (resized
            to ``shape`` for a fixed-size export) and the logits compared.
        verify: compare onnxruntime with PyTorch on random input (recommended; ``False`` only
            saves the verification time).
        atol: largest accepted max |Δ| between the logits (float32).
        logits_at: ``"decoder"`` (default: logits at the decoder's output stride) or ``"input"``
            (upsampled to the input size inside the graph).

    Returns a report dict: ``path``, ``size_mb``, ``opset``, ``dynamic``, ``shape``,
    ``checks`` (list of ``{"input": [B, 3, H, W], "max_abs_diff": …}``; the ``--check`` image
    adds ``image`` and ``argmax_agreement``), ``trace_warnings``.

    Raises ``ValueError`` for bad arguments, :class:`ExportError` if the export or a check fails.
    """
    onnx = require("onnx", "tools", "segkit export")
    require("onnxruntime", "tools", "segkit export (verification)")
    if logits_at not in LOGITS_AT:
        raise UsageError(f"logits_at must be one of {sorted(LOGITS_AT)}, got {logits_at!r}")
    channels = int(getattr(model, "in_channels", 3))
    if check_image is not None and channels != 3:
        raise UsageError(
            f"--check {check_image}: an RGB check image, but the model takes {channels}-band input; export without "
            "--check (the export is verified on random input)"
        )
    out = Path(out)
    h, w = _check_args(shape, opset, check_image)
    out.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    original = model.cpu().eval()
    model = for_inference(original)  # BN / layer-scale folded copy where the model has any (SegNeXt)
    wrapper = LOGITS_AT[logits_at](model).eval()
    try:
        name = getattr(model, "name", type(model).__name__)
        trace_warnings = _trace(wrapper, name, out, h, w, dynamic=dynamic, opset=opset, channels=channels)
        _add_metadata(onnx, out, metadata(model, dynamic=dynamic, shape=(h, w), opset=opset, logits_at=logits_at))
        report = {
            "path": str(out),
            "size_mb": out.stat().st_size / 2**20,
            "opset": int(opset),
            "dynamic": bool(dynamic),
            "shape": [h, w],
            "logits_at": logits_at,
            "model": getattr(model, "name", None),
            "checks": [],
            "trace_warnings": trace_warnings,
        }
        inputs = _check_inputs(model, h, w, dynamic=dynamic, verify=verify, check_image=check_image)
        report["checks"] = _verify(out, wrapper, inputs, atol, trace_warnings)
        if check_image is not None:
            report["checks"][-1]["image"] = str(check_image)
        return report
    except BaseException:
        if out.exists():
            out.unlink()
        raise
    finally:
        original.train(was_training)


def _check_args(shape: Sequence[int], opset: int, check_image) -> tuple[int, int]:
    """``(H, W)`` of the export; ``ValueError`` for a side below ``MIN_SIDE`` or an unsupported opset,
    ``FileNotFoundError`` for a missing ``check_image``."""
    h, w = (int(v) for v in shape)
    if min(h, w) < MIN_SIDE:
        raise UsageError(f"export shape {h}x{w}: H and W must be >= {MIN_SIDE}")
    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise UsageError(
            f"opset {opset} not supported: use {MIN_OPSET}..{MAX_OPSET} (>= 17 for LayerNormalization; "
            f"the TorchScript exporter writes at most {MAX_OPSET})"
        )
    if check_image is not None and not Path(check_image).is_file():
        raise NotFoundError(f"--check image {check_image} does not exist")
    return h, w


def _trace(
    wrapper: nn.Module, name: str, out: Path, h: int, w: int, *, dynamic: bool, opset: int, channels: int = 3
) -> list[str]:
    """Write ``wrapper`` traced on a ``(1, channels, H, W)`` example to ``out`` (the TorchScript exporter; batch,
    and H, W if ``dynamic``, as dynamic axes); returns the tracer warnings as sorted ``file:line: message``."""
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic else {0: "batch"}
    example = torch.randn(1, channels, h, w, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        try:
            torch.onnx.export(
                wrapper,
                (example,),
                str(out),
                dynamo=False,
                opset_version=int(opset),
                input_names=["image"],
                output_names=["logits"],
                dynamic_axes={"image": axes, "logits": axes},
                do_constant_folding=True,
            )
        except Exception as e:
            raise ExportError(f"torch.onnx.export failed for {name}: {type(e).__name__}: {e}") from e
    return sorted(
        {
            f"{Path(c.filename).name}:{c.lineno}: {str(c.message).splitlines()[0][:90]}"
            for c in caught
            if issubclass(c.category, torch.jit.TracerWarning)
        }
    )


def _add_metadata(onnx, out: Path, props: dict[str, str]) -> None:
    """Store ``props`` as the ``metadata_props`` of the ONNX file ``out``, then run the ONNX checker on it."""
    proto = onnx.load(str(out), load_external_data=False)
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(out))
    try:
        onnx.checker.check_model(str(out))
    except Exception as e:
        raise ExportError(f"{out}: the ONNX checker rejects the exported graph: {e}") from e


def _check_inputs(model, h: int, w: int, *, dynamic: bool, verify: bool, check_image) -> list[torch.Tensor]:
    """The inputs the export is verified on: with ``verify`` random normal ``(2, 3, H, W)`` (and for a
    dynamic export ``(1, 3, *second_size(H, W))``) from ``torch.Generator().manual_seed(1)``; then the
    normalised ``check_image`` (resized to ``(H, W)`` unless ``dynamic``)."""
    inputs = []
    c = int(getattr(model, "in_channels", 3))  # 4 for RGB + NIR …
    if verify:
        gen = torch.Generator().manual_seed(1)
        inputs.append(torch.randn(2, c, h, w, generator=gen))
        if dynamic:
            inputs.append(torch.randn(1, c, *second_size(h, w), generator=gen))
    if check_image is not None:
        from segkit.data.io import read_image

        inputs.append(prepare_check_image(model, read_image(check_image), None if dynamic else (h, w)))
    return inputs


def _verify(out: Path, wrapper: nn.Module, inputs: list[torch.Tensor], atol: float, trace_warnings) -> list[dict]:
    """Run ``inputs`` through onnxruntime (the file ``out``) and PyTorch (``wrapper``); one
    :func:`_compare` entry per input. ``ExportError`` if onnxruntime cannot load the graph."""
    try:
        sess = _ort_session(out) if inputs else None
    except Exception as e:
        raise ExportError(f"{out}: onnxruntime cannot load the exported graph: {e}") from None
    return [_compare(wrapper, sess, x, atol, trace_warnings) for x in inputs]


def _compare(wrapper, sess, x: torch.Tensor, atol: float, trace_warnings: list[str]) -> dict:
    with torch.no_grad():
        ref = wrapper(x).float().numpy()
    try:
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    except Exception as e:
        raise ExportError(
            f"onnxruntime fails on input {tuple(x.shape)}: {str(e).splitlines()[0][:300]}" + _hint(trace_warnings)
        ) from None
    if got.shape != ref.shape:
        raise ExportError(
            f"on input {tuple(x.shape)} onnxruntime returns {got.shape}, PyTorch {ref.shape}" + _hint(trace_warnings)
        )
    diff = float(np.abs(got - ref).max())
    if not math.isfinite(diff) or diff > atol:
        raise ExportError(
            f"on input {tuple(x.shape)} onnxruntime and PyTorch logits differ by max |Δ| = {diff:.3g} "
            f"(> {atol:g})" + _hint(trace_warnings)
        )
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    return {
        "input": list(x.shape),
        "max_abs_diff": diff,
        "max_abs_logit": float(np.abs(ref).max()),
        "argmax_agreement": agree,
    }


def _hint(trace_warnings: list[str]) -> str:
    msg = (
        "; the traced graph does not generalise to this input. If it is another size, export at a fixed size "
        "(without --dynamic) and feed images of exactly that size"
    )
    if trace_warnings:
        msg += ". Python-level size logic frozen by the tracer at: " + "; ".join(trace_warnings[:6])
    return msg
