"""CLI: models listing and checkpoint conversion to segkit's format."""

import pytest
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


def test_every_option_has_help_and_every_command_an_example(capsys):
    import argparse

    from segkit.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) >= {
        "models",
        "flops",
        "train",
        "eval",
        "predict",
        "check-data",
        "convert",
        "benchmark",
        "robustness",
        "export",
        "analyze",
        "pretrain",
    }
    for name, sp in sub.choices.items():
        undocumented = [a.dest for a in sp._actions if a.help is None and not isinstance(a, argparse._HelpAction)]
        assert not undocumented, f"segkit {name}: options without help: {undocumented}"
        assert sp.epilog and "example:" in sp.epilog and f"segkit {name}" in sp.epilog, name
    tools = next(a for a in sub.choices["analyze"]._actions if isinstance(a, argparse._SubParsersAction))
    assert set(tools.choices) == {"layers", "erf", "features", "attention", "gradcam", "sizes"}
    for name, sp in tools.choices.items():
        undocumented = [a.dest for a in sp._actions if a.help is None and not isinstance(a, argparse._HelpAction)]
        assert not undocumented, f"segkit analyze {name}: options without help: {undocumented}"
        assert sp.epilog and f"segkit analyze {name}" in sp.epilog, name
    predict_crop = next(a for a in sub.choices["predict"]._actions if a.dest == "crop")
    assert predict_crop.metavar == ("H", "W")
    for name in ("eval", "predict", "benchmark", "robustness"):
        device = next(a for a in sub.choices[name]._actions if a.dest == "device")
        assert device.default == "auto", name
    with pytest.raises(SystemExit) as e:
        cli(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"segkit {segkit.__version__}"


def test_mistyped_names_suggest_the_nearest(capsys):
    assert cli(["flops", "segnxt-t"]) == 1
    assert "did you mean segnext-t" in capsys.readouterr().err
    assert cli(["train", "camvid/segnext-t_15mn"]) == 1
    assert "did you mean camvid/segnext-t_15min" in capsys.readouterr().err


def test_models_header_counts_and_speed(capsys):
    import time

    t = time.perf_counter()
    assert cli(["models", "--num-classes", "19"]) == 0
    elapsed = time.perf_counter() - t
    out = capsys.readouterr().out.splitlines()
    assert "params (19 classes)" in out[0] and len(out) == 1 + len(segkit.MODELS)
    b0 = next(line for line in out if line.startswith("segformer-b0"))
    n = sum(p.numel() for p in segkit.build_model("segformer-b0", 19).parameters())
    assert f"{n:,}" in b0 and "segformer" in b0.split()[1]
    assert elapsed < 20  # meta-device counting (seconds), not 25 real model builds


def test_check_data_prints_its_table(synthetic_split, capsys):
    assert cli(["check-data", str(synthetic_split), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "bound method" not in out and "2 samples" in out and "person" in out
