"""The output policy (docs/reliability.md, "Outputs are never silently replaced"), one test per writing
command: results written once, the same command again into the same target exits 2 with a message
naming it and leaves the earlier files byte-for-byte as they were; with ``--overwrite`` the earlier
results are under ``<target>.prev-<time>`` (byte-identical) and the new ones where the output says.
Train and pretrain work dirs: tests/test_bad_inputs.py and tests/test_pretrain.py."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_synthetic_split

import segkit
from segkit.cli import main as cli
from segkit.errors import OutputExistsError, UsageError
from segkit.utils import claim_output, remove_stale_temporaries


def digest(target: Path) -> dict[str, str]:
    """SHA-256 of every file under a folder (relative names), or of one file."""
    if target.is_file():
        return {"": hashlib.sha256(target.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(target)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(target.rglob("*"))
        if p.is_file()
    }


def moved_copies(target: Path) -> list[Path]:
    pattern = f"{target.name}.prev-*" if not target.suffix else f"{target.stem}.prev-*{target.suffix}"
    return sorted(target.parent.glob(pattern))


def run(capsys, args) -> tuple[int, str, str]:
    rc = cli([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback (most recent call last)" not in captured.err
    return rc, captured.out, captured.err


def check_policy(capsys, args: list, target: Path) -> tuple[str, str]:
    """Run ``args`` three times: once (fresh), again (refused, nothing changed), with --overwrite
    (the old results moved aside, intact). Returns stdout and stderr of the last run."""
    rc, out, err = run(capsys, args)
    assert rc == 0, err
    before = digest(target)
    assert before
    rc, out, err = run(capsys, args)
    assert rc == 2, err
    assert str(target) in err and "--overwrite" in err and "nothing was changed" in err
    assert len(err.strip().splitlines()) == 1  # one line, no traceback
    assert digest(target) == before and moved_copies(target) == []
    rc, out, err = run(capsys, [*args, "--overwrite"])
    assert rc == 0, err
    (moved,) = moved_copies(target)
    assert digest(moved) == before  # the earlier results, byte for byte
    assert str(moved) in err and "--overwrite: moved the previous" in err  # the message says where they went
    assert target.exists() and digest(target)  # and the new results are where they were asked for
    return out, err


@pytest.fixture(scope="module")
def small_split(tmp_path_factory) -> Path:
    return make_synthetic_split(
        tmp_path_factory.mktemp("data") / "small", counts=(("train", 2), ("val", 1), ("test", 2)), size=(72, 96)
    )


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, small_split) -> Path:
    """A SegFormer-B0 with a 32-channel decoder, 5 classes, its test protocol a resize to 96×72."""
    torch.manual_seed(0)
    model = segkit.build_model("segformer-b0", num_classes=5, decoder_dim=32)
    model.train_config = {"test_transform": {"scale": [96, 72], "keep_ratio": True}}
    return model.save_pretrained(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def image(small_split) -> Path:
    return sorted((small_split / "images" / "test").iterdir())[0]


# ----------------------------------------------------------------------------- the commands
def test_eval_out(tiny_model, small_split, tmp_path, capsys):
    target = tmp_path / "ev"
    out, _ = check_policy(
        capsys, ["eval", tiny_model, "--data", small_split, "--max-images", "1", "--out", target], target
    )
    written = [Path(line.split("wrote ", 1)[1]) for line in out.splitlines() if line.startswith("wrote ")]
    assert {p.name for p in written} == {"metrics.json", "confusion_matrix.png"}
    assert all(p.parent == target and p.is_file() for p in written)


def test_predict_out(tiny_model, image, tmp_path, capsys):
    target = tmp_path / "pred"
    out, _ = check_policy(capsys, ["predict", tiny_model, image, "--out", target], target)
    written = [Path(p) for p in out.split()]
    assert [p.name for p in written] == [f"{image.stem}_label.png", f"{image.stem}_overlay.png"]
    assert all(p.parent == target and p.is_file() for p in written)


def test_predict_out_refuses_a_folder_holding_its_inputs(tiny_model, small_split, capsys):
    folder = small_split / "images" / "test"
    before = digest(folder)
    rc, _, err = run(capsys, ["predict", tiny_model, folder, "--out", folder, "--overwrite"])
    assert rc == 2 and str(folder) in err and digest(folder) == before


@pytest.fixture(scope="module")
def onnx_file(tiny_model, tmp_path_factory) -> Path:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    assert cli(["export", str(tiny_model), "--shape", "64", "64", "--dynamic", "--no-verify", "--out", str(path)]) == 0
    return path


def test_export_out(tiny_model, onnx_file, tmp_path, capsys):
    target = tmp_path / "model.onnx"
    out, _ = check_policy(capsys, ["export", tiny_model, "--shape", "64", "64", "--no-verify", "--out", target], target)
    assert f"wrote {target} " in out
    (moved,) = moved_copies(target)
    assert moved.name.startswith("model.prev-") and moved.suffix == ".onnx"


def test_predict_onnx_out(onnx_file, image, tmp_path, capsys):
    target = tmp_path / "pred_onnx"
    out, _ = check_policy(capsys, ["predict", "--onnx", onnx_file, image, "--out", target], target)
    assert [Path(p) for p in out.split()] == [target / f"{image.stem}_label.png", target / f"{image.stem}_overlay.png"]


def test_robustness_out(tiny_model, small_split, tmp_path, capsys):
    from segkit.tools.robustness import corruption_functions

    corruption_functions()  # segkit[tools] is a test dependency: fail, not skip, where it is missing
    target = tmp_path / "robust"
    args = ["robustness", tiny_model, "--data", small_split, "--corruptions", "fog", "--severities", "1"]
    out, _ = check_policy(capsys, [*args, "--max-images", "1", "--out", target], target)
    assert f"wrote {target}/robustness.json" in out and (target / "robustness.json").is_file()


def test_analyze_out(tiny_model, image, tmp_path, capsys):
    target = tmp_path / "features"
    args = ["analyze", "features", tiny_model, "--images", image, "--layer", "backbone#0", "--device", "cpu"]
    out, _ = check_policy(capsys, [*args, "--out", target], target)
    assert f"wrote {target}/features.*" in out and list(target.glob("features*"))


def test_convert_dst(tmp_path, capsys):
    src = tmp_path / "official.pth"
    torch.manual_seed(0)
    torch.save({"state_dict": segkit.build_model("segformer-b0", num_classes=5).state_dict()}, src)
    target = tmp_path / "converted"
    out, _ = check_policy(capsys, ["convert", src, target, "--model", "segformer-b0"], target)
    assert f"wrote {target}/model.safetensors" in out and (target / "model.safetensors").is_file()


def test_convert_refuses_a_dst_holding_its_src(tiny_model, capsys):
    before = digest(tiny_model)
    rc, _, err = run(capsys, ["convert", tiny_model / "model.safetensors", tiny_model, "--model", "segformer-b0"])
    assert rc == 2 and "SRC" in err and digest(tiny_model) == before


def test_benchmark_json(tmp_path, capsys):
    target = tmp_path / "b.json"
    args = ["benchmark", "segformer-b0", "--shape", "64", "64", "--num-classes", "3", "--warmup", "0", "--runs", "1"]
    out, _ = check_policy(capsys, [*args, "--threads", "1", "--device", "cpu", "--json", target], target)
    assert f"wrote {target}" in out and target.is_file()


# ----------------------------------------------------------------------------- the Python API
def test_segresult_save_names_in_memory_inputs_apart_and_never_replaces(tiny_model, tmp_path, capsys):
    seg = segkit.Segmenter(str(tiny_model), device="cpu")
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 255, (40, 56, 3), dtype=np.uint8) for _ in range(3)]
    results = seg(arrays)
    assert [r.name for r in results] == ["image_0000", "image_0001", "image_0002"]
    written = [p for r in results for p in r.save(tmp_path / "out")]
    assert len(set(written)) == 6 and all(p.is_file() for p in written)  # a batch never overwrites itself
    target = tmp_path / "out" / "image_0001_label.png"
    before = digest(target)
    with pytest.raises(OutputExistsError, match="image_0001_label.png") as e:
        results[2].save(tmp_path / "out", stem="image_0001")
    assert "overwrite=True" in str(e.value) and isinstance(e.value, UsageError)
    assert digest(target) == before and digest(tmp_path / "out" / "image_0001_overlay.png")
    paths = results[2].save(tmp_path / "out", stem="image_0001", overwrite=True)
    (moved,) = moved_copies(target)
    assert digest(moved) == before and paths[0] == target and str(moved) in capsys.readouterr().err
    assert digest(target) == digest(tmp_path / "out" / "image_0002_label.png")  # the new one is there


def test_segmenter_default_names_are_unique_within_a_call():
    from segkit.engine.segmenter import default_names

    assert default_names([None, "x/a.jpg", None, "y/a.png"]) == ["image_0000", "a_jpg", "image_0002", "a_png"]
    assert default_names(["x/a.png", "y/a.png"]) == ["a_png_0000", "a_png_0001"]


# ----------------------------------------------------------------------------- the helper itself
def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporaries_are_removed_and_named_when_an_output_folder_is_written(
    tiny_model, small_split, tmp_path, capsys
):
    target = tmp_path / "ev"
    target.mkdir()
    stale = target / f".metrics.json.{dead_pid()}.tmp"
    stale.write_bytes(b"x" * 4321)
    live = target / f".other.bin.{os.getpid()}.tmp"  # a save in progress (this process) stays
    live.write_bytes(b"y")
    remove_stale_temporaries(target)
    err = capsys.readouterr().err
    assert not stale.exists() and live.exists()
    assert f"removed {stale} (4.3 kB)" in err
    live.unlink()
    # a folder that held only an interrupted save's temporary file counts as empty
    stale.write_bytes(b"x" * 10)
    rc, out, err = run(capsys, ["eval", tiny_model, "--data", small_split, "--max-images", "1", "--out", target])
    assert rc == 0 and f"removed {stale}" in err and not stale.exists()
    assert (target / "metrics.json").is_file()


def test_claim_output_empty_folders_are_fine_and_the_current_folder_is_never_moved(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    assert claim_output(tmp_path / "empty") == tmp_path / "empty"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a.txt").write_text("a")
    monkeypatch.chdir(tmp_path / "full")
    with pytest.raises(OutputExistsError, match="current folder"):
        claim_output(".", overwrite=True)
    assert (tmp_path / "full" / "a.txt").read_text() == "a"
