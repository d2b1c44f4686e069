"""The inference fuse step: fold eval-mode BatchNorms (and layer scales) into convolutions.

Modules with something to fold define ``fused() -> nn.Module``, an eval-only module with the
same function (MSCAN's stem, down-sampling convs and blocks: :mod:`segkit.models.backbones.mscan`).
:func:`fuse_for_inference` returns a deep copy of a model in which every such submodule is
replaced by its ``fused()`` result, in the spirit of timm's ``reparameterize()``. The original
model is untouched, so training, checkpoints and ``save_pretrained`` keep the official layout;
:meth:`Segmentor.fused <segkit.models.segmentor.Segmentor.fused>` is the entry point that
segkit's inference paths (evaluation, prediction, benchmark, robustness, export) use.
"""

from __future__ import annotations

import copy

import torch.nn as nn


def _replace_fusable(module: nn.Module) -> int:
    n = 0
    for name, child in list(module.named_children()):
        if callable(getattr(child, "fused", None)):
            setattr(module, name, child.fused())
            n += 1
        else:
            n += _replace_fusable(child)
    return n


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """An eval-mode deep copy of ``model`` with every fusable submodule replaced by its ``fused()`` form.

    Outputs equal the unfused eval-mode model's up to float32 rounding (tests check this).
    The copy is for inference only: fused modules raise ``RuntimeError`` in training mode. The
    number of replaced modules is stored as ``num_fused_modules`` on the copy.
    """
    out = copy.deepcopy(model).eval()
    out.num_fused_modules = _replace_fusable(out)
    for p in out.parameters():
        p.requires_grad_(False)
    return out


def has_fusable_modules(model: nn.Module) -> bool:
    """Whether any submodule of ``model`` (not ``model`` itself) has a ``fused()`` method."""
    return any(callable(getattr(m, "fused", None)) for m in model.modules() if m is not model)


def for_inference(model: nn.Module) -> nn.Module:
    """What inference entry points run: a fused copy when ``model`` has fusable modules, else ``model``.

    Call it after ``model.eval()`` (the copy is made from the model as it is, BatchNorm running
    statistics included). Models without fusable modules (SegFormer, RSSeg) are returned as they
    are, so no copy is made for them.
    """
    if getattr(model, "is_fused", False) or not has_fusable_modules(model):
        return model
    fused = getattr(model, "fused", None)
    return fused() if callable(fused) else fuse_for_inference(model)


__all__ = ["fuse_for_inference", "has_fusable_modules", "for_inference"]
