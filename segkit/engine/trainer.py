"""Iteration-based trainer implementing the reference recipe (SegFormer §4.1, SegNeXt §4.1; docs/protocols.md).

Read top to bottom: the data order (:class:`SeededSamples`, :class:`TrainBatchSampler`), what a
config builds (datasets, model, class weights), then :class:`Trainer`, the loop in named steps —
``prepare`` (device, seed, work dir, data, model, optimiser, resume), ``step``, ``log``,
``evaluate``, ``checkpoint``, ``finish`` — and last the helpers for resume and the run's files.
What training and :mod:`segkit.engine.pretrain` share (device / process setup, the work-dir
policy, checkpoint files, weight EMA) lives in :mod:`segkit.engine.runs`.

Reproducibility: every training sample's augmentation is seeded from ``(seed, epoch, index)``
(:class:`SeededSamples`), the sample order of epoch *e* from ``seed + e``, and the model-side
randomness (drop path, dropout, NMF bases) from the torch RNG whose state is checkpointed — so
a resumed run continues exactly as the uninterrupted one would, whatever the worker count.

Distributed: launched by ``torchrun`` (``WORLD_SIZE`` > 1) it uses DistributedDataParallel
(gloo on CPU, NCCL on CUDA); ``train.batch_size`` is the global batch, each rank taking
``batch_size / world_size`` consecutive samples of every global batch (an error if it does not
divide); only rank 0 writes files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from segkit.config import Config, parse_duration
from segkit.engine import budget as _budget
from segkit.engine.budget import TimeBudget
from segkit.engine.metrics import BINARY_KEYS
from segkit.engine.runs import (
    WeightEMA,
    WorkDirError,
    claim_work_dir,
    end_distributed,
    load_state_file,
    resolve_device,
    save_checkpoint,
    setup_runtime,
    worker_init,
    write_run_config,
)
from segkit.errors import CheckpointError, ConfigError, DataError, NotFoundError, UsageError

_worker_init = worker_init  # the name tests and older code import


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/Inf loss (message names the iteration and the last good checkpoint)."""


# ----------------------------------------------------------------------------- data order
class SeededSamples(torch.utils.data.Dataset):
    """Wraps a dataset so that item ``(epoch, index)`` is augmented with its own fixed seed.

    Python's ``random`` and NumPy's global RNG are reseeded from ``(seed, epoch, index)`` before
    the dataset's transform runs, so the augmentation of a sample does not depend on worker
    count, worker scheduling or where a resumed run restarted. Returns ``(image, label)``.
    """

    def __init__(self, dataset, seed: int):
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        s = np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0]
        random.seed(int(s))
        np.random.seed(int(s))
        try:
            item = self.dataset[index]
        except Exception as e:  # name the files even for errors that do not (cv2, numpy, ...)
            from segkit.data import DataError

            if isinstance(e, DataError):
                raise
            paths = getattr(self.dataset, "samples", None)
            where = " / ".join(str(p) for p in paths[index] if p) if paths else f"sample {index}"
            raise DataError(f"{where}: failed while loading/augmenting ({type(e).__name__}: {e})") from e
        return item["image"], item["label"]


class TrainBatchSampler:
    """Infinite stream of per-rank batches of ``(epoch, index)`` keys, starting at ``start_iter``.

    Epoch *e* is a permutation drawn with ``torch.Generator().manual_seed(seed + e)``; it is cut
    into global batches of ``global_batch`` (incomplete tail dropped) and rank *r* takes slice
    ``[r·b, (r+1)·b)`` of each (``b = global_batch / world_size``).
    """

    def __init__(
        self, num_samples: int, global_batch: int, seed: int, start_iter: int = 0, rank: int = 0, world_size: int = 1
    ):
        if global_batch % world_size:
            raise ConfigError(f"train.batch_size={global_batch} is not divisible by the {world_size} ranks")
        if num_samples < global_batch:
            raise DataError(f"dataset has {num_samples} samples, fewer than train.batch_size={global_batch}")
        self.n, self.batch, self.seed = num_samples, global_batch, seed
        self.start_iter, self.rank, self.per_rank = start_iter, rank, global_batch // world_size
        self.iters_per_epoch = num_samples // global_batch

    def __iter__(self):
        it = self.start_iter
        while True:
            epoch, pos = divmod(it, self.iters_per_epoch)
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch)).tolist()
            for b in range(pos, self.iters_per_epoch):
                chunk = order[b * self.batch : (b + 1) * self.batch]
                mine = chunk[self.rank * self.per_rank : (self.rank + 1) * self.per_rank]
                yield [(epoch, i) for i in mine]
                it += 1


class _LossModule(nn.Module):
    """Forward = ``Segmentor.loss`` so that DDP's gradient hooks see the training computation."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images, labels):
        return self.model.loss(images, labels)


def compile_for_training(model) -> None:
    """``torch.compile`` (inductor) the encoder and the decode head of ``model`` in place (``nn.Module.compile``).

    The parameter names stay as they are (no ``_orig_mod.`` prefix), so checkpoints and ``final/``
    are unchanged; the loss (resize + cross-entropy) runs eagerly. Not the whole loss in one graph:
    with PyTorch 2.13 on the CPU, compiling SegFormer's forward together with the resize of its
    logits gave **zero gradients** for every parameter while the loss value was right
    (``tests/test_compile.py`` checks the gradients of this path against eager ones).
    """
    model.backbone.compile()
    model.decode_head.compile()


# ----------------------------------------------------------------------------- what a config builds
def rng_state() -> dict:
    """All RNG states as tensors / plain values (loadable with ``torch.load(weights_only=True)``)."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "python": torch.tensor(py_state, dtype=torch.int64),
        "python_version": py_version,
        "python_gauss": py_gauss,
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate((state["python_version"], tuple(state["python"].tolist()), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def build_train_data(cfg: Config, mean=None, std=None, train_ds=None):
    """Training and validation datasets with the configured transforms (validation may be None).

    ``mean``/``std`` (0–255 scale) must be the model's own normalisation (ImageNet statistics by
    default; plain-ViT RSSeg models use 127.5/127.5). ``train_ds``: an already built
    ``cfg.data.train`` dataset (the trainer builds it first for the class metadata) that gets the
    train transform instead of listing the files a second time.
    """
    from segkit.data import TrainTransform, build_dataset
    from segkit.data.meta import IMAGENET_MEAN, IMAGENET_STD

    mean, std = tuple(mean or IMAGENET_MEAN), tuple(std or IMAGENET_STD)
    t = cfg.train_transform
    train_tf = TrainTransform(
        scale=tuple(t.scale),
        ratio_range=tuple(t.ratio_range),
        crop_size=tuple(t.crop_size),
        cat_max_ratio=t.cat_max_ratio,
        flip_prob=t.flip_prob,
        photometric=t.photometric,
        mean=mean,
        std=std,
    )
    if cfg.data.train is None:
        raise cfg.error("data.train", "the config names no training data set")
    with _binary_classes(cfg):
        if train_ds is None:
            train_ds = build_dataset(cfg.data.train, transform=train_tf)
        else:
            train_ds.transform = train_tf
        val_ds = build_dataset(cfg.data.val, transform=build_test_transform(cfg, mean, std)) if cfg.data.val else None
    for ds in (train_ds, val_ds):  # images with one channel per mean value (3 = RGB; 4 = RGB + NIR …)
        if ds is not None:
            ds.in_channels = len(mean)
    if val_ds is not None and cfg.is_binary:  # the training set's binary label convention
        from segkit.data.binary import apply_binary_convention

        apply_binary_convention(val_ds, train_ds.label_map)
    return train_ds, val_ds


def build_test_transform(cfg: Config, mean=None, std=None):
    """The configured test resize, normalising with ``mean``/``std`` (the model's; default ImageNet)."""
    from segkit.data import TestTransform
    from segkit.data.meta import IMAGENET_MEAN, IMAGENET_STD

    t = cfg.test_transform
    return TestTransform(
        scale=tuple(t.scale) if t.scale else None,
        keep_ratio=t.keep_ratio,
        size_divisor=t.size_divisor,
        mean=tuple(mean or IMAGENET_MEAN),
        std=tuple(std or IMAGENET_STD),
    )


def median_frequency_weights(pixel_counts, power: float = 1.0) -> list[float]:
    """Median-frequency class weights (Eigen & Fergus 2015): ``(median_k f_k / f_c) ** power``.

    ``pixel_counts``: labelled training pixels per class (K,), e.g. ``check_dataset(ds).pixel_counts``.
    ``f_c`` = class share of the labelled pixels; the median is over the classes present.
    Classes with no pixels get weight 0 (nothing to learn from; a warning says so).
    ``power`` 0 gives all ones, 0.5 a softened balancing. Returns K floats.
    """
    counts = np.asarray(pixel_counts, dtype=np.float64)
    present = counts > 0
    if not present.any():
        raise DataError("median_freq class weights: the training labels contain no labelled pixel")
    if not present.all():
        warnings.warn(
            f"median_freq class weights: classes {np.flatnonzero(~present).tolist()} have no training "
            f"pixels; their weight is 0",
            stacklevel=2,
        )
    freq = counts / counts.sum()
    median = float(np.median(freq[present]))
    weights = np.zeros_like(freq)
    weights[present] = (median / freq[present]) ** float(power)
    return [float(w) for w in weights]


def build_model_from_config(cfg: Config, dataset=None):
    """The zoo model named in ``cfg``, with the dataset's classes/palette, optionally pretrained."""
    from segkit.checkpoints import load_checkpoint
    from segkit.models.zoo import build_model

    meta = {}
    num_classes = cfg.model_args.get("num_classes")
    args = {k: v for k, v in cfg.model_args.items() if k != "num_classes"}
    if cfg.is_binary:  # one logit; the label space (class names, palette) has two classes
        args.update(task="binary", threshold=cfg.eval.threshold)
        num_classes = 1
    if dataset is not None and cfg.is_binary:
        meta = dict(class_names=dataset.classes, palette=dataset.palette, ignore_index=dataset.ignore_index)
        meta["mask_values"] = getattr(dataset, "mask_values", None)
    elif dataset is not None:
        if num_classes is not None and num_classes != dataset.num_classes:  # the data set's count wins: say so
            raise cfg.error(
                "model_args.num_classes",
                f"{num_classes}, but data.train ({getattr(dataset, 'name', '') or 'the training set'}) has "
                f"{dataset.num_classes} classes; the class count comes from the data set: remove the key "
                f"(or describe the classes in the data set: classes / meta.json)",
            )
        num_classes = dataset.num_classes
        meta = dict(class_names=dataset.classes, palette=dataset.palette, ignore_index=dataset.ignore_index)
    model = build_model(cfg.model, num_classes or 150, loss_avg=cfg.train.loss_avg, **meta, **args)
    if cfg.pretrained:  # a file / folder, a registry name (mscan-t_imagenet …) or a Hub repo id
        from segkit.hub import resolve_weights

        load_checkpoint(model, resolve_weights(cfg.pretrained), strict=cfg.pretrained_strict)
    return model


# ----------------------------------------------------------------------------- the loop
class Trainer:
    """One segmentation training run of ``cfg``, in named steps (the shape of Lightning's ``fit_loop``).

    :meth:`fit` = :meth:`prepare` (device, seed, work dir, data, model, optimiser, resume, loader),
    then until ``schedule.max_iters``: :meth:`step` (forward, loss, backward, optimiser),
    :meth:`log`, and at the configured intervals :meth:`evaluate` and :meth:`checkpoint`; then
    :meth:`finish` (last checkpoint, final evaluation, ``final/``, curves, summary). SIGTERM /
    SIGINT during the loop write a checkpoint and stop after the current step.

    Attributes set by :meth:`prepare` and read by the steps: ``rt`` (:class:`Runtime`), ``work_dir``,
    ``train_ds`` / ``val_ds``, ``model`` (the :class:`Segmentor` being trained), ``eval_model``
    (its weight average with ``train.ema``, else the model itself), ``optimizer``, ``scheduler``,
    ``scaler``, ``ema``, ``train_module`` (DDP-wrapped under torchrun), ``loader``, ``it`` (the
    number of optimiser steps done), ``best_miou``, ``skipped``.
    """

    def __init__(self, cfg: Config, resume: str | Path | None = None, progress: bool = True, overwrite: bool = False):
        self.cfg, self.resume, self.progress, self.overwrite = cfg, resume, progress, overwrite
        self.t_start, self.t_monotonic = time.time(), _budget.now()
        self.it, self.best_miou, self.skipped = 0, -1.0, 0
        self.budget: TimeBudget | None = None
        self.last_eval: dict = {}  # the latest validation result (for the model card of final/)
        self.last_good: Path | None = None
        self.stop_signal: int | None = None
        self.writer = self.log_f = self.bar = None

    # ------------------------------------------------------------------ prepare
    def prepare(self) -> None:
        """Everything before the first step, in this order (the order fixes the RNG draws)."""
        tc = self.cfg.train
        self.rt = setup_runtime(tc.device, tc.threads, tc.amp, what="train.amp")
        _seed_everything(tc.seed, tc.deterministic)
        self.work_dir = Path(tc.work_dir)
        self.ckpt_path, self.ck = self._claim_or_resume()
        if self.rt.is_main:
            write_run_config(self.work_dir, self.cfg.to_dict())
        self._build_data_and_model()
        self._build_optimisation()
        if self.ck is not None:
            self._restore(self.ck)
        self._build_loader()
        if self.rt.is_main:
            self.writer = _tensorboard(self.work_dir) if tc.tensorboard else None
            self.log_f = open(self.work_dir / "train_log.jsonl", "a")
            self.last_good = _latest_checkpoint(self.work_dir)

    def _claim_or_resume(self) -> tuple[Path | None, dict | None]:
        """Without ``resume``: the work dir must be free (or ``overwrite`` moves the old run aside).
        With it: the checkpoint to continue from, checked against the config; ``--resume auto`` that
        finds none claims the work dir as a run without ``resume`` would (a finished run whose
        checkpoints are all damaged is refused, or moved aside with ``overwrite``). Temporary files
        left by interrupted saves are removed (one line each)."""
        rt = self.rt
        if self.resume is None:
            claim_work_dir(
                self.work_dir,
                existing_run(self.work_dir),
                self.overwrite,
                is_main=rt.is_main,
                world=rt.world,
                elsewhere="train into another folder (--set train.work_dir=...)",
            )
            return None, None
        path, ck = resolve_resume(self.work_dir, self.resume, log=print if rt.is_main else None)
        if ck is None:  # --resume auto with nothing to continue: the work dir is claimed as without --resume
            existed = self.work_dir.is_dir()
            claim_work_dir(
                self.work_dir,
                existing_run(self.work_dir),
                self.overwrite,
                is_main=rt.is_main,
                world=rt.world,
                elsewhere="train into another folder (--set train.work_dir=...)",
                resumable=False,
            )
            if existed and rt.is_main:
                print(f"--resume auto: starting a fresh run in {self.work_dir}", flush=True)
            return None, None
        check_resume_checkpoint(path, ck, self.cfg)
        if rt.is_main:
            from segkit.utils import remove_stale_temporaries

            remove_stale_temporaries(self.work_dir, log=print)
        return path, ck

    def _build_data_and_model(self) -> None:
        """Datasets (transforms normalise with the model's own mean/std), the model, the label scan,
        class weights and loss options; the model on its device."""
        from segkit.data import build_dataset

        cfg, tc, rt = self.cfg, self.cfg.train, self.rt
        if cfg.data.train is None:
            raise cfg.error("data.train", "the config names no training data set")
        with _binary_classes(cfg):
            train_ds = build_dataset(cfg.data.train)  # class names/palette for the model; transform set below
        if cfg.is_binary:  # 0/1 or 0/255 masks read as {background, foreground} (segkit.data.binary)
            _binary_labels(train_ds, rt.rank, rt.world)
        ck = self.ck
        logits = 1 if cfg.is_binary else train_ds.num_classes
        if ck is not None and int(ck["meta"].get("num_classes", logits)) != logits:
            raise CheckpointError(
                f"{self.ckpt_path} holds a {ck['meta']['num_classes']}-class model, but data.train "
                f"({getattr(train_ds, 'name', '')}) has {train_ds.num_classes} classes"
            )
        model = build_model_from_config(cfg, train_ds)
        self.train_ds, self.val_ds = build_train_data(cfg, model.mean, model.std, train_ds=train_ds)
        report = None
        if tc.check_data or tc.class_weight == "median_freq":  # the weights need the pixel counts
            report = _scan_labels(self.train_ds, rt.rank, rt.world)
            if rt.is_main and tc.check_data:
                print(report)
        if tc.class_weight is not None:
            weights = (
                median_frequency_weights(report.pixel_counts, tc.class_weight_power)
                if tc.class_weight == "median_freq"
                else [float(v) for v in tc.class_weight]
            )
            model.set_class_weight(weights)
            if rt.is_main:
                print("class weights: " + ", ".join(f"{n} {w:.3g}" for n, w in zip(model.class_names, weights)))
        model.set_loss_options(tc.ohem_thresh, tc.ohem_min_kept, tc.dice_weight)
        if rt.is_main and tc.amp == "auto":
            print(f"train.amp=auto: {'bf16 autocast' if rt.amp else 'float32'} on {rt.device.type}", flush=True)
        if tc.preload:  # decoded samples kept in memory (shared with workers); saves the decode per sample
            self.train_ds.preload()
            if self.val_ds is not None:
                self.val_ds.preload()
        self.model = self._place_model(model)

    def _place_model(self, model):
        """The model on the device (channels-last, SyncBatchNorm as configured), after the memory check."""
        tc, rt = self.cfg.train, self.rt
        model = model.to(rt.device)
        if tc.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if rt.world > 1 and tc.sync_bn and rt.device.type != "cuda":
            raise ConfigError(
                "train.sync_bn=true needs CUDA (torch's SyncBatchNorm does not run on CPU); on CPU each "
                "rank normalises over its own share of the batch — set train.sync_bn=false"
            )
        if rt.world > 1 and tc.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if tc.memory_check and rt.device.type == "cpu":
            from segkit.engine.memory import check_step_fits

            # ranks of a CPU run share the machine: the whole global batch is resident at once
            check_step_fits(
                model, self.cfg.train_transform.crop_size, tc.batch_size, {"bf16": torch.bfloat16}.get(rt.amp)
            )
        return model

    def _build_optimisation(self) -> None:
        """Optimiser, poly schedule (sized by :class:`TimeBudget` with ``schedule.time_budget``) and
        (fp16) gradient scaler."""
        from segkit.engine.optim import build_optimizer, build_scheduler

        cfg, tc = self.cfg, self.cfg.train
        self.schedule = cfg.schedule  # what the LR scheduler reads; a budget rewrites the copy's length
        if cfg.schedule.time_budget is not None:
            self.schedule = dataclasses.replace(cfg.schedule)
            interval = tc.checkpoint_interval or tc.eval_interval
            seconds = parse_duration(cfg.schedule.time_budget)
            self.budget = TimeBudget(seconds, self.schedule, tc.eval_interval, interval, started=self.t_monotonic)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, self.schedule, cfg.optim.lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=(self.rt.amp == "fp16"))

    @property
    def max_iters(self) -> int:
        """The run's length: ``schedule.max_iters``, or with a time budget its current estimate."""
        return int(self.schedule.max_iters)

    def _restore(self, ck: dict) -> None:
        """Model, optimiser, schedule, scaler, counters and RNG states from a training checkpoint."""
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        if "scaler" in ck and ck["scaler"]:
            self.scaler.load_state_dict(ck["scaler"])
        self.it, self.best_miou, self.skipped = ck["iteration"], ck.get("best_metric", -1.0), ck.get("skipped_steps", 0)
        if self.budget is not None:  # the same schedule: seconds consumed and the length estimated so far
            self.budget.load_state_dict(ck["budget"], self.it)
        set_rng_state(ck["rng"])
        if self.rt.is_main:
            print(f"resumed from {self.ckpt_path} at iteration {self.it}")
            with open(self.work_dir / "train_log.jsonl", "a") as f:
                f.write(json.dumps({"type": "resume", "iter": self.it, "from": str(self.ckpt_path)}) + "\n")

    def _build_loader(self) -> None:
        """Weight EMA, ``torch.compile``, the DDP wrapper and the seeded batch stream from ``self.it``."""
        tc, rt, ck = self.cfg.train, self.rt, self.ck
        self.ema = WeightEMA(self.model, tc.ema) if tc.ema else None
        if self.ema is not None and ck is not None:
            if "ema" not in ck:
                raise CheckpointError(f"{self.ckpt_path}: train.ema is set but this checkpoint holds no weight average")
            self.ema.load_state_dict(ck["ema"])
        self.eval_model = self.ema.module if self.ema is not None else self.model  # what validation and final/ use
        if tc.compile:
            compile_for_training(self.model)  # inductor; see TrainConfig.compile for what it costs
        self.train_module = _LossModule(self.model)
        if rt.world > 1:
            self.train_module = nn.parallel.DistributedDataParallel(
                self.train_module,
                device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
                find_unused_parameters=False,
            )
        sampler = TrainBatchSampler(len(self.train_ds), tc.batch_size, tc.seed, self.it, rt.rank, rt.world)
        self.loader = torch.utils.data.DataLoader(
            SeededSamples(self.train_ds, tc.seed),
            batch_sampler=sampler,
            num_workers=tc.num_workers,
            pin_memory=rt.device.type == "cuda",
            persistent_workers=tc.num_workers > 0,
            worker_init_fn=worker_init,
            # own generator: creating the iterator must not consume the global
            # torch RNG, whose state the checkpoint restores (exact resume)
            generator=torch.Generator().manual_seed(tc.seed),
        )

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        """:meth:`prepare`, the loop, :meth:`finish`; returns the summary (best / final mIoU, paths, wall time)."""
        from tqdm import tqdm

        self.prepare()
        self.model.train()
        data_iter = iter(self.loader)
        self.bar = tqdm(
            total=self.max_iters,
            initial=self.it,
            disable=not (self.progress and self.rt.is_main),
            desc=f"train {self.cfg.model}",
            dynamic_ncols=True,
            smoothing=0.05,
        )
        old_handlers = self._catch_signals()
        try:
            while self.it < self.max_iters:
                started = _budget.now()
                losses = self.step(*next(data_iter))
                if losses is None:  # a skipped non-finite step: no logging, evaluation or checkpoint
                    continue
                if self.budget is not None:
                    self._follow_budget(_budget.now() - started)
                self.log(losses)
                if self._at_intervals():
                    break
        finally:
            self.bar.close()
            for s, h in old_handlers.items():
                signal.signal(s, h)
        return self.finish()

    def _follow_budget(self, step_seconds: float) -> None:
        """Time budget: re-estimate the run's length; end it here once the budget is spent."""
        budget = self.budget
        before = budget.total
        budget.step_done(self.it, step_seconds)
        if budget.out_of_time() and self.it < budget.total:
            budget.stop_now(self.it)
            if self.rt.is_main:
                from tqdm import tqdm

                tqdm.write(f"time budget of {budget.seconds:.0f} s spent at iteration {self.it}: finishing")
        if budget.total != before and self.bar is not None:
            self.bar.total = budget.total
            self.bar.refresh()
        if self.rt.world > 1:  # every rank runs the same length: rank 0's estimate decides
            n = torch.tensor([budget.total], dtype=torch.int64, device=self.rt.device)
            dist.broadcast(n, src=0)
            if int(n) != budget.total:
                budget.stop_now(int(n))

    def _catch_signals(self) -> dict:
        """SIGTERM / SIGINT set :attr:`stop_signal` (the loop checkpoints and stops); main thread only."""

        def on_signal(signum, frame):
            self.stop_signal = signum

        if not _in_main_thread():
            return {}
        return {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> dict | None:
        """One optimiser step on a batch: ``images`` (B, 3, H, W) float, ``labels`` (B, H, W) int64.

        Returns the loss terms (0-d tensors, ``"loss"`` their weighted sum), or ``None`` when the
        loss was NaN/Inf on any rank and ``train.on_nonfinite == "skip"`` (the step counts, the
        weights stay). Raises :class:`NonFiniteLossError` for such a loss with ``"stop"``.
        """
        tc, rt = self.cfg.train, self.rt
        images = images.to(rt.device, non_blocking=True)
        labels = labels.to(rt.device, non_blocking=True)
        if tc.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(rt.amp)
        with torch.autocast(rt.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            losses = self.train_module(images, labels)
        loss = losses["loss"]
        finite = torch.isfinite(loss.detach())
        if rt.world > 1:
            flag = finite.float().to(rt.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            finite = flag.bool()
        self.optimizer.zero_grad(set_to_none=True)
        if not bool(finite):
            if tc.on_nonfinite == "stop":
                raise NonFiniteLossError(
                    f"non-finite loss ({float(loss.detach()):.4g}) at iteration {self.it + 1}; last good checkpoint: "
                    f"{self.last_good or 'none written yet'}. Lower optim.lr, enable optim.grad_clip, or set "
                    f"train.on_nonfinite=skip to skip such steps."
                )
            self.skipped += 1
            self.it += 1
            self.scheduler.step()
            self.bar.update(1)
            return None
        self.scaler.scale(loss).backward()
        if self.cfg.optim.grad_clip:
            from segkit.engine.optim import clip_grad

            self.scaler.unscale_(self.optimizer)
            clip_grad(self.model, self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)
        self.scheduler.step()
        self.it += 1
        return losses

    def log(self, losses: dict) -> None:
        """Progress bar every step; loss terms and lr to ``train_log.jsonl`` (and TensorBoard) every
        ``train.log_interval`` steps and at the last. Rank 0 only."""
        if not self.rt.is_main:
            return
        it, max_iters = self.it, self.max_iters
        group = self.optimizer.param_groups[0]
        lr = group["lr"] / group.get("lr_mult", 1.0)
        self.bar.update(1)
        if it % self.cfg.train.log_interval == 0 or it == max_iters:
            vals = {k: float(v.detach()) for k, v in losses.items()}
            self.bar.set_postfix(loss=f"{vals['loss']:.3f}", lr=f"{lr:.2e}")
            rec = {"type": "train", "iter": it, "lr": lr, **vals, "time": round(time.time() - self.t_start, 2)}
            self.log_f.write(json.dumps(rec) + "\n")
            self.log_f.flush()
            if self.writer:
                for k, v in vals.items():
                    self.writer.add_scalar(f"train/{k}", v, it)
                self.writer.add_scalar("train/lr", lr, it)

    def _at_intervals(self) -> bool:
        """Evaluation and checkpoint at their intervals (not at the last step: :meth:`finish` does
        those); on a caught signal, a checkpoint. Returns True when the loop must stop."""
        tc, it, max_iters = self.cfg.train, self.it, self.max_iters
        if self._due(tc.eval_interval, "eval") and it < max_iters:
            started = _budget.now()
            self.evaluate()
            if self.budget is not None:
                self.budget.eval_done(it, _budget.now() - started)
        if self._due(tc.checkpoint_interval or tc.eval_interval, "checkpoint") and it < max_iters:
            self.checkpoint()
        if self.stop_signal is None:
            return False
        path = self.checkpoint()
        if self.rt.is_main:
            from tqdm import tqdm

            tqdm.write(f"received signal {self.stop_signal}: saved {path}, exiting")
        return True

    def _due(self, interval: int, what: str) -> bool:
        """Step ``it`` is a multiple of ``interval``; with a time budget, crosses that fraction of the run (once
        per ``what``: :meth:`segkit.engine.budget.TimeBudget.due`)."""
        if self.budget is not None:
            return self.budget.due(self.it, interval, what)
        return self.it % interval == 0

    def evaluate(self) -> float | None:
        """Validation mIoU of :attr:`eval_model` on ``data.val`` with ``cfg.eval`` (``None`` without
        ``data.val``); logged, and ``best.pth`` written when it is the best so far."""
        from segkit.engine.evaluator import evaluate

        if self.val_ds is None:
            return None
        ec, it, rt = self.cfg.eval, self.it, self.rt
        res = evaluate(
            self.eval_model,
            self.val_ds,
            mode=ec.mode,
            crop_size=ec.crop_size,
            stride=ec.stride,
            scales=ec.scales,
            flip=ec.flip,
            device=rt.device,
            progress=False,
            max_images=self.cfg.train.eval_max_images,
        )
        self.model.train()
        miou = float(res["mIoU"])
        self.last_eval = {k: v for k, v in res.items() if k != "confusion_matrix"}
        self.last_eval["iteration"] = it
        if rt.is_main:
            self._log_eval(res, miou)
            if miou > self.best_miou:
                self.best_miou = miou
                self.checkpoint(best=True)
        return miou

    def _log_eval(self, res: dict, miou: float) -> None:
        from tqdm import tqdm

        it = self.it
        rec = {"iter": it, "mIoU": miou, "aAcc": float(res["aAcc"]), "mAcc": float(res["mAcc"])}
        binary = {k: float(res[k]) for k in BINARY_KEYS if k in res}  # the binary task's foreground metrics
        rec.update(binary)
        self.log_f.write(json.dumps({"type": "eval", **rec}) + "\n")
        self.log_f.flush()
        extra = "".join(f"  {k} {v:.2f}" for k, v in binary.items())
        tqdm.write(f"[eval] iter {it}: mIoU {miou:.2f}  aAcc {res['aAcc']:.2f}  mAcc {res['mAcc']:.2f}{extra}")
        if self.writer:
            self.writer.add_scalar("val/mIoU", miou, it)
            self.writer.add_scalar("val/aAcc", float(res["aAcc"]), it)
            _log_overlays(self.writer, self.eval_model, self.val_ds, self.cfg.train.vis_images, it, self.rt.device)

    def checkpoint(self, best: bool = False) -> Path | None:
        """Write ``iter_<it>.pth`` (keeping the last ``train.keep_last``) or ``best.pth``, atomically;
        rank 0 only (``None`` elsewhere). Holds everything an exact resume needs."""
        if not self.rt.is_main:
            return None
        payload = {
            "segkit_checkpoint": 1,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "iteration": self.it,
            "best_metric": self.best_miou,
            "skipped_steps": self.skipped,
            "rng": rng_state(),
            "config": self.cfg.to_dict(),
            "meta": self.model.config(),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
            **({"budget": self.budget.state_dict()} if self.budget is not None else {}),
        }
        path = self.work_dir / ("best.pth" if best else f"iter_{self.it}.pth")
        save_checkpoint(path, payload)
        if not best:
            self.last_good = path
            for p in _iter_checkpoints(self.work_dir)[: -self.cfg.train.keep_last]:
                p.unlink(missing_ok=True)
        return path

    # ------------------------------------------------------------------ finish
    def finish(self) -> dict:
        """After the loop: unless stopped by a signal, the last checkpoint, the final evaluation and
        ``final/`` (the evaluated weights + training config + last validation) with ``curves.png``.
        Writes the summary line of ``train_log.jsonl`` and returns the summary."""
        rt = self.rt
        summary = {"iterations": self.it, "skipped_steps": self.skipped}
        budget_used = round(self.budget.elapsed(), 1) if self.budget is not None else None  # up to the last step
        if self.stop_signal is not None:  # the run did not finish: the caller says so (segkit train exits 128+N)
            summary["stopped_by_signal"] = int(self.stop_signal)
        if rt.world > 1:
            summary["ranks_max_weight_diff"] = _rank_weight_divergence(self.model, rt.device)
        if self.stop_signal is None:
            self.checkpoint()
            final_miou = self.evaluate()
            if rt.is_main:
                self.eval_model.train_config = self.cfg.to_dict()  # segkit eval of final/ uses its test protocol
                self.eval_model.eval_results = dict(self.last_eval) or None  # the final validation, for the card
                self.eval_model.save_pretrained(self.work_dir / "final")
                _plot_curves(self.work_dir)
            summary.update(final_mIoU=final_miou)
        if self.budget is not None:
            b = self.budget
            summary.update(time_budget_s=b.seconds, budget_used_s=budget_used, s_per_iter=b.seconds_per_iter())
        summary.update(
            best_mIoU=self.best_miou if self.best_miou >= 0 else None,
            work_dir=str(self.work_dir),
            wall_time_s=round(time.time() - self.t_start, 1),
        )
        if rt.is_main:
            self.log_f.write(json.dumps({"type": "summary", **summary}) + "\n")
            self.log_f.close()
            if self.writer:
                self.writer.close()
        if self.stop_signal is None:
            end_distributed(rt.world)
        return summary


def train(cfg: Config, resume: str | Path | None = None, progress: bool = True, overwrite: bool = False) -> dict:
    """Train ``cfg.model`` as configured (:class:`Trainer`); returns a summary dict (best mIoU, paths, wall time).

    Writes into ``cfg.train.work_dir``: ``iter_<N>.pth`` (last ``keep_last``), ``best.pth``,
    ``final/`` (``model.safetensors`` + ``config.json``), ``train_log.jsonl``, ``config.yaml``,
    ``curves.png`` and TensorBoard events under ``tb/``.

    A work dir belongs to one run. ``resume`` continues it: a checkpoint path, or ``"auto"`` for
    the newest readable ``iter_*.pth`` there (unreadable ones are skipped, each named; without
    any, the run starts fresh and says so). Without ``resume``, a work dir that already holds a
    run is refused (:class:`WorkDirError`, nothing is touched) unless ``overwrite``, which first
    moves the old run to ``<work_dir>.prev-<timestamp>`` — a finished run is never overwritten.

    Raises:
        WorkDirError: the work dir holds a run and neither ``resume`` nor ``overwrite`` is given.
        segkit.errors.CheckpointError: the resume checkpoint is unreadable, of another model or
            class count, or already past ``schedule.max_iters``.
        NonFiniteLossError: the loss became NaN/Inf and ``train.on_nonfinite == "stop"``.
        segkit.data.DataError: the labels fail the guard-rail scan.
    """
    return Trainer(cfg, resume=resume, progress=progress, overwrite=overwrite).fit()


# ----------------------------------------------------------------------------- resume and the run's files
def _binary_classes(cfg):
    """For ``task: binary``, :func:`segkit.data.datasets.classes_replaced` (a discovered class list is replaced by
    ``background, foreground``, so its "using N classes" note is not printed); otherwise a no-op context."""
    import contextlib

    from segkit.data.datasets import classes_replaced

    return classes_replaced() if cfg.is_binary else contextlib.nullcontext()


def _binary_labels(dataset, rank: int, world: int) -> None:
    """The binary task's label convention on ``dataset`` (:mod:`segkit.data.binary`): the stored mask values are
    read on rank 0 and broadcast; ``dataset.mask_values`` is set to ``[background, foreground]`` as stored."""
    from segkit.data.binary import apply_binary_convention, binary_convention, raw_label_values

    outcome: list = [None]
    if rank == 0:
        outcome[0] = raw_label_values(dataset)
    if world > 1:
        dist.broadcast_object_list(outcome, src=0)
    label_map, dataset.mask_values = binary_convention(dataset, outcome[0])
    apply_binary_convention(dataset, label_map)
    if rank == 0:
        print(f"task: binary: {dataset.name}: masks stored as {dataset.mask_values[0]} / {dataset.mask_values[1]} "
              f"(background / foreground)", flush=True)  # fmt: skip


def _scan_labels(dataset, rank: int, world: int):
    """The guard-rail label scan (:func:`segkit.data.check_dataset`), run on rank 0 only.

    Its outcome — the report, or the error — is broadcast, so every rank gets the same pixel
    counts (class weights) and every rank stops with the same error on bad labels instead of
    waiting in a collective for a rank that died. Reading each label once (not once per rank)
    matters for large data sets on a shared disk.
    """
    from segkit.data import DataError, check_dataset
    from segkit.data.checks import training_trap

    outcome: list = [None]
    error = None
    if rank == 0:
        try:
            report = check_dataset(dataset, progress=False)
            trap = training_trap(report, dataset)
            if trap:
                raise DataError(trap)
            outcome[0] = ("ok", report)
        except Exception as e:  # noqa: BLE001 - re-raised below on rank 0, reported on the others
            error = e
            outcome[0] = ("data_error" if isinstance(e, DataError) else "error", f"{type(e).__name__}: {e}")
    if world > 1:
        dist.broadcast_object_list(outcome, src=0)
    if error is not None:
        raise error
    kind, value = outcome[0]
    if kind == "data_error":
        raise DataError(f"label scan on rank 0: {value}")
    if kind == "error":
        raise RuntimeError(f"the label scan failed on rank 0: {value}")
    return value


def _rank_weight_divergence(model: nn.Module, device: torch.device) -> float:
    """Largest |difference| of any parameter between this rank and rank 0 (all-reduced max); 0 when in sync."""
    flat = torch.cat([p.detach().float().reshape(-1) for p in model.parameters()]).to(device)
    ref = flat.clone()
    dist.broadcast(ref, src=0)
    diff = (flat - ref).abs().max().reshape(1)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _iter_checkpoints(work_dir: Path) -> list[Path]:
    """``iter_<N>.pth`` files of a work dir, by iteration (oldest first)."""
    found = []
    for p in work_dir.glob("iter_*.pth"):
        try:
            found.append((int(p.stem.split("_")[1]), p))
        except ValueError:
            continue
    return [p for _, p in sorted(found)]


def _latest_checkpoint(work_dir: Path) -> Path | None:
    ckpts = _iter_checkpoints(work_dir)
    return ckpts[-1] if ckpts else None


def existing_run(work_dir: Path) -> str | None:
    """A short description of the run already in ``work_dir`` (``None`` when it holds none)."""
    if not work_dir.is_dir():
        return None
    ckpts = _iter_checkpoints(work_dir)
    parts = []
    if ckpts:
        parts.append(f"checkpoints up to iteration {ckpts[-1].stem.split('_')[1]}")
    if (work_dir / "best.pth").exists():
        parts.append("best.pth")
    if (work_dir / "final").exists():
        parts.append("final/ written")
    if not parts and (work_dir / "train_log.jsonl").exists():
        parts.append("a train_log.jsonl")
    return ", ".join(parts) or None


def _load_training_checkpoint(path: Path) -> dict:
    """A segkit training checkpoint, read safely (``weights_only``); :class:`CheckpointError` naming the file."""
    ck = load_state_file(path)
    if not (isinstance(ck, dict) and ck.get("segkit_checkpoint") and {"model", "optimizer", "iteration"} <= set(ck)):
        raise CheckpointError(f"{path}: not a segkit training checkpoint (no optimizer / iteration inside)")
    return ck


def resolve_resume(work_dir: Path, resume, log=print) -> tuple[Path | None, dict | None]:
    """``(path, checkpoint)`` to resume from, or ``(None, None)`` to start fresh.

    ``resume="auto"``: the newest ``iter_*.pth`` of ``work_dir`` that reads; unreadable ones are
    skipped, each named with the reason; with none ``log`` says why and ``(None, None)`` comes back
    (the caller then claims the work dir as a run without ``--resume`` does: a previous run there is
    refused or moved aside, :meth:`Trainer._claim_or_resume`).
    A path: that checkpoint (:class:`CheckpointError` naming it when it cannot be read).
    """
    log = log or (lambda *a, **k: None)
    if str(resume) != "auto":
        path = Path(resume)
        if path.is_dir():
            raise UsageError(f"--resume {path}: is a folder; give a checkpoint file (iter_<N>.pth), or --resume auto")
        if not path.is_file():
            raise NotFoundError(f"{path}: checkpoint to resume from not found")
        return path, _load_training_checkpoint(path)
    skipped = []
    for path in reversed(_iter_checkpoints(work_dir)):
        try:
            ck = _load_training_checkpoint(path)
        except CheckpointError as e:
            skipped.append(path)
            log(f"--resume auto: skipping {e}", flush=True)
            continue
        if skipped:
            log(f"--resume auto: resuming from {path}, the newest readable checkpoint", flush=True)
        return path, ck
    if skipped:
        log(
            f"--resume auto: no readable checkpoint in {work_dir} ({len(skipped)} unreadable)",
            flush=True,
        )
    elif not work_dir.is_dir():
        log(f"--resume auto: {work_dir} does not exist; starting a fresh run", flush=True)
    else:
        log(f"--resume auto: no checkpoint (iter_*.pth) in {work_dir}", flush=True)
    return None, None


def check_resume_checkpoint(path: Path, ck: dict, cfg: Config) -> None:
    """Refuse a checkpoint of another model, or one already at the end of the schedule (two-line messages);
    with ``schedule.time_budget``, one of a run without a budget or whose budget is spent."""
    meta = ck.get("meta") or {}
    if meta.get("model") and str(meta["model"]).lower() != cfg.model.lower():
        raise CheckpointError(
            f"{path} holds a {meta['model']} ({meta.get('num_classes', '?')} classes),\n"
            f"but the config builds {cfg.model}: resume a checkpoint of the same model, or drop --resume"
        )
    if cfg.schedule.time_budget is not None:
        state = ck.get("budget")
        if not state:
            raise CheckpointError(
                f"{path} comes from a run without schedule.time_budget:\nresume it with its own schedule "
                f"(--set schedule.time_budget=null), or start a budgeted run without --resume"
            )
        seconds = parse_duration(cfg.schedule.time_budget)
        if float(state["consumed"]) >= seconds:
            raise CheckpointError(
                f"{path} is at iteration {ck['iteration']} after {float(state['consumed']):.0f} s, the end of its "
                f"time budget ({seconds:.0f} s):\nnothing to resume (raise schedule.time_budget to train further)"
            )
        return
    if int(ck["iteration"]) >= cfg.schedule.max_iters:
        raise CheckpointError(
            f"{path} is at iteration {ck['iteration']}, already at or past schedule.max_iters="
            f"{cfg.schedule.max_iters}:\nnothing to resume (raise schedule.max_iters to train further)"
        )


def _tensorboard(work_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # an optional extra: scalars still go to train_log.jsonl
        print(
            'tensorboard is not installed: no TensorBoard events (pip install "segkit[tensorboard]", or set '
            "train.tensorboard: false); losses and metrics still go to train_log.jsonl",
            flush=True,
        )
        return None
    return SummaryWriter(str(work_dir / "tb"))


@torch.no_grad()
def _log_overlays(writer, model, dataset, n: int, it: int, device) -> None:
    from segkit.engine.visualize import overlay

    was_training = model.training
    model.eval()
    for i in range(min(n, len(dataset))):
        item = dataset[i]
        label = item["label"]
        pred = model.predict(item["image"][None].to(device), out_size=label.shape[-2:])[0].cpu().numpy()
        from segkit.data import read_image

        image = read_image(item["image_path"])
        if image.shape[:2] != pred.shape:
            continue
        writer.add_image(f"val/overlay_{i}", overlay(image, pred, model.palette), it, dataformats="HWC")
    model.train(was_training)


def _plot_curves(work_dir: Path) -> None:
    """``curves.png``: training loss and validation mIoU against iteration (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(line) for line in open(work_dir / "train_log.jsonl")]
    tr = [r for r in recs if r.get("type") == "train"]
    ev = [r for r in recs if r.get("type") == "eval"]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    ax[0].plot([r["iter"] for r in tr], [r["loss"] for r in tr])
    ax[0].set(xlabel="iteration", ylabel="loss", title="training loss")
    ax[1].plot([r["iter"] for r in ev], [r["mIoU"] for r in ev], marker="o")
    ax[1].set(xlabel="iteration", ylabel="mIoU (%)", title="validation mIoU")
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(work_dir / "curves.png", dpi=100)
    plt.close(fig)


__all__ = [  # with the names of segkit.engine.runs that callers import from here
    "NonFiniteLossError",
    "SeededSamples",
    "TrainBatchSampler",
    "Trainer",
    "WeightEMA",
    "WorkDirError",
    "build_model_from_config",
    "build_test_transform",
    "build_train_data",
    "check_resume_checkpoint",
    "claim_work_dir",
    "compile_for_training",
    "existing_run",
    "load_state_file",
    "median_frequency_weights",
    "resolve_device",
    "resolve_resume",
    "save_checkpoint",
    "train",
]
