"""Binary and multi-band models through ONNX (issue 22 items 2, 3): ``segkit export`` writes the binary task's
threshold and mask values and the input's band count into the file; ``segkit predict --onnx`` thresholds the one
logit and writes masks as the training data stored them (``segkit eval --onnx`` scores them with the foreground
metrics), and reads a 4-band model's TIFFs with tifffile; both give the labels of the PyTorch model. What the ONNX
path does not do is refused by name."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import segkit
from segkit.cli import main as cli
from segkit.data.protocol import TestProtocol

pytest.importorskip("onnxruntime")
tifffile = pytest.importorskip("tifffile")

H, W = 48, 64
PROTOCOL = {"scale": [W, H], "keep_ratio": False, "size_divisor": None}


def _images(folder, n=3, seed=0):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = np.clip(rng.normal(120, 50, (H, W, 3)), 0, 255).astype(np.uint8)
        img[10:30, 20:50] = [200, 60, 40]
        Image.fromarray(img).save(folder / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    """A binary SegFormer-B0 (random weights; the threshold set to the median probability of one image, so that
    about half the pixels are foreground) saved with 0/255 mask values and exported."""
    tmp = tmp_path_factory.mktemp("onnx_binary")
    torch.manual_seed(0)
    model = segkit.build_model("segformer-b0", 1, task="binary", decoder_dim=16).eval()
    model.test_protocol = dict(PROTOCOL)
    model.mask_values = [0, 255]
    images = _images(tmp / "images")
    seg = segkit.Segmenter(model, device="cpu")
    p = seg(str(images / "0.png")).probs()[1]
    model.threshold = float(np.clip(np.median(p), 0.01, 0.99))
    model.save_pretrained(tmp / "model")
    assert cli(["export", str(tmp / "model"), "--out", str(tmp / "model.onnx"), "--shape", str(H), str(W)]) == 0
    return {"tmp": tmp, "images": images, "model": model}


def test_binary_export_carries_the_task_and_predict_onnx_writes_the_masks_as_stored(binary, tmp_path):
    from segkit.tools.onnx_predict import OnnxSegmenter, read_metadata

    tmp = binary["tmp"]
    meta = read_metadata(tmp / "model.onnx")
    assert meta["task"] == "binary" and json.loads(meta["mask_values"]) == [0, 255] and meta["num_classes"] == 1
    assert json.loads(meta["threshold"]) == pytest.approx(binary["model"].threshold)
    onnx = OnnxSegmenter(tmp / "model.onnx")
    assert onnx.is_binary and onnx.mask_values == [0, 255]
    assert cli(["predict", str(tmp / "model"), str(binary["images"]), "--out", str(tmp_path / "t")]) == 0
    assert cli(["predict", "--onnx", str(tmp / "model.onnx"), str(binary["images"]), "--out", str(tmp_path / "o")]) == 0
    for i in range(3):
        t = Image.open(tmp_path / "t" / f"{i}_label.png")
        o = Image.open(tmp_path / "o" / f"{i}_label.png")
        assert o.mode == "L" == t.mode  # masks, as the training data stored them
        a, b = np.array(t), np.array(o)
        assert set(np.unique(b)) == {0, 255}, np.unique(b)  # both values: the threshold is at work, not all background
        assert (a == b).mean() >= 0.995, (i, (a == b).mean())  # float32 near-threshold pixels may differ


def test_binary_onnx_eval_scores_the_thresholded_masks(binary, tmp_path, capsys):
    from segkit.tools.onnx_predict import OnnxSegmenter

    onnx = OnnxSegmenter(binary["tmp"] / "model.onnx")
    root = tmp_path / "split"  # a split-layout data set with 0/255 masks, as the model's training data
    for d in ("images/val", "labels/val", "splits"):
        (root / d).mkdir(parents=True)
    rng = np.random.default_rng(5)
    tp = fp = fn = 0
    for i in range(3):
        (root / "images" / "val" / f"{i}.png").write_bytes((binary["images"] / f"{i}.png").read_bytes())
        fg = rng.random((H, W)) < 0.5
        Image.fromarray((fg * 255).astype(np.uint8)).save(root / "labels" / "val" / f"{i}.png")
        p = onnx.predict(onnx.read(root / "images" / "val" / f"{i}.png")) == 1
        tp, fp, fn = tp + int((p & fg).sum()), fp + int((p & ~fg).sum()), fn + int((~p & fg).sum())
    (root / "splits" / "val.txt").write_text("0\n1\n2\n")
    layout = {"image": "images/{split}/{stem}.png"}
    (root / "meta.json").write_text(json.dumps({"classes": ["background", "foreground"], "layout": layout}))
    res = tmp_path / "res"
    rc = cli(["eval", "--onnx", str(binary["tmp"] / "model.onnx"), "--data", str(root), "--split", "val",
              "--out", str(res)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert "fgIoU" in capsys.readouterr().out
    got = json.loads((res / "metrics.json").read_text())
    assert tp and fp and fn  # a threshold at work on both classes
    assert got["fgIoU"] == pytest.approx(100 * tp / (tp + fp + fn), abs=1e-6)
    assert got["fgPrecision"] == pytest.approx(100 * tp / (tp + fp), abs=1e-6)
    assert got["fgRecall"] == pytest.approx(100 * tp / (tp + fn), abs=1e-6)
    assert got["threshold"] == pytest.approx(binary["model"].threshold)


def test_four_band_model_exports_and_predict_onnx_reads_its_tiffs(tmp_path):
    from segkit.data.io import read_bands
    from segkit.tools.onnx_predict import OnnxSegmenter

    torch.manual_seed(0)
    mean, std = [120.0, 110.0, 100.0, 90.0], [50.0, 50.0, 50.0, 40.0]
    model = segkit.build_model("segformer-b0", 3, decoder_dim=16, in_channels=4, mean=mean, std=std).eval()
    model.test_protocol = dict(PROTOCOL)
    model.save_pretrained(tmp_path / "model")
    (tmp_path / "tif").mkdir()
    rng = np.random.default_rng(3)
    for i in range(2):
        bands = rng.integers(0, 65536, (H, W, 4)).astype(np.uint16)  # 16-bit RGB + NIR
        tifffile.imwrite(tmp_path / "tif" / f"{i}.tif", bands, photometric="rgb", extrasamples=[0])
    assert cli(["export", str(tmp_path / "model"), "--out", str(tmp_path / "m.onnx"), "--shape", str(H), str(W)]) == 0
    onnx = OnnxSegmenter(tmp_path / "m.onnx")
    assert onnx.in_channels == 4 and not onnx.is_binary
    out = tmp_path / "o"
    assert cli(["predict", "--onnx", str(tmp_path / "m.onnx"), str(tmp_path / "tif"), "--out", str(out)]) == 0
    seg = segkit.Segmenter(
        model, device="cpu", protocol=TestProtocol(scale=(W, H), keep_ratio=False, size_divisor=None)
    )
    for i in range(2):
        path = tmp_path / "tif" / f"{i}.tif"
        stored = tifffile.imread(path)
        bands = read_bands(path, 4)
        assert np.array_equal(bands, np.round(stored / 257.0).astype(np.uint8))  # 16-bit scaled, not saturated
        x = seg.transform(bands)["image"][None].numpy()
        assert np.allclose(onnx.preprocess(onnx.read(path)), x, atol=1e-5)  # the same network input
        got = np.array(Image.open(out / f"{i}_label.png"))
        want = seg(str(path)).label
        assert got.shape == (H, W) and (got == want).mean() >= 0.995, (got == want).mean()
    # segkit eval --onnx reads the split's 4-band TIFFs: its pixel accuracy is the one computed here
    root = tmp_path / "split"
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    (root / "splits").mkdir()
    correct = total = 0
    for i in range(2):
        (root / "images" / "val" / f"{i}.tif").write_bytes((tmp_path / "tif" / f"{i}.tif").read_bytes())
        label = (rng.integers(0, 3, (H, W))).astype(np.uint8)
        Image.fromarray(label).save(root / "labels" / "val" / f"{i}.png")
        pred = onnx.predict(onnx.read(root / "images" / "val" / f"{i}.tif"))
        correct, total = correct + int((pred == label).sum()), total + label.size
    (root / "splits" / "val.txt").write_text("0\n1\n")
    meta = {"classes": ["a", "b", "c"], "layout": {"image": "images/{split}/{stem}.tif"}}
    (root / "meta.json").write_text(json.dumps(meta))
    res = tmp_path / "res"
    assert (
        cli(["eval", "--onnx", str(tmp_path / "m.onnx"), "--data", str(root), "--split", "val", "--out", str(res)]) == 0
    )
    assert json.loads((res / "metrics.json").read_text())["aAcc"] == pytest.approx(100.0 * correct / total, abs=1e-6)
    # what the ONNX path cannot do for it is refused by name
    with pytest.raises(Exception, match="4-band"):
        from segkit.serve.backends import OnnxBackend

        OnnxBackend(tmp_path / "m.onnx")
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(rgb)
    rc = cli(["export", str(tmp_path / "model"), "--out", str(tmp_path / "c.onnx"), "--check", str(rgb)])
    assert rc == 2 and not (tmp_path / "c.onnx").exists()
