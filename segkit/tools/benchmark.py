"""Inference speed (latency, FPS) and peak memory of a segmentation model — one fixed protocol.

Protocol (:func:`benchmark`), written once so every number in our tables means the same:

1. The model is put in ``eval()`` on ``device`` and run as what segkit's inference entry points
   run (:func:`segkit.models.fuse.for_inference`: the fused copy for SegNeXt; optionally
   ``channels_last``, optionally ``torch.compile``-d), the input is one normalised batch
   ``(B, 3, H, W)`` float32 created once: random normal values, or with ``image`` a photo resized
   to ``(H, W)`` (data loading and preprocessing are not timed — as in mmseg's
   ``tools/analysis_tools/benchmark.py``, which times the test-mode forward on ready data).
2. Timed call = :meth:`Segmentor.predict` (``mode`` whole or slide): forward and the labels at
   the input size through the label path (:mod:`segkit.models.inference`: resize + arg-max
   without a full-resolution map) — what a user gets. The label path's cost depends on the
   image: random input is its worst case (many candidate classes per pixel), a photo the usual one.
3. Everything runs under ``torch.inference_mode()`` and, with ``amp``, under
   ``torch.autocast(device, dtype)`` (NMF stays float32 inside, by design of the head).
4. ``warmup`` untimed calls (the first one also checks that the model takes the input, and is
   made even with ``warmup=0``; cuDNN autotuning, ``torch.compile`` compilation, allocator
   warm-up), then ``runs`` timed calls; each timed call is bracketed by
   ``torch.cuda.synchronize`` on CUDA (kernels are asynchronous) and timed with
   ``time.perf_counter``.
5. Reported: latency median / mean / min / max / std in ms; ``fps = batch / median``
   (images per second; the median is robust to the odd slow run on a shared machine).
6. Peak memory of the timed calls:
   * CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensors
     allocated by PyTorch, weights included; the caching allocator's reserve is reported
     separately as ``peak_reserved_mb``).
   * CPU: the process' peak resident set size from ``/proc/self/status`` (``VmHWM``), reset
     by writing ``5`` to ``/proc/self/clear_refs`` (Linux ≥ 4.0) just before the first call,
     minus the RSS at that moment (``VmRSS``, model and input already resident): the extra
     memory inference needed (activations, workspace), over all calls. It is measured from
     the first call because the C allocator keeps freed memory resident, so later calls
     reuse it without growing the RSS; for the same reason glibc's ``malloc_trim(0)`` is
     called first, returning memory freed earlier (e.g. by a previously benchmarked model) to
     the OS. What the allocator still keeps can hide part of the peak (an under-estimate,
     never an over-estimate).
     ``tracemalloc`` would be wrong: it sees only allocations made through Python's
     allocator, not PyTorch's C++ CPU allocator that holds the tensors. Where ``clear_refs``
     cannot be written the high-water mark is the process' lifetime peak (``peak_reset: false``).
7. The machine is recorded: CPU model (``/proc/cpuinfo``), logical cores, cores usable by this
   process, PyTorch / Python / NumPy versions, intra-/inter-op threads, and on CUDA the GPU name,
   capability, CUDA/cuDNN versions.

CUDA code paths (synchronisation, peak memory, device checks) are written to the PyTorch API
but could not be exercised on the CPU-only development machine.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Sequence

import torch

from segkit.data.transforms import MIN_SIDE
from segkit.errors import UsageError
from segkit.models.fuse import for_inference
from segkit.runtime import autocast, check_amp
from segkit.runtime import proc_status_kb as _proc_kb
from segkit.runtime import reset_peak_rss as _reset_peak_rss


class BenchmarkError(UsageError):
    """A benchmark request that cannot be run as given; the message says why and what to change."""


# ----------------------------------------------------------------------------- machine description
def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def cpu_model() -> str:
    """CPU model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    for line in _read("/proc/cpuinfo").splitlines():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info(device: str | torch.device = "cpu") -> dict:
    """JSON-ready description of the machine and software the numbers were measured with."""
    import numpy as np

    info = {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        idx = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        info.update(
            gpu=props.name,
            gpu_memory_gb=round(props.total_memory / 2**30, 2),
            gpu_capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    return info


# ----------------------------------------------------------------------------- checks
def resolve_device(device: str | torch.device) -> torch.device:
    """``cpu`` / ``cuda`` / ``cuda:N`` as a ``torch.device`` (:func:`segkit.runtime.resolve_device`):
    ``BenchmarkError`` for another name, :class:`~segkit.errors.DeviceError` for CUDA this machine lacks."""
    from segkit.runtime import resolve_device as resolve

    try:
        return resolve(device, what="--device")
    except UsageError as e:
        raise BenchmarkError(str(e)) from None


def check_request(
    shape: Sequence[int],
    batch: int,
    mode: str,
    crop_size,
    stride,
    device: torch.device,
    amp: str | None,
    warmup: int,
    runs: int,
    threads: int | None,
) -> None:
    """Refuse impossible or meaningless settings with a message naming the setting (``BenchmarkError``)."""
    if len(shape) != 2:
        raise BenchmarkError(f"shape must be (H, W), got {tuple(shape)}")
    h, w = (int(v) for v in shape)
    if h <= 0 or w <= 0:
        raise BenchmarkError(f"input size must be positive, got H={h}, W={w}")
    if min(h, w) < MIN_SIDE:
        raise BenchmarkError(
            f"input {h}x{w} is too small: SegFormer, SegNeXt and RSSeg downsample 32x and need "
            f"H, W >= {MIN_SIDE} (any size from 32 up works in whole mode; no multiple of 32 needed)"
        )
    if int(batch) < 1:
        raise BenchmarkError(f"batch must be >= 1, got {batch}")
    if mode not in ("whole", "slide"):
        raise BenchmarkError(f"mode must be 'whole' or 'slide', got {mode!r}")
    if mode == "slide":
        for name, v in (("crop", crop_size), ("stride", stride)):
            if v is None or len(v) != 2 or min(int(x) for x in v) <= 0:
                raise BenchmarkError(f"slide mode needs a positive --{name} H W, got {v}")
        if min(int(x) for x in crop_size) < MIN_SIDE:
            raise BenchmarkError(f"slide crop {tuple(crop_size)} is too small: windows need sides >= {MIN_SIDE}")
    try:
        check_amp(amp, device)
    except UsageError as e:
        raise BenchmarkError(str(e)) from None
    if int(warmup) < 0:
        raise BenchmarkError(f"warmup must be >= 0, got {warmup}")
    if int(runs) < 1:
        raise BenchmarkError(f"runs must be >= 1, got {runs}")
    if threads is not None and int(threads) < 1:
        raise BenchmarkError(f"threads must be >= 1, got {threads}")


# ----------------------------------------------------------------------------- the benchmark
def _image_input(model, path: str, h: int, w: int) -> torch.Tensor:
    import cv2

    from segkit.data.io import read_image
    from segkit.data.transforms import TestTransform

    rgb = cv2.resize(read_image(path), (w, h), interpolation=cv2.INTER_LINEAR)
    return TestTransform(scale=None, size_divisor=None, mean=model.mean, std=model.std)(rgb)["image"][None]


def _runner_and_input(
    model, dev: torch.device, image: str | None, batch: int, h: int, w: int, seed: int, channels_last, compile
) -> tuple[torch.nn.Module, torch.Tensor]:
    """What is timed (step 1 of the module doc): the model in eval mode on ``dev`` as inference entry
    points run it (optionally ``channels_last``, ``torch.compile``-d) and the ``(batch, 3, H, W)``
    float32 input on ``dev``: ``image`` resized, normalised and repeated, or random normal values
    from ``torch.Generator().manual_seed(seed)``."""
    model.eval().to(dev)
    runner = for_inference(model)  # what inference entry points run (fused copy for SegNeXt)
    if image is not None:
        x = _image_input(model, image, h, w).repeat(batch, 1, 1, 1).to(dev)
    else:
        gen = torch.Generator().manual_seed(int(seed))
        x = torch.randn((batch, 3, h, w), generator=gen).to(dev)
    if channels_last:
        runner.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if compile:
        runner.compile()
    return runner, x


def benchmark(
    model,
    shape: Sequence[int] = (512, 512),
    *,
    batch: int = 1,
    mode: str = "whole",
    crop_size: Sequence[int] | None = None,
    stride: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    amp: str | None = None,
    channels_last: bool = False,
    compile: bool = False,
    warmup: int = 5,
    runs: int = 20,
    threads: int | None = None,
    window_batch: int = 1,
    seed: int = 0,
    image: str | None = None,
) -> dict:
    """Time ``model`` on a ``(batch, 3, H, W)`` input under the protocol of the module doc.

    Args:
        model: a :class:`~segkit.models.segmentor.Segmentor` (its ``predict`` is timed).
        shape: ``(H, W)`` of the network input, each >= 32.
        batch: images per call (>= 1). ``fps`` counts images, so it is ``batch / median``.
        mode: ``"whole"`` or ``"slide"`` (then ``crop_size``, ``stride`` required; windows
            are run ``window_batch`` at a time).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        amp: ``None``, ``"bf16"`` (CPU or GPU) or ``"fp16"`` (GPU only).
        channels_last: model and input in ``torch.channels_last`` memory format.
        compile: ``torch.compile`` the forward (compilation happens during warm-up; give
            enough warm-up runs).
        warmup, runs: untimed / timed calls (>= 0 / >= 1).
        threads: ``torch.set_num_threads`` for the run (restored afterwards); default: unchanged.
        seed: seed of the random input.
        image: an image file to use as the input instead (read, resized to ``(H, W)`` with OpenCV
            bilinear, normalised with the model's mean/std, repeated ``batch`` times).

    Returns a JSON-ready dict: ``model``, ``params``, ``settings``, ``latency_ms``
    (``median``, ``mean``, ``min``, ``max``, ``std``, ``all``), ``fps``, ``memory``
    (``peak_mb`` + how it was measured) and ``machine``.

    Raises :class:`BenchmarkError` (a ``ValueError``) for a setting that cannot run (bad sizes,
    batch 0, fp16 on CPU, CUDA unavailable, …) or if the model fails on the input (message
    includes the model's own error).
    """
    dev = resolve_device(device)
    crop_size = tuple(int(v) for v in crop_size) if crop_size is not None else None
    stride = tuple(int(v) for v in stride) if stride is not None else crop_size
    check_request(shape, batch, mode, crop_size, stride, dev, amp, warmup, runs, threads)
    h, w = int(shape[0]), int(shape[1])
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    was_training = model.training
    try:
        runner, x = _runner_and_input(model, dev, image, int(batch), h, w, seed, channels_last, compile)
        amp_ctx = autocast(amp, dev)
        kwargs = dict(mode=mode, crop_size=crop_size, stride=stride, window_batch=int(window_batch))

        def call():
            with amp_ctx:
                return runner.predict(x, **kwargs)

        memory = _PeakMemory(dev)
        with torch.inference_mode():
            memory.before_first_call()
            _first_call(call, getattr(model, "name", type(model).__name__), batch, h, w, mode)
            times = _timed_calls(call, dev, int(warmup), int(runs), memory)
        peak = memory.read()
        settings = {
            "shape": [h, w],
            "batch": int(batch),
            "mode": mode,
            "crop_size": list(crop_size) if crop_size else None,
            "stride": list(stride) if stride and mode == "slide" else None,
            "device": str(dev),
            "amp": amp,
            "channels_last": bool(channels_last),
            "compile": bool(compile),
            "warmup": int(warmup),
            "runs": int(runs),
            "threads": torch.get_num_threads(),
            "input": str(image) if image is not None else f"random normal, seed {seed}",
            "timed": "Segmentor.predict under inference_mode",
        }
        return _report(model, settings, times, peak, dev)
    finally:
        if threads is not None:
            torch.set_num_threads(old_threads)
        model.train(was_training)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _first_call(call, name: str, batch: int, h: int, w: int, mode: str) -> None:
    """The first (untimed) call, which doubles as the check that the model takes the input and
    returns ``(batch, H, W)`` labels; ``BenchmarkError`` (with the model's own error) otherwise."""
    try:
        out = call()
    except (RuntimeError, ValueError) as e:
        raise BenchmarkError(f"{name} cannot run on a {batch}x3x{h}x{w} input in {mode} mode: {e}") from e
    if tuple(out.shape) != (int(batch), h, w):
        raise BenchmarkError(f"model returned a prediction of shape {tuple(out.shape)} for input {h}x{w}")


class _PeakMemory:
    """Peak memory of the benchmarked calls, as step 6 of the module doc measures it: on the CPU
    from just before the first call, on CUDA over the timed runs."""

    def __init__(self, dev: torch.device):
        self.dev = dev

    def before_first_call(self) -> None:
        if self.dev.type == "cpu":
            self.peak_reset = _reset_peak_rss()
            self.rss_before = _proc_kb("VmRSS")

    def before_timed_runs(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.dev)
            self.base_alloc = torch.cuda.memory_allocated(self.dev)

    def read(self) -> dict:
        """``peak_mb`` (MiB; ``None`` where ``/proc`` cannot be read), the raw readings and the method."""
        if self.dev.type == "cuda":
            return {
                "peak_mb": torch.cuda.max_memory_allocated(self.dev) / 2**20,
                "peak_reserved_mb": torch.cuda.max_memory_reserved(self.dev) / 2**20,
                "before_runs_mb": self.base_alloc / 2**20,
                "method": "torch.cuda.max_memory_allocated over the timed runs (weights included)",
            }
        hwm, rss_before = _proc_kb("VmHWM"), self.rss_before
        return {
            "peak_mb": (hwm - rss_before) / 1024 if hwm is not None and rss_before is not None else None,
            "peak_rss_mb": hwm / 1024 if hwm is not None else None,
            "rss_before_mb": rss_before / 1024 if rss_before is not None else None,
            "peak_reset": self.peak_reset,
            "method": "/proc/self/status VmHWM (reset by clear_refs=5) minus VmRSS, before the first call",
        }


def _timed_calls(call, dev: torch.device, warmup: int, runs: int, memory: _PeakMemory) -> list[float]:
    """The rest of the ``warmup`` calls, then ``runs`` timed calls (each bracketed by a CUDA
    synchronisation, peak memory reset before them on CUDA); returns their latencies in ms."""
    for _ in range(max(warmup - 1, 0)):
        call()
    _sync(dev)
    memory.before_timed_runs()
    times = []
    for _ in range(runs):
        _sync(dev)
        t0 = time.perf_counter()
        call()
        _sync(dev)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def _report(model, settings: dict, times: list[float], memory: dict, dev: torch.device) -> dict:
    """The JSON-ready result of :func:`benchmark`: latency statistics (ms), FPS, memory, machine."""
    median = statistics.median(times)
    return {
        "model": getattr(model, "name", type(model).__name__),
        "num_classes": getattr(model, "num_classes", None),
        "params": sum(p.numel() for p in model.parameters()),
        "settings": settings,
        "latency_ms": {
            "median": median,
            "mean": statistics.fmean(times),
            "min": min(times),
            "max": max(times),
            "std": statistics.pstdev(times),
            "all": times,
        },
        "fps": settings["batch"] / (median / 1e3),
        "memory": memory,
        "machine": machine_info(dev),
    }


def load_for_benchmark(model_or_ckpt: str, num_classes: int = 150, **build_kwargs):
    """A zoo name (``segnext-t``) → a randomly initialised model; else a checkpoint path → ``load_model``.

    Speed does not depend on the weights, only on the architecture and class count.
    Raises :class:`BenchmarkError` naming the argument (and the nearest zoo names) when it is neither.
    """
    from segkit.models.zoo import MODELS, build_model, suggest

    if model_or_ckpt.lower() in MODELS:
        return build_model(model_or_ckpt, num_classes=num_classes, **build_kwargs)
    if Path(model_or_ckpt).exists():
        from segkit.hub import load_model

        return load_model(model_or_ckpt)
    raise BenchmarkError(
        f"{model_or_ckpt!r} is neither a zoo model{suggest(model_or_ckpt, MODELS)} nor an existing "
        f"checkpoint file/folder; `segkit models` lists the zoo"
    )


def format_result(res: dict) -> str:
    """One human-readable line per result."""
    s, lat, mem = res["settings"], res["latency_ms"], res["memory"]
    peak = mem.get("peak_mb")
    return (
        f"{res['model']} {s['batch']}x{s['shape'][0]}x{s['shape'][1]} {s['mode']} on {s['device']} "
        f"(amp={s['amp']}, threads={s['threads']}): median {lat['median']:.1f} ms "
        f"[min {lat['min']:.1f}, max {lat['max']:.1f}], {res['fps']:.2f} FPS, "
        f"peak memory {'n/a' if peak is None else f'{peak:.0f} MB'}"
    )


def write_json(res: dict, path: str | Path) -> Path:
    from segkit.utils import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(res, indent=1) + "\n").encode())
    return path
