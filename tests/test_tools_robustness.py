"""Corruption robustness: the 16 corruptions run here, repeat with a seed, and the table is right."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from segkit.data import SplitDataset, TestTransform
from segkit.models.contract import DecodeHead, Features
from segkit.models.segmentor import Segmentor
from segkit.tools import robustness as R


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    # smooth gradients + texture, 48x64: small enough for every corruption to be quick
    yy, xx = np.mgrid[0:48, 0:64]
    base = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=-1) % 256
    return np.clip(base + rng.integers(0, 40, base.shape), 0, 255).astype(np.uint8)


def test_sixteen_corruptions_in_four_groups():
    assert len(R.CORRUPTIONS) == 16 and len(set(R.CORRUPTIONS)) == 16
    assert [len(v) for v in R.CORRUPTION_GROUPS.values()] == [4, 4, 4, 4]
    assert set(R.corruption_functions()) == set(R.CORRUPTIONS)


@pytest.mark.parametrize("name", R.CORRUPTIONS)
def test_every_corruption_runs_and_repeats(image, name):
    state = np.random.get_state()
    a = R.corrupt(image, name, 3, seed=0, image_index=0)
    b = R.corrupt(image, name, 3, seed=0, image_index=0)
    assert a.dtype == np.uint8 and a.shape == image.shape
    assert np.array_equal(a, b), "same seed must give the same corrupted image"
    assert not np.array_equal(a, image), "corrupted image equals the clean one"
    # the global NumPy state is restored
    after = np.random.get_state()
    assert state[0] == after[0] and np.array_equal(state[1], after[1]) and state[2] == after[2]


@pytest.mark.parametrize("name", ["gaussian_noise", "impulse_noise", "motion_blur", "fog", "frost", "glass_blur"])
def test_random_corruptions_depend_on_seed_and_image_index(image, name):
    a = R.corrupt(image, name, 3, seed=0, image_index=0)
    assert not np.array_equal(a, R.corrupt(image, name, 3, seed=1, image_index=0))
    assert not np.array_equal(a, R.corrupt(image, name, 3, seed=0, image_index=1))


def test_severity_increases_noise(image):
    d = [np.abs(R.corrupt(image, "gaussian_noise", s).astype(int) - image).mean() for s in (1, 3, 5)]
    assert d[0] < d[1] < d[2]


def test_fast_glass_blur_is_bit_identical_to_the_package(image):
    from PIL import Image

    R.corruption_functions()
    original = R.ORIGINALS["glass_blur"]  # the package's loop (uses the module's patched gaussian)
    for severity in (1, 2, 3, 4, 5):
        np.random.seed(7)
        ref = original(Image.fromarray(image), severity)
        ref_next = np.random.rand()
        np.random.seed(7)
        got = R._glass_blur(Image.fromarray(image), severity)
        assert np.array_equal(ref, got), severity
        assert np.random.rand() == ref_next  # same number of draws


def test_plasma_fractal_matches_the_package(monkeypatch):
    R.corruption_functions()
    monkeypatch.setattr(np, "float_", np.float64, raising=False)  # what the package needs (numpy < 2)
    np.random.seed(3)
    ref = R.ORIGINALS["plasma_fractal"](mapsize=64, wibbledecay=2)
    np.random.seed(3)
    assert np.array_equal(ref, R._plasma_fractal(mapsize=64, wibbledecay=2))


def test_bad_requests(image):
    with pytest.raises(ValueError, match="unknown corruption"):
        R.corrupt(image, "zoom_blur", 1)
    with pytest.raises(ValueError, match="severity"):
        R.corrupt(image, "fog", 6)
    with pytest.raises(ValueError, match=">= 32"):
        R.corrupt(image[:20], "fog", 1)


def test_summarize_means_and_retention():
    miou = {
        "motion_blur": {"1": 40.0, "3": 20.0},
        "gaussian_noise": {"1": 10.0, "3": 30.0},
        "fog": {"1": 50.0, "3": 50.0},
    }
    res = R.summarize(60.0, miou)
    assert res["corruption_mean"] == {"motion_blur": 30.0, "gaussian_noise": 20.0, "fog": 50.0}
    assert res["group_mean"] == {"Blur": 30.0, "Noise": 20.0, "Weather": 50.0}
    assert res["corr"] == pytest.approx(100.0 / 3)
    assert res["retention"] == pytest.approx(100.0 * (100.0 / 3) / 60.0)
    header, _, row = res["table"].splitlines()
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols == [
        "Clean",
        "motion_blur",
        "gaussian_noise",
        "fog",
        "Blur mean",
        "Noise mean",
        "Weather mean",
        "Corr.",
        "Rete. (%)",
    ]
    assert [c.strip() for c in row.strip("|").split("|")][0] == "60.0"


class _Pixels(nn.Module):
    """Encoder stand-in: the image itself as the only stage."""

    def forward(self, x):
        return Features(stages=[x])


class _ColourHead(DecodeHead):
    """Stand-in segmentor: per-pixel linear map of the colour to class scores (output stride 1)."""

    def __init__(self, k):
        super().__init__()
        self.conv = nn.Conv2d(3, k, 1)
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            self.conv.weight.copy_(torch.randn(k, 3, 1, 1, generator=g))
            self.conv.bias.copy_(torch.randn(k, generator=g))

    def forward(self, features):
        return self.conv(features.stages[0])


def test_evaluate_robustness_two_images(synthetic_split, tmp_path):
    ds = SplitDataset(synthetic_split, "test")
    assert len(ds) == 2
    model = Segmentor(_Pixels(), _ColourHead(ds.num_classes), ds.num_classes, class_names=ds.classes)
    tf = TestTransform(scale=(96, 72), size_divisor=None, mean=model.mean, std=model.std)
    kw = dict(corruptions=["fog", "gaussian_noise"], severities=[3], seed=0, progress=False)
    res = R.evaluate_robustness(model, ds, tf, out_dir=tmp_path, **kw)
    assert list(res["miou"]) == ["gaussian_noise", "fog"]  # table order = the papers' order
    assert set(res["miou"]["fog"]) == {"3"} and res["num_images"] == 2
    assert res["settings"]["absent"] == "union"  # mmseg's rule, as segkit.engine.evaluator.evaluate
    assert res["corr"] == pytest.approx((res["miou"]["fog"]["3"] + res["miou"]["gaussian_noise"]["3"]) / 2)
    assert res["retention"] == pytest.approx(100 * res["corr"] / res["clean"])
    assert any(v["3"] != res["clean"] for v in res["miou"].values()), "corruptions did not change any prediction"
    # exact repeat with the same seed
    again = R.evaluate_robustness(model, ds, tf, **kw)
    assert again["miou"] == res["miou"] and again["clean"] == res["clean"]
    # outputs
    saved = json.loads((tmp_path / "robustness.json").read_text())
    assert saved["miou"] == res["miou"]
    md = (tmp_path / "robustness.md").read_text()
    assert "| Clean | gaussian_noise | fog | Noise mean | Weather mean | Corr. | Rete. (%) |" in md
    from PIL import Image

    grid = Image.open(tmp_path / "corruptions_grid.png")
    assert grid.size[0] > 0 and grid.mode == "RGB"


def test_corrupted_items_differ_and_go_through_the_same_transform(synthetic_split):
    ds = SplitDataset(synthetic_split, "test")
    tf = TestTransform(scale=(96, 72), size_divisor=32)
    clean = R.CorruptedDataset(ds, tf, None)[1]
    noisy = R.CorruptedDataset(ds, tf, "shot_noise", 2, seed=0)[1]
    assert clean["image"].shape == noisy["image"].shape == (3, *tf.output_size(360, 480))
    assert torch.equal(clean["label"], noisy["label"])  # the label is never corrupted
    assert not torch.equal(clean["image"], noisy["image"])
    assert torch.equal(noisy["image"], R.CorruptedDataset(ds, tf, "shot_noise", 2, seed=0)[1]["image"])


def test_bad_robustness_requests(synthetic_split):
    ds = SplitDataset(synthetic_split, "test")
    model = Segmentor(_Pixels(), _ColourHead(ds.num_classes), ds.num_classes)
    tf = TestTransform(scale=(96, 72))
    with pytest.raises(ValueError, match="unknown corruption"):
        R.evaluate_robustness(model, ds, tf, corruptions=["elastic_transform"], progress=False)
    with pytest.raises(ValueError, match="severities"):
        R.evaluate_robustness(model, ds, tf, corruptions=["fog"], severities=[0], progress=False)
    with pytest.raises(ValueError, match="absent"):
        R.evaluate_robustness(model, ds, tf, corruptions=["fog"], absent="all", progress=False)


def test_cli_robustness(synthetic_split, tmp_path, capsys):
    import segkit
    from segkit.cli import main

    ds = SplitDataset(synthetic_split, "test")
    ckpt = segkit.build_model(
        "segformer-b0", num_classes=ds.num_classes, class_names=ds.classes, palette=ds.palette
    ).save_pretrained(tmp_path / "ckpt")
    rc = main(
        [
            "robustness",
            str(ckpt),
            "--data",
            str(synthetic_split),
            "--split",
            "test",
            "--corruptions",
            "contrast",
            "--severities",
            "2",
            "--max-images",
            "1",
            "--scale",
            "64",
            "48",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "| Clean | contrast | Digital mean | Corr. | Rete. (%) |" in out
    res = json.loads((tmp_path / "out" / "robustness.json").read_text())
    assert res["num_images"] == 1 and res["severities"] == [2] and not math.isnan(res["clean"])
