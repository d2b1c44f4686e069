"""Registry ImageNet weights into a multi-band model (issue 22 item 3): ``pretrained: mit-b0_imagenet`` (NVIDIA's
Hugging Face repo, read through an offline HF cache made here) and ``pretrained: mscan-t_imagenet`` (mmseg's file,
placed in segkit's download cache) go through the registry, the download cache and the family's converter into a
4-channel model as a config names them; the first convolution is adapted as timm's ``adapt_input_conv`` (the RGB
kernel repeated over the bands, scaled by 3/4) and the load report says so. The checkpoints are random weights in
the published formats (no network)."""

import dataclasses

import pytest
import torch

import segkit
from segkit.checkpoints import load_checkpoint
from segkit.config import config_from_dict
from segkit.engine.trainer import build_model_from_config
from segkit.hub import registry, resolve_weights, sha256_of

COMMIT = "89abcdef0123456789abcdef0123456789abcdef"


def _mit_b0_in_hf_cache(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hf"
    repo = cache / "models--nvidia--mit-b0"
    torch.manual_seed(0)
    cfg = transformers.SegformerConfig(num_labels=1000)  # B0: hidden_sizes 32..256, depths 2, 2, 2, 2
    transformers.SegformerForImageClassification(cfg).save_pretrained(repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True, raising=False)


def _mscan_t_in_download_cache(tmp_path, monkeypatch):
    e = registry()["mscan-t_imagenet"]
    dest = tmp_path / "segkit" / "downloads" / e.url.rsplit("/", 1)[-1]
    dest.parent.mkdir(parents=True)
    torch.manual_seed(0)
    rgb = segkit.build_model("segnext-t", 2)
    state = {k[len("backbone.") :]: v for k, v in rgb.state_dict().items() if k.startswith("backbone.")}
    torch.save({"state_dict": state, "meta": {}}, dest)  # mmseg's pretrain file: the encoder under official names
    # the published file's SHA-256 prefix cannot match random weights: the entry is given this file's
    monkeypatch.setitem(registry(), e.name, dataclasses.replace(e, sha256=sha256_of(dest)[:8]))


@pytest.mark.parametrize(
    "name, model, place",
    [
        ("mit-b0_imagenet", "segformer-b0", _mit_b0_in_hf_cache),
        ("mscan-t_imagenet", "segnext-t", _mscan_t_in_download_cache),
    ],
)
def test_registry_imagenet_weights_are_adapted_into_a_4_band_model(tmp_path, monkeypatch, capsys, name, model, place):
    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "segkit"))
    monkeypatch.setenv("SEGKIT_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    place(tmp_path, monkeypatch)
    weights = resolve_weights(name)
    assert str(weights).startswith(str(tmp_path)), weights  # the file placed here, through the registry name
    # the 3-channel kernel as the family's converter places it in an RGB model
    rgb = segkit.build_model(model, 2)
    load_checkpoint(rgb, weights, strict=True, verbose=False)
    capsys.readouterr()
    cfg = config_from_dict(
        {
            "model": model,
            "model_args": {"num_classes": 2, "in_channels": 4, "mean": [120.0] * 4, "std": [60.0] * 4},
            "pretrained": name,
            "data": {"train": {"type": "folder", "images_dir": str(tmp_path)}},
        }
    )
    four = build_model_from_config(cfg)
    out = capsys.readouterr().out
    assert "1 input convolution(s) adapted from 3 to 4 channels (RGB kernel repeated and scaled by 3/4)" in out, out
    own3, own4 = rgb.state_dict(), four.state_dict()
    (key,) = [k for k in own4 if own4[k].ndim == 4 and own4[k].shape[1] == 4]  # the one input convolution
    assert key in out
    w3, w4 = own3[key], own4[key]
    assert w3.shape[1] == 3 and w4.shape[1] == 4
    assert torch.equal(w4[:, :3], w3 * 0.75) and torch.equal(w4[:, 3], w3[:, 0] * 0.75)
    rest = [k for k in own3 if k.startswith("backbone.") and k != key and own3[k].dtype.is_floating_point]
    assert rest and all(torch.equal(own3[k], own4[k]) for k in rest)  # the rest of the encoder loads as is
