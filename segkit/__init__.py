"""segkit — pure-PyTorch semantic segmentation: SegNeXt, SegFormer and RSSeg.

Quick start::

    import segkit
    model = segkit.build_model("segnext-t", num_classes=150)
    segkit.load_checkpoint(model, "segnext_tiny_512x512_ade_160k.pth")
    model.save_pretrained("my-model"); model = segkit.from_pretrained("my-model")

Layout: :mod:`segkit.models` (the families SegFormer / SegNeXt / RSSeg, their backbones and
heads, the ``Segmentor``), :mod:`segkit.data` (reading, datasets, transforms, the test protocol;
no PyTorch at import), :mod:`segkit.engine` (training, evaluation, prediction),
:mod:`segkit.tools` (FLOPs, benchmark, robustness, ONNX), :mod:`segkit.checkpoints`,
:mod:`segkit.config`, and the ``segkit`` command line (:mod:`segkit.cli`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.2.0"

# The public names are imported on first use (PEP 562 module __getattr__) rather than here, so
# that torch-free code paths (``segkit predict --onnx``: onnxruntime + NumPy + OpenCV) can import
# segkit submodules on a machine without PyTorch. ``from segkit import build_model`` works as usual;
# editors and type checkers follow the names through the TYPE_CHECKING imports below.
_LAZY = {
    **dict.fromkeys(["LoadReport", "load_checkpoint", "read_state_dict"], "segkit.checkpoints"),
    **dict.fromkeys(["from_pretrained", "load_model"], "segkit.hub"),
    **dict.fromkeys(["CheckpointError", "ConfigError", "DataError", "SegkitError", "UsageError"], "segkit.errors"),
    "Segmentor": "segkit.models.segmentor",
    **dict.fromkeys(["Features", "DecodeHead"], "segkit.models.contract"),
    **dict.fromkeys(["Family", "PaperRow"], "segkit.models.family"),
    **dict.fromkeys(
        ["FAMILIES", "MODELS", "add_family", "build_model", "count_parameters", "list_models"], "segkit.models.zoo"
    ),
    "TestProtocol": "segkit.data.protocol",
    **dict.fromkeys(["Segmenter", "SegResult"], "segkit.engine.segmenter"),
    "PRETRAINED": "segkit.models.zoo",
}
_SUBMODULES = {
    "checkpoints",
    "hub",
    "cli",
    "config",
    "data",
    "engine",
    "errors",
    "models",
    "recipes",
    "runtime",
    "tools",
    "utils",
}

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DecodeHead",
    "FAMILIES",
    "Family",
    "Features",
    "LoadReport",
    "MODELS",
    "PRETRAINED",
    "PaperRow",
    "SegResult",
    "SegkitError",
    "Segmenter",
    "Segmentor",
    "TestProtocol",
    "UsageError",
    "add_family",
    "build_model",
    "count_parameters",
    "from_pretrained",
    "list_models",
    "load_checkpoint",
    "load_model",
    "read_state_dict",
]

if TYPE_CHECKING:  # pragma: no cover
    from segkit.checkpoints import LoadReport, load_checkpoint, read_state_dict
    from segkit.data.protocol import TestProtocol
    from segkit.engine.segmenter import Segmenter, SegResult
    from segkit.errors import CheckpointError, ConfigError, DataError, SegkitError, UsageError
    from segkit.hub import from_pretrained, load_model
    from segkit.models.contract import DecodeHead, Features
    from segkit.models.family import Family, PaperRow
    from segkit.models.segmentor import Segmentor
    from segkit.models.zoo import FAMILIES, MODELS, PRETRAINED, add_family, build_model, count_parameters, list_models


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"segkit.{name}")
    else:
        raise AttributeError(f"module 'segkit' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)
