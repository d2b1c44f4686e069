"""The test protocol of a model — test resize + whole / slide inference — built in one place.

``segkit eval``, ``segkit predict``, ``segkit robustness``, ``segkit benchmark`` (with a
checkpoint) and the torch-free ONNX predictor all take the protocol from here, so a model is
evaluated and used the way it was trained: a trained model's ``final/config.json`` carries its
training config (``train_config``), whose ``test_transform`` and ``eval`` sections are the
protocol; an exported ONNX file carries the same dict in its metadata. A model without one gets
the reference defaults (keep-ratio resize into 2048×512, sides to multiples of 32, whole
inference: the ADE20K test pipeline of the official SegFormer / SegNeXt configs).

Torch-free (NumPy / OpenCV only), so the ONNX path uses it unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from segkit.data.meta import IMAGENET_MEAN, IMAGENET_STD
from segkit.data.transforms import TestTransform
from segkit.errors import UsageError

# Defaults of the reference test pipeline (also the defaults of segkit.config's sections).
DEFAULT_TEST_SCALE = (2048, 512)
DEFAULT_SIZE_DIVISOR = 32
MODES = ("whole", "slide")


@dataclass
class TestProtocol:
    """How images are prepared and run at test time.

    Attributes:
        scale: ``(long, short)`` keep-ratio test resize in pixels (exact ``(W, H)`` with
            ``keep_ratio=False``); ``None`` = no resize.
        keep_ratio: see ``scale``.
        size_divisor: network input sides rounded up to multiples of it (``None`` = off).
        mode: ``"whole"`` or ``"slide"``.
        crop_size, stride: slide window and step ``(h, w)`` in pixels (stride defaults to the crop).
        scales, flip: multi-scale / horizontal-flip test-time augmentation.
        train_crop: the training crop ``(h, w)``, the slide window when ``crop_size`` is unset.

    Raises ``ValueError`` for an unknown mode or malformed sizes.
    """

    __test__ = False  # not a pytest class

    scale: Optional[tuple[int, int]] = DEFAULT_TEST_SCALE
    keep_ratio: bool = True
    size_divisor: Optional[int] = DEFAULT_SIZE_DIVISOR
    mode: str = "whole"
    crop_size: Optional[tuple[int, int]] = None
    stride: Optional[tuple[int, int]] = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    train_crop: Optional[tuple[int, int]] = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"test mode must be one of {MODES}, got {self.mode!r}")
        self.scale = _pair_or_none(self.scale, "scale")
        self.crop_size = _pair_or_none(self.crop_size, "crop_size")
        self.stride = _pair_or_none(self.stride, "stride")
        self.train_crop = _pair_or_none(self.train_crop, "train_crop")
        self.scales = tuple(float(s) for s in self.scales)
        self.size_divisor = int(self.size_divisor) if self.size_divisor else None
        if not all(s > 0 and s != float("inf") for s in self.scales):  # NaN fails s > 0
            raise UsageError(f"test scales must be positive ratios, got {list(self.scales)} (--scales / eval.scales)")
        if self.crop_size and self.stride and any(s > c for s, c in zip(self.stride, self.crop_size)):
            raise UsageError(
                f"slide stride {self.stride} is larger than the window {self.crop_size} (--stride / --crop): pixels "
                f"between the windows would get no prediction; use a stride <= the window"
            )

    # ------------------------------------------------------------------ building
    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> "TestProtocol":
        """The protocol of a training config (``Config.to_dict()`` or the same as a plain dict).

        Reads ``test_transform`` (``scale``, ``keep_ratio``, ``size_divisor``), ``eval``
        (``mode``, ``crop_size``, ``stride``, ``scales``, ``flip``) and
        ``train_transform.crop_size``; missing entries take the reference defaults.
        """
        config = dict(config or {})
        t = dict(config.get("test_transform") or {})
        e = dict(config.get("eval") or {})
        train = dict(config.get("train_transform") or {})
        return cls(
            scale=t.get("scale", DEFAULT_TEST_SCALE),
            keep_ratio=t.get("keep_ratio", True),
            size_divisor=t.get("size_divisor", DEFAULT_SIZE_DIVISOR),
            mode=e.get("mode", "whole"),
            crop_size=e.get("crop_size"),
            stride=e.get("stride"),
            scales=e.get("scales", (1.0,)),
            flip=e.get("flip", False),
            train_crop=train.get("crop_size"),
        )

    @classmethod
    def of(cls, model) -> "TestProtocol":
        """The protocol a model (or ONNX predictor) carries: its ``test_protocol`` dict if it has one
        (registry / ONNX metadata), else that of its ``train_config``, else the defaults."""
        explicit = getattr(model, "test_protocol", None)
        if explicit:
            return cls(**dict(explicit)) if not isinstance(explicit, TestProtocol) else explicit
        return cls.from_config(getattr(model, "train_config", None))

    @staticmethod
    def origin(model) -> str | None:
        """Where :meth:`of` takes ``model``'s protocol from: ``"stored"`` (its ``test_protocol``),
        ``"training config"`` (its ``train_config``), or ``None`` — neither, so segkit's defaults
        (the papers' ADE20K protocol: keep-ratio :data:`DEFAULT_TEST_SCALE`, whole inference)."""
        if getattr(model, "test_protocol", None):
            return "stored"
        if getattr(model, "train_config", None):
            return "training config"
        return None

    def replace(self, **changes) -> "TestProtocol":
        """A copy with the given fields changed; ``None`` values leave a field as it is."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    # ------------------------------------------------------------------ using
    def window(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """``(crop, stride)`` for slide inference: ``crop_size`` (else the training crop, else 512²),
        ``stride`` (else the crop)."""
        crop = self.crop_size or self.train_crop or (512, 512)
        return crop, self.stride or crop

    def transform(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> TestTransform:
        """The :class:`~segkit.data.transforms.TestTransform` of this protocol with the model's ``mean``/``std``."""
        return TestTransform(
            scale=self.scale, keep_ratio=self.keep_ratio, size_divisor=self.size_divisor, mean=mean, std=std
        )

    def inference_kwargs(self) -> dict:
        """Keyword arguments of ``Segmentor.inference`` / ``predict`` for this protocol."""
        kw: dict = {"mode": self.mode, "scales": self.scales, "flip": self.flip}
        if self.mode == "slide":
            kw["crop_size"], kw["stride"] = self.window()
        return kw

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples as lists); ``TestProtocol(**d)`` rebuilds it."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def describe(self) -> str:
        """One line for logs, e.g. ``resize keep-ratio 480x360, multiples of 32, whole``."""
        if self.scale is None:
            resize = "no resize"
        else:
            resize = f"resize {'keep-ratio ' if self.keep_ratio else ''}{self.scale[0]}x{self.scale[1]}"
        if self.size_divisor:
            resize += f", multiples of {self.size_divisor}"
        run = self.mode
        if self.mode == "slide":
            crop, stride = self.window()
            run += f" {crop[0]}x{crop[1]} stride {stride[0]}x{stride[1]}"
        if self.scales != (1.0,) or self.flip:
            run += f", scales {list(self.scales)}{' + flip' if self.flip else ''}"
        return f"{resize}, {run}"


def _pair_or_none(value, name: str) -> Optional[tuple[int, int]]:
    if value is None:
        return None
    if isinstance(value, int):
        return int(value), int(value)
    value = list(value)
    if len(value) == 1:
        value = value * 2
    if len(value) != 2 or any(int(v) <= 0 for v in value):
        raise UsageError(f"{name} must be a positive int or pair, got {value!r}")
    return int(value[0]), int(value[1])


__all__ = ["TestProtocol", "DEFAULT_TEST_SCALE", "DEFAULT_SIZE_DIVISOR", "MODES"]
