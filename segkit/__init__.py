"""segkit — pure-PyTorch semantic segmentation: SegNeXt, SegFormer and RSSeg.

Quick start::

    import segkit
    model = segkit.build_model("segnext-t", num_classes=150)
    segkit.load_checkpoint(model, "segnext_tiny_512x512_ade_160k.pth")
    model.save_pretrained("my-model"); model = segkit.from_pretrained("my-model")
"""
import importlib

__version__ = "0.1.0"

# The public names are imported on first use (PEP 562 module __getattr__) rather than here, so
# that torch-free code paths (``segkit predict --onnx``: onnxruntime + NumPy + Pillow) can import
# segkit submodules on a machine without PyTorch. ``from segkit import build_model`` works as before.
_LAZY = {
    **dict.fromkeys(["CheckpointError", "LoadReport", "from_pretrained", "load_checkpoint", "load_model",
                     "read_state_dict"], "segkit.checkpoints"),
    "Segmentor": "segkit.models.segmentor",
    **dict.fromkeys(["MODELS", "build_model", "count_parameters", "list_models"], "segkit.models.zoo"),
}
_SUBMODULES = {"checkpoints", "cli", "config", "data", "engine", "models", "runtime", "tools", "utils"}

__all__ = [
    "MODELS", "Segmentor", "build_model", "list_models", "count_parameters",
    "load_checkpoint", "load_model", "read_state_dict", "from_pretrained", "LoadReport", "CheckpointError",
]


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
