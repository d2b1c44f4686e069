"""What a model family is: one object that holds everything segkit needs to know about it.

A *family* (SegFormer, SegNeXt, RSSeg, or one of yours) is a :class:`Family`:

* ``models``: zoo name → builder (``builder(num_classes, **kwargs) -> Segmentor``);
* ``convert``: the checkpoint converter for its official formats,
  ``convert(state, model) -> (state, format_name, dropped_keys, notes)``, or ``None`` when the
  family only loads segkit's own files;
* ``flops_convention``: the FLOP counter its paper used (``"mmcv"``, ``"torchprofile"`` or
  ``"torch"``; :mod:`segkit.tools.flops`);
* ``paper_rows``: the parameter / GFLOP figures its paper reports, as :class:`PaperRow` specs
  (used by the tests, ``benchmarks/flops_table.py`` and ``docs/model_zoo.md``), and
  ``paper_tolerance``, the relative error the tests accept on them;
* ``configs``: a function returning the shipped training configs of the family
  (``{"dataset/name.yaml": config dict}``, written by ``scripts/make_configs.py``);
* ``pretrained``: its published weights as :class:`Pretrained` entries (the registry behind
  ``segkit.from_pretrained("segformer-b0_ade20k-512")``, :mod:`segkit.hub`).

The zoo (:mod:`segkit.models.zoo`) is the union of the families' ``models``;
``load_checkpoint``, the FLOP counter and the config generator look the family up by the
``family`` attribute a builder sets on its ``Segmentor`` — never by name prefix.

Architecture switches are stored once: each builder takes its switches as one dataclass
(:func:`split_kwargs` makes it from keyword arguments), builds the network from it and hands
``dataclasses.asdict`` of it to the ``Segmentor`` as ``arch``, which ``save_pretrained`` writes
to ``config.json`` and ``from_pretrained`` feeds back to the same builder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Optional

from segkit.errors import UsageError

# Keywords every builder accepts besides its architecture switches; handed to the Segmentor.
META_KEYS = (
    "class_names",
    "palette",
    "ignore_index",
    "mean",
    "std",
    "loss_avg",
    "task",
    "threshold",
    "mask_values",
    "in_channels",
)


class PaperRow(NamedTuple):
    """One parameter / GFLOP figure of a paper, as a model spec that reproduces it.

    ``model`` and ``kwargs`` build it (``build_model(model, classes, **kwargs)``); ``shape`` is
    the ``(H, W)`` input; ``params_m`` / ``gflops`` the published numbers (``None`` where the
    paper gives none); ``source`` the table they come from.
    """

    label: str
    model: str
    kwargs: dict
    classes: int
    shape: tuple[int, int]
    params_m: Optional[float]
    gflops: Optional[float]
    source: str = ""


NVIDIA_SCL = (
    "NVIDIA Source Code License for SegFormer: non-commercial use only (research or evaluation purposes); "
    "https://github.com/NVlabs/SegFormer/blob/master/LICENSE"
)


@dataclass(frozen=True)
class Pretrained:
    """One published checkpoint of a zoo model (an entry of the pretrained registry).

    Attributes:
        name: registry name, ``<model>_<dataset>-<crop>`` (``segformer-b0_ade20k-512``) or
            ``<encoder>_imagenet`` for ImageNet encoders.
        model: zoo name of the architecture it loads into.
        dataset: ``"ade20k"``, ``"cityscapes"``, ``"imagenet"`` …; class names and palette of the
            first two come from :mod:`segkit.data.meta`.
        num_classes: classes of the segmentation head (``0`` for encoder-only weights).
        repo_id, filenames: a Hugging Face Hub source (first file found is used), or
        url: a download URL;
        sha256: the expected SHA-256 of the file, or its published prefix (mmseg URLs end with the
            first 8 hex digits); ``None`` for Hub files (the Hub checks its own LFS hashes).
        protocol: the test protocol (``segkit.data.protocol.TestProtocol`` fields) of its paper /
            official config, applied by ``segkit eval`` / ``predict`` / ``Segmenter``.
        licence: the weights' licence, printed at the first download when restrictive.
        miou: single-scale mIoU reported by the source, where one is published.
        trained_by: who trained these weights (the authors, or a re-training such as mmseg's).
        arch: architecture switches the weights were trained with where they differ from the zoo
            defaults (mmseg's SegNeXt-B/L configs use NMF rank 16 instead of the official 64).
    """

    name: str
    model: str
    dataset: str
    num_classes: int
    licence: str
    repo_id: Optional[str] = None
    filenames: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")
    url: Optional[str] = None
    sha256: Optional[str] = None
    protocol: Optional[dict] = None
    miou: Optional[float] = None
    trained_by: str = ""
    arch: dict = field(default_factory=dict)

    @property
    def encoder_only(self) -> bool:
        return self.num_classes == 0

    @property
    def source(self) -> str:
        return f"hf://{self.repo_id}" if self.repo_id else str(self.url)


@dataclass(frozen=True)
class Family:
    """A model family (see the module docstring)."""

    name: str
    paper: str
    models: dict[str, Callable[..., Any]]
    convert: Optional[Callable[..., tuple]] = None
    flops_convention: str = "torch"
    paper_rows: tuple[PaperRow, ...] = ()
    paper_tolerance: float = 0.05
    configs: Optional[Callable[[], dict[str, dict]]] = None
    pretrained: tuple[Pretrained, ...] = ()
    citation: str = ""
    # ImageNet classifiers of the family's encoders (``segkit pretrain``): name → builder(num_classes, **kw)
    classifiers: dict[str, Callable[..., Any]] = field(default_factory=dict)
    # parameters of each model with K classes = base + K * per_class: name → (base, per_class)
    param_counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.flops_convention not in ("torch", "mmcv", "torchprofile"):
            raise UsageError(
                f"family {self.name}: flops_convention must be torch, mmcv or torchprofile, "
                f"got {self.flops_convention!r}"
            )


class _ArgumentsChecked(Exception):
    """Raised by :func:`split_kwargs` inside :func:`checking_arguments`: the builder's arguments are valid."""


_checking = threading.local()


@contextlib.contextmanager
def checking_arguments():
    """Within this context a builder stops (:class:`_ArgumentsChecked`) once :func:`split_kwargs` has accepted
    its keyword arguments: what :func:`segkit.models.zoo.check_model_args` uses to check a config's
    ``model_args`` without building the network."""
    _checking.on = True
    try:
        yield
    finally:
        _checking.on = False


def split_kwargs(arch_cls, kwargs: dict, builder: str) -> tuple[Any, dict]:
    """``(arch_cls(**switches), meta)`` from a builder's keyword arguments.

    ``meta`` holds the :data:`META_KEYS` that are not ``None``; every other keyword must be a
    field of the dataclass ``arch_cls``. Raises :class:`~segkit.errors.UsageTypeError` (a ``TypeError``)
    naming unknown keywords, the nearest valid one and the valid ones.
    """
    from segkit.errors import UsageTypeError
    from segkit.utils import suggest

    meta = {k: kwargs[k] for k in META_KEYS if kwargs.get(k) is not None}
    rest = {k: v for k, v in kwargs.items() if k not in META_KEYS}
    names = {f.name for f in dataclasses.fields(arch_cls)}
    unknown = sorted(set(rest) - names)
    if unknown:
        hint = suggest(unknown[0], names) if len(unknown) == 1 else ""
        raise UsageTypeError(
            f"{builder} got unknown argument(s): {unknown}{hint}; architecture switches: {sorted(names)}"
        )
    _check_values(rest, builder)
    arch = arch_cls(**rest)
    if getattr(_checking, "on", False):
        raise _ArgumentsChecked
    return arch, meta


# switches whose values have a range whatever the family: rates in [0, 1), sizes >= 1 (a 0-wide decoder would
# build and train silently into a model that predicts one constant class)
_RATES = ("drop_path_rate", "dropout", "decoder_dropout")
_SIZES = (
    "decoder_dim",
    "ham_channels",
    "md_r",
    "embed_dim",
    "lsb_dim",
    "dim",
    "head_dim",
    "expand",
    "train_steps",
    "eval_steps",
)


def _check_values(kwargs: dict, builder: str) -> None:
    """:class:`~segkit.errors.UsageError` naming a switch given out of its range (:data:`_RATES`, :data:`_SIZES`)."""
    from segkit.errors import UsageError

    for key, v in kwargs.items():
        if v is None:
            continue
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if key in _RATES and not (number and 0 <= v < 1):
            raise UsageError(f"{builder}: {key} must be a rate in [0, 1), got {v!r}")
        if key in _SIZES and not (number and float(v).is_integer() and v >= 1):
            raise UsageError(f"{builder}: {key} must be an integer >= 1, got {v!r}")


def arch_dict(arch) -> dict:
    """JSON-ready ``dataclasses.asdict`` of an architecture dataclass (tuples become lists)."""

    def plain(v):
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(arch).items()}


__all__ = ["Family", "PaperRow", "Pretrained", "NVIDIA_SCL", "META_KEYS", "split_kwargs", "arch_dict"]
