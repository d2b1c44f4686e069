"""predict_paths on odd-sized images, and the visualisation helpers it uses."""

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import segkit
from segkit.data.protocol import TestProtocol
from segkit.engine import segmenter as segmenter_mod
from segkit.engine.predict import predict_paths
from segkit.engine.visualize import colorize, comparison_figure, legend, overlay, overlay_with_legend, present_classes
from segkit.models.contract import DecodeHead, Features
from segkit.models.segmentor import Segmentor

torch.set_num_threads(1)
PALETTE = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255]]
NAMES = ["red", "green", "blue", "yellow", "cyan"]


# ----------------------------------------------------------------------------- visualize
def test_colorize_maps_palette_and_ignore_to_black():
    label = np.array([[0, 1, 255], [4, 2, 3]], dtype=np.uint8)
    out = colorize(label, PALETTE)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [255, 0, 0] and out[1, 0].tolist() == [0, 255, 255]
    assert out[0, 2].tolist() == [0, 0, 0]
    assert colorize(torch.from_numpy(label.astype(np.int64)), PALETTE).tolist() == out.tolist()  # tensors too
    with pytest.raises(ValueError, match="no colour"):
        colorize(np.array([[5]]), PALETTE)
    with pytest.raises(ValueError):
        colorize(np.zeros((2, 2, 3), dtype=np.uint8), PALETTE)


def test_overlay_blends_and_keeps_ignored_pixels():
    image = np.full((4, 6, 3), 100, dtype=np.uint8)
    label = np.zeros((4, 6), dtype=np.uint8)
    label[:, 3:] = 255
    out = overlay(image, label, PALETTE, alpha=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert out[0, 0].tolist() == [178, 50, 50]  # 0.5 * 100 + 0.5 * (255, 0, 0), rounded
    assert (out[:, 3:] == 100).all()  # ignore: image unchanged
    assert np.array_equal(overlay(image, label, PALETTE, alpha=0.0), image)
    with pytest.raises(ValueError, match="size"):
        overlay(image, label[:3], PALETTE)


def test_legend_and_figures():
    leg = legend([1, 3], NAMES, PALETTE)
    assert leg.dtype == np.uint8 and leg.ndim == 3 and leg.shape[2] == 3
    colours = {tuple(c) for c in leg.reshape(-1, 3).tolist()}
    assert (0, 255, 0) in colours and (255, 255, 0) in colours  # swatches of the listed classes
    assert (255, 0, 0) not in colours  # class 0 not listed
    assert legend([0, 1, 2, 3], NAMES, PALETTE).shape[0] > leg.shape[0]
    assert legend([], NAMES, PALETTE, min_height=50).shape[0] == 50
    with pytest.raises(ValueError):
        legend([7], NAMES, PALETTE)

    image = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    label = np.zeros((30, 40), dtype=np.int64)
    label[10:, 20:] = 2
    assert present_classes(label) == [0, 2]
    fig = overlay_with_legend(image, label, PALETTE, NAMES)
    assert fig.shape[0] >= 30 and fig.shape[1] > 40
    assert np.array_equal(fig[:30, :40], overlay(image, label, PALETTE))
    comp = comparison_figure(image, label, PALETTE, NAMES, label=np.full((30, 40), 255, dtype=np.uint8))
    assert comp.shape[0] >= 30 and comp.shape[1] > 3 * 40
    assert np.array_equal(comp[:30, :40], image)


# ----------------------------------------------------------------------------- predict
class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 2, 1)

    def forward(self, x):
        return Features(stages=[self.conv(x)])


class Head(DecodeHead):
    def __init__(self, k):
        super().__init__()
        self.conv = nn.Conv2d(8, k, 1)

    def forward(self, feats):
        return self.conv(feats.stages[-1])


def tiny_model():
    torch.manual_seed(0)
    return Segmentor(Backbone(), Head(5), 5, class_names=NAMES, palette=PALETTE)


def write_image(path, h, w, seed=0):
    arr = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return arr


def test_predict_75x101_writes_label_and_overlay(tmp_path):
    image = write_image(tmp_path / "photo.png", 75, 101)
    model = tiny_model()
    model.train()
    no_resize = TestProtocol(scale=None, size_divisor=None)
    written = predict_paths(model, tmp_path / "photo.png", tmp_path / "out", protocol=no_resize, progress=False)
    assert [p.name for p in written] == ["photo_label.png", "photo_overlay.png"]
    assert model.training  # restored
    with Image.open(written[0]) as im:
        assert im.mode == "P" and im.size == (101, 75)
        assert im.getpalette()[:15] == [v for c in PALETTE for v in c]
        label = np.array(im)
    assert label.min() >= 0 and label.max() < 5
    x = model.normalize(torch.from_numpy(image).permute(2, 0, 1)[None])
    assert np.array_equal(label, model.eval().predict(x)[0].numpy())  # same as a direct prediction
    with Image.open(written[1]) as im:
        vis = np.array(im.convert("RGB"))
    assert vis.shape[0] >= 75 and vis.shape[1] > 101
    assert np.array_equal(vis[:75, :101], overlay(image, label, PALETTE))


def test_predict_uses_the_models_stored_protocol(tmp_path, monkeypatch):
    """Without a protocol argument predict applies the model's own (its training config's test resize)."""
    write_image(tmp_path / "photo.png", 150, 200)
    model = tiny_model()
    sizes = []
    orig = model.predict
    monkeypatch.setattr(model, "predict", lambda x, **kw: sizes.append(tuple(x.shape[-2:])) or orig(x, **kw))
    model.train_config = {"test_transform": {"scale": [80, 60], "keep_ratio": True, "size_divisor": 32}}
    written = predict_paths(model, tmp_path / "photo.png", tmp_path / "a", progress=False)
    assert sizes == [(64, 96)]  # keep-ratio 200x150 -> 80x60, then multiples of 32
    with Image.open(written[0]) as im:
        assert im.size == (200, 150)  # labels come back at the original size
    model.train_config = None  # no stored protocol: the reference default (keep-ratio into 2048x512)
    predict_paths(model, tmp_path / "photo.png", tmp_path / "b", progress=False)
    assert sizes[-1] == (512, 704)
    predict_paths(model, tmp_path / "photo.png", tmp_path / "c", scale=[0], progress=False)  # 0 = no resize
    assert sizes[-1] == (160, 224)  # only the multiples of 32


def test_predict_folder_auto_slide_and_duplicate_stems(tmp_path, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "a.png", 75, 101, 1)
    Image.fromarray(write_image(src / "b.png", 40, 50, 2)).save(src / "a.jpg")
    (src / "notes.txt").write_text("not an image")
    model = tiny_model()
    model.train_config = {
        "train_transform": {"crop_size": [64, 64]},
        "test_transform": {"scale": None, "size_divisor": None},
    }
    calls = []
    orig = model.predict

    def spy(x, **kw):
        calls.append((tuple(x.shape[-2:]), kw["mode"], kw.get("crop_size"), kw.get("stride")))
        return orig(x, **kw)

    monkeypatch.setattr(model, "predict", spy)
    monkeypatch.setattr(segmenter_mod, "AUTO_SLIDE_PIXELS", 75 * 101 - 1)  # a.* (75x101) slides, b (40x50) not
    written = predict_paths(model, src, tmp_path / "out", mode="auto", progress=False)
    names = sorted(p.name for p in written)
    assert names == sorted(
        ["a_jpg_label.png", "a_jpg_overlay.png", "a_png_label.png", "a_png_overlay.png", "b_label.png", "b_overlay.png"]
    )
    modes = {shape: (mode, crop, stride) for shape, mode, crop, stride in calls}
    assert modes[(75, 101)] == ("slide", (64, 64), (64, 64))  # the training crop, stride = crop
    assert modes[(40, 50)] == ("whole", None, None)
    model.train_config["train_transform"] = {}
    calls.clear()
    predict_paths(model, src / "a.png", tmp_path / "out2", mode="auto", stride=(48, 48), progress=False)
    assert calls[0][2:] == ((512, 512), (48, 48))  # default window without a recorded training crop


def test_predict_segformer_odd_and_tiny_sizes(tmp_path):
    model = segkit.build_model("segformer-b0", num_classes=11)
    write_image(tmp_path / "odd.png", 75, 101)
    write_image(tmp_path / "tiny.png", 20, 30)
    for mode, kw in (("auto", {}), ("slide", {"crop_size": (64, 64), "stride": (48, 48)})):
        out = tmp_path / mode
        written = predict_paths(model, tmp_path, out, mode=mode, scale=[0], progress=False, **kw)
        assert len(written) == 4
        for stem, size in (("odd", (101, 75)), ("tiny", (30, 20))):
            with Image.open(out / f"{stem}_label.png") as im:
                lab = np.array(im)
                assert im.size == size and lab.max() < 11


def test_predict_with_test_resize(tmp_path):
    pytest.importorskip("segkit.data.transforms")
    model = segkit.build_model("segformer-b0", num_classes=11)
    write_image(tmp_path / "odd.png", 75, 101)
    calls = []
    orig = model.predict
    model.predict = lambda x, **kw: calls.append(tuple(x.shape[-2:])) or orig(x, **kw)
    written = predict_paths(model, tmp_path / "odd.png", tmp_path / "out", scale=(256, 128), progress=False)
    h, w = calls[0]
    assert h % 32 == 0 and w % 32 == 0 and h > 75  # resized up, multiple of 32
    with Image.open(written[0]) as im:
        assert im.size == (101, 75)  # back at the original size


def test_predict_errors(tmp_path):
    model = tiny_model()
    with pytest.raises(FileNotFoundError):
        predict_paths(model, tmp_path / "missing.png", tmp_path / "out", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image or video files .* in folder .*empty"):
        predict_paths(model, tmp_path / "empty", tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="mode"):
        predict_paths(model, tmp_path, tmp_path / "out", mode="tiles", progress=False)
