"""Image modes on every path (issue 22 item 3): grayscale (L, I;16), palette, RGBA, CMYK and 16-bit RGB files give
the same network input on the data sets (train / eval), ``Segmenter`` (path and ``PIL.Image``), ``segkit predict``
and the ONNX predictor, 16-bit values scaled by 255/65535 rather than saturated; and each inference path says what
it converted in one summary line per folder / list / data set instead of a warning per file."""

import warnings

import cv2
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import segkit
from segkit.cli import main as cli
from segkit.data import FolderDataset
from segkit.data.io import read_image
from segkit.data.protocol import TestProtocol

pytest.importorskip("onnxruntime")

H, W = 48, 64


def _gray(seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (H, W)).astype(np.uint8)


def _write_modes(folder):
    """One file per mode, and the 8-bit RGB each must read as (computed here, not by segkit)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    expect = {}
    g = _gray(0)
    Image.fromarray(g, "L").save(folder / "gray.png")
    expect["gray"] = np.dstack([g] * 3)
    g16 = rng.integers(0, 65536, (H, W)).astype(np.uint16)
    g16[0, :3] = [65535, 32768, 257]  # full scale, half, one 8-bit step: 255, 128, 1 (not 255, 255, 255)
    Image.fromarray(g16).save(folder / "gray16.png")
    expect["gray16"] = np.dstack([np.round(g16 / 257.0).astype(np.uint8)] * 3)
    assert list(expect["gray16"][0, :3, 0]) == [255, 128, 1]
    pal = rng.integers(0, 256, (256, 3)).astype(np.uint8)
    idx = _gray(2)
    p = Image.fromarray(idx, "L").convert("P")
    p.putpalette(pal.ravel().tolist())
    p.save(folder / "palette.png")
    expect["palette"] = pal[idx]
    rgba = rng.integers(0, 256, (H, W, 4)).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    expect["rgba"] = rgba[..., :3]
    cmyk = rng.integers(0, 256, (H, W, 4)).astype(np.uint8)
    Image.frombytes("CMYK", (W, H), cmyk.tobytes()).save(folder / "cmyk.tif")
    c, m, y, k = (cmyk[..., i].astype(np.int32) for i in range(4))
    # Pillow's CMYK -> RGB (libImaging/Convert.c cmyk2rgb): (255 - ink) * (255 - k) / 255, rounded
    expect["cmyk"] = np.rint(np.dstack([(255 - v) * (255 - k) / 255.0 for v in (c, m, y)])).astype(np.uint8)
    rgb16 = rng.integers(0, 65536, (H, W, 3)).astype(np.uint16)
    assert cv2.imwrite(str(folder / "rgb16.png"), rgb16[..., ::-1])  # OpenCV writes BGR
    expect["rgb16"] = np.round(rgb16 / 257.0).astype(np.uint8)
    return expect


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("modes")
    expect = _write_modes(tmp / "images")
    (tmp / "labels").mkdir()
    for stem in expect:
        Image.fromarray((_gray(9) > 128).astype(np.uint8)).save(tmp / "labels" / f"{stem}.png")
    torch.manual_seed(0)
    model = segkit.build_model("segformer-b0", 2, decoder_dim=16)
    model.test_protocol = {"scale": [W, H], "keep_ratio": False, "size_divisor": None}
    model.save_pretrained(tmp / "model")
    from segkit.tools.export import export_onnx

    export_onnx(model, tmp / "model.onnx", shape=(H, W))
    return {"tmp": tmp, "expect": expect, "model": model, "files": sorted(expect)}


def _path(env, stem):
    return next((env["tmp"] / "images").glob(f"{stem}.*"))


def test_every_mode_reads_as_computed_here(env):
    for stem, want in env["expect"].items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = read_image(_path(env, stem))
        assert got.dtype == np.uint8 and got.shape == (H, W, 3), stem
        assert np.abs(got.astype(int) - want).max() <= (0 if stem not in ("rgb16", "cmyk") else 1), stem  # rounding


def test_the_same_file_gives_the_same_network_input_on_every_path(env, tmp_path):
    from segkit.tools.onnx_predict import OnnxSegmenter

    tmp, model = env["tmp"], env["model"]
    protocol = TestProtocol(scale=(W, H), keep_ratio=False, size_divisor=None)
    tf = protocol.transform(model.mean, model.std)
    raw = FolderDataset(tmp / "images", tmp / "labels", classes=["a", "b"])  # what train's transform is given
    evalset = FolderDataset(tmp / "images", tmp / "labels", classes=["a", "b"], transform=tf)  # segkit eval's items
    seg = segkit.Segmenter(model, device="cpu", protocol=protocol)
    onnx = OnnxSegmenter(tmp / "model.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stream = {r.name: r.image for r in seg.stream(tmp / "images")}
        for i, (image_path, _) in enumerate(raw.samples):
            stem = image_path.stem if hasattr(image_path, "stem") else str(image_path).rsplit("/", 1)[1].split(".")[0]
            want = env["expect"][stem]
            tol = 0 if stem not in ("rgb16", "cmyk") else 1
            data = raw[i]["image"]
            assert np.abs(data.astype(int) - want).max() <= tol, stem
            from_path, _ = seg._decode(str(image_path), 0)
            from_pil, _ = seg._decode(Image.open(image_path), 0)
            for other in (from_path, from_pil, stream[stem]):
                assert np.array_equal(other, data), stem
            x = tf(data)["image"]
            assert torch.equal(evalset[i]["image"], x), stem  # segkit eval's network input
            assert np.allclose(onnx.preprocess(read_image(image_path)), x[None].numpy(), atol=1e-6), stem
    # the written labels: segkit predict and the ONNX predictor give each file the labels of the decoded image
    assert cli(["predict", str(tmp / "model"), str(tmp / "images"), "--out", str(tmp_path / "p"), "--scale",
                f"{W}", f"{H}", "--device", "cpu"]) == 0  # fmt: skip
    from segkit.tools.onnx_predict import predict_paths_onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predict_paths_onnx(tmp / "model.onnx", tmp / "images", tmp_path / "o")
        for stem, want in env["expect"].items():
            data = read_image(_path(env, stem))
            torch_label = np.array(Image.open(tmp_path / "p" / f"{stem}_label.png"))
            assert np.array_equal(torch_label, seg(data).label), stem
            onnx_label = np.array(Image.open(tmp_path / "o" / f"{stem}_label.png"))
            assert np.array_equal(onnx_label, onnx.predict(data)), stem


def _summaries(record, text="not 8-bit RGB"):
    return [str(w.message) for w in record if text in str(w.message)]


def test_a_list_and_a_stream_summarise_their_conversions_once(env):
    model = env["model"]
    seg = segkit.Segmenter(
        model, device="cpu", protocol=TestProtocol(scale=(W, H), keep_ratio=False, size_divisor=None)
    )
    paths = [str(_path(env, s)) for s in env["files"]]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        seg(paths)
    lines = [str(w.message) for w in record]
    assert len(lines) == 1, lines  # one line for the list, not one per file
    assert f"{len(paths)} image(s) are not 8-bit RGB" in lines[0]
    for kind in ("grayscale -> RGB (1)", "16-bit grayscale -> 8-bit RGB (1)", "palette -> RGB (1)",
                 "RGBA -> RGB (alpha dropped) (1)", "CMYK -> RGB (1)", "16-bit RGB -> 8-bit RGB (1)"):  # fmt: skip
        assert kind in lines[0], (kind, lines[0])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        results = list(seg.stream(env["tmp"] / "images"))
    assert len(results) == len(paths)
    lines = [str(w.message) for w in record]
    assert len(lines) == 1 and lines[0].startswith("stream over ") and "6 image(s)" in lines[0], lines
    with warnings.catch_warnings(record=True) as record:  # one input keeps its own warning, naming the file
        warnings.simplefilter("always")
        seg(paths[0])
    assert len(record) == 1 and paths[0] in str(record[0].message)


def test_predict_and_eval_print_one_line_per_folder_or_data_set(env, tmp_path, capsys):
    tmp = env["tmp"]
    assert cli(["predict", str(tmp / "model"), str(tmp / "images"), "--out", str(tmp_path / "p")]) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if "warning" in line]
    assert len(warned) == 1 and "6 image(s) are not 8-bit RGB and were converted" in warned[0], err
    assert cli(["predict", str(tmp / "model.onnx"), str(tmp / "images"), "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if "warning" in line]
    assert len(warned) == 1 and "6 image(s) are not 8-bit RGB and were converted" in warned[0], err
    spec = {"type": "folder", "images_dir": str(tmp / "images"), "labels_dir": str(tmp / "labels"),
            "classes": ["a", "b"]}  # fmt: skip
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(yaml.safe_dump({"model": "segformer-b0", "data": {"train": spec, "val": spec},
                                   "test_transform": {"scale": [W, H]}}))  # fmt: skip
    assert cli(["eval", str(tmp / "model"), "--config", str(cfg), "--split", "val", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "not 8-bit RGB" in line]
    assert len(notes) == 1 and notes[0].startswith("segkit eval: note: ") and "(6)" not in notes[0], err
    assert "6 image(s) are not 8-bit RGB and will be converted when read" in notes[0]
    assert not [line for line in err.splitlines() if "warning" in line and "converted" in line], err


def test_the_header_only_conversion_agrees_with_the_probe_and_the_reader(env):
    from segkit.data.io import count_conversions, image_conversion, probe_image

    want = {
        "gray": "grayscale -> RGB",
        "gray16": "16-bit grayscale -> 8-bit RGB",
        "palette": "palette -> RGB",
        "rgba": "RGBA -> RGB (alpha dropped)",
        "cmyk": "CMYK -> RGB",
        "rgb16": "16-bit RGB -> 8-bit RGB",
    }
    for stem, label in want.items():
        path = _path(env, stem)
        with count_conversions() as counts:
            read_image(path)
        assert image_conversion(path) == probe_image(path).conversion == label, stem
        assert dict(counts) == {label: 1}, (stem, counts)  # what the reader did, counted under the same name
