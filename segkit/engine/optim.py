"""Optimiser parameter groups and the poly learning-rate schedule of the reference recipe.

Source: the SegFormer and SegNeXt official configs (``local_configs/*``; docs/protocols.md): AdamW lr 6e-5,
betas (0.9, 0.999), weight decay 0.01; decode head lr × 10; no weight decay on norms;
poly decay (power 1.0, min_lr 0) with a linear warm-up of 1500 iterations from ratio 1e-6.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


def _norm_param_names(model: nn.Module) -> set[str]:
    names = set()
    for mod_name, mod in model.named_modules():
        if isinstance(mod, NORM_TYPES):
            for p_name, _ in mod.named_parameters(recurse=False):
                names.add(f"{mod_name}.{p_name}" if mod_name else p_name)
    return names


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    head_lr_mult: float = 10.0,
    norm_decay_rule: str = "type",
    custom_lr_mult: dict | None = None,
    layer_decay: float | None = None,
    no_decay_1d: bool = False,
) -> list[dict]:
    """Split ``model``'s trainable parameters into AdamW groups.

    Rules (first that applies):
      * lr multiplier: ``custom_lr_mult`` substrings (longest first), else ``head_lr_mult`` for
        parameters under ``decode_head``, else 1. With ``layer_decay`` set and a backbone that
        exposes ``layer_id(name) -> int`` and ``num_layers`` (ViT/BEiT), the backbone lr is further
        scaled by ``layer_decay ** (num_layers + 1 - layer_id)``.
      * weight decay 0 for norm parameters (``norm_decay_rule="type"``: any parameter of a
        LayerNorm/BatchNorm/GroupNorm, plus ``pos_block``/``pos_embed``/``cls_token``/relative
        position tables; ``"reference"``: mmcv's substring rule, see
        :class:`segkit.config.OptimConfig`); with ``no_decay_1d`` also every 1-D parameter
        (biases etc., BEiT convention); else ``weight_decay``.

    Each group dict carries ``params``, ``lr``, ``weight_decay``, ``lr_mult`` and ``names``.
    Note (reference behaviour kept): torch's AdamW decay is decoupled and scaled by the group lr,
    so head parameters (lr × 10) also decay 10× faster per step.
    """
    custom = sorted((custom_lr_mult or {}).items(), key=lambda kv: (-len(kv[0]), kv[0]))
    norm_names = _norm_param_names(model) if norm_decay_rule == "type" else set()
    backbone = getattr(model, "backbone", None)
    layer_id = getattr(backbone, "layer_id", None) if layer_decay else None
    num_layers = getattr(backbone, "num_layers", None)
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        mult = next((m for key, m in custom if key in name), None)
        if mult is None:
            mult = head_lr_mult if name.startswith("decode_head.") else 1.0
        if layer_id is not None and name.startswith("backbone."):
            mult *= layer_decay ** (num_layers + 1 - layer_id(name[len("backbone.") :]))
        if norm_decay_rule == "type":
            no_decay = name in norm_names or any(
                k in name for k in ("pos_block", "pos_embed", "cls_token", "relative_position_bias_table")
            )
            decay_mult = 0.0 if no_decay else 1.0
        else:  # mmcv substring rule: keys pos_block, head, norm; longest first, alphabetical tie-break
            decay_mult = 1.0
            for key in ("pos_block", "head", "norm"):
                if key in name:
                    decay_mult = 0.0 if key in ("pos_block", "norm") else 1.0
                    break
        if no_decay_1d and p.ndim <= 1:
            decay_mult = 0.0
        key = (round(mult, 12), decay_mult)
        g = groups.setdefault(
            key,
            {"params": [], "names": [], "lr": lr * mult, "lr_mult": mult, "weight_decay": weight_decay * decay_mult},
        )
        g["params"].append(p)
        g["names"].append(name)
    return list(groups.values())


def config_param_groups(model: nn.Module, cfg) -> list[dict]:
    """:func:`param_groups` with the settings of an :class:`segkit.config.OptimConfig` (groups keep ``names``)."""
    return param_groups(
        model,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        head_lr_mult=cfg.head_lr_mult,
        norm_decay_rule=cfg.norm_decay_rule,
        custom_lr_mult=cfg.custom_lr_mult,
        layer_decay=cfg.layer_decay,
        no_decay_1d=cfg.no_decay_1d,
    )


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """AdamW over :func:`param_groups` from an :class:`segkit.config.OptimConfig`."""
    groups = config_param_groups(model, cfg)
    for g in groups:
        g.pop("names")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)


def poly_warmup_factor(
    it: int,
    *,
    max_iters: int,
    warmup_iters: int = 1500,
    warmup_ratio: float = 1e-6,
    power: float = 1.0,
    min_lr_ratio: float = 0.0,
) -> float:
    """Learning-rate factor at iteration ``it`` (0-based) relative to the base lr.

    mmcv 1.x ``PolyLrUpdaterHook`` semantics (docs/protocols.md):
    ``poly = (1 - min_ratio)(1 - it/max_iters)^power + min_ratio``;
    during warm-up (``it < warmup_iters``) the factor is ``poly · (1 - (1 - it/warmup_iters)(1 - warmup_ratio))``.
    """
    progress = min(it, max_iters) / max_iters
    factor = (1.0 - min_lr_ratio) * (1.0 - progress) ** power + min_lr_ratio
    if warmup_iters > 0 and it < warmup_iters:
        factor *= 1.0 - (1.0 - it / warmup_iters) * (1.0 - warmup_ratio)
    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg, base_lr: float) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR applying :func:`poly_warmup_factor` to every group (min_lr taken relative to ``base_lr``)."""
    min_ratio = cfg.min_lr / base_lr if base_lr > 0 else 0.0

    def fn(it: int) -> float:
        return poly_warmup_factor(
            it,
            max_iters=cfg.max_iters,
            warmup_iters=cfg.warmup_iters,
            warmup_ratio=cfg.warmup_ratio,
            power=cfg.power,
            min_lr_ratio=min_ratio,
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def clip_grad(model: nn.Module, max_norm: float | None) -> float | None:
    """Clip the global gradient L2 norm to ``max_norm`` (no-op when None); returns the norm before clipping."""
    if not max_norm:
        return None
    norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], max_norm)
    return float(norm) if math.isfinite(float(norm)) else float("nan")
