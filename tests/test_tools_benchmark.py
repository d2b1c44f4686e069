"""Speed benchmark: the protocol's JSON fields and its refusals (CPU; the CUDA paths cannot run here)."""

import json
import statistics

import pytest
import torch
import torch.nn as nn

import segkit
from segkit.models.contract import DecodeHead, Features
from segkit.models.segmentor import Segmentor
from segkit.tools.benchmark import BenchmarkError, benchmark, machine_info


@pytest.fixture(scope="module")
def b0():
    return segkit.build_model("segformer-b0", num_classes=4)


def test_result_fields_and_fps(b0):
    threads_before = torch.get_num_threads()
    b0.train()
    res = benchmark(b0, (64, 96), batch=2, warmup=1, runs=3, threads=1)
    lat = res["latency_ms"]
    assert len(lat["all"]) == 3
    assert lat["median"] == pytest.approx(statistics.median(lat["all"]))
    assert lat["min"] <= lat["median"] <= lat["max"] and lat["min"] > 0
    assert res["fps"] == pytest.approx(2 / (lat["median"] / 1e3))
    s = res["settings"]
    assert s["shape"] == [64, 96] and s["batch"] == 2 and s["mode"] == "whole" and s["device"] == "cpu"
    assert s["threads"] == 1 and s["runs"] == 3 and s["amp"] is None
    assert res["model"] == "segformer-b0" and res["num_classes"] == 4
    assert res["params"] == segkit.count_parameters(b0)
    mem = res["memory"]
    assert mem["method"].startswith("/proc/self/status")
    if mem["peak_mb"] is not None:  # Linux
        assert mem["peak_mb"] >= 0 and mem["peak_rss_mb"] >= mem["rss_before_mb"]
    m = res["machine"]
    assert m["torch"] == torch.__version__ and m["logical_cores"] >= 1 and m["cpu"]
    assert m["torch_threads"] == 1
    json.dumps(res)  # JSON-ready
    assert torch.get_num_threads() == threads_before  # restored
    assert b0.training  # training flag restored


@pytest.mark.parametrize("native", [True, False], ids=["bf16-native", "no-bf16"])
def test_slide_mode_and_bf16(b0, monkeypatch, native):
    """Both branches on every CPU: the capability check is faked (on a CPU without avx512_bf16 /
    amx_bf16 the "native" branch runs PyTorch's emulated bfloat16, slower but the same path)."""
    import segkit.runtime as runtime

    monkeypatch.setattr(runtime, "cpu_bf16_native", lambda: native)
    kw = dict(mode="slide", crop_size=(64, 64), stride=(32, 32), amp="bf16", warmup=0, runs=1, threads=1)
    if not native:
        with pytest.raises(BenchmarkError, match="no native bfloat16"):
            benchmark(b0, (64, 96), **kw)
        return
    res = benchmark(b0, (64, 96), **kw)
    assert res["settings"]["crop_size"] == [64, 64] and res["settings"]["stride"] == [32, 32]
    assert res["settings"]["amp"] == "bf16" and res["fps"] > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch=0), "batch must be >= 1"),
        (dict(shape=(0, 64)), "must be positive"),
        (dict(shape=(64, -5)), "must be positive"),
        (dict(shape=(16, 64)), "need H, W >= 32"),
        (dict(amp="fp16"), "fp16 needs a CUDA device"),
        (dict(amp="int8"), "amp must be"),
        (dict(mode="slide"), "slide mode needs a positive --crop"),
        (dict(mode="slide", crop_size=(16, 16)), "too small"),
        (dict(mode="tiles"), "mode must be"),
        (dict(runs=0), "runs must be >= 1"),
        (dict(warmup=-1), "warmup must be >= 0"),
        (dict(threads=0), "threads must be >= 1"),
        (dict(device="mps"), "segkit accepts auto, cpu, cuda or cuda:N"),
    ],
)
def test_refusals(b0, kwargs, match):
    shape = kwargs.pop("shape", (64, 64))
    with pytest.raises(BenchmarkError, match=match):
        benchmark(b0, shape, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_refused_without_cuda(b0):
    from segkit.errors import DeviceError  # the environment (exit 1), the same error as every command's --device

    with pytest.raises(DeviceError, match="CUDA is not available"):
        benchmark(b0, (64, 64), device="cuda")


class _Conv4(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return Features(stages=[self.conv(x)])


class _Head5(DecodeHead):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(5, 2, 1)

    def forward(self, features):
        return self.conv(features.stages[-1])


def test_model_failure_is_reported():
    broken = Segmentor(_Conv4(), _Head5(), 2, name="broken")  # 4 != 5 channels
    with pytest.raises(BenchmarkError, match="broken cannot run on a 1x3x64x64 input"):
        benchmark(broken, (64, 64), warmup=0, runs=1)


def test_machine_info_reads_cpuinfo():
    info = machine_info()
    assert isinstance(info["cpu"], str) and info["cpu"]
    assert info["usable_cores"] <= info["logical_cores"]


def test_cli_benchmark_json_and_refusal(tmp_path, capsys):
    from segkit.cli import main

    path = tmp_path / "b.json"
    assert (
        main(
            [
                "benchmark",
                "segnext-t",
                "--shape",
                "64",
                "64",
                "--num-classes",
                "3",
                "--warmup",
                "1",
                "--runs",
                "2",
                "--threads",
                "1",
                "--json",
                str(path),
            ]
        )
        == 0
    )
    res = json.loads(path.read_text())
    assert res["model"] == "segnext-t" and res["num_classes"] == 3 and len(res["latency_ms"]["all"]) == 2
    assert "FPS" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["benchmark", "segnext-t", "--shape", "64", "64", "--batch", "0"])
    assert exit_.value.code == 2 and "--batch: must be >= 1, got 0" in capsys.readouterr().err
    assert main(["benchmark", "no-such-model"]) == 2
    assert "neither a zoo model" in capsys.readouterr().err
