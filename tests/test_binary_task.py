"""The binary task (issue 22 item 2): ``task: binary`` trains one logit with BCE on 0/255 masks (grayscale images,
255 the majority), reports foreground IoU / Dice / precision / recall at a threshold, and ``segkit predict`` writes
0/255 masks as the training data had them. Checked against independent computations in this file."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

import segkit
from segkit.cli import main as cli
from segkit.config import load_config
from segkit.data import FolderDataset
from segkit.data.binary import apply_binary_convention, binary_convention, match_model
from segkit.engine.metrics import binary_metrics
from segkit.errors import DataError


def _make(root, n_train=8, n_val=4, seed=0):
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(n):
            mask = np.full((64, 64), 255, np.uint8)  # the foreground (255) is the majority
            y, x = rng.integers(0, 30, 2)
            mask[y : y + 30, x : x + 30] = 0
            image = np.where(mask == 255, 170, 70).astype(np.uint8) + rng.integers(0, 40, (64, 64)).astype(np.uint8)
            Image.fromarray(image, "L").save(root / split / "images" / f"{i}.png")
            Image.fromarray(mask, "L").save(root / split / "masks" / f"{i}.png")
    return root


def _spec(root, split):
    return {"type": "folder", "images_dir": str(root / split / "images"), "labels_dir": str(root / split / "masks")}


def _config(root, work_dir, **top):
    return {
        "model": "segformer-b0",
        "model_args": {"decoder_dim": 32},
        "data": {"train": _spec(root, "train"), "val": _spec(root, "val")},
        "train_transform": {"scale": [64, 64], "crop_size": [64, 64], "ratio_range": [0.8, 1.25]},
        "test_transform": {"scale": [64, 64]},
        "optim": {"lr": 1e-3},
        "schedule": {"max_iters": 40, "warmup_iters": 5},
        "train": {
            "batch_size": 4,
            "eval_interval": 40,
            "work_dir": str(work_dir),
            "tensorboard": False,
            "num_workers": 0,
            "log_interval": 10,
            "dice_weight": 0.5,
        },
        **top,
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short binary training run (40 iterations of a 32-wide SegFormer-B0 on 64x64 images)."""
    tmp = tmp_path_factory.mktemp("binary")
    root = _make(tmp / "data")
    cfg = tmp / "binary.yaml"
    cfg.write_text(yaml.safe_dump(_config(root, tmp / "w", task="binary")))
    rc = cli(["train", str(cfg), "--no-progress"])
    return {"rc": rc, "root": root, "cfg": cfg, "work": tmp / "w", "tmp": tmp}


def _val_masks(root):
    return [np.array(Image.open(root / "val" / "masks" / f"{i}.png")) for i in range(4)]


def test_binary_training_beats_the_all_foreground_baseline(trained):
    assert trained["rc"] == 0
    final = json.loads((trained["work"] / "final" / "config.json").read_text())
    assert final["task"] == "binary" and final["num_classes"] == 1 and final["mask_values"] == [0, 255]
    assert final["class_names"] == ["background", "foreground"] and final["threshold"] == 0.5
    evals = [json.loads(line) for line in (trained["work"] / "train_log.jsonl").read_text().splitlines()]
    last = [r for r in evals if r.get("type") == "eval"][-1]
    gt = np.concatenate([m.ravel() for m in _val_masks(trained["root"])]) == 255
    baseline = 100.0 * gt.sum() / gt.size  # IoU of predicting foreground everywhere: |fg| / |all|
    assert 70 < baseline < 85  # the majority class, as in the trap
    assert last["fgIoU"] > baseline + 8, (last, baseline)
    assert {"fgDice", "fgPrecision", "fgRecall", "aAcc"} <= set(last)


def test_predict_writes_0_255_masks_and_eval_scores_them(trained, capsys):
    out = trained["tmp"] / "pred"
    assert (
        cli(["predict", str(trained["work"] / "final"), str(trained["root"] / "val" / "images"), "--out", str(out)])
        == 0
    )
    preds = []
    for i in range(4):
        img = Image.open(out / f"{i}_label.png")
        assert img.mode == "L"
        preds.append(np.array(img))
        assert set(np.unique(preds[-1])) <= {0, 255}
    # foreground metrics computed here from the written masks ...
    p = np.concatenate([a.ravel() for a in preds]) == 255
    g = np.concatenate([m.ravel() for m in _val_masks(trained["root"])]) == 255
    tp, fp, fn = int((p & g).sum()), int((p & ~g).sum()), int((~p & g).sum())
    capsys.readouterr()
    res_dir = trained["tmp"] / "eval"
    assert cli(["eval", str(trained["work"] / "final"), "--config", str(trained["cfg"]), "--split", "val",
                "--out", str(res_dir)]) == 0  # fmt: skip
    assert "fgIoU" in capsys.readouterr().out
    # ... equal the evaluator's (same test protocol for both commands)
    res = json.loads((res_dir / "metrics.json").read_text())
    assert res["fgIoU"] == pytest.approx(100 * tp / (tp + fp + fn), abs=1e-6)
    assert res["fgDice"] == pytest.approx(100 * 2 * tp / (2 * tp + fp + fn), abs=1e-6)
    assert res["fgPrecision"] == pytest.approx(100 * tp / (tp + fp), abs=1e-6)
    assert res["fgRecall"] == pytest.approx(100 * tp / (tp + fn), abs=1e-6)
    assert res["threshold"] == 0.5


def test_a_higher_threshold_marks_fewer_pixels(trained):
    model = segkit.load_model(trained["work"] / "final")
    seg = segkit.Segmenter(model, device="cpu")
    path = trained["root"] / "val" / "images" / "0.png"
    low = int(seg(path).label.sum())
    model.threshold = 0.99
    high = int(segkit.Segmenter(model, device="cpu")(path).label.sum())
    assert high <= low and seg(path).mask_values == [0, 255]


def test_num_classes_1_means_binary_and_the_trap_still_stops_multiclass(tmp_path, capsys):
    root = _make(tmp_path / "data", n_train=2, n_val=1, seed=1)
    cfg = _config(root, tmp_path / "w", model_args={"decoder_dim": 32, "num_classes": 1})
    cfg["schedule"] = {"max_iters": 2, "warmup_iters": 1}
    cfg["train"].update(eval_interval=2, batch_size=2)
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(cfg))
    assert load_config(tmp_path / "one.yaml").is_binary
    assert cli(["train", str(tmp_path / "one.yaml"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "w" / "final" / "config.json").read_text())["task"] == "binary"
    plain = _config(root, tmp_path / "w2")
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(plain))
    assert cli(["train", str(tmp_path / "plain.yaml"), "--no-progress"]) == 1
    assert "only 0 and 255" in capsys.readouterr().err


def _folder(tmp_path, mask, **kw):
    (tmp_path / "img").mkdir(exist_ok=True)
    (tmp_path / "lab").mkdir(exist_ok=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img" / "a.png")
    Image.fromarray(mask.astype(np.uint8)).save(tmp_path / "lab" / "a.png")
    return FolderDataset(tmp_path / "img", tmp_path / "lab", **kw)


@pytest.mark.parametrize(
    "values, kw, expect",
    [
        ([0, 255], {}, ({255: 1}, [0, 255])),
        ([0, 1], {}, (None, [0, 1])),
        ([0, 1, 255], {}, (None, [0, 1])),  # 255 = ignore (the default), 0/1 the classes
        ([0, 255], {"label_map": {255: 1}, "classes": ["bg", "fg"]}, (None, [0, 255])),
    ],
)
def test_binary_convention_reads_0_1_and_0_255(tmp_path, values, kw, expect):
    mask = np.array(values * 64)[:64].reshape(8, 8)
    with pytest.warns(UserWarning) if "classes" not in kw else _nothing():
        ds = _folder(tmp_path, mask, **kw)
    assert binary_convention(ds, values) == expect
    apply_binary_convention(ds, expect[0])
    got = ds.apply_label_convention(ds.read_raw_label(0))
    assert set(np.unique(got)) <= {0, 1, 255} and ds.num_classes == 2


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


@pytest.mark.parametrize(
    "values, kw, message",
    [
        ([0, 1, 2], {"classes": ["a", "b", "c"]}, "needs masks holding 0 and 1 or 0 and 255"),
        ([0, 255], {"classes": ["a", "b"], "ignore_index": 255}, "no foreground pixel"),
        ([0, 1], {"classes": ["fg"], "reduce_zero_label": True}, "reduce_zero_label"),
    ],
)
def test_binary_convention_refuses_other_masks(tmp_path, values, kw, message):
    ds = _folder(tmp_path, np.array(values * 64)[:64].reshape(8, 8), **kw)
    with pytest.raises(DataError, match=message):
        binary_convention(ds, values)


def test_binary_loss_is_bce_with_ignore_plus_dice():
    model = segkit.build_model("segformer-b0", 1, task="binary", decoder_dim=16)
    logits = torch.randn(2, 1, 6, 7)
    labels = torch.randint(0, 2, (2, 6, 7))
    labels[0, :2] = 255
    valid = labels != 255
    x, t = logits[:, 0][valid], labels[valid].float()
    bce = (torch.clamp(x, min=0) - x * t + torch.log1p(torch.exp(-x.abs()))).mean()  # stable BCE, written out
    assert float(model.seg_loss(logits, labels)) == pytest.approx(float(bce), rel=1e-5)
    model.set_loss_options(dice_weight=2.0)
    p = torch.sigmoid(x)
    dice = 1 - (2 * (p * t).sum() + 1) / ((p * p).sum() + t.sum() + 1)
    assert float(model.seg_loss(logits, labels)) == pytest.approx(float(bce + 2 * dice), rel=1e-5)
    with pytest.raises(ValueError, match="binary"):
        model.set_loss_options(ohem_thresh=0.7)


def test_binary_predict_thresholds_the_sigmoid():
    torch.manual_seed(0)
    model = segkit.build_model("segformer-b0", 1, task="binary", decoder_dim=16, threshold=0.6).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        prob = torch.sigmoid(F.interpolate(model.encode_decode(x), (64, 64), mode="bilinear", align_corners=False))
    pred = model.predict(x)
    assert torch.equal(pred, (prob[:, 0] >= 0.6).long())
    probs = model.inference(x)
    assert probs.shape == (1, 2, 64, 64) and torch.allclose(probs.sum(1), torch.ones(1, 64, 64))
    with pytest.raises(ValueError, match="one logit"):
        segkit.build_model("segformer-b0", 2, task="binary")


def test_binary_metrics_from_a_matrix():
    m = torch.tensor([[50, 10], [5, 35]])  # rows = ground truth; tp 35, fp 10, fn 5
    got = binary_metrics(m)
    assert got["fgIoU"] == pytest.approx(100 * 35 / 50)
    assert got["fgDice"] == pytest.approx(100 * 70 / 85)
    assert got["fgPrecision"] == pytest.approx(100 * 35 / 45) and got["fgRecall"] == pytest.approx(100 * 35 / 40)
    assert math.isnan(binary_metrics(torch.tensor([[4, 0], [0, 0]]))["fgIoU"])


def test_match_model_reads_eval_data_as_trained(tmp_path):
    with pytest.warns(UserWarning):
        ds = _folder(tmp_path, np.array([0, 255] * 32).reshape(8, 8))
    model = segkit.build_model("segformer-b0", 1, task="binary", decoder_dim=16, mask_values=[0, 255])
    match_model(ds, model)
    assert ds.classes == ["background", "foreground"]
    assert set(np.unique(ds.apply_label_convention(ds.read_raw_label(0)))) == {0, 1}


def _doc_block(title: str) -> dict:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "datasets.md").read_text()
    section = text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    return yaml.safe_load(re.findall(r"```yaml\n(.*?)```", section, flags=re.S)[0])


def test_the_docs_binary_recipe_reads_0_255_masks(tmp_path, monkeypatch):
    from segkit.config import config_from_dict
    from segkit.data import build_dataset
    from segkit.data.binary import raw_label_values

    _make(tmp_path / "masks_data", n_train=2, n_val=1)
    monkeypatch.chdir(tmp_path)
    cfg = config_from_dict(_doc_block("Binary segmentation (`task: binary`)"))
    assert cfg.is_binary and cfg.eval.threshold == 0.5 and cfg.train.dice_weight == 0.5
    with pytest.warns(UserWarning, match="no class names"):
        ds = build_dataset(cfg.data.train)
    assert binary_convention(ds, raw_label_values(ds)) == ({255: 1}, [0, 255])


def test_a_grayscale_data_set_says_so_once_not_per_file(trained):
    import warnings

    from segkit.data import check_dataset

    root = trained["root"]
    ds = FolderDataset(root / "train" / "images", root / "train" / "masks", classes=["a", "b"], label_map={255: 1})
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for i in range(len(ds)):
            assert ds[i]["image"].shape == (64, 64, 3)
        report = check_dataset(ds, progress=False)
    assert not [w for w in rec if "grayscale" in str(w.message)]
    assert [w for w in report.warnings if "grayscale -> RGB (8)" in w] and len(report.warnings) == 1
