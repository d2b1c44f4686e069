"""``segkit pretrain``: ImageNet-style classification pretraining of the MSCAN and MiT encoders.

SegNeXt §4 ("For ImageNet pretraining, our data augmentation method and training settings are
the same as DeiT") and SegFormer §4.1 (MiT pretrained on ImageNet-1K) both follow DeiT
(Touvron et al., ICML 2021, Table 9 and ``deit/main.py`` defaults), which is the default here:

================  ===============================================================
optimiser         AdamW, lr 5e-4 × total batch / 512, weight decay 0.05 (none on
                  biases and 1-D parameters: norms, layer scales), betas (0.9, 0.999)
schedule          300 epochs cosine to 1e-5 after 5 linear warm-up epochs from 1e-6,
                  then 10 cool-down epochs at 1e-5 (timm ``CosineLRScheduler``,
                  stepped per epoch as in DeiT; ``sched_on: iter`` steps per iteration)
loss              soft-target cross-entropy on Mixup 0.8 / CutMix 1.0 targets with
                  label smoothing 0.1 (plain smoothed cross-entropy without mixing)
augmentation      random-resized crop 224, flip, RandAugment m9 (n 2), random erasing
                  0.25 (:mod:`segkit.data.classification`)
regularisation    stochastic depth 0.1; optional weight EMA (decay 0.99996)
evaluation        top-1 / top-5 on the validation split after every ``eval_interval``
                  epochs (resize 256, centre crop 224)
================  ===============================================================

Outputs in ``work_dir``: ``last.pth`` (the full state after each epoch, written atomically,
what ``--resume`` reads), ``train_log.jsonl``, ``config.yaml`` and at the end ``encoder/``:
``<mscan_t|mit_b0|…>.pth`` in the official ImageNet layout (encoder keys without prefix +
``head.*``), ``encoder.safetensors`` in segkit's (``backbone.*``), with EMA copies
``*_ema.*`` when EMA is on, and ``encoder.json`` (model, classes, accuracy). Either file loads
strictly as ``pretrained:`` of a segmentation config of the matching model.

Resume is exact at epoch boundaries: every epoch re-seeds Python / NumPy / torch from
``(seed, epoch)`` and the loader's shuffling and worker seeds from a generator seeded the same
way, so ``N`` epochs in one go and ``k`` + ``N − k`` epochs with ``--resume`` give the same
weights (same thread count; a kill mid-epoch restarts that epoch). Under ``torchrun`` each
process reads a ``DistributedSampler`` shard, gradients are averaged by DDP and the
validation counts are summed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from segkit.engine.runs import (
    WeightEMA,
    barrier,
    claim_work_dir,
    end_distributed,
    load_state_file,
    save_checkpoint,
    setup_runtime,
    worker_init,
    write_run_config,
)
from segkit.errors import CheckpointError, ConfigError, DataError
from segkit.utils import atomic_write_bytes

OFFICIAL_NAMES = {"mscan": "mscan_{v}", "mit": "mit_{v}"}


@dataclass
class PretrainConfig:
    """Settings of :func:`pretrain` (DeiT defaults; module docstring). YAML / ``--set`` keys are the field names."""

    model: str = "mscan-t"
    data: str = ""
    train_split: str = "train"
    val_split: str = "val"
    num_classes: Optional[int] = None
    input_size: int = 224
    epochs: int = 300
    warmup_epochs: int = 5
    cooldown_epochs: int = 10
    batch_size: int = 128
    lr: float = 5e-4
    min_lr: float = 1e-5
    warmup_lr: float = 1e-6
    weight_decay: float = 0.05
    sched_on: str = "epoch"
    grad_clip: Optional[float] = None
    smoothing: float = 0.1
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    rand_augment: Optional[list] = field(default_factory=lambda: [2, 27])
    erase_prob: float = 0.25
    hflip: float = 0.5
    crop_scale: list = field(default_factory=lambda: [0.08, 1.0])
    eval_crop_ratio: float = 0.875
    drop_path: float = 0.1
    ema: bool = False
    ema_decay: float = 0.99996
    amp: Optional[str] = "auto"
    num_workers: int = 4
    eval_interval: int = 1
    seed: int = 0
    threads: Optional[int] = None
    device: str = "auto"
    work_dir: str = ""

    def validate(self) -> "PretrainConfig":
        from segkit.models.zoo import CLASSIFIERS, suggest

        def need(cond, key, msg):
            if not cond:
                raise ConfigError(f"{key}: {msg}")

        need(
            self.model.lower() in CLASSIFIERS,
            "model",
            f"unknown encoder {self.model!r}{suggest(self.model, CLASSIFIERS)}; choose from {', '.join(CLASSIFIERS)}",
        )
        need(bool(self.data), "data", "give the folder holding train/<class>/* and val/<class>/* (--data)")
        need(self.input_size >= 32, "input_size", f"must be >= 32 (the encoders downsample 32x), got {self.input_size}")
        need(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        need(
            0 <= self.warmup_epochs <= self.epochs,
            "warmup_epochs",
            f"must be in [0, epochs = {self.epochs}], got {self.warmup_epochs} (e.g. --set warmup_epochs=0)",
        )
        need(self.cooldown_epochs >= 0, "cooldown_epochs", "must be >= 0")
        need(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        need(self.lr > 0 and self.min_lr >= 0 and self.warmup_lr >= 0, "lr", "lr must be > 0, min_lr / warmup_lr >= 0")
        need(self.sched_on in ("epoch", "iter"), "sched_on", f"must be 'epoch' or 'iter', got {self.sched_on!r}")
        need(0 <= self.smoothing < 1, "smoothing", f"must be in [0, 1), got {self.smoothing}")
        need(self.mixup >= 0 and self.cutmix >= 0, "mixup", "mixup / cutmix alphas must be >= 0")
        need(0 <= self.erase_prob <= 1 and 0 <= self.hflip <= 1, "erase_prob", "probabilities must be in [0, 1]")
        need(
            self.rand_augment is None or (len(self.rand_augment) == 2 and 0 <= self.rand_augment[1] <= 30),
            "rand_augment",
            f"must be null or [n, m] with m in 0..30 (kornia's scale), got {self.rand_augment}",
        )
        need(
            len(self.crop_scale) == 2 and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1,
            "crop_scale",
            "must be [low, high] within (0, 1]",
        )
        need(0 < self.ema_decay < 1, "ema_decay", "must be in (0, 1)")
        need(self.amp in (None, "auto", "bf16", "fp16"), "amp", f"must be null, auto, bf16 or fp16, got {self.amp!r}")
        need(self.eval_interval >= 1, "eval_interval", "must be >= 1")
        self.model = self.model.lower()
        if not self.work_dir:
            self.work_dir = f"work_dirs/pretrain_{self.model}"
        return self


def pretrain_config(data: dict) -> PretrainConfig:
    """A validated :class:`PretrainConfig` from a plain dict; unknown keys / bad values are :class:`ConfigError`."""
    from segkit.config import _build

    return _build(PretrainConfig, dict(data), "").validate()


# ----------------------------------------------------------------------------- schedule / optimiser
def lr_at(t: float, cfg: PretrainConfig, base_lr: float) -> float:
    """Learning rate at (fractional) epoch ``t``: linear warm-up from ``warmup_lr``, cosine from ``base_lr``
    to ``min_lr`` over ``epochs`` (timm ``CosineLRScheduler``, no warm-up prefix), ``min_lr`` after."""
    if t < cfg.warmup_epochs:
        return cfg.warmup_lr + t * (base_lr - cfg.warmup_lr) / cfg.warmup_epochs
    if t >= cfg.epochs:
        return cfg.min_lr
    return cfg.min_lr + 0.5 * (base_lr - cfg.min_lr) * (1 + math.cos(math.pi * t / cfg.epochs))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and parameters with ≤ 1 dimension (timm's rule)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def accuracy(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> list[int]:
    """Number of samples whose label is among the top-k logits, for each k (k capped at the class count)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hit = top == labels.view(-1, 1)
    return [int(hit[:, : min(k, logits.shape[1])].any(1).sum()) for k in ks]


@torch.no_grad()
def evaluate_classifier(model, dataset, *, batch_size: int = 64, device="cpu", amp=None, num_workers: int = 0) -> dict:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy on ``dataset`` (``(image, label)`` items).

    Under ``torch.distributed`` each rank scores ``indices[rank::world]`` and the counts are summed.
    """
    import torch.distributed as dist

    from segkit.runtime import autocast

    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    subset = torch.utils.data.Subset(dataset, list(range(len(dataset)))[rank::world])
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    was = model.training
    model.eval()
    stats = torch.zeros(4, dtype=torch.float64)  # n, top1, top5, loss sum
    try:
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            with autocast(amp, device):
                logits = model(images)
            t1, t5 = accuracy(logits.float(), labels)
            loss = nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
            stats += torch.tensor([labels.numel(), t1, t5, float(loss)], dtype=torch.float64)
    finally:
        model.train(was)
    if world > 1:
        s = stats.to(device)
        dist.all_reduce(s)
        stats = s.cpu()
    n = max(stats[0].item(), 1.0)
    top1, top5, loss = (100 * stats[1].item() / n, 100 * stats[2].item() / n, stats[3].item() / n)
    return {"top1": top1, "top5": top5, "loss": loss, "n": int(stats[0])}


# ----------------------------------------------------------------------------- outputs
def official_filename(name: str) -> str:
    """``mscan-t`` → ``mscan_t.pth``, ``mit-b0`` → ``mit_b0.pth`` (the official ImageNet file names)."""
    family, variant = name.split("-", 1)
    return OFFICIAL_NAMES[family].format(v=variant) + ".pth"


def export_encoder(model, out_dir: Path, suffix: str = "", meta: dict | None = None) -> list[Path]:
    """Write the encoder of a :class:`~segkit.models.classifier.Classifier` in both layouts (module docstring)."""
    import io

    from safetensors.torch import save as st_save

    out_dir.mkdir(parents=True, exist_ok=True)
    official = out_dir / official_filename(model.name).replace(".pth", f"{suffix}.pth")
    buf = io.BytesIO()
    torch.save(model.official_state_dict(), buf)
    atomic_write_bytes(official, buf.getvalue())
    ours = out_dir / f"encoder{suffix}.safetensors"
    state = {k: v.contiguous() for k, v in model.encoder_state_dict().items()}
    atomic_write_bytes(ours, st_save(state, metadata={"format": "segkit", "model": model.segmentation_model}))
    paths = [official, ours]
    if meta is not None:
        p = out_dir / "encoder.json"
        atomic_write_bytes(p, (json.dumps(meta, indent=2) + "\n").encode())
        paths.append(p)
    return paths


def _existing(work_dir: Path) -> str | None:
    found = [n for n in ("last.pth", "encoder", "train_log.jsonl") if (work_dir / n).exists()]
    return ", ".join(found) or None


def _load_pretrain_checkpoint(path: Path) -> dict:
    """A ``last.pth`` of :func:`pretrain`, read safely (``weights_only``); :class:`CheckpointError` naming the file."""
    ck = load_state_file(path)
    if not (isinstance(ck, dict) and ck.get("kind") == "pretrain" and {"model", "optimizer", "epoch"} <= set(ck)):
        raise CheckpointError(f"{path}: not a segkit pretrain checkpoint (no model / optimizer / epoch inside)")
    return ck


# ----------------------------------------------------------------------------- the loop
class Pretrainer:
    """One pretraining run, epoch by epoch, in the named steps of :class:`segkit.engine.trainer.Trainer`:
    :meth:`prepare` (device, work dir, data, model, optimiser, resume), per epoch :meth:`train_epoch`
    (made of :meth:`step`), :meth:`evaluate`, :meth:`log` and :meth:`checkpoint`, then :meth:`finish`
    (the encoder files and the summary). Device, work-dir policy, checkpoint files and weight EMA
    are :mod:`segkit.engine.runs`', shared with segmentation training.
    """

    def __init__(self, cfg: PretrainConfig, resume: str | None = None, progress: bool = True, overwrite: bool = False):
        self.cfg, self.resume, self.progress, self.overwrite = cfg, resume, progress, overwrite
        self.t_start = time.time()
        self.start_epoch, self.best, self.history = 0, {"top1": -1.0}, []

    # ------------------------------------------------------------------ prepare
    def prepare(self) -> None:
        cfg = self.cfg
        self.rt = setup_runtime(cfg.device, cfg.threads, cfg.amp, what="amp")
        self.work_dir = Path(cfg.work_dir)
        self.ck = self._claim_or_resume()
        if self.rt.is_main:
            write_run_config(self.work_dir, dataclasses.asdict(cfg))
        self._build_data()
        self._build_model()
        self.total_epochs = cfg.epochs + cfg.cooldown_epochs
        self.iters_per_epoch = max(len(self.train_ds) // self.total_batch, 1)
        self.num_workers = min(cfg.num_workers, os.cpu_count() or 1)
        if self.rt.is_main:
            print(
                f"pretrain {cfg.model}: {len(self.train_ds)} train / {len(self.val_ds)} val images, {self.k} classes, "
                f"{self.total_epochs} epochs x {self.iters_per_epoch} iterations, batch {self.total_batch}, "
                f"lr {self.base_lr:.3g}, amp {self.rt.amp}",
                flush=True,
            )

    def _claim_or_resume(self) -> dict | None:
        cfg, rt = self.cfg, self.rt
        if self.resume is None:
            claim_work_dir(
                self.work_dir,
                _existing(self.work_dir),
                self.overwrite,
                is_main=rt.is_main,
                world=rt.world,
                elsewhere="use another --work-dir",
            )
            return None
        path = self.work_dir / "last.pth" if self.resume == "auto" else Path(self.resume)
        if not path.exists():
            if self.resume != "auto":
                raise CheckpointError(f"{path}: no such checkpoint")
            if rt.is_main:
                print(f"--resume auto: no {path}", flush=True)
            claim_work_dir(  # nothing to continue: claimed as without --resume (a finished run is refused)
                self.work_dir,
                _existing(self.work_dir),
                self.overwrite,
                is_main=rt.is_main,
                world=rt.world,
                elsewhere="use another --work-dir",
                resumable=False,
            )
            if rt.is_main:
                print(f"--resume auto: starting a fresh run in {self.work_dir}", flush=True)
            return None
        ck = _load_pretrain_checkpoint(path)
        if ck["config"]["model"] != cfg.model:
            raise CheckpointError(f"{path} is a pretrain checkpoint of {ck['config']['model']}, not of {cfg.model}")
        if int(ck["epoch"]) >= cfg.epochs + cfg.cooldown_epochs:
            raise CheckpointError(
                f"{path}: the run is already finished ({ck['epoch']} epochs); its encoder/ holds the weights"
            )
        if rt.is_main:
            from segkit.utils import remove_stale_temporaries

            remove_stale_temporaries(self.work_dir, log=print)
        return ck

    def _build_data(self) -> None:
        from segkit.data.classification import ClassificationEvalTransform, ClassificationTrainTransform, ImageFolder

        cfg = self.cfg
        train_tf = ClassificationTrainTransform(
            cfg.input_size,
            scale=cfg.crop_scale,
            hflip=cfg.hflip,
            rand_augment=cfg.rand_augment,
            erase_prob=cfg.erase_prob,
        )
        self.train_ds = ImageFolder(cfg.data, cfg.train_split, transform=train_tf)
        self.val_ds = ImageFolder(
            cfg.data,
            cfg.val_split,
            transform=ClassificationEvalTransform(cfg.input_size, cfg.eval_crop_ratio),
            classes=self.train_ds.classes,
        )
        n = self.train_ds.num_classes
        filled = [c for c in self.train_ds.classes if c not in set(self.train_ds.empty_classes)]
        if len(filled) < 2:
            which = f"only one class folder holds images ({filled[0]})" if filled else "no class folder holds images"
            raise DataError(
                f"{Path(cfg.data) / cfg.train_split}: {which}; a classifier needs at least 2 classes (with one, the "
                f"loss is 0 from the first step and nothing is learnt): add a folder per class, "
                f"<data>/{cfg.train_split}/<class>/<image>"
            )
        self.k = cfg.num_classes or n
        if self.k != n:
            raise ConfigError(f"num_classes: {self.k}, but {cfg.data}/{cfg.train_split} has {n} class folders")
        if self.ck is not None and int(self.ck["num_classes"]) != self.k:
            raise CheckpointError(f"the resume checkpoint has {self.ck['num_classes']} classes, the data {self.k}")
        if self.rt.is_main and self.train_ds.empty_classes:
            print(f"warning: class folders without images: {self.train_ds.empty_classes[:10]}", flush=True)

    def _build_model(self) -> None:
        """Classifier, AdamW (lr scaled by the total batch / 512), EMA, scaler; restored from the checkpoint."""
        from segkit.models.zoo import build_classifier

        cfg, rt, ck = self.cfg, self.rt, self.ck
        torch.manual_seed(cfg.seed)
        self.model = build_classifier(cfg.model, self.k, drop_path_rate=cfg.drop_path).to(rt.device)
        self.total_batch = cfg.batch_size * rt.world
        self.base_lr = cfg.lr * self.total_batch / 512.0
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, cfg.weight_decay), lr=self.base_lr, betas=(0.9, 0.999), eps=1e-8
        )
        self.ema = WeightEMA(self.model, cfg.ema_decay) if cfg.ema else None
        self.scaler = torch.amp.GradScaler("cuda") if rt.amp == "fp16" else None
        if ck is not None:
            self.model.load_state_dict(ck["model"])
            self.optimizer.load_state_dict(ck["optimizer"])
            if self.ema is not None and ck.get("ema") is not None:
                self.ema.load_state_dict(ck["ema"])
            if self.scaler is not None and ck.get("scaler") is not None:
                self.scaler.load_state_dict(ck["scaler"])
            self.start_epoch, self.best = int(ck["epoch"]), dict(ck["best"])
            if rt.is_main:
                print(f"resumed from {self.work_dir / 'last.pth'} after epoch {self.start_epoch}", flush=True)
        self.net = self.model
        if rt.world > 1:
            ids = [rt.device.index] if rt.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        self.prepare()
        for epoch in range(self.start_epoch, self.total_epochs):
            record = self.train_epoch(epoch)
            if (epoch + 1) % self.cfg.eval_interval == 0 or epoch + 1 == self.total_epochs:
                record.update(self.evaluate(epoch))
            self.history.append(record)
            if self.rt.is_main:
                self.log(record)
                self.checkpoint(epoch)
            barrier(self.rt.world)
        return self.finish()

    def _epoch_loader(self, epoch: int):
        """Re-seeds Python / NumPy / torch from ``(seed, epoch)`` (exact resume at epoch boundaries)
        and returns the epoch's DataLoader (a DistributedSampler shard under torchrun)."""
        cfg, rt = self.cfg, self.rt
        seed = cfg.seed * 100003 + epoch
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        if rt.world > 1:
            sampler = torch.utils.data.DistributedSampler(
                self.train_ds, rt.world, rt.rank, shuffle=True, seed=cfg.seed, drop_last=True
            )
            sampler.set_epoch(epoch)
        else:
            sampler = torch.utils.data.RandomSampler(self.train_ds, generator=gen)
        return torch.utils.data.DataLoader(
            self.train_ds,
            batch_size=cfg.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            drop_last=len(self.train_ds) >= self.total_batch,
            generator=gen,
            worker_init_fn=worker_init,
            persistent_workers=False,
        )

    def train_epoch(self, epoch: int) -> dict:
        """One epoch of :meth:`step` with the lr of :func:`lr_at`; returns its log record (mean loss, lr, time)."""
        from tqdm import tqdm

        cfg = self.cfg
        loader = self._epoch_loader(epoch)
        mix_rng = np.random.default_rng([cfg.seed, epoch, self.rt.rank])
        self.net.train()
        desc = f"epoch {epoch + 1}/{self.total_epochs}"
        bar = tqdm(loader, desc=desc, disable=not self.progress or not self.rt.is_main, dynamic_ncols=True)
        loss_sum, steps, t0 = 0.0, 0, time.time()
        lr = lr_at(epoch, cfg, self.base_lr)
        for i, (images, labels) in enumerate(bar):
            t = epoch + (i / len(loader) if cfg.sched_on == "iter" else 0.0)
            lr = lr_at(t, cfg, self.base_lr)
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            loss_sum += self.step(images, labels, mix_rng, where=f"epoch {epoch + 1} iteration {i}")
            steps += 1
            bar.set_postfix(loss=f"{loss_sum / steps:.3f}", lr=f"{lr:.2e}")
        bar.close()
        return {"epoch": epoch + 1, "lr": lr, "loss": loss_sum / max(steps, 1), "epoch_time_s": time.time() - t0}

    def step(self, images: torch.Tensor, labels: torch.Tensor, mix_rng, where: str) -> float:
        """One optimiser step: ``images`` (B, 3, S, S) float, ``labels`` (B,) int64 class ids; Mixup /
        CutMix or smoothed one-hot targets, soft-target cross-entropy in float32. Returns the loss;
        RuntimeError naming ``where`` for a NaN/Inf loss."""
        from segkit.data.classification import mixup_cutmix, smooth_one_hot, soft_target_cross_entropy
        from segkit.runtime import autocast

        cfg, rt, k = self.cfg, self.rt, self.k
        images, labels = images.to(rt.device, non_blocking=True), labels.to(rt.device, non_blocking=True)
        if cfg.mixup > 0 or cfg.cutmix > 0:
            images, targets, _ = mixup_cutmix(
                images,
                labels,
                k,
                mixup_alpha=cfg.mixup,
                cutmix_alpha=cfg.cutmix,
                prob=cfg.mixup_prob,
                switch_prob=cfg.mixup_switch_prob,
                smoothing=cfg.smoothing,
                rng=mix_rng,
            )
        else:
            targets = smooth_one_hot(labels, k, cfg.smoothing)
        with autocast(rt.amp, rt.device):
            logits = self.net(images)
        loss = soft_target_cross_entropy(logits, targets)  # float32
        if not torch.isfinite(loss):
            raise RuntimeError(f"{where}: the loss is {loss.item()} (lower lr, or amp: null)")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return float(loss.detach())

    def evaluate(self, epoch: int) -> dict:
        """Top-1 / top-5 / loss on the validation split (and of the EMA weights); updates the best."""
        cfg, rt = self.cfg, self.rt
        res = evaluate_classifier(
            self.model,
            self.val_ds,
            batch_size=cfg.batch_size,
            device=rt.device,
            amp=rt.amp,
            num_workers=self.num_workers,
        )
        out = {f"val_{m}": res[m] for m in ("top1", "top5", "loss")}
        out["val_images"] = res["n"]
        if self.ema is not None:
            res_ema = evaluate_classifier(
                self.ema.module, self.val_ds, batch_size=cfg.batch_size, device=rt.device, amp=rt.amp
            )
            out.update({f"ema_{m}": res_ema[m] for m in ("top1", "top5")})
        if res["top1"] > self.best["top1"]:
            self.best = {"top1": res["top1"], "top5": res["top5"], "epoch": epoch + 1}
        return out

    def log(self, record: dict) -> None:
        """The epoch's record to ``train_log.jsonl`` and one line on screen (rank 0)."""
        with open(self.work_dir / "train_log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        msg = f"epoch {record['epoch']}: loss {record['loss']:.4f}"
        if "val_top1" in record:
            msg += f", val top-1 {record['val_top1']:.2f} top-5 {record['val_top5']:.2f}"
        if "ema_top1" in record:
            msg += f" (EMA {record['ema_top1']:.2f})"
        print(msg, flush=True)

    def checkpoint(self, epoch: int) -> None:
        """``last.pth`` after epoch ``epoch`` (0-based), atomically: all that resume needs."""
        payload = {
            "kind": "pretrain",
            "config": dataclasses.asdict(self.cfg),
            "num_classes": self.k,
            "classes": self.train_ds.classes,
            "epoch": epoch + 1,
            "best": self.best,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }
        save_checkpoint(self.work_dir / "last.pth", payload)

    def finish(self) -> dict:
        """The summary; on rank 0 the encoder files (``encoder/``, :func:`export_encoder`)."""
        final = self.history[-1] if self.history else {}
        summary = {
            "model": self.cfg.model,
            "segmentation_model": self.model.segmentation_model,
            "num_classes": self.k,
            "classes": self.train_ds.classes,
            "epochs": self.total_epochs,
            "val_top1": final.get("val_top1"),
            "val_top5": final.get("val_top5"),
            "chance_top1": 100.0 / self.k,
            "best": self.best,
            "work_dir": str(self.work_dir),
            "time_s": time.time() - self.t_start,
        }
        if self.rt.is_main:
            paths = export_encoder(self.model, self.work_dir / "encoder", meta=summary)
            if self.ema is not None:
                paths += export_encoder(self.ema.module, self.work_dir / "encoder", suffix="_ema")
            summary["encoder_files"] = [str(p) for p in paths]
        end_distributed(self.rt.world)
        return summary


def pretrain(cfg: PretrainConfig, resume: str | None = None, progress: bool = True, overwrite: bool = False) -> dict:
    """Train ``cfg.model``'s classifier on ``cfg.data`` (module docstring, :class:`Pretrainer`); returns a summary.

    ``resume``: ``"auto"`` or a path — continue from ``last.pth`` (exact at epoch boundaries).
    Without it a work dir that already holds a run is refused (nothing touched) unless
    ``overwrite``, which moves the old run to ``<work_dir>.prev-<time>``.

    Raises:
        segkit.engine.runs.WorkDirError: see above.
        segkit.errors.CheckpointError: unreadable resume file, another model / class count, or a
            run that is already finished.
        segkit.errors.DataError: a missing or malformed image folder.
    """
    return Pretrainer(cfg, resume=resume, progress=progress, overwrite=overwrite).fit()


__all__ = [
    "PretrainConfig",
    "Pretrainer",
    "accuracy",
    "evaluate_classifier",
    "export_encoder",
    "lr_at",
    "official_filename",
    "param_groups",
    "pretrain",
    "pretrain_config",
]
