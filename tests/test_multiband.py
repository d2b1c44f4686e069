"""Multi-band input (issue 22 item 3): ``in_channels: 4`` (RGB + a NIR band made from the image) trains and
predicts from 4-band TIFFs read with tifffile; 3-channel pretrained weights load into the 4-channel encoder,
adapted as timm does (repeat, scale 3/N) and reported; check-data --stats gives per-band mean/std."""

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import segkit
from segkit.checkpoints import adapt_input_conv
from segkit.cli import main as cli
from segkit.data.io import read_bands
from segkit.data.transforms import TrainTransform, photometric_distortion
from segkit.errors import DataError

tifffile = pytest.importorskip("tifffile")


def _nir(rgb: np.ndarray) -> np.ndarray:
    """A synthetic NIR band: bright where the image is green (vegetation-like), from the image itself."""
    r, g = rgb[..., 0].astype(np.int32), rgb[..., 1].astype(np.int32)
    return np.clip(g * 2 - r // 2, 0, 255).astype(np.uint8)


def _make(root, n_train=6, n_val=2, seed=0, labels="labels"):
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / split / "images").mkdir(parents=True)
        (root / split / labels).mkdir(parents=True)
        for i in range(n):
            label = np.zeros((64, 64), np.uint8)
            y, x = rng.integers(0, 32, 2)
            label[y : y + 32, x : x + 32] = 1
            rgb = np.where(label[..., None] == 1, [60, 160, 60], [120, 100, 90]).astype(np.uint8)
            rgb = np.clip(rgb + rng.integers(0, 30, rgb.shape), 0, 255).astype(np.uint8)
            bands = np.dstack([rgb, _nir(rgb)]).astype(np.uint16) * 257  # 16-bit, as satellite products
            tifffile.imwrite(root / split / "images" / f"{i}.tif", bands, photometric="rgb", extrasamples=[0])
            Image.fromarray(label).save(root / split / labels / f"{i}.png")
    return root


def _spec(root, split):
    return {"type": "folder", "images_dir": str(root / split / "images"), "labels_dir": str(root / split / "labels"),
            "classes": ["soil", "plant"]}  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _make(tmp_path_factory.mktemp("multiband") / "data")


def test_read_bands_reads_16_bit_4_band_tiffs_scaled(data, tmp_path):
    arr = read_bands(data / "train" / "images" / "0.tif", 4)
    stored = tifffile.imread(data / "train" / "images" / "0.tif")
    assert arr.dtype == np.uint8 and arr.shape == (64, 64, 4)
    assert np.array_equal(arr, ((stored.astype(np.uint32) + 128) // 257).astype(np.uint8))  # scaled, not clipped
    planar = tmp_path / "planar.tif"
    tifffile.imwrite(planar, np.moveaxis(stored, -1, 0), photometric="minisblack", planarconfig="separate")
    assert np.array_equal(read_bands(planar, 4), arr)
    with pytest.raises(DataError, match="4 band.*in_channels=5"):
        read_bands(data / "train" / "images" / "0.tif", 5)


def test_photometric_changes_rgb_bands_only():
    img = np.random.default_rng(0).integers(0, 255, (16, 16, 4), dtype=np.uint8)
    np.random.seed(3)
    out = photometric_distortion(img.copy())
    np.random.seed(3)
    rgb = photometric_distortion(np.ascontiguousarray(img[..., :3]))
    assert np.array_equal(out[..., :3], rgb) and np.array_equal(out[..., 3], img[..., 3])
    t = TrainTransform(scale=(16, 16), crop_size=(16, 16), mean=(0,) * 4, std=(1,) * 4)
    assert t(img, np.zeros((16, 16), np.uint8))["image"].shape == (4, 16, 16)


@pytest.mark.parametrize("name", ["segformer-b0", "segnext-t", "vit-linear-ti", "rsseg-vit-ti"])
def test_every_family_takes_four_bands(name):
    model = segkit.build_model(name, 3, in_channels=4, mean=[100.0] * 4, std=[50.0] * 4).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 4, 64, 64)).shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="one value per input channel"):
        segkit.build_model(name, 3, in_channels=4)


def test_3_channel_pretrained_weights_are_adapted_and_reported(tmp_path):
    rgb = segkit.build_model("segformer-b0", 2, decoder_dim=16)
    rgb.save_pretrained(tmp_path / "rgb")
    four = segkit.build_model("segformer-b0", 2, decoder_dim=16, in_channels=4, mean=[1.0] * 4, std=[1.0] * 4)
    report = segkit.load_checkpoint(four, tmp_path / "rgb" / "model.safetensors", verbose=False)
    assert report.adapted == ["backbone.patch_embed1.proj.weight"]
    assert any("adapted from 3 to 4 channels" in n and "3/4" in n for n in report.notes)
    w3 = rgb.backbone.patch_embed1.proj.weight.detach()
    w4 = four.backbone.patch_embed1.proj.weight.detach()
    assert torch.allclose(w4[:, :3], w3 * 0.75) and torch.allclose(w4[:, 3], w3[:, 0] * 0.75)
    # a 4-band image whose bands repeat an RGB image's pattern gives the RGB response at the first stage
    x = torch.randn(1, 3, 32, 32)
    assert torch.allclose(
        torch.nn.functional.conv2d(torch.cat([x, x[:, :1]], 1), w4), torch.nn.functional.conv2d(x, w3) * 0.75
        + torch.nn.functional.conv2d(x[:, :1], w3[:, :1]) * 0.75, atol=1e-5)  # fmt: skip
    assert torch.allclose(adapt_input_conv(w3, 1), w3.sum(1, keepdim=True))


def test_four_band_training_predicts_and_stats(data, tmp_path, capsys):
    cfg = {
        "model": "segformer-b0",
        "model_args": {"decoder_dim": 32, "in_channels": 4, "mean": [0.0] * 4, "std": [1.0] * 4},
        "data": {"train": _spec(data, "train"), "val": _spec(data, "val")},
        "train_transform": {"scale": [64, 64], "crop_size": [64, 64]},
        "test_transform": {"scale": [64, 64]},
        "schedule": {"max_iters": 4, "warmup_iters": 1},
        "train": {"batch_size": 2, "eval_interval": 4, "work_dir": str(tmp_path / "w"), "tensorboard": False,
                  "num_workers": 0},
    }  # fmt: skip
    path = tmp_path / "nir.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli(["check-data", "--config", str(path), "--stats"]) == 0
    out = capsys.readouterr().out
    stack = np.stack([read_bands(data / "train" / "images" / f"{i}.tif", 4) for i in range(6)]).reshape(-1, 4)
    mean_line = next(line for line in out.splitlines() if line.strip().startswith("mean:"))
    got = [float(v) for v in mean_line.split("[")[1].rstrip("]").split(",")]
    assert np.allclose(got, stack.mean(0), atol=1e-3)
    cfg["model_args"].update(mean=got, std=[float(v) for v in stack.std(0)])
    path.write_text(yaml.safe_dump(cfg))
    assert cli(["train", str(path), "--no-progress"]) == 0
    final = json.loads((tmp_path / "w" / "final" / "config.json").read_text())
    assert final["in_channels"] == 4 and len(final["mean"]) == 4
    pred = tmp_path / "pred"
    image = str(data / "val" / "images" / "0.tif")
    assert cli(["predict", str(tmp_path / "w" / "final"), image, "--out", str(pred)]) == 0
    label = np.array(Image.open(pred / "0_label.png"))
    assert label.shape == (64, 64) and set(np.unique(label)) <= {0, 1}
    model = segkit.load_model(tmp_path / "w" / "final")
    res = segkit.Segmenter(model, device="cpu")(str(data / "val" / "images" / "0.tif"))
    assert np.array_equal(res.label, label) and res.image.shape == (64, 64, 3)


def test_the_docs_multiband_recipe_builds(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    from segkit.config import config_from_dict
    from segkit.data import build_dataset, check_dataset

    text = (Path(__file__).resolve().parents[1] / "docs" / "datasets.md").read_text()
    section = text.split("## Multi-band images (`in_channels`)", 1)[1].split("\n## ", 1)[0]
    block = yaml.safe_load(re.findall(r"```yaml\n(.*?)```", section, flags=re.S)[0])
    _make(tmp_path / "fields", n_train=2, n_val=1, labels="masks")
    monkeypatch.chdir(tmp_path)
    cfg = config_from_dict(block)
    assert cfg.model_args["in_channels"] == 4 and len(cfg.model_args["mean"]) == 4
    ds = build_dataset(cfg.data.train)
    ds.in_channels = 4
    assert check_dataset(ds, progress=False).ok and ds[0]["image"].shape == (64, 64, 4)
    with pytest.raises(Exception, match="in_channels: 4 needs mean"):
        config_from_dict({**block, "model_args": {"in_channels": 4}})
