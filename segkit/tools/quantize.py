"""INT8 ONNX models: onnxruntime's static quantization (QDQ), calibrated on real images through the test protocol.

``segkit export MODEL --quantize int8 --calibration DIR --out model.int8.onnx`` runs
:func:`export_int8`: the float32 export of :func:`segkit.tools.export.export_onnx` (verified against
PyTorch), then:

1. **ORT's pre-processing** (``onnxruntime.quantization.quant_pre_process``: symbolic shape inference,
   graph optimisation, ONNX shape inference), which onnxruntime recommends before quantization;
2. **calibration** on ``num_calib`` images of ``DIR``, taken evenly spaced from its sorted file list (so a
   folder of video sequences is covered, not its first scene) and fed through exactly what
   ``segkit predict --onnx`` applies — :meth:`segkit.tools.onnx_predict.OnnxSegmenter.preprocess` with the
   model's stored test protocol (resize, size divisor, mean/std);
3. ``onnxruntime.quantization.quantize_static`` in the **QDQ** format (QuantizeLinear / DequantizeLinear
   pairs around the quantized ops, which ORT fuses into integer kernels at load time: ``QLinearConv``,
   ``QLinearMatMul``), **per-channel int8 weights** (symmetric, one scale per output channel) and **uint8
   activations** (asymmetric, per tensor). uint8 × int8 (``U8S8``) is ORT's recommended pairing on x86-64,
   where its kernels use VNNI / AMX-INT8 instructions where the CPU has them.

The **calibration method** (``method``): ``minmax`` (the range of each activation over the calibration
images), ``entropy`` (the range minimising the KL divergence of the quantized histogram) or
``percentile`` (the 99.999th percentile of |x|). The default, ``minmax``, was chosen by measuring the
three on the CamVid val split (``benchmarks/int8.py``; figures in ``benchmarks/results/int8.md``); it is
switchable with ``--calib-method``.

**Which ops are quantized** (``ops``): ``"matmul"`` (default) quantizes ``Conv``, ``Gemm`` and the
``MatMul`` nodes whose second input is a weight (``MatMulConstBOnly``): the linear layers, which hold
nearly all the FLOPs. Everything else stays float32, by choice:

* **LayerNormalization** (every MiT / MSCAN block): ORT has no integer LayerNorm kernel; quantizing its
  input only adds a dequantize in front of the same float kernel, and its output statistics need float.
* **Softmax** and the two activation × activation products of attention (``q·kᵀ``, ``attn·v``): int8
  attention scores lose the small probabilities, and ORT's ``QLinearSoftmax`` measured slower than float.
* **the NMF of SegNeXt's Ham head** (nodes under ``decode_head/hamburger/ham/``, always excluded, in either
  preset): its multiplicative updates divide by products of the factors, whose small values one 8-bit scale
  per tensor cannot represent next to the large ones (a zero denominator is then possible), and the errors
  compound over its 7 iterations. It runs on the 1/8-resolution features with rank 64 and is cheap.
* element-wise ops, ``Resize`` and ``GroupNorm``: memory-bound, no integer kernel gains time.

``"all"`` quantizes every op type ORT's QDQ quantizer supports (except the NMF) — measured too.

Raises :class:`~segkit.errors.UsageError` for bad arguments, :class:`~segkit.errors.DataError` for a
calibration folder without images (naming it), :class:`~segkit.tools.export.ExportError` if quantization
fails.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from segkit.errors import DataError, UsageError
from segkit.utils import require

METHODS = ("minmax", "entropy", "percentile")
DEFAULT_METHOD = "minmax"
OPS = {
    "matmul": ["Conv", "MatMul", "Gemm"],
    "all": None,  # every op type of ORT's QDQ registry
}
DEFAULT_NUM_CALIB = 32
# NMF2D of the LightHamHead (SegNeXt): never quantized (module doc)
NMF_SCOPE = "/decode_head/hamburger/ham/"
# ops that are bookkeeping, not compute: left out of the report of what runs in float
_SHAPE_OPS = {
    "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Constant", "ConstantOfShape", "Cast", "Slice",
    "Reshape", "Range", "Expand", "Equal", "Where", "Floor", "Ceil", "Identity", "Flatten",
}  # fmt: skip


def _quantization():
    require("onnxruntime", "tools", "INT8 export (segkit export --quantize int8)")
    from onnxruntime import quantization

    return quantization


def calibration_files(calibration: str | os.PathLike | Sequence, num: int) -> list[Path]:
    """``num`` image files for calibration: from a folder (or one image, or a list of files), evenly spaced over
    the sorted list; all of them if there are fewer. Raises :class:`~segkit.errors.DataError` /
    :class:`~segkit.errors.NotFoundError` naming a folder without images or a missing path."""
    from segkit.utils import list_images

    if isinstance(num, bool) or int(num) < 1:
        raise UsageError(f"the number of calibration images must be >= 1, got {num!r}")
    if isinstance(calibration, (str, os.PathLike)):
        files = list_images(calibration)
    else:
        files = [Path(f) for f in calibration]
    if not files:
        raise DataError(f"{calibration}: no calibration images")
    files = sorted(files)
    if len(files) <= num:
        return files
    idx = np.linspace(0, len(files) - 1, int(num)).round().astype(int)
    return [files[i] for i in idx]


class ImageCalibrationReader:
    """onnxruntime ``CalibrationDataReader`` over image files: each read with :func:`segkit.data.io.read_image`
    and turned into the float32 ``(1, 3, H, W)`` network input by ``segmenter.preprocess`` (the exported test
    protocol), one image per batch."""

    def __init__(self, segmenter, files: Sequence[Path]):
        self.segmenter, self.files = segmenter, list(files)
        self.rewind()

    def get_next(self) -> dict | None:
        from segkit.data.io import read_image

        f = next(self._it, None)
        if f is None:
            return None
        return {self.segmenter.input_name: self.segmenter.preprocess(read_image(f))}

    def rewind(self) -> None:
        self._it = iter(self.files)

    def __len__(self) -> int:
        return len(self.files)


def quantize_onnx(
    fp32_path: str | Path,
    out: str | Path,
    calibration,
    *,
    num_calib: int = DEFAULT_NUM_CALIB,
    method: str = DEFAULT_METHOD,
    ops: str = "matmul",
    per_channel: bool = True,
) -> dict:
    """Quantize the segkit float32 ONNX export ``fp32_path`` to ``out`` (INT8, QDQ) — module doc.

    Args:
        fp32_path: a ``segkit export`` file (its metadata — class names, protocol — is kept in ``out``).
        out: the INT8 ``.onnx`` file to write.
        calibration: a folder of images, an image file, or a list of image files.
        num_calib: number of calibration images (>= 1), evenly spaced over the sorted files.
        method: ``"minmax"``, ``"entropy"`` or ``"percentile"``.
        ops: ``"matmul"`` (Conv, Gemm, weight MatMuls) or ``"all"`` (every op ORT's quantizer supports).
        per_channel: one weight scale per output channel (default) or per tensor.

    Returns a report: ``path``, ``size_mb``, ``method``, ``num_calib``, ``calibration`` (the files),
    ``ops``, ``quantized`` / ``float`` (op type → count of nodes quantized / left in float, shape
    bookkeeping left out), ``excluded`` (nodes excluded by name: the NMF). The report is also stored in the
    model's metadata under ``quantization`` (JSON).
    """
    q = _quantization()
    import onnx

    from segkit.tools.onnx_predict import OnnxSegmenter

    if method not in METHODS:
        raise UsageError(f"calibration method {method!r}: choose from {', '.join(METHODS)}")
    if ops not in OPS:
        raise UsageError(f"ops {ops!r}: choose from {', '.join(OPS)}")
    fp32_path, out = Path(fp32_path), Path(out)
    segmenter = OnnxSegmenter(fp32_path)
    files = calibration_files(calibration, num_calib)
    reader = ImageCalibrationReader(segmenter, files)
    with tempfile.TemporaryDirectory(prefix="segkit-int8-") as tmp:
        pre = _pre_process(q, fp32_path, Path(tmp) / "pre.onnx")
        excluded = _excluded_nodes(onnx.load(str(pre)), ops)
        out.parent.mkdir(parents=True, exist_ok=True)
        _quantize_static(q, pre, out, reader, method, ops, per_channel, excluded, source=fp32_path)
    quantized, floating = op_census(out)
    report = {
        "path": str(out),
        "method": method,
        "num_calib": len(files),
        "calibration": [str(f) for f in files],
        "ops": ops,
        "per_channel": bool(per_channel),
        "activations": "uint8 (asymmetric, per tensor)",
        "weights": "int8 (symmetric, per channel)" if per_channel else "int8 (symmetric, per tensor)",
        "format": "QDQ",
        "quantized": quantized,
        "float": floating,
        "excluded": excluded,
    }
    _store_report(out, report)
    report["size_mb"] = out.stat().st_size / 2**20
    return report


def _pre_process(q, fp32_path: Path, pre: Path) -> Path:
    """onnxruntime's ``quant_pre_process`` (shape inference, graph optimisation) of ``fp32_path`` into ``pre``;
    :class:`~segkit.tools.export.ExportError` naming the file when it fails."""
    try:
        q.quant_pre_process(str(fp32_path), str(pre))
    except Exception as e:
        from segkit.tools.export import ExportError

        raise ExportError(
            f"onnxruntime's pre-processing (shape inference, graph optimisation) of {fp32_path} failed: "
            f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        ) from e
    return pre


def _excluded_nodes(model, ops: str) -> list[str]:
    """Names of the nodes that stay in float: the NMF of the Ham head always; with ``ops="matmul"`` also every
    MatMul of two activations (attention's ``q @ k`` and ``attn @ v``: no weight to quantize per channel, and
    ORT's QDQ MatMul would take any)."""
    excluded = [n.name for n in model.graph.node if NMF_SCOPE in n.name]
    if ops == "matmul":
        weights = {t.name for t in model.graph.initializer}
        excluded += [
            n.name
            for n in model.graph.node
            if n.op_type == "MatMul" and NMF_SCOPE not in n.name and not weights & set(n.input)
        ]
    return excluded


def _quantize_static(q, pre: Path, out: Path, reader, method, ops, per_channel, excluded, source: Path) -> None:
    """onnxruntime's ``quantize_static`` of ``pre`` into ``out``: QDQ, uint8 asymmetric activations, int8 symmetric
    weights, ``method``'s calibration; on failure ``out`` is removed and :class:`~segkit.tools.export.ExportError`
    names ``source``."""
    kwargs = {}
    if OPS[ops] is not None:
        kwargs["op_types_to_quantize"] = OPS[ops]
    calib_method = {
        "minmax": q.CalibrationMethod.MinMax,
        "entropy": q.CalibrationMethod.Entropy,
        "percentile": q.CalibrationMethod.Percentile,
    }[method]
    extra = {"CalibTensorRangeSymmetric": False}
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    try:
        q.quantize_static(
            str(pre),
            str(out),
            reader,
            quant_format=q.QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8,
            calibrate_method=calib_method,
            nodes_to_exclude=excluded,
            extra_options=extra,
            **kwargs,
        )
    except Exception as e:
        from segkit.tools.export import ExportError

        if out.exists():
            out.unlink()
        raise ExportError(f"onnxruntime quantization of {source} failed: {type(e).__name__}: {e}") from e


def op_census(path: str | Path) -> tuple[dict[str, int], dict[str, int]]:
    """``(quantized, float)``: op type → number of nodes of a QDQ model that sit in a QDQ unit (first input
    dequantized, every output quantized: ORT runs them as integer kernels) or not (they compute in float);
    shape bookkeeping ops and the Q/DQ nodes themselves are not counted."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    from_dq = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    consumers: dict[str, list[str]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    quantized, floating = Counter(), Counter()
    for n in graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") or n.op_type in _SHAPE_OPS:
            continue
        unit = bool(n.input) and n.input[0] in from_dq
        unit = unit and all(consumers.get(o) and set(consumers[o]) == {"QuantizeLinear"} for o in n.output)
        (quantized if unit else floating)[n.op_type] += 1
    return dict(sorted(quantized.items())), dict(sorted(floating.items()))


def _store_report(path: Path, report: dict) -> None:
    import onnx

    proto = onnx.load(str(path))
    keep = {k: v for k, v in report.items() if k not in ("path", "calibration")}
    keep["calibration_files"] = [Path(f).name for f in report["calibration"]]
    entry = next((p for p in proto.metadata_props if p.key == "quantization"), None) or proto.metadata_props.add()
    entry.key, entry.value = "quantization", json.dumps(keep)
    onnx.save(proto, str(path))


def export_int8(
    model,
    out: str | Path,
    calibration,
    *,
    num_calib: int = DEFAULT_NUM_CALIB,
    method: str = DEFAULT_METHOD,
    ops: str = "matmul",
    per_channel: bool = True,
    shape: Sequence[int] = (512, 512),
    dynamic: bool = False,
    opset: int = 17,
    verify: bool = True,
    fp32_out: str | Path | None = None,
) -> dict:
    """Export ``model`` to float32 ONNX (:func:`segkit.tools.export.export_onnx`, verified against PyTorch),
    then quantize it to INT8 (:func:`quantize_onnx`) into ``out``. ``fp32_out``: also keep the float32 file
    there (default: a temporary file). Returns the quantization report with ``export`` (the float32 export's
    report) and ``agreement`` (the share of calibration-image pixels whose labels the INT8 and float32
    models agree on, on up to 4 of them)."""
    from segkit.tools.export import export_onnx

    _quantization()
    files = calibration_files(calibration, num_calib)  # a bad folder is reported before the export
    with tempfile.TemporaryDirectory(prefix="segkit-int8-") as tmp:
        fp32 = Path(fp32_out) if fp32_out else Path(tmp) / "model.fp32.onnx"
        exported = export_onnx(model, fp32, shape=shape, dynamic=dynamic, opset=opset, verify=verify)
        report = quantize_onnx(fp32, out, files, num_calib=num_calib, method=method, ops=ops, per_channel=per_channel)
        report["export"] = exported
        report["agreement"] = label_agreement(fp32, out, files[:: max(1, len(files) // 4)][:4])
    return report


def label_agreement(reference: str | Path, other: str | Path, files: Sequence[Path]) -> float:
    """Share (0–1) of pixels of ``files`` on which two segkit ONNX models predict the same class."""
    from segkit.data.io import read_image
    from segkit.tools.onnx_predict import OnnxSegmenter

    a, b = OnnxSegmenter(reference), OnnxSegmenter(other)
    same = total = 0
    for f in files:
        image = read_image(f)
        la, lb = a.predict(image), b.predict(image)
        same, total = same + int((la == lb).sum()), total + la.size
    return same / max(total, 1)


__all__ = [
    "DEFAULT_METHOD",
    "DEFAULT_NUM_CALIB",
    "METHODS",
    "OPS",
    "ImageCalibrationReader",
    "calibration_files",
    "export_int8",
    "label_agreement",
    "op_census",
    "quantize_onnx",
]
