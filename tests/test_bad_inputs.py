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


def test_resume_auto_with_every_checkpoint_damaged_is_refused_like_a_plain_rerun(tmp_path, synthetic_split, capsys):
    """A finished run whose iter_*.pth are all damaged: --resume auto refuses (exit 2, nothing touched)
    instead of starting a fresh run into final/ and the old log; --overwrite moves the run aside."""
    import subprocess

    work = tmp_path / "work"
    cfg = write_cfg(tmp_path / "cfg.yaml", tiny_cfg(synthetic_split, work))
    assert cli(["train", str(cfg), "--no-progress"]) == 0
    for ck in work.glob("iter_*.pth"):
        ck.write_bytes(ck.read_bytes()[:1000])
    before = hashes(work)
    capsys.readouterr()
    rc = cli(["train", str(cfg), "--no-progress", "--resume", "auto"])
    out, err = capsys.readouterr()
    assert rc == 2 and "Traceback" not in err
    assert str(work) in err and "final/" in err and "--overwrite" in err and "no readable checkpoint" in err
    assert "skipping" in out and "starting a fresh run" not in out
    assert hashes(work) == before  # final/, best.pth, the log: all as they were
    # an interrupted save's temporary file is removed (and named) when the run starts over
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = work / f".iter_6.pth.{dead.pid}.tmp"
    stale.write_bytes(b"x" * 2048)
    assert cli(["train", str(cfg), "--no-progress", "--resume", "auto", "--overwrite"]) == 0
    out = capsys.readouterr().out
    (moved,) = [p for p in tmp_path.iterdir() if p.name.startswith("work.prev-")]
    assert f"removed {stale} (2.0 kB)" in out and not (moved / stale.name).exists()
    assert hashes(moved) == before and f"to {moved}" in out
    assert (work / "final" / "model.safetensors").is_file()  # the new run's
    new_log, old_log = ((d / "train_log.jsonl").read_text().splitlines() for d in (work, moved))
    assert len(new_log) == len(old_log)  # a log of its own, not appended to the old run's


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
    """Crop 6000² at batch 2 on 480×360 images: an estimate and exit 1 (out of memory is the environment, not a
    usage mistake: issue 21 item 4), not an OOM kill (exit 137)."""
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
    assert r.returncode == 1, r.stderr[-2000:]
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


# ----------------------------------------------------------------------------- 9. no input skipped or mis-read
def _video(path: Path, frames: int = 8, size=(64, 48)) -> Path:
    """A small mp4v video written with OpenCV's VideoWriter: grey levels with a moving white bar."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, size)
    assert writer.isOpened()
    for i in range(frames):
        frame = np.full((size[1], size[0], 3), i * 30, np.uint8)
        frame[10:20, 5 * i : 5 * i + 10] = 255
        writer.write(frame)
    writer.release()
    return path


def _frames(path: Path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    return n


def test_a_folder_with_videos_segments_them_and_lists_what_it_skips(
    finished_run, synthetic_split_module, tmp_path, capsys
):
    work, _ = finished_run
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "photo.png").write_bytes((synthetic_split_module / "images" / "test" / "test_000.png").read_bytes())
    _video(folder / "clip.mp4")
    (folder / "notes.txt").write_text("not an image")
    (folder / "more").mkdir()
    rc, err = run(capsys, "predict", work / "final", folder, "--out", tmp_path / "out")
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "clip_overlay.mp4",
        "photo_label.png",
        "photo_overlay.png",
    ]
    assert _frames(tmp_path / "out" / "clip_overlay.mp4") == 8  # every frame of the video
    warning = next(line for line in err.splitlines() if "warning" in line)
    assert "skipped" in warning and "notes.txt" in warning and "more" in warning and "not searched" in warning


def test_a_video_with_undecodable_frames_names_them_and_exits_1(finished_run, tmp_path, capsys):
    work, _ = finished_run
    data = bytearray(_video(tmp_path / "clip.mp4").read_bytes())
    mid = len(data) // 2
    data[mid - 200 : mid + 200] = b"\xab" * 400  # damage the middle of the stream
    bad = tmp_path / "damaged.mp4"
    bad.write_bytes(bytes(data))
    rc, err = run(capsys, "predict", work / "final", bad, "--out", tmp_path / "out")
    assert rc == 1, err
    msg = err.strip().splitlines()[-1]
    assert str(bad) in msg and "could not be decoded" in msg and "of 8" in msg
    out = tmp_path / "out" / "damaged_overlay.mp4"
    kept = _frames(out)
    assert 0 < kept < 8 and f"wrote the {kept} readable frame(s) to {out}" in msg  # the readable frames, named
    frames = msg.split("frame(s) ")[1].split(" of 8")[0]  # "5-7": the missing ones, counting from 0
    assert frames.startswith(str(kept)) and frames.endswith("7")


def test_a_video_and_a_camera_together_are_two_inputs(finished_run, tmp_path, capsys):
    work, _ = finished_run
    video = _video(tmp_path / "clip.mp4")
    rc, err = run(capsys, "predict", work / "final", video, "--source", "0", "--out", tmp_path / "out")
    assert rc == 2 and "two inputs" in err and str(video) in err and "--source 0" in err
    assert not (tmp_path / "out").exists()


def test_set_of_a_key_that_the_run_overrides_is_an_error_naming_it(synthetic_split, tmp_path, capsys):
    """model_args.num_classes used to be ignored (the data set's 5 classes won): now it is refused, naming the
    key and where it came from; the same for the class names, and a value equal to the data set's is fine."""
    cfg = write_cfg(tmp_path / "c.yaml", tiny_cfg(synthetic_split, tmp_path / "w"))
    rc, err = run(capsys, "train", cfg, "--set", "model_args.num_classes=7", "--no-progress")
    assert rc == 2 and "--set model_args.num_classes=7" in err and "5 classes" in err
    assert not (tmp_path / "w" / "iter_2.pth").exists()
    rc, err = run(capsys, "train", cfg, "--set", "model_args.class_names=[a,b,c,d,e]")
    assert rc == 2 and "--set model_args.class_names" in err and "data.train" in err
    from segkit.config import load_config

    assert load_config(cfg, ["model_args.num_classes=5"]).model_args["num_classes"] == 5


@pytest.mark.parametrize("value", ["0", "-1"])
def test_max_images_below_one_is_a_usage_error(finished_run, synthetic_split_module, capsys, value):
    work, _ = finished_run
    with pytest.raises(SystemExit) as e:
        cli(["eval", str(work / "final"), "--data", str(synthetic_split_module), "--max-images", value])
    assert e.value.code == 2 and f"--max-images: must be >= 1, got {value}" in capsys.readouterr().err
    from segkit.engine.evaluator import evaluate

    dataset = segkit.data.build_dataset({"type": "split", "root": str(synthetic_split_module), "split": "test"})
    with pytest.raises(segkit.UsageError, match="max_images must be >= 1"):
        evaluate(segkit.load_model(work / "final"), dataset, max_images=int(value), progress=False)


def test_pil_images_in_every_mode_give_the_labels_of_their_file(tmp_path):
    """The same picture as a PIL image and as a file: the same labels (16-bit scaled, not saturated to white)."""
    torch.manual_seed(0)
    seg = segkit.Segmenter(segkit.build_model("segformer-b0", num_classes=5, decoder_dim=32), device="cpu")
    rng = np.random.default_rng(0)
    rgb = np.zeros((64, 96, 3), np.uint8)
    rgb[:32], rgb[32:, 48:] = [200, 40, 90], [20, 180, 60]
    rgb = np.clip(rgb + rng.normal(0, 25, rgb.shape), 0, 255).astype(np.uint8)
    gray16 = (rgb.mean(2) * 257).astype(np.uint16)
    images = {
        "I;16": Image.fromarray(gray16),
        "I": Image.fromarray(gray16.astype(np.int32)),
        "F": Image.fromarray(gray16.astype(np.float32) / 65535),
        "1": Image.fromarray(rgb).convert("1"),
        "LA": Image.fromarray(rgb).convert("LA"),
        "P": Image.fromarray(rgb).convert("P"),
        "CMYK": Image.fromarray(rgb).convert("CMYK"),
    }
    with pytest.warns(UserWarning):  # each conversion is named
        for mode, image in images.items():
            path = tmp_path / f"{mode.replace(';', '')}.{'tif' if mode in ('I', 'F', 'CMYK') else 'png'}"
            image.save(path)
            assert Image.open(path).mode == image.mode == mode
            from_file, from_object = seg(path).label, seg(image).label
            assert np.array_equal(from_file, from_object), mode
    saturated = np.asarray(images["I;16"].convert("RGB"))  # what the old conversion fed the model: white
    assert (saturated == 255).mean() > 0.95
    assert np.abs(seg(images["I;16"]).image[..., 0].astype(int) - rgb.mean(2)).max() <= 1


def test_zero_size_inputs_are_named(tmp_path):
    seg = segkit.Segmenter(segkit.build_model("segformer-b0", num_classes=5, decoder_dim=32), device="cpu")
    for i, empty in enumerate(
        [np.zeros((0, 0, 3), np.uint8), np.zeros((10, 0, 3), np.uint8), torch.zeros(3, 0, 8, dtype=torch.uint8)]
    ):
        with pytest.raises(segkit.DataError, match=r"input 0: empty image .*\(0 pixels\)"):
            seg(empty)
    with pytest.raises(segkit.DataError, match=r"input 1: empty image \(0x0 pixels\)"):
        seg([np.zeros((40, 40, 3), np.uint8), Image.new("RGB", (0, 0))])


def test_pretrain_on_a_single_class_folder_is_refused(tmp_path, capsys):
    for split in ("train", "val"):
        (tmp_path / "data" / split / "cat").mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((40, 40, 3), 60 * i, np.uint8)).save(tmp_path / "data" / split / "cat" / f"{i}.png")
    rc, err = run(
        capsys,
        "pretrain",
        "mit-b0",
        "--data",
        tmp_path / "data",
        "--epochs",
        "1",
        "--set",
        "warmup_epochs=0",
        "--work-dir",
        tmp_path / "w",
        "--no-progress",
    )
    assert rc == 1 and "only one class folder holds images (cat)" in err and "at least 2 classes" in err
    assert not (tmp_path / "w" / "last.pth").exists()


def test_whole_mode_on_a_huge_image_is_refused_before_starting(finished_run, tmp_path, capsys, monkeypatch):
    """An image whose whole-image inference needs more memory than there is: refused before the first image
    (here 64 MiB are "available"), with the estimate and slide inference as the way on; slide then works."""
    import segkit.engine.memory as memory

    work, _ = finished_run
    photo = tmp_path / "scan.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1024, 1280, 3), dtype=np.uint8)).save(photo)
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 64 * 2**20)
    ran = []
    orig = segkit.Segmentor.predict
    monkeypatch.setattr(
        segkit.Segmentor,
        "predict",
        lambda self, x, **kw: ran.append((kw.get("mode"), tuple(x.shape[-2:]))) or orig(self, x, **kw),
    )
    args = ["predict", work / "final", photo, "--scale", "0"]
    rc, err = run(capsys, *args, "--mode", "whole", "--out", tmp_path / "a")
    assert rc == 1 and str(photo) in err and "GiB" in err and "--mode slide" in err
    assert all(h * w <= 256 * 256 for _, (h, w) in ran)  # only the small memory probe ran, no image
    assert list((tmp_path / "a").iterdir()) == []
    ran.clear()
    rc, err = run(capsys, *args, "--mode", "slide", "--crop", "256", "256", "--out", tmp_path / "b")
    assert rc == 0 and ran == [("slide", (1024, 1280))] and (tmp_path / "b" / "scan_label.png").is_file()


# ----------------------------------------------------------------------------- 10. messages name the cause
def test_a_full_disk_names_the_file_and_what_was_kept(synthetic_split, tmp_path, capsys, monkeypatch):
    """ENOSPC while torch.save writes a checkpoint (PyTorch reports it as `inline_container.cc … unexpected pos`):
    the message names the file, says nothing was written there, the partial file is gone, the run's other files stay."""
    import errno
    import io

    import segkit.utils

    class FullDisk(io.FileIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    def full_for_checkpoints(path, mode="r", *args, **kwargs):
        return FullDisk(path, "wb") if ".iter_2.pth" in str(path) else open(path, mode, *args, **kwargs)

    monkeypatch.setattr(segkit.utils, "open", full_for_checkpoints, raising=False)
    work = tmp_path / "w"
    cfg = write_cfg(tmp_path / "c.yaml", tiny_cfg(synthetic_split, work, eval_interval=100))
    rc, err = run(capsys, "train", cfg, "--no-progress")
    target = work / "iter_2.pth"
    assert rc == 1 and f"no space left on device writing {target}; nothing was written to {target}" in err
    assert "inline_container" not in err and "unexpected pos" not in err
    assert not target.exists() and not list(work.glob(".*.tmp"))  # no partial file left behind
    assert (work / "config.yaml").is_file() and (work / "train_log.jsonl").is_file()
    # the API raises the same OutputError (an OSError with errno ENOSPC)
    with pytest.raises(segkit.errors.OutputError, match="no space left on device writing") as e:
        with segkit.utils.atomic_open(tmp_path / ".iter_2.pth.data") as f:
            f.write(b"x")
    assert e.value.errno == errno.ENOSPC


def test_a_real_full_disk_names_the_file(synthetic_split, tmp_path, capsys):
    """The same on a real full file system: a 1 MiB tmpfs holds the run's config and log but not a checkpoint.
    Needs permission to mount (root on Linux, as on the CI machines); skips with the reason elsewhere."""
    import subprocess

    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a 1 MiB tmpfs here: {mounted.stderr.decode().strip() or mounted.returncode}")
    try:
        work = small / "w"
        cfg = write_cfg(tmp_path / "c.yaml", tiny_cfg(synthetic_split, work, eval_interval=100))
        rc, err = run(capsys, "train", cfg, "--no-progress")
        target = work / "iter_2.pth"
        assert rc == 1 and f"no space left on device writing {target}" in err, err
        assert "Traceback" not in err and "inline_container" not in err and "unexpected pos" not in err
        assert not target.exists() and not list(work.glob(".*.tmp"))  # the partial checkpoint is removed
        assert (work / "config.yaml").is_file() and (work / "train_log.jsonl").is_file()
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)


def test_resume_auto_over_damaged_checkpoints_says_what_each_is(tmp_path, synthetic_split, capsys):
    """Text, a truncated file and a pickle with code where iter_*.pth are: each skipped with "not a checkpoint",
    "truncated" or "refused", never PyTorch's advice to set weights_only=False."""
    work = tmp_path / "work"
    cfg = write_cfg(tmp_path / "cfg.yaml", tiny_cfg(synthetic_split, work, eval_interval=100))
    assert cli(["train", str(cfg), "--no-progress"]) == 0
    good = (work / "iter_4.pth").read_bytes()
    (work / "iter_2.pth").write_text("not weights\n")
    (work / "iter_4.pth").write_bytes(good[: len(good) // 3])
    torch.save({"model": {}, "x": _Evil()}, work / "iter_6.pth")
    capsys.readouterr()
    rc = cli(["train", str(cfg), "--no-progress", "--resume", "auto"])
    out, err = capsys.readouterr()
    lines = {name: next(line for line in out.splitlines() if name in line) for name in ("iter_2", "iter_4", "iter_6")}
    assert "not a checkpoint" in lines["iter_2"] and "truncated or corrupt" in lines["iter_4"]
    assert "refused" in lines["iter_6"] and "weights_only=False" not in out + err and "Traceback" not in err
    assert rc == 2 and "no readable checkpoint" in err  # the finished run is refused, as without --resume


def test_did_you_mean_by_edit_distance_over_the_right_list(finished_run, synthetic_split_module, tmp_path, capsys):
    work, cfg = finished_run
    for args in (
        ["flops", "segformer-bo"],
        ["convert", work / "iter_2.pth", tmp_path / "c", "--model", "segformer-bo"],
    ):
        rc, err = run(capsys, *args)
        assert rc == 2 and "(did you mean segformer-b0?)" in err  # the model, not b5/b4/b3 (difflib's choice)
    rc, err = run(capsys, "train", cfg, "--set", "model=segformer-bo")
    assert rc == 2 and "(did you mean segformer-b0?)" in err
    # where a checkpoint is expected: registry names (a model name alone is not a checkpoint)
    image = next((synthetic_split_module / "images" / "test").iterdir())
    for name in ("segformer-bo", "segformer-b0"):
        rc, err = run(capsys, "predict", name, image, "--out", tmp_path / "p")
        assert rc == 2 and "did you mean segformer-b0_ade20k-512, segformer-b0_cityscapes-1024?" in err
    rc, err = run(capsys, "analyze", "layers", "segformer-bo")  # takes a zoo name or a checkpoint: both lists
    assert rc == 2 and "did you mean segformer-b0, segformer-b0_ade20k-512" in err
    rc, err = run(capsys, "pretrain", "mscan_t", "--data", tmp_path)
    assert rc == 2 and "did you mean mscan-t?" in err  # an encoder name where an encoder is expected
    from segkit.utils import edit_distance

    assert edit_distance("segformer-bo", "segformer-b0") < edit_distance("segformer-bo", "segformer-b5")


def test_a_bad_set_key_blames_set_not_the_file(finished_run, capsys):
    _, cfg = finished_run
    for item, key in (
        ("model_args.decoder_dm=64", "did you mean decoder_dim?"),
        ("data.train.roott=x", "did you mean root?"),
        ("data.train.type=splt", "did you mean split?"),
        ("optim.lr.x=1", "optim.lr is a value"),
        ("train.batch_size=[1", "not valid YAML"),
        ("optimlr", "expected KEY=VALUE"),
    ):
        rc, err = run(capsys, "train", cfg, "--set", item)
        assert rc == 2 and f"--set {item}:" in err and key in err and str(cfg) not in err, err
    bad = yaml.safe_load(cfg.read_text())
    bad["model_args"]["decoder_dm"] = 64
    rc, err = run(capsys, "train", write_cfg(cfg.with_name("bad.yaml"), bad))
    assert rc == 2 and "bad.yaml: model_args" in err and "--set" not in err  # in the file: the file is named


def test_a_wrong_device_lists_what_segkit_accepts(finished_run, synthetic_split_module, tmp_path, capsys):
    work, cfg = finished_run
    image = next((synthetic_split_module / "images" / "test").iterdir())
    rc, err = run(capsys, "predict", work / "final", image, "--out", tmp_path / "p", "--device", "cdua")
    assert rc == 2 and "--device 'cdua': segkit accepts auto, cpu, cuda or cuda:N" in err
    assert "xla" not in err and "privateuseone" not in err  # not PyTorch's internal device types
    rc, err = run(capsys, "train", cfg, "--set", "train.device=gpu")
    assert rc == 2 and "train.device" in err and "cuda" in err
    with pytest.raises(segkit.UsageError, match="device 'gpu': segkit accepts auto, cpu, cuda or cuda:N"):
        segkit.Segmenter(segkit.load_model(work / "final"), device="gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_refused_without_cuda_in_the_api_as_in_the_cli(finished_run, synthetic_split_module, tmp_path, capsys):
    work, _ = finished_run
    image = next((synthetic_split_module / "images" / "test").iterdir())
    rc, err = run(capsys, "predict", work / "final", image, "--out", tmp_path / "p", "--device", "cuda")
    assert rc == 1 and "--device cuda: CUDA is not available on this machine" in err  # the environment: 1
    with pytest.raises(segkit.errors.DeviceError) as e:
        segkit.Segmenter(segkit.load_model(work / "final"), device="cuda")
    assert isinstance(e.value, RuntimeError) and not isinstance(e.value, AssertionError)
    assert str(e.value).split(": ", 1)[1] == err.strip().split("--device cuda: ", 1)[1]  # the same message


def test_analyze_layer_index_out_of_range_names_the_valid_ones(finished_run, synthetic_split_module, tmp_path, capsys):
    work, _ = finished_run
    image = next((synthetic_split_module / "images" / "test").iterdir())
    args = ["analyze", "features", work / "final", "--images", image, "--device", "cpu"]
    rc, err = run(capsys, *args, "--layer", "backbone#9", "--out", tmp_path / "a")
    assert rc == 2 and "'backbone#9'" in err and "4 stages" in err and "#0, #1, #2, #3" in err
    rc, err = run(capsys, *args, "--layer", "backbon", "--out", tmp_path / "b")
    assert rc == 2 and "did you mean backbone," in err


def test_unknown_colour_errors_name_where_the_value_came_from(tmp_path, capsys):
    colours = _colour_layout(tmp_path / "raw", stray_colour=True)
    spec = {
        "type": "folder",
        "images_dir": str(tmp_path / "raw"),
        "labels_dir": str(tmp_path / "raw"),
        "label_suffix": "_mask.png",
        "label_colours": colours,
    }
    (tmp_path / "raw" / "meta.json").write_text(json.dumps({"unknown_colour": "ignor"}))
    with pytest.raises(segkit.DataError, match=r"raw/meta.json \(unknown_colour\): unknown_colour must be"):
        segkit.data.build_dataset(spec)
    (tmp_path / "raw" / "meta.json").unlink()
    cfg = tiny_cfg(tmp_path, tmp_path / "w")
    cfg["data"] = {"train": {**spec, "unknown_colour": 300}}
    rc, err = run(capsys, "train", write_cfg(tmp_path / "colour.yaml", cfg))
    assert rc == 2 and "colour.yaml: data.train.unknown_colour: unknown_colour must be" in err and "300" in err
    with pytest.raises(segkit.DataError, match=r"not in the palette .*set unknown_colour: ignore"):
        segkit.data.build_dataset(spec)[1]


def test_videos_that_cannot_be_opened_say_why(finished_run, tmp_path, capsys):
    work, _ = finished_run
    data = _video(tmp_path / "clip.mp4").read_bytes()
    cases = {
        "empty.mp4": (b"", "the file is empty"),
        "notes.mp4": (b"hello, not a video\n" * 20, "not a video container"),
        "cut.mp4": (data[: len(data) // 2], "without its 'moov' index: truncated"),
    }
    for name, (content, why) in cases.items():
        (tmp_path / name).write_bytes(content)
        rc, err = run(capsys, "predict", work / "final", tmp_path / name, "--out", tmp_path / f"out_{name}")
        assert rc == 1 and f"{tmp_path / name}: cannot open this video with OpenCV: " in err and why in err, err


def test_out_under_a_missing_or_read_only_location_names_the_path_and_reason(
    finished_run, synthetic_split_module, tmp_path, capsys
):
    work, _ = finished_run
    image = next((synthetic_split_module / "images" / "test").iterdir())
    rc, err = run(capsys, "predict", work / "final", image, "--out", "/proc/segkit-mount/out")
    assert rc == 1 and "--out /proc/segkit-mount/out: cannot create /proc/segkit-mount (" in err
    assert "/proc is the deepest folder of the path that exists" in err
    from segkit.utils import _mount_parent

    assert _mount_parent(Path("/mnt")) and _mount_parent(Path("/media/me")) and not _mount_parent(tmp_path)


# ----------------------------------------------------------------------------- 11. one exit-code policy
def test_exit_codes_are_one_policy_in_every_command(finished_run, synthetic_split_module, tmp_path, capsys):
    """0 success; 1 bad data, file or environment; 2 usage (an unknown model is 2 in train, flops, convert,
    benchmark and analyze alike; a missing file is 1 wherever one is read)."""
    work, cfg = finished_run
    image = next((synthetic_split_module / "images" / "test").iterdir())
    usage = [
        ["flops", "nope-b0"],
        ["convert", work / "iter_2.pth", tmp_path / "c", "--model", "nope-b0"],
        ["train", cfg, "--set", "model=nope-b0"],
        ["benchmark", "nope-b0"],
        ["analyze", "layers", "nope-b0"],
        ["pretrain", "nope-b0", "--data", tmp_path],
    ]
    for args in usage:
        rc, err = run(capsys, *args)
        assert rc == 2 and "nope-b0" in err and len(err.strip().splitlines()) == 1, (args, err)
    missing = tmp_path / "missing.pth"
    for args in (
        ["eval", missing, "--data", synthetic_split_module],
        ["predict", missing, image, "--out", tmp_path / "p"],
        ["predict", work / "final", tmp_path / "missing.png", "--out", tmp_path / "p"],
        ["convert", missing, tmp_path / "c2", "--model", "segformer-b0"],
        ["export", missing, "--out", tmp_path / "m.onnx"],
    ):
        rc, err = run(capsys, *args)
        assert rc == 1 and "missing" in err and len(err.strip().splitlines()) == 1, (args, err)


def test_api_errors_for_user_mistakes_are_segkit_errors_and_builtin_types(finished_run, tmp_path):
    from segkit.errors import NotFoundError, SegkitError, UnknownNameError, UsageError, UsageTypeError

    work, _ = finished_run
    model = segkit.load_model(work / "final")
    cases = [
        (lambda: segkit.build_model("segformer-bo"), (UnknownNameError, KeyError), "did you mean segformer-b0?"),
        (lambda: segkit.build_model("segformer-b0", 0), (UsageError, ValueError), "num_classes must be >= 1"),
        (lambda: segkit.build_model("segformer-b0", 3, decoder_dm=1), (UsageTypeError, TypeError), "decoder_dim"),
        (lambda: segkit.Segmenter(model, mode="tiles"), (UsageError, ValueError), "mode must be"),
        (lambda: segkit.Segmenter(model, device="cpu")(42), (UsageTypeError, TypeError), "got int"),
        (lambda: segkit.load_model(tmp_path / "nope"), (NotFoundError, FileNotFoundError), "nope"),
        (lambda: segkit.data.io.read_image(tmp_path / "no.png"), (NotFoundError, FileNotFoundError), "no.png"),
        (lambda: segkit.data.build_dataset({"type": "splt"}), (UsageError, ValueError), "did you mean split?"),
        (lambda: segkit.config.load_config("camvid/segnxt-t"), (NotFoundError, FileNotFoundError), "segnext-t"),
        (lambda: model.predict(torch.zeros(3, 64, 64)), (UsageError, ValueError), "(B, 3, H, W)"),
    ]
    for call, types, text in cases:
        with pytest.raises(SegkitError) as e:
            call()
        assert all(isinstance(e.value, t) for t in types) and text in str(e.value), (types, e.value)
    # the same message as the command line (which adds "segkit <command>: error: ")
    with pytest.raises(UnknownNameError) as e:
        segkit.build_model("nope-b0")
    assert str(e.value) == "unknown model 'nope-b0'; `segkit models` lists them"


def test_further_unusual_inputs_of_the_trials_are_refused_by_name(tmp_path, capsys):
    """A few of docs/reliability.md's further trials that used to pass silently (or misleadingly)."""
    from segkit.config import config_from_dict
    from segkit.data.protocol import TestProtocol

    model = segkit.build_model("segformer-b0", num_classes=5, decoder_dim=32)
    seg = segkit.Segmenter(model, device="cpu")
    result = seg(np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(segkit.UsageError, match="a file name, not a path"):
        result.save(tmp_path / "out", stem="../escape")  # used to write outside the folder
    assert not (tmp_path / "escape_label.png").exists()
    with pytest.raises(segkit.UsageError, match="input 0: an empty path"):
        seg("")
    with pytest.raises(segkit.UsageError, match=r"stride \(200, 200\) is larger than the window \(64, 64\)"):
        TestProtocol(mode="slide", crop_size=(64, 64), stride=(200, 200))  # gaps between windows
    with pytest.raises(segkit.UsageError, match="stride"):
        model.predict(torch.zeros(1, 3, 64, 64), mode="slide", crop_size=(32, 32), stride=(48, 48))
    with pytest.raises(segkit.UsageError, match="scales must be positive"):
        TestProtocol(scales=(0.0, 1.0))
    with pytest.raises(segkit.UsageError, match="decoder_dim must be an integer >= 1, got 0"):
        segkit.build_model("segformer-b0", num_classes=5, decoder_dim=0)  # used to train a 0-wide decoder
    with pytest.raises(segkit.ConfigError, match="optim.lr: must be a finite number > 0, got inf"):
        config_from_dict({"model": "segformer-b0", "optim": {"lr": float("inf")}})
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "x.png")
    rc, err = run(capsys, "predict", "segformer-b0_ade20k-512", tmp_path / "x.png", "--out", "")
    assert rc == 2 and "--out is empty" in err  # used to claim the current folder
    rc, err = run(capsys, "models", "--filter", "zzz")
    assert rc == 0 and "no model name contains 'zzz'" in err


# ----------------------------------------------------------------------------- 12. trials, round 2
def _coco(folder: Path, annotations, categories=None, images=None) -> dict:
    """A one-image COCO export (10x12 px) in ``folder``."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(folder / "images" / "a.png")
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(folder / "images" / "b.png")
    doc = {
        "images": images or [{"id": 1, "file_name": "a.png", "width": 12, "height": 10}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}] if categories is None else categories,
        "annotations": annotations,
    }
    (folder / "ann.json").write_text(json.dumps(doc))
    return {"type": "coco", "annotations": str(folder / "ann.json"), "images": str(folder / "images")}


def test_convert_data_refuses_an_out_that_holds_its_input(tmp_path, capsys):
    spec = _coco(
        tmp_path / "export", [{"id": 1, "image_id": 1, "category_id": 3, "segmentation": [[0, 0, 5, 0, 5, 5]]}]
    )
    before = hashes(tmp_path / "export")
    for out in (tmp_path / "export" / "images", tmp_path / "export"):  # used to move the export aside, rc 0
        rc, err = run(capsys, "convert-data", json.dumps(spec), "--out", out, "--overwrite")
        assert rc == 2 and f"--out {out} holds the input" in err and "another folder" in err
        assert hashes(tmp_path / "export") == before and not list(tmp_path.glob("**/*.prev-*"))
    rc, _ = run(capsys, "convert-data", json.dumps(spec), "--out", tmp_path / "export" / "converted")
    assert rc == 0 and (tmp_path / "export" / "converted" / "meta.json").is_file()  # a new folder inside is fine


@pytest.mark.parametrize(
    "annotations, categories, images, match",
    [
        ([{"id": 4, "image_id": 1, "category_id": 3, "segmentation": [[0, 0, 5, float("nan"), 5, 5]]}], None, None,
         r"annotation 4: polygon coordinates must be finite numbers, got nan"),
        ([{"id": 5, "image_id": 1, "category_id": 3, "segmentation": [["0", "0", "5", "0", "5", "5"]]}], None, None,
         r"annotation 5: polygon coordinates must be finite numbers, got '0'"),
        ([], [{"id": 3, "name": "cat"}, {"id": 3, "name": "dog"}], None,
         r"category id 3 is given twice, as 'cat' and 'dog'"),
        ([], [], None, r"'categories' is empty: no class to segment besides the background"),
        ([], None, [{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "b.png"}],
         r"image id 1 is given twice \(.*a.png, .*b.png\)"),
    ],
)  # fmt: skip
def test_coco_exports_that_used_to_read_silently_wrong_are_named(tmp_path, annotations, categories, images, match):
    """Each used to give a data set without a word: a polygon dropped, the last name of an id, one
    class (background) only, one image lost."""
    spec = _coco(tmp_path, annotations, categories, images)
    with pytest.raises(segkit.DataError, match=match) as e:
        segkit.data.build_dataset(spec)
    assert str(tmp_path / "ann.json") in str(e.value)


def test_coco_undecodable_rle_and_missing_paths_name_the_export(tmp_path):
    rle = {"size": [10, 12], "counts": "garbage!!"}
    spec = _coco(tmp_path, [{"id": 1, "image_id": 1, "category_id": 3, "segmentation": rle}])
    with pytest.raises(segkit.DataError, match=r"ann.json image 1 \(a.png\): pycocotools cannot decode an RLE"):
        segkit.data.build_dataset(spec).read_raw_label(0)  # named only the image file
    with pytest.raises(segkit.DataError, match=r"^annotations: .*nope.json does not exist"):
        segkit.data.build_dataset({**spec, "annotations": str(tmp_path / "nope.json")})  # said "dataset root"


def test_cvat_labelmap_with_a_repeated_colour_and_labelme_typos_are_named(tmp_path):
    (tmp_path / "labelmap.txt").write_text("background:0,0,0::\nroad:128,64,128::\nsky:128,64,128::\n")
    with pytest.raises(segkit.DataError, match=r"labelmap.txt:3: 'sky' has the colour 128,64,128 of 'road'"):
        segkit.data.build_dataset({"type": "cvat", "root": str(tmp_path)})  # was a UsageError naming no file
    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(tmp_path / "a.png")
    doc = {"imagePath": "a.png", "imageHeight": 10, "imageWidth": 20,
           "shapes": [{"label": "raod", "points": [[0, 0], [19, 9]], "shape_type": "rectangle"}]}  # fmt: skip
    (tmp_path / "a.json").write_text(json.dumps(doc))
    with pytest.raises(segkit.DataError) as e:
        segkit.data.build_dataset({"type": "labelme", "root": str(tmp_path), "classes": ["background", "road"]})
    assert str(e.value).endswith("not in classes ['background', 'road'] (did you mean road?)")  # no _background_


def test_binary_mask_errors_name_the_mask_folder(tmp_path):
    from segkit.data.binary import binary_convention

    for d in ("img", "masks"):
        (tmp_path / d).mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img" / "a.png")
    Image.fromarray(np.full((8, 8), 2, np.uint8)).save(tmp_path / "masks" / "a.png")
    ds = segkit.data.build_dataset(
        {
            "type": "folder",
            "images_dir": str(tmp_path / "img"),
            "labels_dir": str(tmp_path / "masks"),
            "classes": ["a", "b"],
        }
    )
    with pytest.raises(segkit.DataError, match=rf"\(labels in {tmp_path / 'masks'}\): task: binary needs masks"):
        binary_convention(ds, [0, 1, 2])  # named only the data set, "img"


def test_eval_threshold_on_a_multiclass_model_says_so(finished_run, synthetic_split_module, capsys):
    work, _ = finished_run
    rc, err = run(capsys, "eval", work / "final", "--data", synthetic_split_module, "--threshold", "0.3")
    assert rc == 2 and "is a multi-class model (5 classes" in err and "for binary models" in err
    assert "in (0, 1)" not in err  # 0.3 is in (0, 1): the old message named a range it met


def test_extreme_aspect_ratio_images_are_segmented(tmp_path):
    """A 1 x 100000 strip resized keep-ratio to a 32-px side used to round to 0 rows (ZeroDivisionError)."""
    from segkit.data.transforms import TestTransform, rescale_size

    assert rescale_size(1, 100000, (120, 90)) == (1, 120)
    assert TestTransform(scale=(120, 90), size_divisor=32).output_size(1, 100000) == (32, 3840)
    seg = segkit.Segmenter(segkit.build_model("segformer-b0", num_classes=5, decoder_dim=32), device="cpu")
    seg.transform = TestTransform(scale=(120, 90), size_divisor=32)
    assert seg(np.zeros((1, 100000, 3), np.uint8)).label.shape == (1, 100000)


def test_a_time_budget_needs_a_schedule_long_enough_to_be_sized(synthetic_split, tmp_path, capsys):
    """max_iters 4 with an 8-minute budget used to stop after 4 steps (4 s), rc 0: the length is first
    estimated after WARMUP_STEPS + FIRST_ESTIMATE steps."""
    cfg = write_cfg(tmp_path / "cfg.yaml", tiny_cfg(synthetic_split, tmp_path / "work"))
    rc, err = run(capsys, "train", cfg, "--no-progress", "--set", "schedule.time_budget=8m")
    assert rc == 2 and "schedule.max_iters: 4 with schedule.time_budget" in err and "max_iters >= 8" in err
    assert not (tmp_path / "work").exists()  # refused with the config, before the work dir


def test_binary_models_are_kept_off_the_onnx_path_that_would_label_all_background(tmp_path):
    # predict --onnx once wrote all-0 labels for a binary model, rc 0. The export now records the task (and
    # tests/test_onnx_binary_multiband.py checks the thresholded masks); a one-logit file without it is refused.
    import onnx

    from segkit.tools.export import export_onnx
    from segkit.tools.onnx_predict import OnnxModelError, OnnxSegmenter

    model = segkit.build_model("segformer-b0", num_classes=1, decoder_dim=32, task="binary")
    export_onnx(model, tmp_path / "m.onnx", shape=(64, 64))
    assert OnnxSegmenter(tmp_path / "m.onnx").is_binary
    proto = onnx.load(str(tmp_path / "m.onnx"))
    kept = [p for p in proto.metadata_props if p.key not in ("task", "threshold", "mask_values")]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.save(proto, str(tmp_path / "old.onnx"))  # as an older segkit wrote it
    with pytest.raises(OnnxModelError, match="one output logit but no 'task: binary' metadata"):
        OnnxSegmenter(tmp_path / "old.onnx")


def test_eval_set_without_config_is_refused(finished_run, synthetic_split_module, capsys):
    work, _ = finished_run
    rc, err = run(capsys, "eval", work / "final", "--data", synthetic_split_module, "--set", "data.test.split=x")
    assert rc == 2 and "--set overrides keys of --config; give --config CONFIG too" in err  # was ignored, rc 0


def test_eval_onnx_threshold_on_a_multiclass_export_is_refused(synthetic_split_module, tmp_path, capsys):
    from segkit.tools.export import export_onnx

    export_onnx(segkit.build_model("segformer-b0", num_classes=5, decoder_dim=32), tmp_path / "m.onnx", shape=(64, 64))
    rc, err = run(capsys, "eval", "--onnx", tmp_path / "m.onnx", "--data", synthetic_split_module, "--threshold", "0.5")
    assert rc == 2 and "m.onnx is a multi-class model (5 classes" in err  # was ignored, rc 0


def test_fifos_devices_and_link_loops_given_to_predict_are_named(tmp_path):
    """A FIFO named x.png used to block predict forever (reading waits for a writer); a link loop was
    called a broken link."""
    from segkit.utils import list_inputs

    os.mkfifo(tmp_path / "x.png")
    with pytest.raises(segkit.DataError, match=r"x.png: not a regular file \(a FIFO\)"):
        list_inputs(tmp_path / "x.png")
    with pytest.raises(segkit.DataError, match=r"/dev/null: not a regular file \(a character device\)"):
        list_inputs("/dev/null")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.warns(UserWarning, match=r"skipped 1 special file\(s\) \(x.png; a FIFO, not read\)"):
        assert list_inputs(tmp_path) == ([tmp_path / "a.png"], [])
    (tmp_path / "loop.png").symlink_to("loop.png")
    with pytest.raises(FileNotFoundError, match="points back to itself, a loop"):
        list_inputs(tmp_path / "loop.png")


def test_a_folder_given_as_an_output_file_is_named_without_a_foreign_example(tmp_path):
    from segkit.utils import claim_output

    (tmp_path / "vo").mkdir()
    with pytest.raises(OSError) as e:
        claim_output(
            tmp_path / "vo", kind="file", what="out"
        )  # Segmenter.video("v.mp4", "vo") said "e.g. vo/model.onnx"
    assert "is a folder; give a file name (a new name, or one inside" in str(e.value) and "onnx" not in str(e.value)


def test_analyze_refuses_a_multiband_model_by_name(tmp_path, capsys):
    """Its probes and maps are RGB: it used to fail with PyTorch's conv channel-mismatch message."""
    model = segkit.build_model(
        "segformer-b0", num_classes=2, decoder_dim=32, in_channels=4, mean=[120.0] * 4, std=[60.0] * 4
    )
    model.save_pretrained(tmp_path / "mb")
    rc, err = run(capsys, "analyze", "layers", tmp_path / "mb")
    assert rc == 2 and "takes 4-band images (model_args.in_channels: 4)" in err and "weight of size" not in err


def test_a_config_given_as_a_pipe_is_named(tmp_path, capsys):
    """``segkit train <(cat cfg.yaml)`` said *no such config file, nor a shipped config* of a path that exists."""
    os.mkfifo(tmp_path / "cfg.yaml")
    rc, err = run(capsys, "train", tmp_path / "cfg.yaml")
    assert rc == 1 and "cfg.yaml: not a regular file (a pipe or device); write the config to a file" in err


def test_animated_images_fifos_and_nul_stems_in_the_api_are_named(tmp_path):
    from segkit.data.io import read_image

    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (0, 120, 240)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    with pytest.warns(UserWarning, match=r"a.gif: GIF with 3 frames \(animated or multi-page\): only the first"):
        read_image(tmp_path / "a.gif")  # was read as its first frame without a word
    os.mkfifo(tmp_path / "x.png")
    with pytest.raises(segkit.DataError, match="x.png: not a regular file"):
        read_image(tmp_path / "x.png")  # waited for a writer forever
    result = segkit.Segmenter(segkit.build_model("segformer-b0", num_classes=2, decoder_dim=32), device="cpu")(
        np.zeros((40, 40, 3), np.uint8)
    )
    with pytest.raises(segkit.UsageError, match="a file name, not a path"):
        result.save(tmp_path / "sv", stem="a\x00b")  # was Python's own 'embedded null byte'
