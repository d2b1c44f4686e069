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
