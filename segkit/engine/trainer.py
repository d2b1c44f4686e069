"""Iteration-based trainer implementing the reference recipe (SegFormer §4.1, SegNeXt §4.1; docs/protocols.md).

Read top to bottom: :func:`train` sets up (device, seed, data, model, optimiser, schedule),
optionally resumes, then runs the loop — forward/backward, logging, periodic evaluation and
checkpointing — and finishes with a final evaluation, ``final/`` (safetensors) and a plot.

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

from segkit.config import Config
from segkit.errors import CheckpointError, UsageError
from segkit.utils import atomic_open


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
            raise ValueError(f"train.batch_size={global_batch} is not divisible by the {world_size} ranks")
        if num_samples < global_batch:
            raise ValueError(f"dataset has {num_samples} samples, fewer than train.batch_size={global_batch}")
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


class WeightEMA:
    """Exponential moving average of a model's weights (``train.ema``; timm ``ModelEmaV2`` semantics).

    ``module`` is a frozen eval-mode copy of the model whose floating-point state (parameters and
    BatchNorm running statistics) follows ``decay_t · ema + (1 − decay_t) · current`` after every
    optimiser step, ``decay_t = min(decay, (1 + t) / (10 + t))``; integer buffers are copied.
    """

    def __init__(self, model: nn.Module, decay: float):
        import copy

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


# ----------------------------------------------------------------------------- helpers
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name} but CUDA is not available")
    return torch.device(name)


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


def save_checkpoint(path: Path, payload: dict) -> None:
    """``torch.save`` through :func:`segkit.utils.atomic_open` (temporary file, fsync, atomic rename).

    A kill at any moment leaves the previous checkpoint under its name intact and loadable.
    """
    with atomic_open(path) as f:
        torch.save(payload, f)


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def _init_distributed(device: torch.device) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


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
        raise ValueError("config has no data.train dataset")
    if train_ds is None:
        train_ds = build_dataset(cfg.data.train, transform=train_tf)
    else:
        train_ds.transform = train_tf
    val_ds = build_dataset(cfg.data.val, transform=build_test_transform(cfg, mean, std)) if cfg.data.val else None
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
        raise ValueError("median_freq class weights: the training labels contain no labelled pixel")
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
    if dataset is not None:
        num_classes = dataset.num_classes
        meta = dict(class_names=dataset.classes, palette=dataset.palette, ignore_index=dataset.ignore_index)
    model = build_model(cfg.model, num_classes or 150, loss_avg=cfg.train.loss_avg, **meta, **args)
    if cfg.pretrained:  # a file / folder, a registry name (mscan-t_imagenet …) or a Hub repo id
        from segkit.hub import resolve_weights

        load_checkpoint(model, resolve_weights(cfg.pretrained), strict=cfg.pretrained_strict)
    return model


# ----------------------------------------------------------------------------- the loop
def train(cfg: Config, resume: str | Path | None = None, progress: bool = True, overwrite: bool = False) -> dict:
    """Train ``cfg.model`` as configured; returns a summary dict (best mIoU, paths, wall time).

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
    from tqdm import tqdm

    from segkit.engine.evaluator import evaluate
    from segkit.engine.optim import build_optimizer, build_scheduler, clip_grad
    from segkit.runtime import check_amp, resolve_amp

    tc = cfg.train
    t_start = time.time()
    device = resolve_device(tc.device)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    amp = resolve_amp(tc.amp, device)  # "auto": bf16 where native, else float32
    check_amp(amp, device, what="train.amp")  # fp16 needs CUDA; bf16 a GPU or a CPU with native bfloat16
    rank, world = _init_distributed(device)
    is_main = rank == 0
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    _seed_everything(tc.seed, tc.deterministic)
    work_dir = Path(tc.work_dir)
    ck, ckpt_path = None, None
    if resume is None:
        claim_work_dir(
            work_dir,
            existing_run(work_dir),
            overwrite,
            is_main=is_main,
            world=world,
            elsewhere="train into another folder (--set train.work_dir=...)",
        )
    else:
        ckpt_path, ck = resolve_resume(work_dir, resume, log=print if is_main else None)
        if ck is not None:
            check_resume_checkpoint(ckpt_path, ck, cfg)
    if is_main:
        work_dir.mkdir(parents=True, exist_ok=True)
        import yaml

        (work_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    # ---------------- data (transforms normalise with the model's own mean/std)
    from segkit.data import build_dataset

    if cfg.data.train is None:
        raise ValueError("config has no data.train dataset")
    train_ds = build_dataset(cfg.data.train)  # class names/palette for the model; transform set below
    if ck is not None and int(ck["meta"].get("num_classes", train_ds.num_classes)) != train_ds.num_classes:
        raise CheckpointError(
            f"{ckpt_path} holds a {ck['meta']['num_classes']}-class model, but data.train "
            f"({getattr(train_ds, 'name', '')}) has {train_ds.num_classes} classes"
        )
    model = build_model_from_config(cfg, train_ds)
    train_ds, val_ds = build_train_data(cfg, model.mean, model.std, train_ds=train_ds)
    report = None
    if tc.check_data or tc.class_weight == "median_freq":  # the weights need the pixel counts
        report = _scan_labels(train_ds, rank, world)
        if is_main and tc.check_data:
            print(report)
    if tc.class_weight is not None:
        weights = (
            median_frequency_weights(report.pixel_counts, tc.class_weight_power)
            if tc.class_weight == "median_freq"
            else [float(v) for v in tc.class_weight]
        )
        model.set_class_weight(weights)
        if is_main:
            print("class weights: " + ", ".join(f"{n} {w:.3g}" for n, w in zip(model.class_names, weights)))
    model.set_loss_options(tc.ohem_thresh, tc.ohem_min_kept, tc.dice_weight)
    if is_main and tc.amp == "auto":
        print(f"train.amp=auto: {'bf16 autocast' if amp else 'float32'} on {device.type}", flush=True)
    if tc.preload:  # decoded samples kept in memory (shared with workers); saves the decode per sample
        train_ds.preload()
        if val_ds is not None:
            val_ds.preload()
    model = model.to(device)
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if world > 1 and tc.sync_bn and device.type != "cuda":
        raise ValueError(
            "train.sync_bn=true needs CUDA (torch's SyncBatchNorm does not run on CPU); on CPU each "
            "rank normalises over its own share of the batch — set train.sync_bn=false"
        )
    if world > 1 and tc.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if tc.memory_check and device.type == "cpu":
        from segkit.engine.memory import check_step_fits

        # ranks of a CPU run share the machine: the whole global batch is resident at once
        check_step_fits(model, cfg.train_transform.crop_size, tc.batch_size, {"bf16": torch.bfloat16}.get(amp))

    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.optim.lr)
    scaler = torch.amp.GradScaler("cuda", enabled=(amp == "fp16"))
    start_iter, best_miou, skipped = 0, -1.0, 0
    history: list[dict] = []

    if ck is not None:
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        if "scaler" in ck and ck["scaler"]:
            scaler.load_state_dict(ck["scaler"])
        start_iter, best_miou, skipped = ck["iteration"], ck.get("best_metric", -1.0), ck.get("skipped_steps", 0)
        set_rng_state(ck["rng"])
        if is_main:
            print(f"resumed from {ckpt_path} at iteration {start_iter}")
            with open(work_dir / "train_log.jsonl", "a") as f:
                f.write(json.dumps({"type": "resume", "iter": start_iter, "from": str(ckpt_path)}) + "\n")

    ema = WeightEMA(model, tc.ema) if tc.ema else None
    if ema is not None and ck is not None:
        if "ema" not in ck:
            raise CheckpointError(f"{ckpt_path}: train.ema is set but this checkpoint holds no weight average")
        ema.load_state_dict(ck["ema"])
    eval_model = ema.module if ema is not None else model  # what validation scores and final/ holds
    if tc.compile:
        compile_for_training(model)  # inductor; see TrainConfig.compile for what it costs
    train_module = _LossModule(model)
    if world > 1:
        train_module = nn.parallel.DistributedDataParallel(
            train_module, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False
        )
    sampler = TrainBatchSampler(len(train_ds), tc.batch_size, tc.seed, start_iter, rank, world)
    loader = torch.utils.data.DataLoader(
        SeededSamples(train_ds, tc.seed),
        batch_sampler=sampler,
        num_workers=tc.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=tc.num_workers > 0,
        worker_init_fn=_worker_init,
        # own generator: creating the iterator must not consume the global
        # torch RNG, whose state the checkpoint restores (exact resume)
        generator=torch.Generator().manual_seed(tc.seed),
    )
    writer = _tensorboard(work_dir) if (is_main and tc.tensorboard) else None
    log_f = open(work_dir / "train_log.jsonl", "a") if is_main else None
    last_good = _latest_checkpoint(work_dir) if is_main else None

    stop = {"signal": None}

    def _on_signal(signum, frame):
        stop["signal"] = signum

    old_handlers = (
        {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)} if _in_main_thread() else {}
    )

    def checkpoint(it: int, best: bool = False) -> Path | None:
        nonlocal last_good
        if not is_main:
            return None
        payload = {
            "segkit_checkpoint": 1,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "iteration": it,
            "best_metric": best_miou,
            "skipped_steps": skipped,
            "rng": rng_state(),
            "config": cfg.to_dict(),
            "meta": model.config(),
            **({"ema": ema.state_dict()} if ema is not None else {}),
        }
        path = work_dir / ("best.pth" if best else f"iter_{it}.pth")
        save_checkpoint(path, payload)
        if not best:
            last_good = path
            old = sorted(work_dir.glob("iter_*.pth"), key=lambda p: int(p.stem.split("_")[1]))
            for p in old[: -tc.keep_last]:
                p.unlink(missing_ok=True)
        return path

    last_eval: dict = {}  # the latest validation result (for the model card of final/)

    def run_eval(it: int) -> float | None:
        nonlocal best_miou
        if val_ds is None:
            return None
        ec = cfg.eval
        res = evaluate(
            eval_model,
            val_ds,
            mode=ec.mode,
            crop_size=ec.crop_size,
            stride=ec.stride,
            scales=ec.scales,
            flip=ec.flip,
            device=device,
            progress=False,
            max_images=tc.eval_max_images,
        )
        model.train()
        miou = float(res["mIoU"])
        last_eval.clear()
        last_eval.update({k: v for k, v in res.items() if k != "confusion_matrix"}, iteration=it)
        if is_main:
            rec = {"iter": it, "mIoU": miou, "aAcc": float(res["aAcc"]), "mAcc": float(res["mAcc"])}
            history.append(rec)
            log_f.write(json.dumps({"type": "eval", **rec}) + "\n")
            log_f.flush()
            tqdm.write(f"[eval] iter {it}: mIoU {miou:.2f}  aAcc {res['aAcc']:.2f}  mAcc {res['mAcc']:.2f}")
            if writer:
                writer.add_scalar("val/mIoU", miou, it)
                writer.add_scalar("val/aAcc", float(res["aAcc"]), it)
                _log_overlays(writer, eval_model, val_ds, tc.vis_images, it, device)
            if miou > best_miou:
                best_miou = miou
                checkpoint(it, best=True)
        return miou

    model.train()
    data_iter = iter(loader)
    bar = tqdm(
        total=cfg.schedule.max_iters,
        initial=start_iter,
        disable=not (progress and is_main),
        desc=f"train {cfg.model}",
        dynamic_ncols=True,
        smoothing=0.05,
    )
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    it = start_iter
    try:
        while it < cfg.schedule.max_iters:
            images, labels = next(data_iter)
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            if tc.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                losses = train_module(images, labels)
            loss = losses["loss"]
            finite = torch.isfinite(loss.detach())
            if world > 1:
                flag = finite.float().to(device)
                dist.all_reduce(flag, op=dist.ReduceOp.MIN)
                finite = flag.bool()
            optimizer.zero_grad(set_to_none=True)
            if not bool(finite):
                if tc.on_nonfinite == "stop":
                    raise NonFiniteLossError(
                        f"non-finite loss ({float(loss.detach()):.4g}) at iteration {it + 1}; last good checkpoint: "
                        f"{last_good or 'none written yet'}. Lower optim.lr, enable optim.grad_clip, or set "
                        f"train.on_nonfinite=skip to skip such steps."
                    )
                skipped += 1
                it += 1
                scheduler.step()
                bar.update(1)
                continue
            scaler.scale(loss).backward()
            if cfg.optim.grad_clip:
                scaler.unscale_(optimizer)
                clip_grad(model, cfg.optim.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update(model)
            scheduler.step()
            it += 1
            lr = optimizer.param_groups[0]["lr"] / optimizer.param_groups[0].get("lr_mult", 1.0)
            if is_main:
                bar.update(1)
                if it % tc.log_interval == 0 or it == cfg.schedule.max_iters:
                    vals = {k: float(v.detach()) for k, v in losses.items()}
                    bar.set_postfix(loss=f"{vals['loss']:.3f}", lr=f"{lr:.2e}")
                    rec = {"type": "train", "iter": it, "lr": lr, **vals, "time": round(time.time() - t_start, 2)}
                    log_f.write(json.dumps(rec) + "\n")
                    log_f.flush()
                    if writer:
                        for k, v in vals.items():
                            writer.add_scalar(f"train/{k}", v, it)
                        writer.add_scalar("train/lr", lr, it)
            interval_ckpt = tc.checkpoint_interval or tc.eval_interval
            if it % tc.eval_interval == 0 and it < cfg.schedule.max_iters:
                run_eval(it)
            if it % interval_ckpt == 0 and it < cfg.schedule.max_iters:
                checkpoint(it)
            if stop["signal"] is not None:
                path = checkpoint(it)
                if is_main:
                    tqdm.write(f"received signal {stop['signal']}: saved {path}, exiting")
                break
    finally:
        bar.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)

    summary = {"iterations": it, "skipped_steps": skipped}
    if world > 1:
        summary["ranks_max_weight_diff"] = _rank_weight_divergence(model, device)
    if stop["signal"] is None:
        checkpoint(it)
        final_miou = run_eval(it)
        if is_main:
            eval_model.train_config = cfg.to_dict()  # segkit eval of final/ then uses this test resize and eval mode
            eval_model.eval_results = dict(last_eval) or None  # the final validation, for the model card
            eval_model.save_pretrained(work_dir / "final")
            _plot_curves(work_dir)
        summary.update(final_mIoU=final_miou)
    summary.update(
        best_mIoU=best_miou if best_miou >= 0 else None,
        work_dir=str(work_dir),
        wall_time_s=round(time.time() - t_start, 1),
    )
    if is_main:
        log_f.write(json.dumps({"type": "summary", **summary}) + "\n")
        log_f.close()
        if writer:
            writer.close()
    return summary


def _scan_labels(dataset, rank: int, world: int):
    """The guard-rail label scan (:func:`segkit.data.check_dataset`), run on rank 0 only.

    Its outcome — the report, or the error — is broadcast, so every rank gets the same pixel
    counts (class weights) and every rank stops with the same error on bad labels instead of
    waiting in a collective for a rank that died. Reading each label once (not once per rank)
    matters for large data sets on a shared disk.
    """
    from segkit.data import DataError, check_dataset

    outcome: list = [None]
    error = None
    if rank == 0:
        try:
            outcome[0] = ("ok", check_dataset(dataset, progress=False))
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


def _worker_init(worker_id: int) -> None:
    """DataLoader workers: one torch thread each, so they do not oversubscribe the cores.

    OpenCV's thread count is left alone: ``cv2.setNumThreads`` in a forked worker deadlocks once
    the parent has started OpenCV's pthreads pool (OpenCV 5.0, e.g. after the label scan resized
    real images), and the worker then never delivers a batch (tests/test_reliability.py).
    """
    torch.set_num_threads(1)


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


class WorkDirError(UsageError):
    """The work dir already holds a run and neither ``--resume`` nor ``--overwrite`` was given."""


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


def claim_work_dir(
    work_dir: Path, previous: str | None, overwrite: bool, *, is_main: bool, world: int, elsewhere: str
) -> None:
    """Make ``work_dir`` free for a new run: refuse, or move the previous run aside.

    ``previous`` describes the run already in ``work_dir`` (``None`` = nothing there). Without
    ``overwrite`` a previous run raises :class:`WorkDirError` and nothing is touched (the message
    offers ``--resume auto``, ``--overwrite`` and ``elsewhere``, e.g. "use another --work-dir").
    With it, rank 0 renames the folder to ``<work_dir>.prev-<YYYYmmdd-HHMMSS>`` after every rank
    has looked (a barrier under torchrun): a finished run is never deleted. Shared by
    :func:`train` and :func:`segkit.engine.pretrain.pretrain`.
    """
    if not previous:
        return
    if not overwrite:
        raise WorkDirError(
            f"{work_dir} already holds a run ({previous}); nothing was changed. Continue it with --resume auto, "
            f"start over with --overwrite (the old run is moved to {work_dir}.prev-<time>), or {elsewhere}"
        )
    _barrier(world)  # every rank has looked before rank 0 moves the old run away
    if is_main:
        moved = work_dir.with_name(f"{work_dir.name}.prev-{time.strftime('%Y%m%d-%H%M%S')}")
        work_dir.rename(moved)
        print(f"--overwrite: moved the previous run ({previous}) to {moved}", flush=True)


def load_state_file(path: Path):
    """``torch.load(path, weights_only=True)`` on the CPU; :class:`CheckpointError` naming the file if unreadable."""
    import pickle

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"{path}: unreadable checkpoint ({first})") from None


def _load_training_checkpoint(path: Path) -> dict:
    """A segkit training checkpoint, read safely (``weights_only``); :class:`CheckpointError` naming the file."""
    ck = load_state_file(path)
    if not (isinstance(ck, dict) and ck.get("segkit_checkpoint") and {"model", "optimizer", "iteration"} <= set(ck)):
        raise CheckpointError(f"{path}: not a segkit training checkpoint (no optimizer / iteration inside)")
    return ck


def resolve_resume(work_dir: Path, resume, log=print) -> tuple[Path | None, dict | None]:
    """``(path, checkpoint)`` to resume from, or ``(None, None)`` to start fresh.

    ``resume="auto"``: the newest ``iter_*.pth`` of ``work_dir`` that reads; unreadable ones are
    skipped, each named with the reason; with none the run starts fresh and ``log`` says why.
    A path: that checkpoint (:class:`CheckpointError` naming it when it cannot be read).
    """
    log = log or (lambda *a, **k: None)
    if str(resume) != "auto":
        path = Path(resume)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: checkpoint to resume from not found")
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
            f"--resume auto: no readable checkpoint in {work_dir} ({len(skipped)} unreadable); starting a fresh run",
            flush=True,
        )
    elif not work_dir.is_dir():
        log(f"--resume auto: {work_dir} does not exist; starting a fresh run", flush=True)
    else:
        log(f"--resume auto: no checkpoint (iter_*.pth) in {work_dir}; starting a fresh run", flush=True)
    return None, None


def check_resume_checkpoint(path: Path, ck: dict, cfg: Config) -> None:
    """Refuse a checkpoint of another model, or one already at the end of the schedule (two-line messages)."""
    meta = ck.get("meta") or {}
    if meta.get("model") and str(meta["model"]).lower() != cfg.model.lower():
        raise CheckpointError(
            f"{path} holds a {meta['model']} ({meta.get('num_classes', '?')} classes),\n"
            f"but the config builds {cfg.model}: resume a checkpoint of the same model, or drop --resume"
        )
    if int(ck["iteration"]) >= cfg.schedule.max_iters:
        raise CheckpointError(
            f"{path} is at iteration {ck['iteration']}, already at or past schedule.max_iters="
            f"{cfg.schedule.max_iters}:\nnothing to resume (raise schedule.max_iters to train further)"
        )


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


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
