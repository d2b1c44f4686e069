"""What a training run of either kind shares: segmentation (:mod:`segkit.engine.trainer`) and
classification pretraining (:mod:`segkit.engine.pretrain`).

* :func:`setup_runtime` — device, threads, autocast dtype and the ``torchrun`` process group;
* :func:`claim_work_dir` — a work dir belongs to one run: refuse, or move the old run aside;
* :func:`save_checkpoint` / :func:`load_state_file` — atomic writes, safe (``weights_only``) reads;
* :class:`WeightEMA` — an exponential moving average of the weights;
* :func:`worker_init` — DataLoader workers with one torch thread each.

Nothing here knows about segmentation or classification.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

from segkit.errors import CheckpointError, OutputExistsError
from segkit.utils import atomic_open, move_aside, remove_stale_temporaries


# ----------------------------------------------------------------------------- device and processes
def resolve_device(name: str) -> torch.device:
    """``train.device``: :func:`segkit.runtime.resolve_device` (``auto`` → CUDA when available, else CPU)."""
    from segkit.runtime import resolve_device as resolve

    return resolve(name, what="train.device")


def init_distributed(device: torch.device) -> tuple[int, int]:
    """``(rank, world_size)``; under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is created
    (NCCL on CUDA, gloo on the CPU), else ``(0, 1)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def barrier(world: int) -> None:
    """``dist.barrier()`` under torchrun; nothing in a single process."""
    if world > 1:
        dist.barrier()


def end_distributed(world: int) -> None:
    """The last call of a finished ``torchrun`` run on every rank: wait for all ranks, then destroy
    the process group. Nothing in a single process.

    Without it a rank that finishes first (rank 1, while rank 0 still writes ``final/``) tears the
    gloo process group down at interpreter exit with its communication threads still running:
    ``terminate called without an active exception``, SIGABRT, and torchrun stops rank 0 too
    (pytorch/pytorch#190489: Gloo's worker threads outlive the interpreter's finalisation).
    """
    if world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


@dataclass
class Runtime:
    """Where a run computes: ``device``, ``amp`` (``"bf16"``/``"fp16"``/``None``), ``rank`` of ``world`` processes."""

    device: torch.device
    amp: str | None
    rank: int
    world: int

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0


def setup_runtime(device: str, threads: int | None, amp: str | None, what: str) -> Runtime:
    """Device, torch intra-op threads, autocast dtype and process group of a run.

    ``amp="auto"`` becomes bf16 where the device runs it natively, else ``None``
    (:func:`segkit.runtime.resolve_amp`); an unsupported dtype raises :class:`UsageError` naming
    the config key ``what``. Under torchrun on CUDA each process takes GPU ``LOCAL_RANK``.
    """
    from segkit.runtime import check_amp, resolve_amp

    dev = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    amp = resolve_amp(amp, dev)  # "auto": bf16 where native, else float32
    check_amp(amp, dev, what=what)  # fp16 needs CUDA; bf16 a GPU or a CPU with native bfloat16
    rank, world = init_distributed(dev)
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(dev)
    return Runtime(dev, amp, rank, world)


def worker_init(worker_id: int) -> None:
    """DataLoader workers: one torch thread each, so they do not oversubscribe the cores.

    OpenCV's thread count is left alone: ``cv2.setNumThreads`` in a forked worker deadlocks once
    the parent has started OpenCV's pthreads pool (OpenCV 5.0, e.g. after the label scan resized
    real images), and the worker then never delivers a batch (tests/test_reliability.py).
    """
    torch.set_num_threads(1)


# ----------------------------------------------------------------------------- the work dir
class WorkDirError(OutputExistsError):
    """The work dir already holds a run and neither ``--resume`` nor ``--overwrite`` was given."""


def claim_work_dir(
    work_dir: Path,
    previous: str | None,
    overwrite: bool,
    *,
    is_main: bool,
    world: int,
    elsewhere: str,
    resumable: bool = True,
) -> None:
    """Make ``work_dir`` free for a new run: refuse, or move the previous run aside.

    ``previous`` describes the run already in ``work_dir`` (``None`` = nothing there). Without
    ``overwrite`` a previous run raises :class:`WorkDirError` and nothing is touched (the message
    offers ``--resume auto`` — unless ``resumable=False``: none of its checkpoints reads —,
    ``--overwrite`` and ``elsewhere``, e.g. "use another --work-dir"). With it, rank 0 renames the
    folder to ``<work_dir>.prev-<YYYYmmdd-HHMMSS>`` (:func:`segkit.utils.move_aside`, the output
    policy of every command) after every rank has looked (a barrier under torchrun): a finished run
    is never deleted. Either way rank 0 removes the temporary files that interrupted saves left
    (:func:`segkit.utils.remove_stale_temporaries`, one line each).
    """
    if not previous:
        if is_main:
            remove_stale_temporaries(work_dir, log=_log)
        return
    if not overwrite:
        how = (
            "Continue it with --resume auto, "
            if resumable
            else "--resume auto finds no readable checkpoint in it (see above); "
        )
        raise WorkDirError(
            f"{work_dir} already holds a run ({previous}); nothing was changed. {how}"
            f"start over with --overwrite (the old run is moved to {work_dir}.prev-<time>), or {elsewhere}"
        )
    barrier(world)  # every rank has looked before rank 0 moves the old run away
    if is_main:
        remove_stale_temporaries(work_dir, log=_log)
        moved = move_aside(work_dir)
        print(f"--overwrite: moved the previous run ({previous}) to {moved}", flush=True)


def _log(line: str) -> None:
    print(line, flush=True)


def write_run_config(work_dir: Path, config: dict) -> None:
    """Create ``work_dir`` and write ``config.yaml`` (the run's full configuration)."""
    import yaml

    from segkit.utils import atomic_write_bytes, check_output_dir

    check_output_dir(work_dir, what="work dir")  # OutputError naming the folder and the reason (read-only, …)
    atomic_write_bytes(work_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False).encode())


# ----------------------------------------------------------------------------- checkpoint files
def save_checkpoint(path: Path, payload: dict) -> None:
    """``torch.save`` through :func:`segkit.utils.atomic_open` (temporary file, fsync, atomic rename).

    A kill at any moment leaves the previous checkpoint under its name intact and loadable.
    """
    with atomic_open(path) as f:
        torch.save(payload, f)


def load_state_file(path: Path):
    """A training / pretraining checkpoint (``torch.load(path, weights_only=True)`` on the CPU), read by
    :func:`segkit.checkpoints.torch_load`: a :class:`CheckpointError` naming the file and what is wrong — not a
    checkpoint at all, truncated or corrupt, or holding Python objects (refused, never with PyTorch's advice to
    set ``weights_only=False``)."""
    from segkit.checkpoints import torch_load

    try:
        return torch_load(Path(path))
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({e.strerror or e})") from None


# ----------------------------------------------------------------------------- weight averaging
class WeightEMA:
    """Exponential moving average of a model's weights (``train.ema``; timm ``ModelEmaV2`` semantics).

    ``module`` is a frozen eval-mode copy of the model whose floating-point state (parameters and
    BatchNorm running statistics) follows ``decay_t · ema + (1 − decay_t) · current`` after every
    optimiser step, ``decay_t = min(decay, (1 + t) / (10 + t))``; integer buffers are copied.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for e, m in zip(self.module.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(d).add_(m.detach(), alpha=1.0 - d)
            else:
                e.copy_(m)

    def state_dict(self) -> dict:
        return {"weights": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["weights"])
        self.updates = int(state["updates"])


__all__ = [
    "Runtime",
    "WeightEMA",
    "WorkDirError",
    "barrier",
    "end_distributed",
    "claim_work_dir",
    "init_distributed",
    "load_state_file",
    "resolve_device",
    "save_checkpoint",
    "setup_runtime",
    "worker_init",
    "write_run_config",
]
