"""segkit — pure-PyTorch semantic segmentation: SegNeXt, SegFormer and RSSeg.

Quick start::

    import segkit
    model = segkit.build_model("segnext-t", num_classes=150)
    segkit.load_checkpoint(model, "segnext_tiny_512x512_ade_160k.pth")
    model.save_pretrained("my-model"); model = segkit.from_pretrained("my-model")
"""
from segkit.checkpoints import CheckpointError, LoadReport, from_pretrained, load_checkpoint, load_model, read_state_dict
from segkit.models.segmentor import Segmentor
from segkit.models.zoo import MODELS, build_model, count_parameters, list_models

__version__ = "0.1.0"

__all__ = [
    "MODELS", "Segmentor", "build_model", "list_models", "count_parameters",
    "load_checkpoint", "load_model", "read_state_dict", "from_pretrained", "LoadReport", "CheckpointError",
]
