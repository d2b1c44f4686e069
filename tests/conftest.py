"""Shared fixtures: where the real data sets are, a small synthetic data set, and the CI skip policy.

Real data (CamVid, CCP) is never part of the repository. Tests that need it ask for the
``camvid`` / ``mini_camvid`` fixtures, which find it through one place: ``$SEGKIT_DATA``, else
``../shared/data`` next to the repository. Where it is missing such a test is skipped with the
reason — except under ``CI=true`` (``.ci/run`` sets it), where a missing data set is a failure.

Under ``CI=true`` every skipped test also fails the run unless its name is in
:data:`SKIP_ALLOWED` with the reason it may skip there.
"""

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("SEGKIT_DATA") or REPO.parent / "shared" / "data")
IN_CI = os.environ.get("CI", "").lower() == "true"
# torchrun subprocesses: one thread per rank, CPU only
TORCHRUN_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def torchrun_command(nproc: int, *args: str) -> list[str]:
    """``torchrun --standalone --nproc_per_node N ARGS…`` (``--standalone``: a free local port, no fixed one)."""
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    return [torchrun, "--standalone", "--nproc_per_node", str(nproc), *args]


# Tests that may skip even in CI, and why (matched against the start of the test name).
SKIP_ALLOWED = {
    "test_cuda_refused_without_cuda": "checks the refusal on a machine WITHOUT CUDA; skips where CUDA exists",
    "test_a_real_full_disk_names_the_file": "mounts a 1 MiB tmpfs: needs root; the ENOSPC test beside it runs anyway",
}


def require_dataset(name: str) -> Path:
    """``DATA_DIR / name``; skips (fails under ``CI=true``) with the reason when it is not there."""
    root = DATA_DIR / name
    if root.is_dir():
        return root
    msg = (
        f"data set {name!r} not found at {root}: set SEGKIT_DATA to the folder that holds {name}/ "
        f"(the data sets are not part of the repository)"
    )
    if IN_CI:
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(autouse=True, scope="session")
def _threads():
    torch.set_num_threads(min(2, os.cpu_count() or 1))


# ----------------------------------------------------------------------------- real data
@pytest.fixture(scope="session")
def camvid() -> Path:
    """The full CamVid data set (split layout)."""
    return require_dataset("camvid")


@pytest.fixture
def mini_camvid(tmp_path, camvid):
    """A handful of real CamVid images in the split layout (symlinked, never copied into the repo)."""
    return make_mini_camvid(tmp_path, camvid)


@pytest.fixture(scope="module")
def mini_camvid_module(tmp_path_factory):
    return make_mini_camvid(tmp_path_factory.mktemp("camvid"), require_dataset("camvid"))


def make_mini_camvid(tmp_path: Path, camvid: Path) -> Path:
    root = tmp_path / "camvid_mini"
    counts = {"train": 6, "val": 2, "test": 2}
    meta = json.loads((camvid / "meta.json").read_text())
    for split, n in counts.items():
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        (root / "splits").mkdir(exist_ok=True)
        stems = (camvid / "splits" / f"{split}.txt").read_text().split()[:n]
        for s in stems:
            os.symlink(camvid / "images" / split / f"{s}.webp", root / "images" / split / f"{s}.webp")
            os.symlink(camvid / "labels" / split / f"{s}.png", root / "labels" / split / f"{s}.png")
        (root / "splits" / f"{split}.txt").write_text("\n".join(stems) + "\n")
    meta["splits"] = counts
    (root / "meta.json").write_text(json.dumps(meta))
    return root


# ----------------------------------------------------------------------------- synthetic data
SYNTH_CLASSES = ["road", "sky", "car", "tree", "person"]
SYNTH_PALETTE = [[128, 64, 128], [70, 130, 180], [0, 0, 142], [107, 142, 35], [220, 20, 60]]


def make_synthetic_split(
    root: Path, counts=(("train", 6), ("val", 2), ("test", 2)), size=(360, 480), seed: int = 0
) -> Path:
    """A small data set in the split layout that needs no download: street-like scenes of coloured
    rectangles (5 classes, class colour + noise, so a model can learn them), PNG images and labels,
    ``size = (H, W)`` (CamVid's 360×480 by default), ``ignore_index`` 255 on a thin border."""
    rng = np.random.default_rng(seed)
    h, w = size
    info = {
        "name": "synthetic",
        "classes": SYNTH_CLASSES,
        "palette": SYNTH_PALETTE,
        "ignore_index": 255,
        "splits": dict(counts),
        "layout": {
            "image": "images/{split}/{stem}.png",
            "label": "labels/{split}/{stem}.png",
            "list": "splits/{split}.txt",
        },
    }
    (root / "splits").mkdir(parents=True)
    for split, n in counts:
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        stems = [f"{split}_{i:03d}" for i in range(n)]
        for stem in stems:
            label = np.zeros((h, w), np.uint8)
            label[: h // 3] = 1  # sky on top, road below
            for cls in (2, 3, 4, 2, 3):  # a few objects
                y0, x0 = rng.integers(h // 4, h - 40), rng.integers(0, w - 40)
                label[y0 : y0 + rng.integers(20, h // 3), x0 : x0 + rng.integers(20, w // 4)] = cls
            label[:2] = 255
            colours = np.array(SYNTH_PALETTE + [[0, 0, 0]] * 251, np.int16)[label]
            image = np.clip(colours + rng.normal(0, 20, colours.shape), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(root / "images" / split / f"{stem}.png")
            Image.fromarray(label).save(root / "labels" / split / f"{stem}.png")
        (root / "splits" / f"{split}.txt").write_text("\n".join(stems) + "\n")
    (root / "meta.json").write_text(json.dumps(info))
    return root


@pytest.fixture
def synthetic_split(tmp_path) -> Path:
    """A generated data set in the split layout (train 6 / val 2 / test 2, 5 classes, 360×480)."""
    return make_synthetic_split(tmp_path / "synthetic")


@pytest.fixture(scope="module")
def synthetic_split_module(tmp_path_factory) -> Path:
    return make_synthetic_split(tmp_path_factory.mktemp("synthetic") / "synthetic")


# ----------------------------------------------------------------------------- CI skip policy
_skipped: list[tuple[str, str]] = []


def pytest_runtest_logreport(report):
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append((report.nodeid, reason))


def pytest_sessionfinish(session, exitstatus):
    if not IN_CI:
        return
    bad = [
        (nid, why) for nid, why in _skipped if not any(nid.split("::")[-1].startswith(name) for name in SKIP_ALLOWED)
    ]
    if bad:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = [
            f"CI=true: {len(bad)} test(s) skipped without being on the allow-list (tests/conftest.py SKIP_ALLOWED):"
        ] + [f"  {nid}: {why}" for nid, why in bad]
        if tr is not None:
            tr.write_line("\n".join(lines), red=True)
        session.exitstatus = 1
