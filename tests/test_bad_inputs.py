"""Bad inputs, one case each, through the ``segkit`` command line: the exit status (0 ok, 1 data /
model / run error, 2 usage), a one-line message naming the file and the problem, never a traceback,
and nothing already on disk lost (the files of an earlier run keep their hashes)."""

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import segkit
from segkit.cli import main as cli

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def tiny_cfg(root: Path, work_dir: Path, **train) -> dict:
    return {
        "model": "segformer-b0",
        "model_args": {"decoder_dim": 32, "drop_path_rate": 0.0},
        "data": {
            "train": {"type": "split", "root": str(root), "split": "train"},
            "val": {"type": "split", "root": str(root), "split": "val"},
        },
        "train_transform": {"scale": [120, 90], "crop_size": [64, 64]},
        "test_transform": {"scale": [120, 90]},
        "optim": {"lr": 1e-3},
        "schedule": {"max_iters": 4, "warmup_iters": 1},
        "train": {
            "batch_size": 2,
            "num_workers": 0,
            "eval_interval": 4,
            "checkpoint_interval": 2,
            "keep_last": 10,
            "log_interval": 1,
            "work_dir": str(work_dir),
            "tensorboard": False,
            "threads": 1,
            **train,
        },
    }


def write_cfg(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run(capsys, *args) -> tuple[int, str]:
    rc = cli([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" not in err
    return rc, err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, synthetic_split_module):
    """A completed 4-iteration run (iter_2, iter_4, best.pth, final/) and its config."""
    base = tmp_path_factory.mktemp("run")
    cfg = write_cfg(base / "cfg.yaml", tiny_cfg(synthetic_split_module, base / "work"))
    assert cli(["train", str(cfg), "--no-progress"]) == 0
    return base / "work", cfg


# ----------------------------------------------------------------------------- 1. work dirs
def test_training_again_into_a_used_work_dir_is_refused(finished_run, capsys):
    work, cfg = finished_run
    before = hashes(work)
    rc, err = run(capsys, "train", cfg, "--no-progress")
    assert rc == 2
    assert str(work) in err and "--resume auto" in err and "--overwrite" in err and "iteration 4" in err
    assert hashes(work) == before  # nothing touched: best.pth, iter_*.pth, final/, the log


def test_overwrite_moves_the_old_run_aside(tmp_path, synthetic_split, capsys):
    work = tmp_path / "work"
    cfg = write_cfg(tmp_path / "cfg.yaml", tiny_cfg(synthetic_split, work))
    assert cli(["train", str(cfg), "--no-progress"]) == 0
    before = hashes(work)
    cfg2 = write_cfg(
        tmp_path / "cfg2.yaml", tiny_cfg(synthetic_split, work) | {"schedule": {"max_iters": 2, "warmup_iters": 1}}
    )
    assert cli(["train", str(cfg2), "--no-progress", "--overwrite"]) == 0
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("work.prev-")]
    assert len(moved) == 1 and hashes(moved[0]) == before  # the old run, intact
    assert sorted(p.name for p in work.glob("iter_*.pth")) == ["iter_2.pth"]  # the new run's own files only
    assert "moved the previous run" in capsys.readouterr().out


def test_resume_auto_skips_a_truncated_checkpoint_and_ends_as_an_uninterrupted_run(tmp_path, synthetic_split, capsys):
    ref = tmp_path / "ref"
    assert cli(["train", str(write_cfg(tmp_path / "a.yaml", tiny_cfg(synthetic_split, ref))), "--no-progress"]) == 0
    work = tmp_path / "work"
    cfg = write_cfg(tmp_path / "b.yaml", tiny_cfg(synthetic_split, work))
    # make it an interrupted run: checkpoints at 2 and a truncated one at 4, no final/
    assert cli(["train", str(cfg), "--no-progress"]) == 0
    (work / "final").rename(tmp_path / "final_unused")
    (work / "best.pth").unlink(missing_ok=True)
    bad = work / "iter_4.pth"
    bad.write_bytes(bad.read_bytes()[:1000])
    capsys.readouterr()
    rc = cli(["train", str(cfg), "--no-progress", "--resume", "auto"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "skipping" in out and "iter_4.pth" in out and "resuming from" in out and "iter_2.pth" in out
    a = torch.load(ref / "iter_4.pth", weights_only=True)["model"]
    b = torch.load(work / "iter_4.pth", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_auto_in_an_empty_or_mistyped_work_dir_says_it_starts_fresh(tmp_path, synthetic_split, capsys):
    cfg = write_cfg(
        tmp_path / "cfg.yaml",
        tiny_cfg(synthetic_split, tmp_path / "no_such_dir", eval_interval=100)
        | {"schedule": {"max_iters": 1, "warmup_iters": 0}},
    )
    assert cli(["train", str(cfg), "--no-progress", "--resume", "auto"]) == 0
    assert "does not exist; starting a fresh run" in capsys.readouterr().out


def test_resume_from_a_checkpoint_of_another_model_is_refused_before_the_data_scan(finished_run, tmp_path, capsys):
    work, cfg = finished_run
    other = yaml.safe_load(cfg.read_text())
    other["model"], other["model_args"] = "segnext-t", {}
    other["train"]["work_dir"] = str(tmp_path / "w")
    rc, err = run(capsys, "train", write_cfg(tmp_path / "o.yaml", other), "--resume", work / "iter_2.pth")
    assert rc == 1
    msg = err.strip().splitlines()
    assert len(msg) == 2 and "segformer-b0" in msg[0] and "segnext-t" in msg[1]
    assert "checking" not in err and len(err) < 600  # before the label scan; no key dump


def test_resume_past_the_end_of_the_schedule_is_refused(finished_run, capsys):
    work, cfg = finished_run
    rc, err = run(capsys, "train", cfg, "--resume", work / "iter_4.pth", "--set", "schedule.max_iters=3")
    assert rc == 1 and "iteration 4" in err and "max_iters=3" in err


# ----------------------------------------------------------------------------- 3. output locations
@pytest.mark.parametrize("command", ["eval", "predict", "robustness", "export"])
@pytest.mark.parametrize("where", ["existing-file", "under-a-file", "unwritable"])
def test_output_locations_are_checked_before_the_work(
    finished_run, synthetic_split_module, tmp_path, capsys, command, where
):
    work, _ = finished_run
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = {"existing-file": blocker, "under-a-file": blocker / "sub", "unwritable": Path("/proc/segkit-no-write")}[
        where
    ]
    if command == "export" and where == "existing-file":
        out = tmp_path  # export writes a file: a folder is in the way
    image = next((synthetic_split_module / "images" / "test").iterdir())
    args = {
        "eval": ["eval", work / "final", "--data", synthetic_split_module, "--out", out],
        "predict": ["predict", work / "final", image, "--out", out],
        "robustness": [
            "robustness",
            work / "final",
            "--data",
            synthetic_split_module,
            "--out",
            out,
            "--corruptions",
            "fog",
            "--severities",
            "1",
        ],
        "export": ["export", work / "final", "--out", out],
    }[command]
    rc, err = run(capsys, *args)
    assert rc == 1 and str(out) in err
    assert "test protocol" not in err  # refused before the model ran


def test_eval_prints_metrics_and_written_files_have_normal_permissions(
    finished_run, synthetic_split_module, tmp_path, capsys
):
    work, _ = finished_run
    old = os.umask(0o022)
    try:
        rc = cli(["eval", str(work / "final"), "--data", str(synthetic_split_module), "--out", str(tmp_path / "ev")])
        image = next((synthetic_split_module / "images" / "test").iterdir())
        assert cli(["predict", str(work / "final"), str(image), "--out", str(tmp_path / "pred")]) == 0
    finally:
        os.umask(old)
    out = capsys.readouterr().out
    assert rc == 0 and out.index("mIoU") < out.index("wrote")  # metrics on screen before files are written
    for p in [*(tmp_path / "ev").iterdir(), *(tmp_path / "pred").iterdir(), *(work / "final").iterdir()]:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p


# ----------------------------------------------------------------------------- 4. configs
def test_yaml_syntax_error_names_file_line_and_column(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: segnext-t\ntrain:\n  batch_size: 2\n   eval_interval: 3\n")
    rc, err = run(capsys, "train", bad)
    assert rc == 2 and f"{bad}:4:" in err and "YAML syntax error" in err and len(err.splitlines()) == 1


def test_impossible_values_name_their_key_and_origin(synthetic_split, tmp_path, capsys):
    cfg = write_cfg(tmp_path / "c.yaml", tiny_cfg(synthetic_split, tmp_path / "w"))
    rc, err = run(capsys, "train", cfg, "--set", "train.eval_interval=0")
    assert rc == 2 and "--set train.eval_interval=0" in err and str(cfg) not in err
    bad = tiny_cfg(synthetic_split, tmp_path / "w")
    bad["train"]["keep_last"] = 0
    rc, err = run(capsys, "train", write_cfg(tmp_path / "d.yaml", bad))
    assert rc == 2 and "d.yaml" in err and "train.keep_last" in err
    assert not (tmp_path / "w").exists()
    # a legal but surprising combination is a warning that names the key
    from segkit.config import config_from_dict

    odd = tiny_cfg(synthetic_split, tmp_path / "w")
    odd["schedule"] = {"max_iters": 10, "warmup_iters": 50}
    with pytest.warns(UserWarning, match="schedule.warmup_iters=50 is more than schedule.max_iters=10"):
        config_from_dict(odd)


def test_crop_much_larger_than_the_images_warns_with_the_padding_share(synthetic_split, tmp_path):
    from segkit.config import config_from_dict

    cfg = tiny_cfg(synthetic_split, tmp_path / "w")
    cfg["train_transform"] = {"scale": [480, 360], "ratio_range": [0.5, 1.0], "crop_size": [1000, 1000]}
    with pytest.warns(UserWarning, match=r"train_transform.crop_size .* at least \d+% of every crop is padding"):
        config_from_dict(cfg)


def test_a_step_that_cannot_fit_in_memory_fails_with_an_estimate(synthetic_split, tmp_path):
    """Crop 6000² at batch 2 on 480×360 images: an estimate and exit 2, not an OOM kill (exit 137)."""
    cfg = tiny_cfg(synthetic_split, tmp_path / "w")
    cfg["train_transform"] = {"scale": [480, 360], "crop_size": [6000, 6000]}
    cfg["train"]["check_data"] = False
    path = write_cfg(tmp_path / "big.yaml", cfg)
    r = subprocess.run(
        [sys.executable, "-m", "segkit", "train", str(path), "--no-progress"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert "GiB" in r.stderr and "train.batch_size" in r.stderr and "Traceback" not in r.stderr


# ----------------------------------------------------------------------------- 5. data
def test_split_file_that_is_not_utf8_names_file_and_line(synthetic_split, capsys):
    split = synthetic_split / "splits" / "train.txt"
    split.write_bytes(split.read_bytes() + b"caf\xe9\n")
    rc, err = run(capsys, "check-data", synthetic_split, "--split", "train")
    assert rc == 1 and f"{split}:7:" in err and "UTF-8" in err


def test_stems_starting_with_hash_are_kept_and_comments_skipped(synthetic_split):
    img = synthetic_split / "images" / "train"
    lab = synthetic_split / "labels" / "train"
    (img / "train_000.png").rename(img / "#frame.png")
    (lab / "train_000.png").rename(lab / "#frame.png")
    split = synthetic_split / "splits" / "train.txt"
    stems = split.read_text().split()
    split.write_text("# a comment line\n#frame\n" + "\n".join(stems[1:]) + "\n")
    ds = segkit.data.SplitDataset(synthetic_split, "train")
    assert len(ds) == 6 and ds.samples[0][0].endswith("#frame.png")


def test_empty_split_is_an_error_naming_the_split_file(synthetic_split, capsys):
    split = synthetic_split / "splits" / "val.txt"
    split.write_text("# nothing here\n\n")
    rc, err = run(capsys, "check-data", synthetic_split, "--split", "val")
    assert rc == 1 and str(split) in err and "empty" in err


def test_check_data_exits_non_zero_on_bad_labels(synthetic_split, capsys):
    label = synthetic_split / "labels" / "train" / "train_001.png"
    arr = np.array(Image.open(label))
    arr[5:8, 5:8] = 77
    Image.fromarray(arr).save(label)
    rc = cli(["check-data", str(synthetic_split), "--split", "train"])
    out, err = capsys.readouterr()
    assert rc == 1 and "train_001.png" in out and "77" in out and "problem" in err


def test_missing_label_names_the_expected_file_and_the_option(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "imgs" / f"im{i}.jpg")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "masks" / "im0_mask.png")
    spec = {
        "type": "folder",
        "images_dir": str(tmp_path / "imgs"),
        "labels_dir": str(tmp_path / "masks"),
        "classes": ["a", "b"],
    }
    with pytest.raises(segkit.DataError) as e:
        segkit.data.build_dataset(spec)
    assert "expected" in str(e.value) and "im1.png" in str(e.value) and "label_suffix" in str(e.value)
    assert len(segkit.data.build_dataset({**spec, "label_suffix": "_mask.png", "allow_missing_labels": True})) == 2


def _colour_layout(root: Path, n: int = 6, stray_colour: bool = False) -> list[list[int]]:
    """JPEG images with ``*_mask.png`` RGB colour masks side by side in one folder (no split files)."""
    colours = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(n):
        label = np.zeros((96, 128), np.uint8)
        label[40:, :] = 1
        label[10:30, 20 + 10 * i : 60 + 10 * i] = 2
        mask = np.array(colours, np.uint8)[label]
        if stray_colour and i == 1:
            mask[:3, :4] = [12, 34, 56]
        image = np.clip(mask.astype(np.int16) * 0.8 + rng.normal(0, 10, mask.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / f"scene_{i}.jpg", quality=95)
        Image.fromarray(mask).save(root / f"scene_{i}_mask.png")
    return colours


def test_colour_masks_train_evaluate_and_predict_from_a_config_alone(tmp_path, capsys):
    colours = _colour_layout(tmp_path / "raw")
    spec = {
        "type": "folder",
        "images_dir": str(tmp_path / "raw"),
        "labels_dir": str(tmp_path / "raw"),
        "label_suffix": "_mask.png",
        "label_colours": colours,
    }
    cfg = tiny_cfg(tmp_path, tmp_path / "work")
    cfg["data"] = {
        "train": {**spec, "split": "train", "val_fraction": 0.34},
        "val": {**spec, "split": "val", "val_fraction": 0.34},
    }
    cfg["train_transform"] = {"scale": [128, 96], "crop_size": [64, 64]}
    cfg["test_transform"] = {"scale": [128, 96]}
    path = write_cfg(tmp_path / "colour.yaml", cfg)
    assert cli(["train", str(path), "--no-progress"]) == 0
    assert cli(["eval", str(tmp_path / "work" / "final"), "--config", str(path)]) == 0
    assert "mIoU" in capsys.readouterr().out
    assert (
        cli(
            [
                "predict",
                str(tmp_path / "work" / "final"),
                str(tmp_path / "raw" / "scene_0.jpg"),
                "--out",
                str(tmp_path / "pred"),
            ]
        )
        == 0
    )
    assert Image.open(tmp_path / "pred" / "scene_0_label.png").size == (128, 96)
    model = segkit.load_model(tmp_path / "work" / "final")
    assert model.class_names == ["class_0", "class_1", "class_2"] and model.palette == colours


def test_unknown_mask_colours_are_listed_with_their_counts(tmp_path, capsys):
    colours = _colour_layout(tmp_path / "raw", stray_colour=True)
    spec = {
        "type": "folder",
        "images_dir": str(tmp_path / "raw"),
        "labels_dir": str(tmp_path / "raw"),
        "label_suffix": "_mask.png",
        "label_colours": colours,
    }
    ds = segkit.data.build_dataset(spec)
    with pytest.raises(
        segkit.DataError,
        match=r"scene_1_mask.png: 1 colour\(s\) not in the palette \(12 pixels\): "
        r"\(12, 34, 56\) x12",
    ):
        ds[1]
    ignored = segkit.data.build_dataset({**spec, "unknown_colour": "ignore"})
    assert (ignored.load(1)[1][:3, :4] == 255).all()


def test_colour_masks_without_a_colour_table_give_one_message_for_all_files(tmp_path, capsys):
    _colour_layout(tmp_path / "raw")
    spec = {
        "type": "folder",
        "images_dir": str(tmp_path / "raw"),
        "labels_dir": str(tmp_path / "raw"),
        "label_suffix": "_mask.png",
        "classes": ["a", "b", "c"],
    }
    report = segkit.data.check_dataset(segkit.data.build_dataset(spec), progress=False, raise_on_error=False)
    colour = [m for m in report.problems if "colour mask" in m]
    assert len(colour) == 1 and colour[0].startswith("6 label files are 3-channel colour masks")


# ----------------------------------------------------------------------------- 6. checkpoint files
@pytest.mark.parametrize("content", [os.urandom(4096), b"this is a text file, not weights\n", b""])
def test_files_that_are_not_checkpoints_are_named(tmp_path, capsys, content):
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    rc, err = run(capsys, "eval", path, "--data", tmp_path)
    assert rc == 1 and str(path) in err and "not a checkpoint" in err and "weights_only" not in err
    with pytest.raises(segkit.CheckpointError, match="not a checkpoint"):
        segkit.load_checkpoint(segkit.build_model("segformer-b0", 3), path, verbose=False)


def test_truncated_safetensors_is_named(finished_run, tmp_path, capsys):
    work, _ = finished_run
    data = (work / "final" / "model.safetensors").read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(segkit.CheckpointError, match=r"cut.safetensors: truncated or corrupt safetensors"):
        segkit.read_state_dict(path)
    rc, err = run(capsys, "convert", path, tmp_path / "out", "--model", "segformer-b0")
    assert rc == 1 and "cut.safetensors" in err


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickles_with_code_are_refused_without_suggesting_weights_only_false(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Evil()}, path)
    with pytest.raises(segkit.CheckpointError) as e:
        segkit.read_state_dict(path)
    assert "refused" in str(e.value) and "weights_only=False" not in str(e.value)


# ----------------------------------------------------------------------------- 7. optional dependencies
@pytest.mark.parametrize(
    "blocked,args",
    [
        ("onnx", ["export", "CKPT", "--out", "OUT/m.onnx"]),
        ("imagecorruptions", ["robustness", "CKPT", "--data", "DATA"]),
    ],
)
def test_missing_optional_dependency_names_the_extra(finished_run, synthetic_split_module, tmp_path, blocked, args):
    work, _ = finished_run
    args = [
        a.replace("CKPT", str(work / "final"))
        .replace("OUT", str(tmp_path))
        .replace("DATA", str(synthetic_split_module))
        for a in args
    ]
    code = f"import sys; sys.modules[{blocked!r}] = None\nfrom segkit.cli import main\nraise SystemExit(main({args!r}))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 1, r.stderr[-2000:]
    assert 'pip install "segkit[tools]"' in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 or "test protocol" in r.stderr


# ----------------------------------------------------------------------------- 8. predict's protocol
def test_predict_segments_at_the_models_test_resize(finished_run, tmp_path, monkeypatch):
    """A model trained with test_transform.scale [120, 90] predicts a 1440×1080 photo at 120×90 (×32)."""
    work, _ = finished_run
    big = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1080, 1440, 3), dtype=np.uint8)).save(big)
    sizes = []
    orig = segkit.Segmentor.predict
    monkeypatch.setattr(
        segkit.Segmentor, "predict", lambda self, x, **kw: sizes.append(x.shape[-2:]) or orig(self, x, **kw)
    )
    assert cli(["predict", str(work / "final"), str(big), "--out", str(tmp_path / "p")]) == 0
    assert tuple(sizes[0]) == (96, 128)  # 120x90 keep-ratio, then multiples of 32
    assert Image.open(tmp_path / "p" / "photo_label.png").size == (1440, 1080)
    meta = json.loads((work / "final" / "config.json").read_text())
    assert meta["train_config"]["test_transform"]["scale"] == [120, 90]
