"""The model zoo: a plain dict from model name to builder.

``build_model("segnext-t", num_classes=150)`` returns a :class:`~segkit.models.segmentor.Segmentor`.
Each builder takes ``num_classes`` plus two kinds of keyword arguments:

* architecture switches (``drop_path_rate``, ``md_r``, ``one_step_grad`` …), recorded in
  ``Segmentor.arch`` so that ``from_pretrained`` rebuilds the same network;
* metadata (``class_names``, ``palette``, ``ignore_index``, ``mean``, ``std``, ``loss_avg``),
  handed to the ``Segmentor``.

An unknown keyword is a ``TypeError`` naming it. No registries: add a model by adding a
function and a dict entry.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

from .segmentor import Segmentor

META_KEYS = ("class_names", "palette", "ignore_index", "mean", "std", "loss_avg")


def _split_meta(kwargs: dict) -> tuple[dict, dict]:
    meta = {k: kwargs.pop(k) for k in list(kwargs) if k in META_KEYS}
    return {k: v for k, v in meta.items() if v is not None}, kwargs


# ----------------------------------------------------------------------------- SegFormer
# Decoder embedding dim E per variant (architectures.md §1.1).
SEGFORMER_DECODER_DIM = {"b0": 256, "b1": 256, "b2": 768, "b3": 768, "b4": 768, "b5": 768}


def build_segformer(variant: str, num_classes: int = 150, *, drop_path_rate: float = 0.1,
                    decoder_dim: int | None = None, dropout: float = 0.1, **kwargs) -> Segmentor:
    """SegFormer-``variant`` (B0–B5): MiT encoder + All-MLP decoder (SegFormer paper §3)."""
    from .heads.segformer_head import SegFormerHead
    from .mit import MIT_VARIANTS, MixVisionTransformer

    meta, rest = _split_meta(dict(kwargs))
    if rest:
        raise TypeError(f"build_segformer got unknown argument(s): {sorted(rest)}")
    if variant not in MIT_VARIANTS:
        raise ValueError(f"unknown SegFormer variant {variant!r}; choose from {sorted(MIT_VARIANTS)}")
    decoder_dim = decoder_dim or SEGFORMER_DECODER_DIM[variant]
    encoder = MixVisionTransformer(**MIT_VARIANTS[variant], drop_path_rate=drop_path_rate)
    head = SegFormerHead(encoder.out_channels, decoder_dim, num_classes, dropout=dropout)
    arch = dict(drop_path_rate=drop_path_rate, decoder_dim=decoder_dim, dropout=dropout)
    return Segmentor(encoder, head, num_classes, name=f"segformer-{variant}", arch=arch, **meta)


# ----------------------------------------------------------------------------- SegNeXt
# Head settings per variant (architectures.md §2.1): ham_channels = channels, NMF rank MD_R.
SEGNEXT_HEAD = {
    "t": dict(ham_channels=256, md_r=16, drop_path_rate=0.1),
    "s": dict(ham_channels=256, md_r=16, drop_path_rate=0.1),
    "b": dict(ham_channels=512, md_r=64, drop_path_rate=0.1),
    "l": dict(ham_channels=1024, md_r=64, drop_path_rate=0.3),
}


def build_segnext(variant: str, num_classes: int = 150, *, drop_path_rate: float | None = None,
                  ham_channels: int | None = None, md_r: int | None = None, dropout: float = 0.1,
                  train_steps: int = 6, eval_steps: int = 7, one_step_grad: bool = False,
                  nmf_seed: int = 0, **kwargs) -> Segmentor:
    """SegNeXt-``variant`` (T/S/B/L): MSCAN encoder + LightHamHead (SegNeXt paper §3)."""
    from .heads.ham_head import LightHamHead
    from .mscan import MSCAN, MSCAN_VARIANTS

    meta, rest = _split_meta(dict(kwargs))
    if rest:
        raise TypeError(f"build_segnext got unknown argument(s): {sorted(rest)}")
    if variant not in MSCAN_VARIANTS:
        raise ValueError(f"unknown SegNeXt variant {variant!r}; choose from {sorted(MSCAN_VARIANTS)}")
    defaults = SEGNEXT_HEAD[variant]
    drop_path_rate = defaults["drop_path_rate"] if drop_path_rate is None else drop_path_rate
    ham_channels = ham_channels or defaults["ham_channels"]
    md_r = md_r or defaults["md_r"]
    encoder = MSCAN(**MSCAN_VARIANTS[variant], drop_path_rate=drop_path_rate)
    head = LightHamHead(encoder.out_channels[1:], ham_channels=ham_channels, channels=ham_channels,
                        num_classes=num_classes, md_r=md_r, train_steps=train_steps, eval_steps=eval_steps,
                        dropout=dropout, one_step_grad=one_step_grad, seed=nmf_seed)
    arch = dict(drop_path_rate=drop_path_rate, ham_channels=ham_channels, md_r=md_r, dropout=dropout,
                train_steps=train_steps, eval_steps=eval_steps, one_step_grad=one_step_grad, nmf_seed=nmf_seed)
    return Segmentor(encoder, head, num_classes, name=f"segnext-{variant}", arch=arch, **meta)


MODELS: dict[str, Callable[..., Segmentor]] = {
    **{f"segformer-{v}": partial(build_segformer, v) for v in ("b0", "b1", "b2", "b3", "b4", "b5")},
    **{f"segnext-{v}": partial(build_segnext, v) for v in ("t", "s", "b", "l")},
}


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`, in zoo order."""
    return list(MODELS)


def build_model(name: str, num_classes: int = 150, **kwargs) -> Segmentor:
    """Build a zoo model by name, e.g. ``build_model("segnext-t", num_classes=19)``.

    Raises ``KeyError`` (listing the valid names) for an unknown model and ``TypeError`` for an
    unknown keyword argument. Weights are randomly initialised as in the reference code; load
    weights with :func:`segkit.load_checkpoint` or :func:`segkit.from_pretrained`.
    """
    key = name.lower()
    if key not in MODELS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return MODELS[key](num_classes, **kwargs)


def count_parameters(model) -> int:
    """Number of parameters (weights, biases, norm affines; BN running statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- RSSeg
# RSSeg (rsseg.md) on plain ViT/BEiT and CSWin, plus its plain-ViT baselines (ViT-Linear,
# Segmenter). Builders, variants and ablation presets: segkit/models/rsseg/builders.py.
from .rsseg.builders import RSSEG_MODELS  # noqa: E402  (the builders import nothing from here at import time)

MODELS.update(RSSEG_MODELS)
