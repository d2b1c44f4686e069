"""The model zoo: the union of the model families' name → builder dicts.

``build_model("segnext-t", num_classes=150)`` returns a :class:`~segkit.models.segmentor.Segmentor`.
Each builder takes ``num_classes`` plus two kinds of keyword arguments:

* architecture switches (``drop_path_rate``, ``md_r``, ``one_step_grad`` …), the fields of the
  family's architecture dataclass, recorded in ``Segmentor.arch`` so that ``from_pretrained``
  rebuilds the same network;
* metadata (``class_names``, ``palette``, ``ignore_index``, ``mean``, ``std``, ``loss_avg``),
  handed to the ``Segmentor``.

An unknown keyword is a ``TypeError`` naming it. No registries: the families are listed in
:data:`FAMILIES` (a plain dict); adding a model family means one module with a
:class:`~segkit.models.family.Family` and one entry in the tuple below — or, from user code,
:func:`add_family`.
"""

from __future__ import annotations

import difflib
from typing import Callable

from . import rsseg, segformer, segnext
from .family import Family
from .segmentor import Segmentor

FAMILIES: dict[str, Family] = {f.name: f for f in (segformer.FAMILY, segnext.FAMILY, rsseg.FAMILY)}
MODELS: dict[str, Callable[..., Segmentor]] = {name: b for f in FAMILIES.values() for name, b in f.models.items()}
# ImageNet classifiers of the encoders (segkit pretrain): mscan-t … / mit-b0 …
CLASSIFIERS: dict[str, Callable] = {name: b for f in FAMILIES.values() for name, b in f.classifiers.items()}
# published weights of every family (segkit.hub); a dict from registry name to its Pretrained entry
PRETRAINED: dict = {p.name: p for f in FAMILIES.values() for p in f.pretrained}


def add_family(family: Family) -> None:
    """Add a model family (and its models) to the zoo of this process.

    Raises ``ValueError`` when the family name or one of its model names is already taken.
    """
    if family.name in FAMILIES:
        raise ValueError(f"a model family named {family.name!r} already exists")
    taken = sorted(set(family.models) & set(MODELS))
    if taken:
        raise ValueError(f"family {family.name!r}: model name(s) {taken} already exist")
    FAMILIES[family.name] = family
    MODELS.update(family.models)
    CLASSIFIERS.update(family.classifiers)
    PRETRAINED.update({p.name: p for p in family.pretrained})


def family_of(model) -> Family | None:
    """The :class:`~segkit.models.family.Family` of a model (its ``family`` attribute), or ``None``."""
    return FAMILIES.get(getattr(model, "family", None) or "")


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`, in zoo order."""
    return list(MODELS)


def suggest(name: str, choices, n: int = 3) -> str:
    """``" (did you mean a, b?)"`` for the nearest ``choices`` to ``name``, or ``""``."""
    close = difflib.get_close_matches(str(name).lower(), list(choices), n=n, cutoff=0.5)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def build_model(name: str, num_classes: int = 150, **kwargs) -> Segmentor:
    """Build a zoo model by name, e.g. ``build_model("segnext-t", num_classes=19)``.

    Raises ``KeyError`` (suggesting the nearest names) for an unknown model, ``ValueError`` for
    ``num_classes < 1`` and ``TypeError`` for an unknown keyword argument. Weights are randomly
    initialised as in the reference code; load weights with :func:`segkit.load_checkpoint` or
    :func:`segkit.from_pretrained`.
    """
    key = str(name).lower()
    if key not in MODELS:
        raise KeyError(f"unknown model {name!r}{suggest(key, MODELS)}; available: {', '.join(MODELS)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    model = MODELS[key](num_classes, **kwargs)
    family = family_of(model)
    if family is not None:
        model.paper = {"title": family.paper, "citation": family.citation}
    return model


def build_classifier(name: str, num_classes: int = 1000, **kwargs):
    """An encoder's ImageNet classifier by name (``mscan-t`` … ``mscan-l``, ``mit-b0`` … ``mit-b5``):
    a :class:`~segkit.models.classifier.Classifier`. Raises ``KeyError`` (with the nearest names)
    for an unknown name."""
    key = str(name).lower()
    if key not in CLASSIFIERS:
        raise KeyError(f"unknown classifier {name!r}{suggest(key, CLASSIFIERS)}; available: {', '.join(CLASSIFIERS)}")
    return CLASSIFIERS[key](num_classes, **kwargs)


def count_parameters(model) -> int:
    """Number of parameters (weights, biases, norm affines; BN running statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "PRETRAINED",
    "FAMILIES",
    "MODELS",
    "CLASSIFIERS",
    "add_family",
    "family_of",
    "list_models",
    "build_model",
    "build_classifier",
    "count_parameters",
    "suggest",
]
