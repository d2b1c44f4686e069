"""Binary models end to end with the masks as the data had them (issue 22 item 2): 0/1 masks train with
``task: binary``, ``segkit predict`` writes 0/1 masks (images and a video's ``--save-labels`` frames), ``segkit eval``
scores them as computed here from the written masks; a 0/255 binary run no longer prints the folder data set's
"found label values …, using N classes" note for the class list it replaces."""

import io
import json
import shutil
import warnings
from contextlib import redirect_stderr, redirect_stdout

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from segkit.cli import main as cli

S = 48  # image side (pixels)


def _make(root, fg_value, n_train=8, n_val=4, seed=0):
    """Grayscale images, masks holding 0 and ``fg_value`` (a bright square on a dark background, noise on top)."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(n):
            fg = np.zeros((S, S), bool)
            y, x = rng.integers(0, S - 24, 2)
            fg[y : y + 24, x : x + 24] = True
            image = np.where(fg, 170, 70).astype(np.uint8) + rng.integers(0, 40, (S, S)).astype(np.uint8)
            Image.fromarray(image, "L").save(root / split / "images" / f"{i}.png")
            Image.fromarray((fg * fg_value).astype(np.uint8), "L").save(root / split / "masks" / f"{i}.png")
    return root


def _config(root, work_dir, max_iters=8):
    spec = {s: {"type": "folder", "images_dir": str(root / s / "images"), "labels_dir": str(root / s / "masks")}
            for s in ("train", "val")}  # fmt: skip
    return {
        "task": "binary",
        "model": "segformer-b0",
        "model_args": {"decoder_dim": 32},
        "data": spec,
        "train_transform": {"scale": [S, S], "crop_size": [S, S], "ratio_range": [0.8, 1.25]},
        "test_transform": {"scale": [S, S]},
        "optim": {"lr": 2e-3},
        "schedule": {"max_iters": max_iters, "warmup_iters": 2},
        "train": {"batch_size": 4, "eval_interval": max_iters, "work_dir": str(work_dir), "tensorboard": False,
                  "num_workers": 0, "log_interval": 10, "dice_weight": 0.5},
    }  # fmt: skip


@pytest.fixture(scope="module")
def run01(tmp_path_factory):
    """An 8-iteration binary run (32-wide SegFormer-B0, 48x48) on 0/1 masks, its warnings and output kept."""
    tmp = tmp_path_factory.mktemp("binary01")
    root = _make(tmp / "data", 1)
    cfg = tmp / "b01.yaml"
    cfg.write_text(yaml.safe_dump(_config(root, tmp / "w")))
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(record=True) as record, redirect_stdout(out), redirect_stderr(err):
        warnings.simplefilter("always")
        rc = cli(["train", str(cfg), "--no-progress"])
    said = "\n".join([out.getvalue(), err.getvalue()] + [str(w.message) for w in record])
    return {"rc": rc, "root": root, "cfg": cfg, "final": tmp / "w" / "final", "tmp": tmp, "work": tmp / "w",
            "said": said}  # fmt: skip


def _val_fg(root):
    return np.concatenate([np.array(Image.open(root / "val" / "masks" / f"{i}.png")).ravel() for i in range(4)]) == 1


def test_0_1_masks_train_predict_as_0_1_and_eval_scores_them(run01, capsys):
    assert run01["rc"] == 0
    final = json.loads((run01["final"] / "config.json").read_text())
    assert final["task"] == "binary" and final["mask_values"] == [0, 1] and final["num_classes"] == 1
    g = _val_fg(run01["root"])
    evals = [json.loads(line) for line in (run01["work"] / "train_log.jsonl").read_text().splitlines()]
    last = [r for r in evals if r.get("type") == "eval"][-1]
    assert last["fgIoU"] > 100.0 * g.mean() + 5, last  # above predicting foreground everywhere
    out = run01["tmp"] / "pred"
    assert cli(["predict", str(run01["final"]), str(run01["root"] / "val" / "images"), "--out", str(out)]) == 0
    preds = []
    for i in range(4):
        img = Image.open(out / f"{i}_label.png")
        assert img.mode == "L"  # a mask as the data stored it, not a palette PNG of class ids
        preds.append(np.array(img))
    values = set(np.unique(np.concatenate([p.ravel() for p in preds])).tolist())
    assert values == {0, 1}, values  # 0/1, as the training masks (not 0/255)
    p = np.concatenate([a.ravel() for a in preds]) == 1
    tp, fp, fn = int((p & g).sum()), int((p & ~g).sum()), int((~p & g).sum())
    res_dir = run01["tmp"] / "eval"
    capsys.readouterr()
    assert cli(["eval", str(run01["final"]), "--config", str(run01["cfg"]), "--split", "val", "--out",
                str(res_dir)]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "found label values" not in err and "using 1 classes" not in err, err
    res = json.loads((res_dir / "metrics.json").read_text())
    assert res["fgIoU"] == pytest.approx(100 * tp / (tp + fp + fn), abs=1e-6)
    assert res["fgDice"] == pytest.approx(100 * 2 * tp / (2 * tp + fp + fn), abs=1e-6)
    assert res["fgPrecision"] == pytest.approx(100 * tp / (tp + fp), abs=1e-6)
    assert res["fgRecall"] == pytest.approx(100 * tp / (tp + fn), abs=1e-6)


def _video(path, root):
    frames = [cv2.cvtColor(np.array(Image.open(root / "val" / "images" / f"{i}.png")), cv2.COLOR_GRAY2BGR)
              for i in range(3)]  # fmt: skip
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (S, S))
    for f in frames:
        vw.write(f)
    vw.release()
    return path


@pytest.mark.parametrize("stored", [[0, 1], [0, 255]])
def test_video_labels_of_a_binary_model_are_masks_as_stored(run01, tmp_path, stored):
    import segkit

    model_dir = tmp_path / "model"
    shutil.copytree(run01["final"], model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["mask_values"] = stored  # the same network, as a model trained on masks stored this way
    (model_dir / "config.json").write_text(json.dumps(cfg))
    video = _video(tmp_path / "clip.avi", run01["root"])
    out = tmp_path / "out"
    assert cli(["predict", str(model_dir), str(video), "--out", str(out), "--save-labels"]) == 0
    labels = sorted(out.glob("clip_*_label.png"))
    assert len(labels) == 3
    seg = segkit.Segmenter(segkit.load_model(model_dir), device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frames = [r.label for r in seg.stream(video)]
    for path, label in zip(labels, frames):
        img = Image.open(path)
        assert img.mode == "L", path
        assert np.array_equal(np.array(img), np.asarray(stored, np.uint8)[label]), path


def test_binary_runs_print_no_discovered_class_note(run01, tmp_path, capsys):
    # the 0/1 run discovered [0, 1] ("using 2 classes") and replaced the list by background, foreground: no note
    assert "masks stored as 0 / 1 (background / foreground)" in run01["said"], run01["said"]  # what it printed
    assert "found label values" not in run01["said"], run01["said"]
    final = json.loads((run01["final"] / "config.json").read_text())
    assert final["class_names"] == ["background", "foreground"]
    # 0/255 masks, where the note said "found label values [0], using 1 classes": the run's data sets say nothing
    from segkit.config import config_from_dict
    from segkit.data import FolderDataset
    from segkit.engine.trainer import build_train_data

    root = _make(tmp_path / "data", 255, n_train=2, n_val=1)
    cfg = config_from_dict(_config(root, tmp_path / "w"))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        train_ds, val_ds = build_train_data(cfg)
    assert not [w for w in record if "found label values" in str(w.message)], [str(w.message) for w in record]
    assert val_ds.classes == ["background", "foreground"]
    # check-data of the binary config reads the masks as the run does: two classes, no trap, no note
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(_config(root, tmp_path / "w")))
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert cli(["check-data", "--config", str(tmp_path / "c.yaml")]) == 0
    cap = capsys.readouterr()
    said = cap.out + cap.err + "\n".join(str(w.message) for w in record)
    assert "masks stored as 0 / 255 (background / foreground)" in cap.out and "2 classes" in cap.out, said
    assert "found label values" not in said and "labels contain only 0 and 255" not in said, said
    # outside a binary run the same folder still says what it discovered
    with pytest.warns(UserWarning, match=r"found label values \[0\], using 1 classes"):
        FolderDataset(root / "train" / "images", root / "train" / "masks")
