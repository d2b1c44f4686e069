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

from typing import Callable

from segkit.errors import UnknownNameError, UsageError
from segkit.utils import suggest  # noqa: F401 (re-exported: the did-you-mean of every name list)

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

    Raises :class:`~segkit.errors.UsageError` (a ``ValueError``) when the family name or one of its model
    names is already taken.
    """
    if family.name in FAMILIES:
        raise UsageError(f"a model family named {family.name!r} already exists")
    taken = sorted(set(family.models) & set(MODELS))
    if taken:
        raise UsageError(f"family {family.name!r}: model name(s) {taken} already exist")
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


def _check_num_classes(num_classes) -> None:
    import numbers

    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise UsageError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if num_classes < 1:
        raise UsageError(f"num_classes must be >= 1, got {num_classes}")


def build_model(name: str, num_classes: int = 150, **kwargs) -> Segmentor:
    """Build a zoo model by name, e.g. ``build_model("segnext-t", num_classes=19)``.

    Raises :class:`~segkit.errors.UnknownNameError` (a ``KeyError``; the nearest names suggested) for an
    unknown model, :class:`~segkit.errors.UsageError` (a ``ValueError``) for ``num_classes < 1`` and
    :class:`~segkit.errors.UsageTypeError` (a ``TypeError``) for an unknown keyword argument. Weights are randomly
    initialised as in the reference code; load weights with :func:`segkit.load_checkpoint` or
    :func:`segkit.from_pretrained`.
    """
    key = str(name).lower()
    if key not in MODELS:
        raise UnknownNameError(f"unknown model {name!r}{suggest(key, MODELS)}; `segkit models` lists them")
    _check_num_classes(num_classes)
    model = MODELS[key](num_classes, **kwargs)
    family = family_of(model)
    if family is not None:
        model.paper = {"title": family.paper, "citation": family.citation}
    return model


def check_model_args(name: str, **kwargs) -> None:
    """Raise what :func:`build_model` would for ``name`` and these keyword arguments (an unknown model, an
    unknown or reserved keyword, an invalid architecture value) without building the network: the check of
    a config's ``model_args`` when it is read."""
    import torch

    from .family import _ArgumentsChecked, checking_arguments
    from .layers import skip_init

    key = str(name).lower()
    if key not in MODELS:
        raise UnknownNameError(f"unknown model {name!r}{suggest(key, MODELS)}; `segkit models` lists them")
    try:
        with checking_arguments(), torch.device("meta"), skip_init():
            MODELS[key](2, **kwargs)
    except _ArgumentsChecked:
        pass


def build_classifier(name: str, num_classes: int = 1000, **kwargs):
    """An encoder's ImageNet classifier by name (``mscan-t`` … ``mscan-l``, ``mit-b0`` … ``mit-b5``):
    a :class:`~segkit.models.classifier.Classifier`. Raises :class:`~segkit.errors.UnknownNameError`
    (a ``KeyError``, with the nearest names) for an unknown name."""
    key = str(name).lower()
    if key not in CLASSIFIERS:
        raise UnknownNameError(
            f"unknown encoder {name!r}{suggest(key, CLASSIFIERS)}; choose from {', '.join(CLASSIFIERS)}"
        )
    return CLASSIFIERS[key](num_classes, **kwargs)


def parameter_count(name: str, num_classes: int = 150) -> int:
    """Parameters of zoo model ``name`` with ``num_classes`` classes, from its family's
    ``param_counts`` table (no build); a model missing from it is built on the meta device.

    Raises :class:`~segkit.errors.UsageError` for ``num_classes < 1``, :class:`~segkit.errors.UnknownNameError`
    (with suggestions) for an unknown name.
    """
    _check_num_classes(num_classes)
    for family in FAMILIES.values():
        if name in family.param_counts:
            base, per_class = family.param_counts[name]
            return base + num_classes * per_class
    return built_parameter_count(name, num_classes)


def built_parameter_count(name: str, num_classes: int = 150) -> int:
    """Parameters of zoo model ``name`` counted on a meta-device build (shapes only, no initialisation)."""
    import torch

    from .layers import skip_init

    with torch.device("meta"), skip_init():
        return count_parameters(build_model(name, num_classes=num_classes))


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
    "check_model_args",
    "count_parameters",
    "suggest",
]
