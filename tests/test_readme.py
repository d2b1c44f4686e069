"""Every command in README.md runs: the main job (with a 2-iteration schedule) and each line of the
CLI block (the Python blocks: tests/test_docs_blocks.py) — executed as written, in a folder laid out like a clone
next to the data (``../shared/data``), so a broken README fails CI.

Only speed settings are added to the main job (``--set schedule.max_iters=2 …`` for the training,
``--max-images 4`` for the test evaluation); the shell commands themselves are the README's.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, require_dataset

import segkit

README = (REPO / "README.md").read_text()
ENV = {**os.environ, "OMP_NUM_THREADS": "2", "SEGKIT_DATA": "", "PYTHONPATH": str(REPO)}
TRAIN_FAST = [
    "--set",
    "schedule.max_iters=2",
    "schedule.time_budget=null",
    "train.preload=false",
    "train.log_interval=1",
    "train.threads=1",
]


def block_after(marker: str, lang: str) -> str:
    """The first fenced ``lang`` code block after ``marker`` in the README."""
    rest = README[README.index(marker) :]
    m = re.search(rf"```{lang}\n(.*?)```", rest, re.S)
    return m.group(1)


def segkit_commands(text: str) -> list[list[str]]:
    """The ``segkit …`` commands of a shell block (``&&`` chains split; comments dropped)."""
    out = []
    for line in text.splitlines():
        line = line.split("  #")[0].strip()
        for part in line.split("&&"):
            words = shlex.split(part.strip())
            if words and words[0] == "segkit":
                out.append(words[1:])
    return out


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [sys.executable, "-m", "segkit", *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, f"segkit {' '.join(args)} failed:\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr
    return r


@pytest.fixture(scope="module")
def clone(tmp_path_factory, camvid_module):
    """``<tmp>/clone`` (the working directory) next to ``<tmp>/shared/data`` → the real data sets."""
    base = tmp_path_factory.mktemp("readme")
    (base / "shared").mkdir()
    os.symlink(camvid_module.parent, base / "shared" / "data")
    (base / "clone").mkdir()
    return base / "clone"


@pytest.fixture(scope="module")
def camvid_module():
    return require_dataset("camvid")


@pytest.fixture(scope="module")
def main_job(clone):
    commands = segkit_commands(block_after("**Main job**", "bash"))
    assert [c[0] for c in commands] == ["train", "eval", "predict"]
    outputs = []
    for cmd in commands:
        if cmd[0] == "train":
            cmd = cmd + TRAIN_FAST
        if cmd[0] == "eval":
            cmd = cmd + ["--max-images", "4"]
        outputs.append(run(cmd, clone))
    return clone, outputs


def test_readme_main_job(main_job):
    clone, (train, ev, pred) = main_job
    final = clone / "work_dirs" / "segformer-b0_camvid_10min" / "final"
    assert (final / "model.safetensors").is_file() and (final / "config.json").is_file()
    assert re.search(r"mIoU \d+\.\d\d", ev.stdout)
    assert (clone / "work_dirs" / "segformer-b0_camvid_10min" / "test" / "metrics.json").is_file()
    written = [Path(line) for line in pred.stdout.split()]
    assert [p.name for p in written] == ["0001TP_008550_label.png", "0001TP_008550_overlay.png"]
    assert all((clone / p).is_file() for p in written)


def test_readme_test_command_matches_ci():
    ci = (REPO / ".ci" / "run").read_text()
    readme = block_after("**Tests**", "bash").strip()
    tail = readme.split("pip install torch==2.13.0 && ")[1]
    assert tail.replace("pip install ", "pip install -q ") in ci


def test_readme_cli_block(clone, main_job):
    commands = segkit_commands(block_after("## CLI", "bash"))
    assert {c[0] for c in commands} >= {
        "models",
        "flops",
        "check-data",
        "eval",
        "predict",
        "benchmark",
        "robustness",
        "export",
        "convert",
        "analyze",
        "pretrain",
    }
    if not (clone / "segnext_tiny_512x512_ade_160k.pth").is_file():
        torch.save(
            {"state_dict": segkit.build_model("segnext-t", 150).state_dict()},
            clone / "segnext_tiny_512x512_ade_160k.pth",
        )
    if not (clone / "crops").is_dir():  # an ImageNet-style folder for `segkit pretrain`
        from test_pretrain import make_folder

        make_folder(clone / "crops", n_train=6, n_val=2, size=72)
    for cmd in commands:
        run(cmd, clone)
    assert (clone / "pretrain_mscan-t" / "encoder" / "mscan_t.pth").is_file()
    assert (clone / "erf" / "erf.png").is_file()
    assert (clone / "model.onnx").is_file() and (clone / "segnext-t-ade" / "model.safetensors").is_file()
    assert (clone / "robust" / "robustness.json").is_file()


def test_readme_pretrained_section(clone, camvid_module, tmp_path):
    """The "Use a pretrained model" command line, with the download served from a cache built here (no network):
    a converted SegNeXt-T in segkit's model cache. (The section's Python block, with NVIDIA's SegFormer from an
    offline Hugging Face cache, runs in tests/test_docs_blocks.py.)"""
    segkit.build_model("segnext-t", 150).save_pretrained(tmp_path / "cache" / "models" / "segnext-t_ade20k-512")
    image = next((camvid_module / "images" / "test").iterdir())
    (clone / "street.jpg").write_bytes(image.read_bytes())  # a WebP under a .jpg name: read by content
    env = {**ENV, "HF_HUB_CACHE": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "SEGKIT_CACHE": str(tmp_path / "cache")}
    (cmd,) = segkit_commands(block_after("## Use a pretrained model", "bash"))
    r = subprocess.run(
        [sys.executable, "-m", "segkit", *cmd], cwd=clone, env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (clone / "pred" / "street_label.png").is_file()
