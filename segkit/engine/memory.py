"""Will the first training step fit in memory? An estimate made before it runs, on the CPU.

A configuration whose step needs more memory than the machine has would otherwise be killed by
the kernel (exit 137, no message) once the first batch is built. :func:`estimate_step_bytes`
measures the peak resident memory of one forward + backward of the model at a small probe size
(batch 1, 128 × 128 pixels) and scales it by the pixels of the real step; :func:`check_step_fits`
compares that with ``MemAvailable``. Activation memory of these networks grows linearly with the
number of pixels (convolutions, attention with spatial reduction, the loss); the probe's fixed
costs make the scaled figure an upper bound for large crops. CPU (Linux) only: on CUDA the
allocator reports its own out-of-memory error, which is clear enough.

Inference has the same kind of estimate (:func:`inference_bytes_per_pixel`, :func:`check_inference_fits`):
a whole-image forward of a huge image (``predict --mode whole --scale 0`` on a 100-megapixel scan) is
refused before the first image, with the estimate and the advice to use slide inference, instead of
being killed. Out of memory is an environment problem, not a usage mistake:
:class:`~segkit.errors.InsufficientMemoryError`, exit status 1.
"""

from __future__ import annotations

import torch

from segkit.errors import InsufficientMemoryError
from segkit.runtime import available_memory_bytes, proc_status_kb, reset_peak_rss

PROBE = (128, 128)


def estimate_step_bytes(model, crop: tuple[int, int], batch: int, amp_dtype=None) -> int | None:
    """Estimated peak memory (bytes) of one training step of ``model`` on ``batch`` crops of ``crop``.

    The model's parameters, buffers and the torch RNG are left exactly as they were (BatchNorm
    statistics are restored, gradients cleared). Returns ``None`` where ``/proc`` is unavailable.
    """
    if proc_status_kb("VmRSS") is None:
        return None
    buffers = {k: v.detach().clone() for k, v in model.state_dict().items() if "running_" in k or "num_batches" in k}
    was_training = model.training
    labels = torch.zeros((1, *PROBE), dtype=torch.long)
    images = torch.zeros((1, getattr(model, "in_channels", 3), *PROBE))
    try:
        with torch.random.fork_rng(devices=[]):
            model.train()
            reset_peak_rss()
            before = proc_status_kb("VmRSS")
            with torch.autocast("cpu", dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = model.loss(images, labels)["loss"]
            loss.backward()
            peak = proc_status_kb("VmHWM")
    finally:
        for p in model.parameters():
            p.grad = None
        model.load_state_dict(buffers, strict=False)
        model.train(was_training)
    if peak is None or before is None:
        return None
    per_pixel = max(peak - before, 0) * 1024 / (PROBE[0] * PROBE[1])
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    # activations scaled to the step + weights, gradients and AdamW's two moments
    return int(per_pixel * batch * crop[0] * crop[1] + 4 * params)


def check_step_fits(model, crop, batch: int, amp_dtype=None, margin: float = 0.9) -> int | None:
    """Raise :class:`~segkit.errors.InsufficientMemoryError` (a ``MemoryError``; exit status 1) with the estimate
    when one step would need more than ``margin`` × the available memory; returns the estimate (bytes) or
    ``None`` when unknown."""
    estimate = estimate_step_bytes(model, tuple(crop), batch, amp_dtype)
    available = available_memory_bytes()
    if estimate is None or available is None:
        return estimate
    if estimate > margin * available:
        gb = 2**30
        raise InsufficientMemoryError(
            f"one training step would need about {estimate / gb:.1f} GiB (batch {batch} of {crop[0]}x{crop[1]} crops, "
            f"estimated from a {PROBE[0]}x{PROBE[1]} probe step), but only {available / gb:.1f} GiB are available: "
            f"lower train.batch_size or train_transform.crop_size (train.memory_check: false skips this check)"
        )
    return estimate


INFERENCE_PROBE = (256, 256)


def inference_bytes_per_pixel(runner, amp_dtype=None) -> float | None:
    """Peak resident memory per network-input pixel of a whole-image forward + arg-max of ``runner`` (a model,
    or its fused copy, with ``predict``), measured on a probe input of :data:`INFERENCE_PROBE` (after a small
    warm-up pass, so one-time allocations do not count) in inference mode. An upper bound for larger inputs
    (measured for SegFormer-B0: 200 bytes per pixel at the probe, 150 at 1–4 megapixels). ``None`` where
    ``/proc`` is unavailable."""
    if proc_status_kb("VmRSS") is None:
        return None
    device = next((p.device for p in runner.parameters()), torch.device("cpu"))
    with torch.inference_mode(), torch.autocast("cpu", dtype=amp_dtype, enabled=amp_dtype is not None):
        runner.predict(torch.zeros((1, getattr(runner, "in_channels", 3), 64, 64), device=device), mode="whole")
        reset_peak_rss()
        before = proc_status_kb("VmRSS")
        out = runner.predict(
            torch.zeros((1, getattr(runner, "in_channels", 3), *INFERENCE_PROBE), device=device), mode="whole"
        )
        peak = proc_status_kb("VmHWM")
        del out
    if peak is None or before is None:
        return None
    return max(peak - before, 0) * 1024 / (INFERENCE_PROBE[0] * INFERENCE_PROBE[1])


def check_inference_fits(
    per_pixel: float | None, size: tuple[int, int], batch: int = 1, what: str = "", margin: float = 0.9
) -> int | None:
    """Raise :class:`~segkit.errors.InsufficientMemoryError` (exit status 1) when a whole-image forward of
    ``batch`` network inputs of ``size`` (H, W) would need more than ``margin`` × the available memory, by
    ``per_pixel`` (:func:`inference_bytes_per_pixel`); the message names ``what`` (the image), the estimate,
    and slide inference (``--mode slide``, whose memory is bounded by the window). Returns the estimate
    (bytes) or ``None`` when unknown."""
    available = available_memory_bytes()
    if per_pixel is None or available is None:
        return None
    h, w = (int(v) for v in size)
    estimate = int(per_pixel * h * w * batch)
    if estimate > margin * available:
        gb = 2**30
        raise InsufficientMemoryError(
            f"{what + ': ' if what else ''}whole-image inference on a {h}x{w} network input"
            f"{f' (batch {batch})' if batch > 1 else ''} would need about {estimate / gb:.1f} GiB (estimated from "
            f"a {INFERENCE_PROBE[0]}x{INFERENCE_PROBE[1]} probe), but only {available / gb:.1f} GiB are available: "
            f"use slide inference (--mode slide, or mode='slide'; its memory is bounded by the window), or a "
            f"test resize (--scale LONG SHORT)"
        )
    return estimate


__all__ = [
    "estimate_step_bytes",
    "check_step_fits",
    "inference_bytes_per_pixel",
    "check_inference_fits",
    "INFERENCE_PROBE",
]
