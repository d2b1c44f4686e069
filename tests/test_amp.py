"""bf16 autocast on the CPU: used only where the CPU has native bfloat16, refused with a clear message
elsewhere, and close to float32 on real images (the README model's figures are in docs/results.md,
measured by benchmarks/bf16_agreement.py)."""

import pytest
import torch

import segkit
import segkit.runtime as runtime
from segkit.cli import main
from segkit.data.io import read_image
from segkit.data.transforms import TestTransform
from segkit.errors import UsageError


def test_check_amp_refusals(monkeypatch):
    runtime.check_amp(None, "cpu")
    with pytest.raises(UsageError, match="fp16 needs a CUDA device"):
        runtime.check_amp("fp16", "cpu")
    with pytest.raises(UsageError, match="must be one of bf16, fp16"):
        runtime.check_amp("fp8", "cpu")
    monkeypatch.setattr(runtime, "cpu_bf16_native", lambda: False)
    with pytest.raises(UsageError, match="no native bfloat16 .*avx512_bf16.*Run without train.amp"):
        runtime.check_amp("bf16", "cpu", what="train.amp")
    monkeypatch.setattr(runtime, "cpu_bf16_native", lambda: True)
    runtime.check_amp("bf16", "cpu")


def test_cpu_bf16_native_reads_cpuinfo():
    flags = ""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags"))
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo flags on this system")
    assert runtime.cpu_bf16_native() == ("avx512_bf16" in flags.split() or "amx_bf16" in flags.split())


@pytest.mark.parametrize("command", ["eval", "predict", "robustness"])
def test_cli_refuses_emulated_bf16_before_loading(monkeypatch, tmp_path, capsys, command):
    monkeypatch.setattr(runtime, "cpu_bf16_native", lambda: False)
    args = {
        "eval": ["eval", "no-such-model", "--data", str(tmp_path)],
        "predict": ["predict", "no-such-model", str(tmp_path), "--out", str(tmp_path / "o")],
        "robustness": ["robustness", "no-such-model", "--data", str(tmp_path)],
    }[command]
    (tmp_path / "a.png").write_bytes(b"")  # predict lists inputs first
    rc = main([*args, "--amp", "bf16"])
    err = capsys.readouterr().err
    assert rc == 2 and "no native bfloat16" in err and "Traceback" not in err
    assert "no-such-model" not in err  # refused before the model is looked up


def test_segmenter_refuses_fp16_on_cpu():
    model = segkit.build_model("segformer-b0", num_classes=3)
    with pytest.raises(UsageError, match="fp16 needs a CUDA device"):
        segkit.Segmenter(model, device="cpu", amp="fp16")


def test_bf16_labels_agree_with_float32_on_camvid(camvid):
    """bf16 autocast changes some labels (it is in effect) but agrees on >= 99.5 % of the pixels;
    the label path itself stays float32. Runs on every CPU: where bfloat16 is not native (no
    avx512_bf16 / amx_bf16) segkit's commands refuse it (tests above), but PyTorch's emulated
    bfloat16 computes the same rounding, so the agreement holds there too (only slower)."""
    stems = (camvid / "splits" / "test.txt").read_text().split()[:3]
    tf = TestTransform(scale=(480, 360), keep_ratio=True, size_divisor=32)
    x = torch.stack([tf(read_image(camvid / "images" / "test" / f"{s}.webp"))["image"] for s in stems])
    torch.manual_seed(0)
    model = segkit.build_model("segnext-t", num_classes=11).eval().fused()
    with torch.inference_mode():
        ref = model.predict(x, out_size=(360, 480))
        with runtime.autocast("bf16", "cpu"):
            assert model.encode_decode(x).dtype == torch.bfloat16
            got = model.predict(x, out_size=(360, 480))
    agree = (got == ref).float().mean().item()
    assert 0.995 <= agree < 1.0, agree
