"""ONNX export: onnxruntime reproduces PyTorch (SegFormer, SegNeXt, RSSeg), metadata, torch-free prediction."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import segkit
from segkit.data.interp import resize_argmax
from segkit.tools.export import ExportError, export_onnx, second_size
from segkit.tools.onnx_predict import OnnxSegmenter, read_metadata

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TOL = 1e-4  # float32 logits of randomly initialised models are O(1); the exporter's own bound is 1e-3


def _run(path, *xs: torch.Tensor) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [sess.run(None, {"image": x.numpy()})[0] for x in xs]


def _torch_logits(model, x):
    """What the default export computes: logits at the decoder's output stride."""
    with torch.no_grad():
        return model.encode_decode(x).numpy()


@pytest.fixture(scope="module")
def camvid_meta(camvid):
    return json.loads((camvid / "meta.json").read_text())


@pytest.fixture(scope="module")
def camvid_image(camvid):
    return camvid / "images" / "test" / "0001TP_008550.webp"


@pytest.fixture(scope="module")
def segformer_export(tmp_path_factory, camvid_meta):
    """SegFormer-B0 (CamVid classes) saved, then exported with dynamic H/W through the CLI."""
    from segkit.cli import main

    d = tmp_path_factory.mktemp("onnx")
    model = segkit.build_model(
        "segformer-b0", num_classes=11, class_names=camvid_meta["classes"], palette=camvid_meta["palette"]
    )
    ckpt = model.save_pretrained(d / "ckpt")
    path = d / "segformer.onnx"
    assert main(["export", str(ckpt), "--format", "onnx", "--shape", "64", "64", "--dynamic", "--out", str(path)]) == 0
    return segkit.load_model(ckpt), path


def test_segformer_dynamic_parity_and_metadata(segformer_export, camvid_meta):
    model, path = segformer_export
    xs = [
        torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
        for shape in [(2, 3, 64, 64), (1, 3, 96, 64), (1, 3, 40, 75)]
    ]  # batch 2, two other sizes
    for x, got in zip(xs, _run(path, *xs)):
        ref = _torch_logits(model, x)
        assert got.shape == ref.shape == (x.shape[0], 11, -(-x.shape[2] // 4), -(-x.shape[3] // 4))
        assert np.abs(got - ref).max() < TOL
    meta = read_metadata(path)
    assert meta["class_names"] == camvid_meta["classes"] and meta["palette"] == camvid_meta["palette"]
    assert meta["mean"] == list(model.mean) and meta["std"] == list(model.std)
    assert meta["dynamic_hw"] is True and meta["export_shape"] == [64, 64] and meta["model"] == "segformer-b0"
    assert meta["logits_at"] == "decoder"
    proto = onnx.load(str(path))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 17
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]


def test_segnext_dynamic_parity(tmp_path):
    """NMF: eval bases become a constant, repeated over the dynamic batch; fixed 7 steps unrolled."""
    model = segkit.build_model("segnext-t", num_classes=5)  # training mode: the export must use eval mode
    rep = export_onnx(model, tmp_path / "segnext.onnx", shape=(64, 64), dynamic=True)
    assert model.training  # flag restored
    model.eval()
    assert [c["input"] for c in rep["checks"]] == [[2, 3, 64, 64], [1, 3, *second_size(64, 64)]]
    assert all(c["max_abs_diff"] < TOL for c in rep["checks"])
    x = torch.randn(3, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    assert np.abs(_run(tmp_path / "segnext.onnx", x)[0] - _torch_logits(model, x)).max() < TOL


def _smallest_rsseg():
    # ViT-Ti at tiny width/depth: the architecture (two-pathway decoder, SASM, DCA) at small cost
    return segkit.build_model("rsseg-vit-ti", num_classes=5, img_size=64, depth=4).eval()


def test_rsseg_fixed_size_parity_and_dynamic_refused(tmp_path, camvid_image):
    model = _smallest_rsseg()
    rep = export_onnx(model, tmp_path / "rsseg.onnx", shape=(64, 64), check_image=camvid_image)
    assert rep["checks"][0]["input"] == [2, 3, 64, 64] and rep["checks"][-1]["input"] == [1, 3, 64, 64]
    assert all(c["max_abs_diff"] < TOL for c in rep["checks"])
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))  # batch is dynamic
    assert np.abs(_run(tmp_path / "rsseg.onnx", x)[0] - _torch_logits(model, x)).max() < TOL
    # Plain-ViT RSSeg decides position-embedding resizing in Python: a traced graph is size-specific,
    # and the exporter's verification must refuse a dynamic-size export instead of writing a wrong file.
    with pytest.raises(ExportError, match="does not generalise|differ"):
        export_onnx(model, tmp_path / "rsseg_dyn.onnx", shape=(64, 64), dynamic=True)
    assert not (tmp_path / "rsseg_dyn.onnx").exists()


def test_bad_export_requests(tmp_path):
    model = segkit.build_model("segformer-b0", num_classes=2)
    with pytest.raises(ValueError, match="opset 16"):
        export_onnx(model, tmp_path / "a.onnx", shape=(64, 64), opset=16)
    with pytest.raises(ValueError, match=">= 32"):
        export_onnx(model, tmp_path / "a.onnx", shape=(16, 64))
    with pytest.raises(FileNotFoundError, match="nope.png"):
        export_onnx(model, tmp_path / "a.onnx", shape=(64, 64), check_image=tmp_path / "nope.png")


def test_read_metadata_rejects_foreign_onnx(tmp_path):
    path = tmp_path / "plain.onnx"
    torch.onnx.export(
        torch.nn.Conv2d(3, 2, 1), (torch.randn(1, 3, 8, 8),), str(path), dynamo=False, input_names=["image"]
    )
    with pytest.raises(ValueError, match="not a segkit ONNX export"):
        read_metadata(path)


def test_numpy_label_path_matches_torch_interpolate():
    """The ONNX predictor's NumPy resize + arg-max equals resizing step by step with torch (two resizes)."""
    x = torch.randn(6, 17, 23, generator=torch.Generator().manual_seed(0))
    for sizes in [[(40, 31)], [(9, 11)], [(68, 92), (51, 70)], [(68, 92), (90, 130)]]:
        ref = x[None]
        for size in sizes:
            ref = F.interpolate(ref, size=size, mode="bilinear", align_corners=False)
        got = resize_argmax(x.numpy(), sizes, band_rows=7)
        assert got.shape == sizes[-1]
        assert (got == ref[0].argmax(0).numpy()).mean() > 0.9995


def test_predict_onnx_runs_without_torch(segformer_export, tmp_path, camvid_image):
    """`segkit predict --onnx` with torch made unimportable; labels equal the PyTorch predictor's."""
    from PIL import Image

    from segkit.engine.predict import predict_paths

    model, path = segformer_export
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from segkit.cli import main\n"
        f"rc = main(['predict', '--onnx', {str(path)!r}, {str(camvid_image)!r}, '--out', {str(tmp_path / 'o')!r}])\n"
        "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n"
        "raise SystemExit(rc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    onnx_label = np.array(Image.open(tmp_path / "o" / f"{camvid_image.stem}_label.png"))
    assert (tmp_path / "o" / f"{camvid_image.stem}_overlay.png").is_file()
    predict_paths(model, camvid_image, tmp_path / "t", progress=False)
    torch_label = np.array(Image.open(tmp_path / "t" / f"{camvid_image.stem}_label.png"))
    assert onnx_label.shape == torch_label.shape == (360, 480)
    assert (onnx_label == torch_label).mean() > 0.999


def test_input_size_logits_export_and_predictor(tmp_path, camvid_image):
    """``logits_at="input"`` (the layout of files from before 0.2) exports upsampled logits, and the
    predictor labels them like the default decoder-stride export."""
    model = segkit.build_model("segnext-t", num_classes=11)
    export_onnx(model, tmp_path / "full.onnx", shape=(64, 64), dynamic=True, logits_at="input")
    export_onnx(model, tmp_path / "dec.onnx", shape=(64, 64), dynamic=True)
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model.eval()(x).numpy()
    assert np.abs(_run(tmp_path / "full.onnx", x)[0] - ref).max() < TOL
    assert _run(tmp_path / "dec.onnx", x)[0].shape == (1, 11, 12, 16)
    from segkit.data.io import read_image

    image = read_image(camvid_image)
    full, dec = OnnxSegmenter(tmp_path / "full.onnx"), OnnxSegmenter(tmp_path / "dec.onnx")
    assert full.logits_at == "input" and dec.logits_at == "decoder"
    a, b = full.predict(image), dec.predict(image)
    assert a.shape == b.shape == image.shape[:2]
    assert (a == b).mean() > 0.999


def test_fixed_size_model_in_onnx_predictor(tmp_path, camvid_meta):
    """A fixed-size export: the predictor stretches the image to the export size and maps labels back."""
    model = segkit.build_model("segformer-b0", num_classes=11, class_names=camvid_meta["classes"])
    export_onnx(model, tmp_path / "fixed.onnx", shape=(64, 96), verify=False)
    seg = OnnxSegmenter(tmp_path / "fixed.onnx")
    assert not seg.dynamic and seg.export_shape == (64, 96)
    image = np.asarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3)), dtype=np.uint8)
    x = seg.preprocess(image)
    assert x.shape == (1, 3, 64, 96) and x.dtype == np.float32
    # stretched like segkit predict's test transform: OpenCV bilinear on the uint8 image, then normalised
    stretched = cv2.resize(image, (96, 64), interpolation=cv2.INTER_LINEAR)
    ref = model.normalize(torch.from_numpy(stretched).permute(2, 0, 1)[None])
    assert np.abs(x - ref.numpy()).max() < 1e-5
    label = seg.predict(image)
    assert label.shape == (50, 70) and label.max() < 11
