"""Training / evaluation configuration: small dataclasses read from YAML, validated strictly.

A config file is a YAML mapping with the sections below; every field has a default, and an
unknown key anywhere is a :class:`ConfigError` naming its dotted path (``optim.lrr``), so a
typo never silently falls back to a default. Command-line overrides use dotted keys:
``--set optim.lr=1e-3 train.max_iters=2000`` (values parsed as YAML). Files are parsed with
``yaml.safe_load`` (no arbitrary Python objects).

Example (CamVid, SegNeXt-T)::

    model: segnext-t
    data:
      train: {type: split, root: ${SEGKIT_DATA}/camvid, split: train}
      val:   {type: split, root: ${SEGKIT_DATA}/camvid, split: val}
    train_transform: {scale: [480, 360], crop_size: [256, 256]}
    test_transform: {scale: [480, 360]}
    optim: {lr: 6.0e-5}
    schedule: {max_iters: 160000, warmup_iters: 1500}
    train: {batch_size: 16, eval_interval: 8000}
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from segkit.errors import ConfigError


@dataclass
class DataConfig:
    """Dataset specs handed to :func:`segkit.data.build_dataset` (``type``, ``root``, ``split`` …)."""

    train: Optional[dict] = None
    val: Optional[dict] = None
    test: Optional[dict] = None


@dataclass
class TrainTransformConfig:
    """Reference train pipeline (official configs' ``train_pipeline``; docs/protocols.md).

    ``scale`` = (long, short) image scale in pixels.
    """

    scale: list = field(default_factory=lambda: [2048, 512])
    ratio_range: list = field(default_factory=lambda: [0.5, 2.0])
    crop_size: list = field(default_factory=lambda: [512, 512])
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True


@dataclass
class TestTransformConfig:
    """Reference test resize (official configs' ``test_pipeline``; docs/protocols.md).

    Keep-ratio to ``scale``, then ``size_divisor``; null scale = no resize.
    """

    scale: Optional[list] = field(default_factory=lambda: [2048, 512])
    keep_ratio: bool = True
    size_divisor: Optional[int] = 32


@dataclass
class OptimConfig:
    """AdamW with the reference parameter groups (official configs' ``optimizer``; docs/protocols.md).

    ``norm_decay_rule``: ``"type"`` (default) exempts every normalisation-layer parameter
    (LayerNorm/BatchNorm/GroupNorm weight and bias) and ``pos_block`` from weight decay;
    ``"reference"`` reproduces mmcv's substring rule (keys ``pos_block``/``head``/``norm`` on the
    parameter name, longest first, first match wins), under which MSCAN's stem BNs and the head's
    GroupNorms *do* decay (docs/protocols.md, "Weight decay"). We default to the type rule because the
    substring rule's exemptions depend on attribute names, not on what the parameter is.
    ``no_decay_1d`` also exempts every 1-D parameter (biases, DCA scales), the BEiT/timm
    fine-tuning convention used by the RSSeg configs; the SegFormer/SegNeXt reference decays
    biases, so it is off by default. The LHF logits (``LearnableHighPass.weight``) are 4-D
    ``(C, 1, k, k)`` and decay like every convolution weight (docs/rsseg.md).
    """

    name: str = "adamw"
    lr: float = 6e-5
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.01
    head_lr_mult: float = 10.0
    norm_decay_rule: str = "type"
    grad_clip: Optional[float] = None
    no_decay_1d: bool = False
    # RSSeg / ViT options (layer-wise lr decay; extra lr multipliers by name substring).
    layer_decay: Optional[float] = None
    custom_lr_mult: dict = field(default_factory=dict)


@dataclass
class ScheduleConfig:
    """Poly schedule with linear warm-up (mmcv 1.x ``PolyLrUpdaterHook`` semantics; docs/protocols.md)."""

    max_iters: int = 160000
    warmup_iters: int = 1500
    warmup_ratio: float = 1e-6
    power: float = 1.0
    min_lr: float = 0.0
    # Wall-clock budget (seconds, or "8m" / "2h30m"): the run is sized to it, the schedule above
    # being its shape (segkit/engine/budget.py). null = iteration-based (exactly reproducible).
    time_budget: Optional[Any] = None


@dataclass
class TrainConfig:
    """Loop settings. ``batch_size`` is the global batch (split evenly across DDP ranks).

    ``amp``: ``bf16`` (CUDA, or CPU autocast — refused on CPUs without native bfloat16, i.e. without
    AVX512-BF16 / AMX, where it would be emulated and slower) or ``fp16`` (CUDA only, with a
    gradient scaler); ``auto`` = bf16 where the device runs it natively, else float32 (the run's
    log says which); null = float32. The loss is computed in float32 in every case.

    ``class_weight``: per-class weights of the cross-entropy (as mmseg's ``class_weight``).
    null = unweighted (the papers' recipes); a list of K non-negative numbers; or ``median_freq``:
    median-frequency balancing (Eigen & Fergus 2015, used on CamVid by SegNet), weight_c =
    (median_k f_k / f_c) ** ``class_weight_power`` with f_c the share of class c among all
    labelled training pixels (from the guard-rail scan; the original divides by the pixels of
    the images containing c, which the scan does not keep). Classes absent from the training
    labels get weight 0.

    ``ohem_thresh`` / ``ohem_min_kept``: online hard example mining in the cross-entropy (mmseg's
    ``OHEMPixelSampler``; its configs use 0.7 / 100000): only pixels whose true-class probability is
    below the threshold count, at least ``ohem_min_kept`` per image. null = off. ``dice_weight``:
    add this multiple of a soft multi-class Dice loss (0 = off). Neither is in the papers' recipes;
    :meth:`segkit.models.segmentor.Segmentor.set_loss_options` documents both.

    ``memory_check``: on the CPU, estimate the memory of one training step before the first one
    (:mod:`segkit.engine.memory`) and stop with the estimate when the machine does not have it,
    instead of being killed by the kernel mid-step.

    ``ema``: keep an exponential moving average of the weights (parameters and BatchNorm
    statistics) with this decay, e.g. 0.999 — Polyak averaging as timm's ``ModelEmaV2``, with its
    warm-up ``decay_t = min(ema, (1 + t) / (10 + t))``; validation, ``best.pth``'s score and
    ``final/`` then use the averaged weights (training checkpoints hold both, for exact resume).
    null = off (the papers' recipes).

    ``compile``: compile the encoder and the decode head with ``torch.compile`` (inductor; the loss
    stays eager, :func:`segkit.engine.trainer.compile_for_training` says why). Off by default: on
    the CPU we measured, compiling took minutes and did not speed up training steps
    (``docs/benchmarks.md``); it may pay on GPUs. Results equal
    the eager ones to float32 rounding, except that dropout / drop-path draw other random numbers.
    """

    batch_size: int = 16
    num_workers: int = 2
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    amp: Optional[str] = None
    channels_last: bool = False
    threads: Optional[int] = None
    eval_interval: int = 8000
    checkpoint_interval: Optional[int] = None
    log_interval: int = 50
    keep_last: int = 2
    work_dir: str = "work_dirs/run"
    loss_avg: str = "valid"
    sync_bn: bool = False
    on_nonfinite: str = "stop"
    vis_images: int = 4
    tensorboard: bool = True
    eval_max_images: Optional[int] = None
    preload: bool = False
    check_data: bool = True
    class_weight: Optional[Any] = None
    class_weight_power: float = 1.0
    memory_check: bool = True
    compile: bool = False
    ema: Optional[float] = None
    ohem_thresh: Optional[float] = None
    ohem_min_kept: int = 100000
    dice_weight: float = 0.0


@dataclass
class EvalConfig:
    """Test-time protocol (mmseg ``EncoderDecoder`` whole / slide / aug_test; docs/protocols.md)."""

    mode: str = "whole"
    crop_size: Optional[list] = None
    stride: Optional[list] = None
    scales: list = field(default_factory=lambda: [1.0])
    flip: bool = False
    # binary task: a pixel is foreground where sigmoid(logit) >= threshold (saved with the model)
    threshold: float = 0.5


@dataclass
class Config:
    """A training run. ``task``: ``multiclass`` (softmax over K classes, the papers) or ``binary`` (one logit per
    pixel, binary cross-entropy, foreground metrics at ``eval.threshold``; masks stored as 0/1 or 0/255 are read
    as background / foreground, :mod:`segkit.data.binary`); null = ``binary`` when ``model_args.num_classes`` is 1,
    else ``multiclass``."""

    task: Optional[str] = None
    model: str = "segnext-t"
    model_args: dict = field(default_factory=dict)
    pretrained: Optional[str] = None
    pretrained_strict: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    train_transform: TrainTransformConfig = field(default_factory=TrainTransformConfig)
    test_transform: TestTransformConfig = field(default_factory=TestTransformConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def is_binary(self) -> bool:
        """Whether the run trains the binary task (``task: binary``, or ``model_args.num_classes: 1``)."""
        return self.task == "binary" or (self.task is None and self.model_args.get("num_classes") == 1)

    def origin(self, key: str) -> str:
        """Where the value of the dotted ``key`` came from, for messages: ``"--set KEY=VALUE"`` when a command-line
        override set it (or a section above it, or a key under it), else the config file (``""`` for a config
        built from a dict). Set by :func:`load_config`."""
        for item_key, item in (getattr(self, "_overrides", None) or {}).items():
            if _related(key, item_key):
                return f"--set {item}"
        return str(getattr(self, "_path", "") or "")

    def error(self, key: str, message: str) -> ConfigError:
        """A :class:`ConfigError` ``"<origin>: <key>: <message>"`` (:meth:`origin`), raised where a value turns out
        wrong only when the run uses it (the data set's class count against ``model_args.num_classes``)."""
        where = self.origin(key)
        err = ConfigError(f"{where + ': ' if where else ''}{key}: {message}")
        err.key = key
        return err

    def validate(self) -> "Config":
        """Cross-field checks, one section at a time in the order of the config file; raises
        :class:`ConfigError` naming the first wrong field (``err.key``) and warns, naming the key, about values
        that are legal but probably not meant (a run that ends inside its warm-up, crops that are mostly
        padding). Returns ``self``."""
        self._check_model_and_task()
        self._check_model_args()
        self._check_data_specs()
        self._check_transforms()
        self._check_optim()
        self._check_schedule()
        self._check_train()
        self._check_eval()
        self._warn_crop_padding()
        return self

    def _check_model_and_task(self) -> None:
        """``model`` is a known name; ``task``, ``model_args.num_classes``, ``eval.threshold`` and OHEM agree."""
        from segkit.models.zoo import MODELS, suggest

        _need(
            self.model.lower() in MODELS,
            "model",
            f"unknown model {self.model!r}{suggest(self.model, MODELS)}; `segkit models` lists them",
        )
        _need(
            self.task in (None, "multiclass", "binary"),
            "task",
            f"must be 'multiclass' or 'binary', got {self.task!r}",
        )
        k = self.model_args.get("num_classes")
        _need(
            k is None or (self.task == "binary") == (k == 1) or self.task is None,
            "model_args.num_classes",
            f"{k} with task: {self.task}; the binary task has one logit (num_classes: 1 means task: binary)",
        )
        _need(0 < self.eval.threshold < 1, "eval.threshold", f"must be in (0, 1), got {self.eval.threshold}")
        _need(
            not (self.is_binary and self.train.ohem_thresh is not None),
            "train.ohem_thresh",
            "OHEM is for the multi-class cross-entropy; remove it with task: binary",
        )

    def _check_transforms(self) -> None:
        """``train_transform`` / ``test_transform``: sizes are positive integer pairs, ratios in range."""
        tt = self.train_transform
        _need(
            len(tt.crop_size) == 2 and all(_pos_int(v) for v in tt.crop_size),
            "train_transform.crop_size",
            f"must be [h, w] with positive integers, got {tt.crop_size}",
        )
        _need(
            len(tt.scale) == 2 and all(_pos_int(v) for v in tt.scale),
            "train_transform.scale",
            f"must be [long, short] with positive integers, got {tt.scale}",
        )
        _need(
            len(tt.ratio_range) == 2 and 0 < tt.ratio_range[0] <= tt.ratio_range[1],
            "train_transform.ratio_range",
            f"must be [low, high] with 0 < low <= high, got {tt.ratio_range}",
        )
        _need(0 < tt.cat_max_ratio <= 1, "train_transform.cat_max_ratio", f"must be in (0, 1], got {tt.cat_max_ratio}")
        _need(0 <= tt.flip_prob <= 1, "train_transform.flip_prob", f"must be in [0, 1], got {tt.flip_prob}")
        ts = self.test_transform.scale
        _need(
            ts is None or (len(ts) == 2 and all(_pos_int(v) for v in ts)),
            "test_transform.scale",
            f"must be null or [long, short] with positive integers, got {ts}",
        )

    def _check_optim(self) -> None:
        """``optim``: a finite positive learning rate, non-negative decay, AdamW (the papers' optimiser)."""
        _need(0 < self.optim.lr < float("inf"), "optim.lr", f"must be a finite number > 0, got {self.optim.lr}")
        _need(self.optim.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {self.optim.weight_decay}")
        _need(self.optim.head_lr_mult > 0, "optim.head_lr_mult", f"must be > 0, got {self.optim.head_lr_mult}")
        _need(self.optim.grad_clip is None or self.optim.grad_clip > 0, "optim.grad_clip", "must be null or > 0")
        _need(self.optim.name == "adamw", "optim.name", f"only 'adamw' is supported, got {self.optim.name!r}")
        _need(
            self.optim.norm_decay_rule in ("type", "reference"),
            "optim.norm_decay_rule",
            "must be 'type' or 'reference'",
        )

    def _check_schedule(self) -> None:
        """``schedule``: a positive length, a warm-up (a warning when it outlasts the run), a parseable
        ``time_budget`` whose shape leaves room for the first length estimate, a poly power and floor."""
        sc = self.schedule
        _need(sc.max_iters > 0, "schedule.max_iters", f"must be > 0, got {sc.max_iters}")
        _need(0 <= sc.warmup_iters, "schedule.warmup_iters", f"must be >= 0, got {sc.warmup_iters}")
        if sc.warmup_iters > sc.max_iters:  # legal (short trial runs of a full recipe), but worth saying
            warnings.warn(
                f"schedule.warmup_iters={sc.warmup_iters} is more than schedule.max_iters={sc.max_iters}: the run "
                f"ends inside the linear warm-up, at {sc.max_iters / max(sc.warmup_iters, 1):.0%} of the learning rate",
                UserWarning,
                stacklevel=4,
            )
        if sc.time_budget is not None:
            parse_duration(sc.time_budget)  # ConfigError naming schedule.time_budget
            first = BUDGET_UNTIMED_STEPS + BUDGET_FIRST_ESTIMATE
            _need(
                sc.max_iters >= first,
                "schedule.max_iters",
                f"{sc.max_iters} with schedule.time_budget: the run's length is first estimated after {first} "
                f"steps, so a budgeted schedule needs max_iters >= {first} (the shape; the budget sets the length)",
            )
        _need(0 < sc.warmup_ratio <= 1, "schedule.warmup_ratio", f"must be in (0, 1], got {sc.warmup_ratio}")
        _need(sc.power > 0, "schedule.power", f"must be > 0, got {sc.power}")
        _need(0 <= sc.min_lr < self.optim.lr, "schedule.min_lr", f"must be >= 0 and below optim.lr, got {sc.min_lr}")

    def _check_train(self) -> None:
        """``train``: batch, intervals, EMA, threads, AMP, loss options (class weights, OHEM, Dice), device."""
        tc = self.train
        _need(tc.batch_size > 0, "train.batch_size", f"must be > 0, got {tc.batch_size}")
        _need(
            tc.eval_interval > 0,
            "train.eval_interval",
            f"must be > 0, got {tc.eval_interval} (set it to schedule.max_iters to evaluate only at the end)",
        )
        _need(
            tc.checkpoint_interval is None or tc.checkpoint_interval > 0,
            "train.checkpoint_interval",
            f"must be null or > 0, got {tc.checkpoint_interval}",
        )
        _need(tc.log_interval > 0, "train.log_interval", f"must be > 0, got {tc.log_interval}")
        _need(tc.keep_last >= 1, "train.keep_last", f"must be >= 1 (checkpoints to keep), got {tc.keep_last}")
        _need(tc.num_workers >= 0, "train.num_workers", f"must be >= 0, got {tc.num_workers}")
        _need(
            tc.ema is None or (isinstance(tc.ema, (int, float)) and 0.0 < float(tc.ema) < 1.0),
            "train.ema",
            f"must be null or a decay in (0, 1), e.g. 0.999, got {tc.ema!r}",
        )
        _need(tc.threads is None or tc.threads >= 1, "train.threads", f"must be null or >= 1, got {tc.threads}")
        _need(tc.eval_max_images is None or tc.eval_max_images >= 1, "train.eval_max_images", "must be null or >= 1")
        _need(bool(str(tc.work_dir).strip()), "train.work_dir", "must not be empty")
        _need(tc.amp in (None, "bf16", "fp16", "auto"), "train.amp", "must be null, 'bf16', 'fp16' or 'auto'")
        _need(tc.loss_avg in ("valid", "all"), "train.loss_avg", "must be 'valid' or 'all'")
        cw = tc.class_weight
        _need(
            cw is None
            or cw == "median_freq"
            or (
                isinstance(cw, list)
                and len(cw) > 0
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in cw)
            ),
            "train.class_weight",
            f"must be null, 'median_freq' or a list of non-negative numbers, got {cw!r}",
        )
        _need(tc.class_weight_power >= 0, "train.class_weight_power", "must be >= 0")
        oh = tc.ohem_thresh
        _need(oh is None or 0 < oh <= 1, "train.ohem_thresh", f"must be null or in (0, 1], e.g. 0.7, got {oh!r}")
        _need(tc.ohem_min_kept >= 0, "train.ohem_min_kept", "must be >= 0")
        _need(tc.dice_weight >= 0, "train.dice_weight", "must be >= 0")
        _need(tc.on_nonfinite in ("stop", "skip"), "train.on_nonfinite", "must be 'stop' or 'skip'")
        _need(
            tc.device in ("auto", "cpu", "cuda") or tc.device.startswith("cuda:"),
            "train.device",
            "must be auto, cpu or cuda[:N]",
        )

    def _check_eval(self) -> None:
        """``eval``: whole or slide (slide needs a crop), positive test scales."""
        _need(self.eval.mode in ("whole", "slide"), "eval.mode", "must be 'whole' or 'slide'")
        _need(self.eval.mode != "slide" or self.eval.crop_size, "eval.crop_size", "slide mode needs crop_size")
        _need(all(float(v) > 0 for v in self.eval.scales), "eval.scales", f"must be positive, got {self.eval.scales}")

    # model_args keys the run sets itself: from the data set (with data.train) or from another config key
    RUN_SETS = {
        "class_names": "the class names come from data.train",
        "palette": "the palette comes from data.train",
        "ignore_index": "the ignore index comes from data.train",
        "loss_avg": "set train.loss_avg instead",
        "task": "set task: binary at the top of the config",
        "threshold": "set eval.threshold instead",
        "mask_values": "the binary mask values come from data.train",
    }

    def _check_model_args(self) -> None:
        """``model_args``: keywords the model's builder takes (checked without building it), none that the run
        overrides (``loss_avg``; with ``data.train`` the class names, palette and ignore index, whose values come
        from the data set; ``num_classes`` is compared with the data set's count when the run builds the model)."""
        from segkit.errors import UsageError
        from segkit.models.zoo import check_model_args

        args = self.model_args
        for k, why in self.RUN_SETS.items():
            if k in args and (k in ("loss_avg", "task", "threshold") or self.data.train is not None):
                err = ConfigError(f"model_args.{k}: the run sets this itself ({why}); remove it")
                err.key = f"model_args.{k}"
                raise err
        try:
            check_model_args(self.model, **{k: v for k, v in args.items() if k != "num_classes"})
            if args.get("in_channels", 3) != 3 and not ("mean" in args and "std" in args):
                raise UsageError(
                    f"in_channels: {args['in_channels']} needs mean: [...] and std: [...] with one value per channel "
                    f"(0-255 scale; segkit check-data DATA --stats --in-channels {args['in_channels']} computes them)"
                )
        except (UsageError, TypeError, ValueError) as e:
            named = [k for k in args if repr(k) in str(e)]
            err = ConfigError(f"model_args: {e}")
            err.key = f"model_args.{named[0]}" if len(named) == 1 else "model_args"
            raise err from None

    def _check_data_specs(self) -> None:
        """``data.train`` / ``val`` / ``test``: a known dataset type and the keys it takes (no file is read)."""
        from segkit.data.build import check_spec

        for split in ("train", "val", "test"):
            spec = getattr(self.data, split)
            if spec is not None:
                check_spec(spec, where=f"data.{split}")

    def _warn_crop_padding(self) -> None:
        """Warn (naming the key) when the crop is larger than the resized training images: every
        crop is then mostly padding. Image size after the random resize is at most the keep-ratio
        box ``scale × ratio_range[1]``."""
        tt = self.train_transform
        hi = float(tt.ratio_range[1])
        long_, short = max(tt.scale) * hi, min(tt.scale) * hi  # the largest resized image fits this box
        ch, cw = tt.crop_size
        # the box is (long x short) in either orientation; take the orientation that covers the crop best
        cover = max(min(ch, short) * min(cw, long_), min(ch, long_) * min(cw, short))
        padding = 1.0 - cover / float(ch * cw)
        if padding > 0.5:
            warnings.warn(
                f"train_transform.crop_size {list(tt.crop_size)} is larger than the training images (at most about "
                f"{int(long_)}x{int(short)} after the resize with scale {list(tt.scale)} and ratio_range "
                f"{list(tt.ratio_range)}): at least {100 * padding:.0f}% of every crop is padding (ignored pixels)",
                UserWarning,
                stacklevel=3,
            )


def _need(cond, key: str, msg: str) -> None:
    """Raise :class:`ConfigError` ``"<key>: <msg>"`` (with ``err.key``) unless ``cond``."""
    if not cond:
        err = ConfigError(f"{key}: {msg}")
        err.key = key
        raise err


def _build(cls, data: Any, path: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        where = ", ".join(f"{path + '.' if path else ''}{k}" for k in unknown)
        from segkit.models.zoo import suggest

        hint = suggest(unknown[0], fields) if len(unknown) == 1 else ""
        err = ConfigError(f"unknown config key(s): {where}{hint}; valid keys here: {', '.join(fields)}")
        err.key = f"{path + '.' if path else ''}{unknown[0]}"
        raise err
    kwargs = {}
    for k, v in data.items():
        ftype = fields[k].type
        sub = {
            "DataConfig": DataConfig,
            "TrainTransformConfig": TrainTransformConfig,
            "TestTransformConfig": TestTransformConfig,
            "OptimConfig": OptimConfig,
            "ScheduleConfig": ScheduleConfig,
            "TrainConfig": TrainConfig,
            "EvalConfig": EvalConfig,
        }.get(ftype)
        key = f"{path + '.' if path else ''}{k}"
        kwargs[k] = _build(sub, v, key) if sub else _coerce(v, ftype, key)
    return cls(**kwargs)


_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}


# A time budget's first length estimate (segkit.engine.budget.TimeBudget): after this many untimed
# warm-up steps and then this many timed ones; kept here so that validation needs no engine import.
BUDGET_UNTIMED_STEPS = 3
BUDGET_FIRST_ESTIMATE = 5


def parse_duration(value, key: str = "schedule.time_budget") -> float:
    """Seconds from ``600``, ``"600"``, ``"90s"``, ``"8m"``, ``"2h30m"``, ``"1h 5m 30s"`` or ``"2.5h"``.

    Raises :class:`ConfigError` naming ``key`` for anything else or a value <= 0.
    """
    import math
    import re

    bad = ConfigError(f"{key}: expected seconds or a duration like '8m' / '2h30m', got {value!r}")
    if isinstance(value, bool):
        raise bad
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        if not re.fullmatch(r"(?:\d+(?:\.\d+)?[hms])+|\d+(?:\.\d+)?", text):
            raise bad
        pairs = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
        seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in pairs) if pairs else float(text)
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigError(f"{key}: must be > 0 seconds, got {value!r}")
    return seconds


def _coerce(value: Any, ftype: str, key: str) -> Any:
    """Check ``value`` against the field annotation; numbers written as strings (YAML 1.1 reads
    ``6e-5`` as a string) are converted. Raises :class:`ConfigError` naming ``key``."""
    optional = ftype.startswith("Optional[")
    base = ftype[len("Optional[") : -1] if optional else ftype
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: must not be null")
    try:
        if base == "float":
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if base == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected a number ({base}), got {value!r}") from None
    if base == "bool" and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if base == "str" and not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if base == "list" and not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key}: expected a list, got {value!r}")
    if base == "dict" and not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping, got {value!r}")
    return list(value) if base == "list" else value


def _pos_int(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer() and v > 0


def config_from_dict(data: dict) -> Config:
    """Build and validate a :class:`Config` from a plain dict (unknown keys → ConfigError)."""
    return _build(Config, data or {}, "").validate()


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` overrides (values parsed with ``yaml.safe_load``) to a config dict."""
    for item in overrides or []:
        key, eq, raw = item.partition("=")
        if not eq or not key.strip() or any(not part for part in key.strip().split(".")):
            raise ConfigError(f"--set {item}: expected KEY=VALUE with a dotted key, e.g. optim.lr=1e-3")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"--set {item}: the value is not valid YAML ({problem}); quote it") from None
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 as a string
            try:
                value = float(value) if any(c in value for c in ".eE") else int(value)
            except ValueError:
                pass
        node = data
        parts = key.strip().split(".")
        for i, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"--set {item}: {where} is a value ({node!r}), not a section with keys")
        node[parts[-1]] = value
    return data


PACKAGED = Path(__file__).resolve().parent / "configs"


def resolve_config_path(name: str | Path) -> Path:
    """A config file path, or the name of a shipped config.

    ``camvid/segnext-t`` → ``segkit/configs/camvid/segnext-t.yaml``.

    Raises :class:`~segkit.errors.NotFoundError` (a ``FileNotFoundError``) naming the nearest shipped configs.
    """
    path = Path(name)
    if path.is_file():
        return path
    if path.exists() and not path.is_dir():  # e.g. a shell's <(...) pipe: the config is read more than once
        from segkit.errors import DataError

        raise DataError(f"{name}: not a regular file (a pipe or device); write the config to a file")
    for cand in (PACKAGED / str(name), PACKAGED / f"{name}.yaml"):
        if cand.is_file():
            return cand
    from segkit.errors import NotFoundError
    from segkit.utils import nearest_names

    shipped = sorted(q.relative_to(PACKAGED).with_suffix("").as_posix() for q in PACKAGED.rglob("*.yaml"))
    wanted = str(name).removesuffix(".yaml")
    close = (
        nearest_names(wanted, shipped)
        or [  # a shipped config's name without its data set folder
            s for s in shipped if s.split("/")[-1] in nearest_names(wanted.split("/")[-1], [s.split("/")[-1]])
        ][:3]
    )
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise NotFoundError(f"{name}: no such config file, nor a shipped config of that name{hint}")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (safe loader), apply ``--set`` overrides, validate.

    ``path`` is a file or the name of a shipped config such as ``camvid/segnext-t``.
    Relative dataset roots stay relative to the current directory. Raises ``FileNotFoundError``
    for a missing file and :class:`ConfigError` (naming the file) for an invalid one.
    """
    data: dict = {}
    if path is not None:
        path = resolve_config_path(path)
        data = read_yaml(path)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    set_keys = {item.split("=", 1)[0].strip(): item for item in overrides or [] if "=" in item}
    data = apply_overrides(data, overrides or [])
    try:
        cfg = config_from_dict(data)
    except ConfigError as e:
        key = getattr(e, "key", None) or _key_of(str(e))
        item = next((v for k, v in set_keys.items() if key and _related(key, k)), None)
        if item is not None:  # the bad value came from the command line, not from the file
            raise ConfigError(f"--set {item}: {e}") from None
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None
    cfg._path, cfg._overrides = path, set_keys
    return cfg


def _related(key: str, other: str) -> bool:
    """Whether dotted keys ``key`` and ``other`` are the same, or one lies under the other."""
    return key == other or key.startswith(other + ".") or other.startswith(key + ".")


def _key_of(message: str) -> str | None:
    head = message.split(":", 1)[0].strip()
    return head if head and " " not in head else None


def read_yaml(path: str | Path):
    """``yaml.safe_load`` of a file; a syntax error is a :class:`ConfigError` naming file, line and column."""
    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = " ".join(x for x in (e.context, e.problem) if x)
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: YAML error: {e}") from None
