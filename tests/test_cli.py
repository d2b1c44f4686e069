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
    assert cli(["flops", "segnxt-t"]) == 2  # an unknown model is a usage mistake in every command
    assert "did you mean segnext-t" in capsys.readouterr().err
    assert cli(["train", "camvid/segnext-t_15mn"]) == 1
    assert "did you mean camvid/segnext-t_15min" in capsys.readouterr().err


def test_models_header_counts(capsys):
    assert cli(["models", "--num-classes", "19"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "params (19 classes)" in out[0] and len(out) == 1 + len(segkit.MODELS)
    b0 = next(line for line in out if line.startswith("segformer-b0"))
    n = sum(p.numel() for p in segkit.build_model("segformer-b0", 19).parameters())
    assert f"{n:,}" in b0 and "segformer" in b0.split()[1]


def test_models_reads_its_table_and_fits_the_longest_name(capsys, monkeypatch):
    from segkit.models import zoo

    def no_build(*args, **kwargs):
        raise AssertionError("segkit models built a model")

    monkeypatch.setattr(zoo, "build_model", no_build)
    assert cli(["models"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 + len(segkit.MODELS)
    family_column = out[0].index("family")
    for line in out[1:]:  # name, family and count in their columns, at least two spaces apart
        name, family, count = line.split()
        assert line.index(family, len(name)) == family_column and line[family_column - 2 : family_column] == "  "
        base, per_class = zoo.FAMILIES[family].param_counts[name]
        assert count == f"{base + 150 * per_class:,}"
    longest = max(segkit.MODELS, key=len)
    assert any(line.startswith(longest + "  ") for line in out)
    # a model missing from the table (a family added with segkit.add_family) is built instead
    monkeypatch.undo()
    monkeypatch.delitem(zoo.FAMILIES["segformer"].param_counts, "segformer-b0")
    assert cli(["models", "--filter", "segformer-b0"]) == 0
    assert "3,752,694" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:  # a usage mistake, refused by the option's type: exit 2
        cli(["models", "--num-classes", "0"])
    assert exit_.value.code == 2 and "--num-classes: must be >= 1, got 0" in capsys.readouterr().err


def test_models_parameter_table_matches_the_builds():
    """``segkit models`` reads the counts from each family's ``param_counts`` (base + K * per_class);
    meta-device builds of every zoo model with 1 and 150 classes check the tables."""
    from segkit.models.zoo import FAMILIES, built_parameter_count

    PARAMS = {name: row for f in FAMILIES.values() for name, row in f.param_counts.items()}

    measured = {}
    for name in segkit.MODELS:
        n1, n150 = built_parameter_count(name, 1), built_parameter_count(name, 150)
        assert (n150 - n1) % 149 == 0, name
        per_class = (n150 - n1) // 149
        measured[name] = (n1 - per_class, per_class)
    wrong = {name: m for name, m in measured.items() if PARAMS.get(name) != m}
    assert not wrong, "update PARAM_COUNTS in the family modules:\n" + "\n".join(
        f'    "{n}": {m},' for n, m in wrong.items()
    )
    assert set(PARAMS) == set(measured), sorted(set(PARAMS) ^ set(measured))


def test_segkit_warnings_print_as_one_line(monkeypatch):
    """Warnings raised in any segkit module (not only segkit/cli/) read ``segkit CMD: warning: …``;
    other packages' keep the default format."""
    import io
    import warnings

    import segkit.data.io
    from segkit.cli import _plain_warnings

    default = []
    monkeypatch.setattr(warnings, "showwarning", lambda message, *args, **kwargs: default.append(str(message)))
    monkeypatch.delenv("SEGKIT_DEBUG", raising=False)
    _plain_warnings("check-data")
    out = io.StringIO()
    warnings.showwarning("odd image", UserWarning, segkit.data.io.__file__, 10, file=out)
    warnings.showwarning("not ours", UserWarning, "/elsewhere/pkg.py", 10, file=out)
    assert out.getvalue() == "segkit check-data: warning: odd image\n" and default == ["not ours"]


def test_check_data_prints_its_table(synthetic_split, capsys):
    assert cli(["check-data", str(synthetic_split), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "bound method" not in out and "2 samples" in out and "person" in out


def test_eval_absent_rule_and_the_default_protocol_note(synthetic_split, tmp_path, capsys):
    """``--absent union`` (default, mmseg's rule) vs ``gt`` on a model that predicts classes the two
    test labels lack; a save_pretrained folder with no protocol gets a one-line note naming the
    default it applies and how to change it, and a model that stores one gets none."""
    import json

    import numpy as np
    from PIL import Image

    for label in (synthetic_split / "labels" / "test").iterdir():  # class 4 painted over: absent from the GT
        a = np.array(Image.open(label))
        Image.fromarray(np.where(a == 4, 0, a).astype(np.uint8)).save(label)
    torch.manual_seed(0)
    model = segkit.build_model("segformer-b0", num_classes=5, decoder_dim=32)
    bare = model.save_pretrained(tmp_path / "bare")
    args = ["eval", str(bare), "--data", str(synthetic_split), "--split", "test"]
    out = {}
    for rule in ("union", "gt"):
        assert cli([*args, "--absent", rule, "--out", str(tmp_path / rule)]) == 0
        err = capsys.readouterr().err
        assert "stores no test protocol: applying segkit's default" in err and "--scale LONG SHORT" in err
        assert "(segkit's default)" in err
        out[rule] = json.loads((tmp_path / rule / "metrics.json").read_text())
    iou_u, iou_g = out["union"]["IoU"], out["gt"]["IoU"]
    absent = [k for k, v in enumerate(iou_g) if v is None or v != v]  # NaN / null under gt: no GT pixel
    predicted_absent = [k for k in absent if iou_u[k] == 0]
    assert predicted_absent, (iou_u, iou_g)  # the random model predicts a class the labels lack
    assert out["union"]["mIoU"] < out["gt"]["mIoU"]
    model.test_protocol = {"scale": [120, 90], "keep_ratio": True}
    stored = model.save_pretrained(tmp_path / "stored")
    assert cli(["eval", str(stored), "--data", str(synthetic_split), "--split", "test", "--max-images", "1"]) == 0
    err = capsys.readouterr().err
    assert (
        "stores no test protocol" not in err and "resize keep-ratio 120x90" in err and "(stored with the model)" in err
    )
    image = next((synthetic_split / "images" / "test").iterdir())
    assert cli(["predict", str(bare), str(image), "--out", str(tmp_path / "pred")]) == 0
    assert "segkit predict: note: " in capsys.readouterr().err
    assert cli(["predict", str(bare), str(image), "--out", str(tmp_path / "pred2"), "--scale", "120", "90"]) == 0
    assert "note" not in capsys.readouterr().err
