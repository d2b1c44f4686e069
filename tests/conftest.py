import json
import os
from pathlib import Path

import pytest
import torch

CAMVID = Path(os.environ.get("SEGKIT_CAMVID", Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"))


@pytest.fixture(autouse=True, scope="session")
def _threads():
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def mini_camvid(tmp_path):
    """A handful of real CamVid images in the shared layout (symlinked, never copied into the repo)."""
    return make_mini_camvid(tmp_path)


@pytest.fixture(scope="module")
def mini_camvid_module(tmp_path_factory):
    return make_mini_camvid(tmp_path_factory.mktemp("camvid"))


def make_mini_camvid(tmp_path):
    if not CAMVID.is_dir():
        pytest.skip(f"CamVid not found at {CAMVID}")
    root = tmp_path / "camvid_mini"
    counts = {"train": 6, "val": 2, "test": 2}
    meta = json.loads((CAMVID / "meta.json").read_text())
    for split, n in counts.items():
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        (root / "splits").mkdir(exist_ok=True)
        stems = (CAMVID / "splits" / f"{split}.txt").read_text().split()[:n]
        for s in stems:
            os.symlink(CAMVID / "images" / split / f"{s}.webp", root / "images" / split / f"{s}.webp")
            os.symlink(CAMVID / "labels" / split / f"{s}.png", root / "labels" / split / f"{s}.png")
        (root / "splits" / f"{split}.txt").write_text("\n".join(stems) + "\n")
    meta["splits"] = counts
    (root / "meta.json").write_text(json.dumps(meta))
    return root
