"""CLI: models listing and checkpoint conversion to segkit's format."""

import torch

import segkit
from segkit.cli import main as cli


def test_models_lists_exact_counts(capsys):
    assert cli(["models", "--filter", "segformer-b0"]) == 0
    out = capsys.readouterr().out
    assert "segformer-b0" in out and "3,752,694" in out


def test_convert_official_checkpoint_to_safetensors(tmp_path, capsys):
    torch.manual_seed(0)
    src_model = segkit.build_model("segformer-b0", num_classes=19).eval()
    state = dict(src_model.state_dict())
    state["decode_head.conv_seg.weight"] = torch.zeros(19, 128, 1, 1)  # unused in official checkpoints
    state["decode_head.conv_seg.bias"] = torch.zeros(19)
    torch.save({"meta": {"epoch": 1}, "state_dict": state}, tmp_path / "official.pth")
    assert cli(["convert", str(tmp_path / "official.pth"), str(tmp_path / "out"), "--model", "segformer-b0"]) == 0
    assert "19 classes" in capsys.readouterr().out  # num_classes read from linear_pred, not conv_seg
    model = segkit.from_pretrained(tmp_path / "out")
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(model(x), src_model(x))
    # a wrong variant is refused with a clear message and exit code 1 (a model error, not a usage error)
    assert cli(["convert", str(tmp_path / "official.pth"), str(tmp_path / "bad"), "--model", "segformer-b2"]) == 1
    assert "segformer-b2" in capsys.readouterr().err
