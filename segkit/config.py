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
    ``no_decay_1d`` also exempts every 1-D parameter (biases, LHF logits, DCA scales), the
    BEiT/timm fine-tuning convention used by the RSSeg configs; the SegFormer/SegNeXt reference
    decays biases, so it is off by default.
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


@dataclass
class TrainConfig:
    """Loop settings. ``batch_size`` is the global batch (split evenly across DDP ranks).

    ``amp``: ``bf16`` (CUDA, or CPU autocast — worthwhile on CPUs with AMX/AVX512-BF16) or ``fp16``
    (CUDA only, with a gradient scaler); null = float32.

    ``class_weight``: per-class weights of the cross-entropy (as mmseg's ``class_weight``).
    null = unweighted (the papers' recipes); a list of K non-negative numbers; or ``median_freq``:
    median-frequency balancing (Eigen & Fergus 2015, used on CamVid by SegNet), weight_c =
    (median_k f_k / f_c) ** ``class_weight_power`` with f_c the share of class c among all
    labelled training pixels (from the guard-rail scan; the original divides by the pixels of
    the images containing c, which the scan does not keep). Classes absent from the training
    labels get weight 0.
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


@dataclass
class EvalConfig:
    """Test-time protocol (mmseg ``EncoderDecoder`` whole / slide / aug_test; docs/protocols.md)."""

    mode: str = "whole"
    crop_size: Optional[list] = None
    stride: Optional[list] = None
    scales: list = field(default_factory=lambda: [1.0])
    flip: bool = False


@dataclass
class Config:
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

    def validate(self) -> "Config":
        """Cross-field checks; raises :class:`ConfigError` naming the field."""
        from segkit.models.zoo import MODELS

        def need(cond, key, msg):
            if not cond:
                raise ConfigError(f"{key}: {msg}")

        need(self.model.lower() in MODELS, "model", f"unknown model {self.model!r}; available: {', '.join(MODELS)}")
        need(len(self.train_transform.crop_size) == 2, "train_transform.crop_size", "must be [h, w]")
        need(len(self.train_transform.scale) == 2, "train_transform.scale", "must be [long, short]")
        need(self.optim.name == "adamw", "optim.name", f"only 'adamw' is supported, got {self.optim.name!r}")
        need(
            self.optim.norm_decay_rule in ("type", "reference"),
            "optim.norm_decay_rule",
            "must be 'type' or 'reference'",
        )
        need(self.schedule.max_iters > 0, "schedule.max_iters", "must be > 0")
        need(0 <= self.schedule.warmup_iters, "schedule.warmup_iters", "must be >= 0")
        need(self.train.batch_size > 0, "train.batch_size", "must be > 0")
        need(self.train.amp in (None, "bf16", "fp16"), "train.amp", "must be null, 'bf16' or 'fp16'")
        need(self.train.loss_avg in ("valid", "all"), "train.loss_avg", "must be 'valid' or 'all'")
        cw = self.train.class_weight
        need(
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
        need(self.train.class_weight_power >= 0, "train.class_weight_power", "must be >= 0")
        need(self.train.on_nonfinite in ("stop", "skip"), "train.on_nonfinite", "must be 'stop' or 'skip'")
        need(
            self.train.device in ("auto", "cpu", "cuda") or self.train.device.startswith("cuda:"),
            "train.device",
            "must be auto, cpu or cuda[:N]",
        )
        need(self.eval.mode in ("whole", "slide"), "eval.mode", "must be 'whole' or 'slide'")
        need(self.eval.mode != "slide" or self.eval.crop_size, "eval.crop_size", "slide mode needs crop_size")
        return self


def _build(cls, data: Any, path: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        where = ", ".join(f"{path + '.' if path else ''}{k}" for k in unknown)
        raise ConfigError(f"unknown config key(s): {where}; valid keys here: {', '.join(fields)}")
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


def config_from_dict(data: dict) -> Config:
    """Build and validate a :class:`Config` from a plain dict (unknown keys → ConfigError)."""
    return _build(Config, data or {}, "").validate()


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` overrides (values parsed with ``yaml.safe_load``) to a config dict."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw)
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 as a string
            try:
                value = float(value) if any(c in value for c in ".eE") else int(value)
            except ValueError:
                pass
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
        node[parts[-1]] = value
    return data


PACKAGED = Path(__file__).resolve().parent / "configs"


def resolve_config_path(name: str | Path) -> Path:
    """A config file path, or the name of a shipped config.

    ``camvid/segnext-t`` → ``segkit/configs/camvid/segnext-t.yaml``.

    Raises ``FileNotFoundError`` listing where it looked.
    """
    path = Path(name)
    if path.is_file():
        return path
    for cand in (PACKAGED / str(name), PACKAGED / f"{name}.yaml"):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"{name}: config file not found (also looked for a shipped config under {PACKAGED})")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (safe loader), apply ``--set`` overrides, validate.

    ``path`` is a file or the name of a shipped config such as ``camvid/segnext-t``.
    Relative dataset roots stay relative to the current directory. Raises ``FileNotFoundError``
    for a missing file and :class:`ConfigError` (naming the file) for an invalid one.
    """
    data: dict = {}
    if path is not None:
        path = resolve_config_path(path)
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
    data = apply_overrides(data, overrides or [])
    try:
        return config_from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None
