"""Training to a wall-clock budget (schedule.time_budget): durations, the sizing of the schedule,
and a resumed budgeted run that continues the same schedule.

The trainer's budget clock (``segkit.engine.budget.now``) is driven by the tests: every training
step takes exactly one "second" of it and nothing else does, so the sizing is exact and the
tests do not depend on this machine's speed."""

import json
from pathlib import Path

import pytest
import torch
from test_trainer import tiny_cfg

import segkit.engine.budget as budget_mod
from segkit.config import ScheduleConfig, config_from_dict, parse_duration
from segkit.engine.budget import TimeBudget
from segkit.engine.trainer import Trainer, train
from segkit.errors import CheckpointError, ConfigError


@pytest.mark.parametrize(
    "value, seconds",
    [(600, 600), ("600", 600), ("90s", 90), ("8m", 480), ("2h30m", 9000), ("1h 5m 30s", 3930), ("2.5h", 9000)],
)
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["soon", "5d", "", "-5", 0, True, "1m-3s"])
def test_bad_durations_name_the_key(value):
    with pytest.raises(ConfigError, match="schedule.time_budget"):
        parse_duration(value)


def test_config_validates_the_budget(synthetic_split, tmp_path):
    cfg = tiny_cfg(synthetic_split, tmp_path / "w")
    cfg["schedule"].update(time_budget="8m", max_iters=10)  # >= 8: the length is estimated after 8 steps
    assert config_from_dict(cfg).schedule.time_budget == "8m"
    cfg["schedule"]["time_budget"] = "eight minutes"
    with pytest.raises(ConfigError, match="schedule.time_budget: expected seconds"):
        config_from_dict(cfg)


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_time_budget_sizes_warmup_evaluations_and_length(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(budget_mod, "now", clock)
    sched = ScheduleConfig(max_iters=10, warmup_iters=2)
    b = TimeBudget(30.0, sched, eval_interval=5, checkpoint_interval=5, started=clock())
    fired = []
    for it in range(1, 100):
        if it > b.total:
            break
        clock.t += 1.0
        b.step_done(it, 1.0)
        if b.due(it, 5) and it < b.total:
            fired.append(it)
        if it == 2:  # before the first estimate the configured schedule holds
            assert b.total == 10 and sched.warmup_iters == 2
    # 3 untimed + 5 timed steps, then N = 8 + (30 - 8) / 1 s = 30; warm-up and evaluations keep their fractions
    assert b.total == 30 and sched.max_iters == 30 and sched.warmup_iters == 6
    assert fired == [15]  # half-way, as eval_interval 5 of max_iters 10; the last step is finish()'s
    assert b.elapsed() == pytest.approx(30.0) and b.seconds_per_iter() == pytest.approx(1.0)


def _estimated_budget(monkeypatch, seconds: float, eval_interval: int, checkpoint_interval: int):
    """A budget over a 100-iteration shape (no warm-up) after 8 steps of one second each, so past its first
    estimate; returns it and the fake clock that drives it."""
    clock = FakeClock()
    monkeypatch.setattr(budget_mod, "now", clock)
    sched = ScheduleConfig(max_iters=100, warmup_iters=0)
    b = TimeBudget(seconds, sched, eval_interval, checkpoint_interval, started=clock())
    for it in range(1, 9):
        clock.t += 1.0
        b.step_done(it, 1.0)
    return b, clock


def test_an_evaluation_point_fires_once_when_the_estimate_grows_after_it(monkeypatch):
    """Seen in a 2.5-hour run: validation at iterations 701 *and* 702. The evaluation at 701 re-estimated N a few
    iterations higher (the steps had got faster), which moved the 10 % point just passed to step 702."""
    b, _ = _estimated_budget(monkeypatch, 1000.0, eval_interval=10, checkpoint_interval=10)
    b._set_total(205)  # the 10 % point is 20.5: crossed at step 21
    assert not b.due(19, 10) and not b.due(20, 10)
    assert b.due(21, 10) and b.due(21, 10, "checkpoint")  # each purpose fires once at the crossing
    b._set_total(215)  # re-estimated after that evaluation: the 10 % point moves to 21.5
    assert not b.due(22, 10) and not b.due(22, 10, "checkpoint")  # already fired: not again one step later
    fired = [it for it in range(23, 216) if b.due(it, 10)]
    assert fired == [43, 65, 86, 108, 129, 151, 172, 194, 215]  # the later points at the new N, once each


def test_pending_evaluations_are_reserved(monkeypatch):
    b, clock = _estimated_budget(monkeypatch, 100.0, eval_interval=25, checkpoint_interval=100)
    assert b.total == 100  # 8 + 92 s left at 1 s/it
    clock.t += 10.0  # an evaluation of 10 s: the three still to come before the end are reserved
    b.eval_done(8, 10.0)
    # left 100 - 18 = 82 s; with N ~ 8 + 52: evaluations at N/4, N/2, 3N/4 after step 8 -> 3 x 10 s reserved
    assert b.total == 8 + (82 - 30)


def _budget_cfg(root, work_dir, seconds):
    cfg = tiny_cfg(root, work_dir, eval_interval=5, keep_last=2)
    cfg["schedule"] = {"max_iters": 10, "warmup_iters": 2, "time_budget": seconds}
    return config_from_dict(cfg)


@pytest.fixture
def one_second_steps(monkeypatch):
    """The budget clock advances one second per training step, and not otherwise."""
    clock = FakeClock()
    monkeypatch.setattr(budget_mod, "now", clock)
    real_step = Trainer.step

    def step(self, images, labels):
        clock.t += 1.0
        return real_step(self, images, labels)

    monkeypatch.setattr(Trainer, "step", step)
    return clock


def test_budgeted_run_stops_on_time_with_the_schedule_completed(synthetic_split, tmp_path, one_second_steps):
    summary = train(_budget_cfg(synthetic_split, tmp_path / "w", "30s"), progress=False)
    w = tmp_path / "w"
    assert summary["iterations"] == 30 and summary["time_budget_s"] == 30.0 and summary["budget_used_s"] == 30.0
    assert (w / "final" / "model.safetensors").is_file()
    log = [json.loads(line) for line in open(w / "train_log.jsonl")]
    lrs = {r["iter"]: r["lr"] for r in log if r["type"] == "train"}
    assert sorted(lrs) == list(range(1, 31))
    assert lrs[30] == pytest.approx(0.0, abs=1e-12)  # the poly decay reached its end at the last step
    assert [r["iter"] for r in log if r["type"] == "eval"] == [15, 30]
    ck = torch.load(w / "iter_30.pth", weights_only=True)
    assert ck["budget"]["total"] == 30 and ck["budget"]["consumed"] == pytest.approx(30.0)


def test_resumed_budgeted_run_continues_the_same_schedule(synthetic_split, tmp_path, one_second_steps, monkeypatch):
    import segkit.engine.trainer as T

    train(_budget_cfg(synthetic_split, tmp_path / "a", "30s"), progress=False)
    real_save = T.save_checkpoint

    def save_then_die(path, payload):
        real_save(path, payload)
        if Path(path).name.startswith("iter_"):
            raise KeyboardInterrupt  # as a kill -9 right after the periodic checkpoint

    monkeypatch.setattr(T, "save_checkpoint", save_then_die)
    cfg = _budget_cfg(synthetic_split, tmp_path / "b", "30s")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    monkeypatch.setattr(T, "save_checkpoint", real_save)
    ck = torch.load(tmp_path / "b" / "iter_15.pth", weights_only=True)
    assert ck["budget"]["consumed"] == pytest.approx(15.0) and ck["budget"]["total"] == 30
    summary = train(cfg, resume="auto", progress=False)
    assert summary["iterations"] == 30 and summary["budget_used_s"] == pytest.approx(30.0)
    wa = torch.load(tmp_path / "a" / "iter_30.pth", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b" / "iter_30.pth", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # same length, same lr at every step, same weights
    lr_a = [json.loads(x) for x in open(tmp_path / "a" / "train_log.jsonl")]
    lr_b = [json.loads(x) for x in open(tmp_path / "b" / "train_log.jsonl")]
    lr_a = [(r["iter"], r["lr"]) for r in lr_a if r["type"] == "train"]
    lr_b = [(r["iter"], r["lr"]) for r in lr_b if r["type"] == "train"]
    assert lr_a == lr_b
    with pytest.raises(CheckpointError, match="end of its time budget"):
        train(cfg, resume=tmp_path / "b" / "iter_30.pth", progress=False)


def test_resume_refuses_a_checkpoint_without_budget(synthetic_split, tmp_path):
    train(config_from_dict(tiny_cfg(synthetic_split, tmp_path / "w")), progress=False)
    with pytest.raises(CheckpointError, match="without schedule.time_budget"):
        train(_budget_cfg(synthetic_split, tmp_path / "w", "30s"), resume=tmp_path / "w" / "iter_2.pth", progress=False)
