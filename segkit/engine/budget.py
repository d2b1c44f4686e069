"""Training to a wall-clock budget (``schedule.time_budget``), like Ultralytics' ``time=``.

An iteration count cannot keep a time promise: the same step takes ~2.5× longer on one CPU of
the same machine kind than on another (native bfloat16 or not, CPU generation). With a budget,
the configured schedule is a *shape*, not a length: ``schedule.max_iters`` (M₀) is the reference
length, and warm-up (``warmup_iters``), evaluation (``train.eval_interval``) and checkpoints
(``train.checkpoint_interval``) keep their fractions of it. The run's length N is estimated from
the measured seconds per iteration and re-estimated as it goes:

    N = it + ⌊(budget − elapsed − pending evaluations) / (s per iteration)⌋

* the first estimate comes after :attr:`TimeBudget.WARMUP_STEPS` + :attr:`TimeBudget.FIRST_ESTIMATE`
  timed steps (until then N = M₀); later ones every 1 % of N and after each evaluation;
* seconds per iteration = the mean over this process's steps after its first
  :attr:`TimeBudget.WARMUP_STEPS` (allocator and kernel warm-up), data loading included,
  evaluations and checkpoints excluded (their time is counted in ``elapsed`` and the remaining
  evaluations are reserved at the duration of the last one);
* the poly decay and the warm-up follow ``it / N`` (:func:`segkit.engine.optim.poly_warmup_factor`
  with ``max_iters = N``, ``warmup_iters = W₀·N/M₀``), so the learning rate reaches its end
  value at the last step;
* evaluation / checkpoint happen when ``it·M₀/N`` crosses a multiple of the interval (not
  before the first estimate);
* the budget counts from the start of :func:`segkit.engine.trainer.train` (setup included) to the
  last step; the final validation and writing ``final/`` come after it. If the elapsed time
  reaches the budget before step N (a slower phase), the run stops there.

Resume continues the same schedule: the checkpoint stores the seconds consumed and the current
N; the resumed process re-measures its own speed and sizes the rest of the budget with it.

A budgeted run is not bit-reproducible (its length depends on the machine's speed); the
iteration-based schedule stays the default for exact reproducibility.
"""

from __future__ import annotations

import math
import time

from segkit.config import BUDGET_FIRST_ESTIMATE, BUDGET_UNTIMED_STEPS, parse_duration
from segkit.errors import ConfigError


def now() -> float:
    """The budget's clock (``time.monotonic``); one place, so that tests can drive it."""
    return time.monotonic()


class TimeBudget:
    """Sizes the schedule to ``seconds`` of wall-clock time (module docstring).

    ``schedule``: the :class:`segkit.config.ScheduleConfig` object the LR scheduler reads (a copy
    of the config's: its ``max_iters`` / ``warmup_iters`` are rewritten here as N is estimated).
    ``eval_interval`` / ``checkpoint_interval``: the configured intervals in reference iterations.
    ``started``: the :func:`now` at which this process's share of the budget began.
    """

    WARMUP_STEPS = BUDGET_UNTIMED_STEPS  # steps of each process not timed (first-call allocations, oneDNN)
    FIRST_ESTIMATE = BUDGET_FIRST_ESTIMATE  # timed steps before the first estimate

    def __init__(self, seconds: float, schedule, eval_interval: int, checkpoint_interval: int, started: float):
        self.seconds = float(seconds)
        self.schedule = schedule
        self.ref_iters, self.ref_warmup = int(schedule.max_iters), int(schedule.warmup_iters)
        first = self.WARMUP_STEPS + self.FIRST_ESTIMATE
        if self.ref_iters < first:  # the run would end at max_iters before its length was ever estimated
            raise ConfigError(
                f"schedule.max_iters: {self.ref_iters} with schedule.time_budget: the run's length is first "
                f"estimated after {first} steps, so a budgeted schedule needs max_iters >= {first} (it gives the "
                f"schedule's shape; the budget its length)"
            )
        self.eval_interval, self.checkpoint_interval = int(eval_interval), int(checkpoint_interval)
        self.started = started
        self.consumed_before = 0.0  # seconds of earlier processes (resume)
        self.steps_seen = 0  # steps of this process
        self.step_seconds, self.timed_steps = 0.0, 0
        self.last_eval_seconds = 0.0
        self.estimated = False
        self.next_check = 0
        self._fired: dict[str, int] = {}  # what -> crossings of its interval already fired (due)

    # ------------------------------------------------------------------ state
    @property
    def total(self) -> int:
        """The current estimate N of the run's length in iterations."""
        return int(self.schedule.max_iters)

    def elapsed(self) -> float:
        """Seconds of the budget used so far (earlier processes included)."""
        return self.consumed_before + now() - self.started

    def seconds_per_iter(self) -> float | None:
        return self.step_seconds / self.timed_steps if self.timed_steps else None

    def state_dict(self) -> dict:
        """What a checkpoint stores: the budget, the seconds consumed, N and the last evaluation's duration."""
        return {
            "seconds": self.seconds,
            "consumed": self.elapsed(),
            "total": self.total,
            "last_eval_seconds": self.last_eval_seconds,
            "estimated": self.estimated,
        }

    def load_state_dict(self, state: dict, it: int) -> None:
        """Continue from a checkpoint at step ``it``. With the same budget, N is the stored estimate;
        with another (``--set schedule.time_budget=…`` on resume), N is first sized from the earlier
        processes' overall rate (``consumed / it``), then re-measured as usual."""
        self.consumed_before = float(state["consumed"])
        self.last_eval_seconds = float(state.get("last_eval_seconds", 0.0))
        self.estimated = bool(state.get("estimated", False))
        total = int(state["total"])
        if float(state["seconds"]) != self.seconds and it > 0 and self.consumed_before > 0:
            total = it + int((self.seconds - self.consumed_before) * it / self.consumed_before)
        self._set_total(max(total, it))

    # ------------------------------------------------------------------ the loop's calls
    def step_done(self, it: int, seconds: float) -> None:
        """After optimiser step ``it`` (1-based) that took ``seconds`` (data loading included)."""
        self.steps_seen += 1
        if self.steps_seen <= self.WARMUP_STEPS:
            return
        self.step_seconds += seconds
        self.timed_steps += 1
        if self.timed_steps >= self.FIRST_ESTIMATE and it >= self.next_check:
            self.resize(it)

    def eval_done(self, it: int, seconds: float) -> None:
        """After an evaluation of ``seconds``: reserve that much per evaluation still to come, re-estimate."""
        self.last_eval_seconds = float(seconds)
        if self.timed_steps >= self.FIRST_ESTIMATE:
            self.resize(it)

    def out_of_time(self) -> bool:
        return self.elapsed() >= self.seconds

    def stop_now(self, it: int) -> None:
        """The budget is spent at step ``it``: the run ends here (N = ``it``)."""
        self._set_total(it)

    def due(self, it: int, interval: int, what: str = "eval") -> bool:
        """Whether step ``it`` crosses a multiple of ``interval`` reference iterations (at the current N) that
        ``what`` (``"eval"``, ``"checkpoint"``) has not yet fired at; never before the first estimate (the first
        few steps).

        Each crossing fires once: N is re-estimated after every evaluation, and an estimate that grows by a few
        iterations moves the crossing just passed to the next step — without the count of crossings already
        fired, the same point would evaluate twice, one step apart.
        """
        if not self.estimated:
            return False
        scale = self.ref_iters / max(self.total, 1) / interval
        crossed = math.floor(it * scale + 1e-9)
        fired = self._fired.get(what)
        if fired is None:  # first call of this process (a start, or a resume at step it - 1)
            fired = math.floor((it - 1) * scale + 1e-9)
        self._fired[what] = max(fired, crossed)
        return crossed > fired

    def resize(self, it: int) -> None:
        """Re-estimate N from the measured speed and what is left of the budget."""
        s = self.seconds_per_iter()
        if not s:
            return
        left = self.seconds - self.elapsed()
        evals_left = max(self._evals_between(it, self.total), 0)
        left -= evals_left * self.last_eval_seconds
        self._set_total(max(it + int(left // s), it + 1 if left > 0 else it))
        self.estimated = True
        self.next_check = it + max(1, self.total // 100)

    # ------------------------------------------------------------------ helpers
    def _evals_between(self, it: int, total: int) -> int:
        """Periodic evaluations after step ``it`` and before the last step (the final one is not counted)."""
        per = self.eval_interval * max(total, 1) / self.ref_iters  # iterations between evaluations
        if per <= 0:
            return 0
        return max(math.ceil(total / per) - 1 - math.floor(it / per), 0)

    def _set_total(self, total: int) -> None:
        total = max(int(total), 1)
        self.schedule.max_iters = total
        self.schedule.warmup_iters = int(round(self.ref_warmup * total / self.ref_iters))

    def describe(self) -> str:
        s = self.seconds_per_iter()
        speed = f"{s:.3f} s/it" if s else "speed not measured yet"
        return f"time budget {self.seconds:.0f} s: {speed}, estimated {self.total} iterations"


__all__ = ["TimeBudget", "parse_duration"]
