"""The 0/255 binary-mask trap stops a run: grayscale images with 0/255 masks (255 the foreground,
and the majority) in a plain folder. With 255 = ignore by default and the classes discovered, the
model would learn one class from 22 % of the pixels and report mIoU 100 — `segkit train` refuses
with the fix; with the fix in the config it trains."""

import numpy as np
import pytest
import yaml
from PIL import Image

from segkit.cli import main as cli
from segkit.data import FolderDataset, check_dataset
from segkit.data.checks import training_trap


@pytest.fixture
def binary_folder(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (tmp_path / split / "images").mkdir(parents=True)
        (tmp_path / split / "masks").mkdir(parents=True)
        for i in range(4):
            mask = np.full((64, 64), 255, np.uint8)  # the foreground is the majority
            y, x = rng.integers(0, 40, 2)
            mask[y : y + 24, x : x + 24] = 0
            image = np.where(mask == 255, 200, 40).astype(np.uint8) + rng.integers(0, 30, (64, 64)).astype(np.uint8)
            Image.fromarray(image, "L").save(tmp_path / split / "images" / f"{i}.png")
            Image.fromarray(mask, "L").save(tmp_path / split / "masks" / f"{i}.png")
    return tmp_path


def _config(root, work_dir, **train_spec):
    spec = {"type": "folder", "images_dir": str(root / "train" / "images"), "labels_dir": str(root / "train" / "masks")}
    val = {**spec, "images_dir": str(root / "val" / "images"), "labels_dir": str(root / "val" / "masks")}
    return {
        "model": "segformer-b0",
        "model_args": {"decoder_dim": 32},
        "data": {"train": {**spec, **train_spec}, "val": {**val, **train_spec}},
        "train_transform": {"scale": [64, 64], "crop_size": [64, 64]},
        "test_transform": {"scale": [64, 64]},
        "schedule": {"max_iters": 2, "warmup_iters": 1},
        "train": {"batch_size": 2, "eval_interval": 2, "work_dir": str(work_dir), "tensorboard": False},
    }


def test_the_0_255_trap_is_named_by_check_data_and_stops_train(binary_folder, tmp_path, capsys):
    with pytest.warns(UserWarning, match="no class names given"):
        ds = FolderDataset(binary_folder / "train" / "images", binary_folder / "train" / "masks")
    report = check_dataset(ds, progress=False)
    assert report.raw_values == [0, 255] and ds.classes == ["class_0"]
    assert any("only 0 and 255" in w for w in report.warnings)
    trap = training_trap(report, ds)
    assert trap and "label_map: {255: 1}" in trap and "every foreground pixel would be ignored" in trap
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(_config(binary_folder, tmp_path / "w")))
    assert cli(["train", str(cfg), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "only 0 and 255" in err and "label_map: {255: 1}" in err and "Traceback" not in err
    assert not (tmp_path / "w" / "final").exists()


def test_the_fix_trains_and_a_declared_ignore_is_not_a_trap(binary_folder, tmp_path, capsys):
    fixed = _config(binary_folder, tmp_path / "w", label_map={255: 1}, classes=["background", "foreground"])
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump(fixed))
    assert cli(["train", str(tmp_path / "ok.yaml"), "--no-progress"]) == 0
    assert (tmp_path / "w" / "final" / "model.safetensors").is_file()
    ds = FolderDataset(binary_folder / "train" / "images", binary_folder / "train" / "masks", classes=["a", "b"],
                       ignore_index=255)  # fmt: skip
    assert training_trap(check_dataset(ds, progress=False), ds) is None


def test_reduce_zero_label_on_0_1_masks_leaves_one_class(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img" / "a.png")
    Image.fromarray(np.eye(8, dtype=np.uint8)).save(tmp_path / "lab" / "a.png")
    ds = FolderDataset(tmp_path / "img", tmp_path / "lab", classes=["fg"], reduce_zero_label=True)
    assert "reduce_zero_label maps 0 to ignore" in training_trap(check_dataset(ds, progress=False), ds)
