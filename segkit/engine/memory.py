"""Will the first training step fit in memory? An estimate made before it runs, on the CPU.

A configuration whose step needs more memory than the machine has would otherwise be killed by
the kernel (exit 137, no message) once the first batch is built. :func:`estimate_step_bytes`
measures the peak resident memory of one forward + backward of the model at a small probe size
(batch 1, 128 × 128 pixels) and scales it by the pixels of the real step; :func:`check_step_fits`
compares that with ``MemAvailable``. Activation memory of these networks grows linearly with the
number of pixels (convolutions, attention with spatial reduction, the loss); the probe's fixed
costs make the scaled figure an upper bound for large crops. CPU (Linux) only: on CUDA the
allocator reports its own out-of-memory error, which is clear enough.
"""

from __future__ import annotations

import torch

from segkit.errors import UsageError
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
    images = torch.zeros((1, 3, *PROBE))
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
    """Raise :class:`~segkit.errors.UsageError` with the estimate when one step would need more than
    ``margin`` × the available memory; returns the estimate (bytes) or ``None`` when unknown."""
    estimate = estimate_step_bytes(model, tuple(crop), batch, amp_dtype)
    available = available_memory_bytes()
    if estimate is None or available is None:
        return estimate
    if estimate > margin * available:
        gb = 2**30
        raise UsageError(
            f"one training step would need about {estimate / gb:.1f} GiB (batch {batch} of {crop[0]}x{crop[1]} crops, "
            f"estimated from a {PROBE[0]}x{PROBE[1]} probe step), but only {available / gb:.1f} GiB are available: "
            f"lower train.batch_size or train_transform.crop_size (train.memory_check: false skips this check)"
        )
    return estimate


__all__ = ["estimate_step_bytes", "check_step_fits"]
