"""INT8 export (onnxruntime static quantization, QDQ) and segkit eval / predict --onnx on it: tiny models, 64 px."""

import json

import numpy as np
import pytest

import segkit
from segkit.cli import main
from segkit.data.io import read_image
from segkit.data.protocol import TestProtocol

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from segkit.tools.onnx_predict import OnnxSegmenter, read_metadata  # noqa: E402
from segkit.tools.quantize import NMF_SCOPE, calibration_files  # noqa: E402

PROTOCOL = TestProtocol(scale=(96, 72), keep_ratio=True, size_divisor=32, mode="whole")


def _checkpoint(d, name, data_root):
    meta = json.loads((data_root / "meta.json").read_text())
    model = segkit.build_model(name, num_classes=len(meta["classes"]), class_names=meta["classes"])
    model.test_protocol = PROTOCOL.to_dict()
    return model.save_pretrained(d / name)


@pytest.fixture(scope="module")
def int8_models(tmp_path_factory, synthetic_split_module):
    """SegFormer-B0 (dynamic H/W, through the CLI) and SegNeXt-T (fixed 64x96, through the API), random weights,
    5 classes, exported to float32 and INT8, calibrated on 4 of the 6 synthetic train images."""
    from segkit.tools.export import export_onnx
    from segkit.tools.quantize import export_int8

    d = tmp_path_factory.mktemp("int8")
    cal = synthetic_split_module / "images" / "train"
    ckpt = _checkpoint(d, "segformer-b0", synthetic_split_module)
    fp32, int8 = d / "segformer-b0.onnx", d / "segformer-b0.int8.onnx"
    export_onnx(segkit.load_model(ckpt), fp32, shape=(64, 96), dynamic=True, verify=False)
    args = ["export", str(ckpt), "--shape", "64", "96", "--dynamic", "--no-verify", "--quantize", "int8"]
    assert main(args + ["--calibration", str(cal), "--num-calib", "4", "--out", str(int8)]) == 0
    out = {"segformer-b0": (ckpt, fp32, int8)}
    ckpt = _checkpoint(d, "segnext-t", synthetic_split_module)
    fp32, int8 = d / "segnext-t.onnx", d / "segnext-t.int8.onnx"
    rep = export_int8(segkit.load_model(ckpt), int8, cal, num_calib=4, shape=(64, 96), verify=False, fp32_out=fp32)
    assert rep["path"] == str(int8) and 0 <= rep["agreement"] <= 1 and rep["export"]["path"] == str(fp32)
    out["segnext-t"] = (ckpt, fp32, int8)
    return out


def test_int8_graph_is_qdq_with_per_channel_weights_and_keeps_the_metadata(int8_models, synthetic_split_module):
    for name, (_, fp32, int8) in int8_models.items():
        proto = onnx.load(str(int8))
        ops = [n.op_type for n in proto.graph.node]
        assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
        inits = {t.name: t for t in proto.graph.initializer}
        int8_weights = [t for t in inits.values() if t.data_type == onnx.TensorProto.INT8]
        assert len(int8_weights) >= 10
        per_channel = 0  # DequantizeLinear of an int8 weight with one scale per output channel
        for n in proto.graph.node:
            if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].data_type == 3:
                per_channel += int(np.prod(inits[n.input[1]].dims)) > 1
        assert per_channel >= 10
        meta, ref = read_metadata(int8), read_metadata(fp32)
        for key in ("class_names", "palette", "mean", "std", "test_protocol", "logits_at", "dynamic_hw", "model"):
            assert meta[key] == ref[key]
        q = json.loads(meta["quantization"])
        assert q["method"] == "minmax" and q["num_calib"] == 4 and q["format"] == "QDQ" and q["ops"] == "matmul"
        train = sorted(p.name for p in (synthetic_split_module / "images" / "train").iterdir())
        assert q["calibration_files"] == [train[i] for i in (0, 2, 3, 5)]  # evenly spaced over the sorted list
        assert q["quantized"].get("Conv", 0) > 0 and "LayerNormalization" in q["float"]
        assert fp32.stat().st_size > 2.5 * int8.stat().st_size  # int8 weights: about 4x smaller


def test_int8_logits_follow_the_float_model_on_calibration_images(int8_models, synthetic_split_module):
    image = read_image(synthetic_split_module / "images" / "val" / "val_000.png")
    for name, (_, fp32, int8) in int8_models.items():
        a, b = OnnxSegmenter(fp32), OnnxSegmenter(int8)
        x = a.preprocess(image)
        assert np.array_equal(x, b.preprocess(image))  # the same protocol (stored, not re-derived)
        la, lb = a.logits(x), b.logits(x)
        cos = float((la * lb).sum() / np.linalg.norm(la) / np.linalg.norm(lb))
        assert cos > 0.95, (name, cos)  # random weights: the classes are near ties, so compare the logits
        assert not np.array_equal(la, lb)  # it is really quantized


def test_segnext_ham_nmf_stays_float(int8_models):
    _, _, int8 = int8_models["segnext-t"]
    proto = onnx.load(str(int8))
    made_by = {o: n for n in proto.graph.node for o in n.output}
    nmf = [n for n in proto.graph.node if NMF_SCOPE in n.name]
    compute = [n for n in nmf if n.op_type not in ("QuantizeLinear", "DequantizeLinear")]
    assert len(compute) > 20 and sum(n.op_type == "MatMul" for n in compute) >= 14
    for n in compute:  # nothing in the NMF reads a dequantized tensor (only its result is quantized, for ham_out)
        for i in n.input:
            assert i not in made_by or made_by[i].op_type != "DequantizeLinear", n.name
    q = json.loads(read_metadata(int8)["quantization"])
    assert any(NMF_SCOPE in e for e in q["excluded"])


def test_eval_and_predict_onnx_run_the_int8_model(int8_models, synthetic_split_module, tmp_path, capsys):
    ckpt, fp32, int8 = int8_models["segformer-b0"]
    data = ["--data", str(synthetic_split_module), "--split", "val"]
    assert main(["eval", str(ckpt), *data, "--device", "cpu", "--out", str(tmp_path / "torch")]) == 0
    assert main(["eval", "--onnx", str(fp32), *data, "--out", str(tmp_path / "fp32")]) == 0
    assert main(["eval", str(int8), *data, "--out", str(tmp_path / "int8")]) == 0  # a CKPT ending in .onnx
    res = {k: json.loads((tmp_path / k / "metrics.json").read_text()) for k in ("torch", "fp32", "int8")}
    for k in res:
        assert res[k]["num_images"] == 2
        assert np.asarray(res[k]["confusion_matrix"]).sum() == res["torch"]["num_pixels"]
    cm_t, cm_f = np.asarray(res["torch"]["confusion_matrix"]), np.asarray(res["fp32"]["confusion_matrix"])
    assert np.abs(cm_t - cm_f).sum() <= 2e-3 * cm_t.sum()  # float32 ONNX = PyTorch (up to arg-max ties)
    assert res["int8"]["settings"]["quantization"] and res["fp32"]["settings"]["quantization"] is None
    capsys.readouterr()
    out = tmp_path / "pred"
    image = synthetic_split_module / "images" / "test" / "test_000.png"
    assert main(["predict", "--onnx", str(int8), str(image), "--format", "png", "json", "--out", str(out)]) == 0
    assert (out / "test_000_label.png").is_file() and json.loads((out / "test_000.json").read_text())["classes"]


def test_int8_usage_and_data_errors(int8_models, tmp_path, capsys):
    ckpt = int8_models["segformer-b0"][0]
    out = ["--out", str(tmp_path / "m.onnx")]
    assert main(["export", str(ckpt), "--quantize", "int8", *out]) == 2
    assert "--calibration" in capsys.readouterr().err
    assert main(["export", str(ckpt), "--calibration", str(tmp_path), *out]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["export", str(ckpt), "--quantize", "int8", "--calibration", str(tmp_path / "empty"), *out]) == 1
    assert "empty" in capsys.readouterr().err and not (tmp_path / "m.onnx").exists()
    assert main(["eval", "--onnx", str(int8_models["segformer-b0"][2]), "--flip", "--data", str(tmp_path)]) == 2
    with pytest.raises(ValueError, match=">= 1"):
        calibration_files(tmp_path, 0)
