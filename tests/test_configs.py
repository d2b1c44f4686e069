"""Shipped configs: in sync with scripts/make_configs.py, and every one validates."""

import importlib.util
from pathlib import Path

import pytest

from segkit.config import PACKAGED, load_config

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("make_configs", ROOT / "scripts" / "make_configs.py")
make_configs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_configs)
EXPECTED = make_configs.all_configs()


def test_configs_on_disk_match_the_generator():
    on_disk = {p.relative_to(PACKAGED).as_posix() for p in PACKAGED.rglob("*.yaml")}
    assert on_disk == set(EXPECTED), "run: python scripts/make_configs.py"
    for rel, cfg in EXPECTED.items():
        assert (PACKAGED / rel).read_text() == make_configs.render(cfg), rel


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_every_config_validates(rel):
    cfg = load_config(PACKAGED / rel)
    assert cfg.data.train is not None
    assert load_config(rel[: -len(".yaml")]).to_dict() == cfg.to_dict()  # shipped name resolves


@pytest.mark.parametrize("path", sorted((ROOT / "docs" / "results_data").glob("*.yaml")), ids=lambda p: p.name)
def test_documented_run_configs_load_and_find_data_through_segkit_data(path):
    """The configs behind docs/results.md are valid and read the data through SEGKIT_DATA."""
    cfg = load_config(path)
    assert all(str(getattr(cfg.data, s)["root"]).startswith("${SEGKIT_DATA}/") for s in ("train", "val", "test"))


@pytest.mark.parametrize("name", ["camvid/segformer-b0_10min", "camvid/segformer-b0_2h30"])
def test_cpu_budget_recipes_train_two_iterations(name, mini_camvid, tmp_path):
    """The README job's and the 2.5-hour recipe's configs load, validate and train: 2 iterations on real CamVid
    images (the budget switched off), a validation, and a ``final/`` model that keeps the recipe's settings."""
    import json
    import warnings

    from segkit.engine.trainer import train

    sets = [f"data.{s}.root={mini_camvid}" for s in ("train", "val", "test")]
    sets += ["schedule.time_budget=null", "schedule.max_iters=2", "train.eval_interval=2"]
    sets.append(f"train.work_dir={tmp_path}/w")
    shipped = load_config(name).to_dict()
    assert shipped["schedule"]["time_budget"] in ("7m", "2h30m")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 2 iterations end inside the warm-up: said, and meant here
        summary = train(load_config(name, sets), progress=False)
    assert summary["iterations"] == 2 and summary["final_mIoU"] is not None
    saved = json.loads((tmp_path / "w" / "final" / "config.json").read_text())["train_config"]
    for key in ("train_transform", "test_transform", "optim"):
        assert saved[key] == shipped[key], key
    assert saved["train"]["ema"] == shipped["train"]["ema"] and saved["train"]["dice_weight"] == 1.0
