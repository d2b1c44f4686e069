"""Process-level runtime settings: the glibc allocator, and which autocast dtypes this machine runs fast.

Why: PyTorch's CPU allocator has no cache; every tensor is ``malloc``-ed and ``free``-d. glibc
serves blocks above its *mmap threshold* (dynamic, at most 32 MiB by default) with fresh
``mmap`` pages and gives the heap's free top back to the kernel above the *trim threshold*.
Segmentation allocates many large maps per forward (a (1, 150, 512, 512) fp32 logit map is
157 MB), so each forward then page-faults and zero-fills hundreds of MB; the measured effect
is in ``docs/model_zoo.md`` (``benchmarks/latency.py --malloc default``). Intel's PyTorch CPU
tuning guide recommends
jemalloc/tcmalloc for the same reason; this gets most of the gain without a preloaded library.

Cost: freed memory stays in the process (up to ``trim_threshold`` at the heap top, plus any
fragmentation below it) instead of going back to the OS at once, so RSS can be higher.

The ``segkit`` CLI calls :func:`tune_cpu_allocator` at start-up unless the environment sets
``SEGKIT_MALLOC_TUNING=0``; library users call it themselves (importing segkit changes nothing).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameter numbers (glibc <malloc.h>)
M_MMAP_THRESHOLD = -3
GiB = 1 << 30

_applied: dict | None = None


def tune_cpu_allocator(mmap_threshold: int = GiB, trim_threshold: int = GiB) -> dict | None:
    """Raise glibc's mmap and trim thresholds so that large tensors reuse heap memory.

    Args:
        mmap_threshold: bytes; blocks at least this large get their own ``mmap`` (default
            1 GiB, i.e. nearly every tensor comes from the reusable heap).
        trim_threshold: bytes of free heap top kept before returning memory to the OS
            (default 1 GiB).

    Returns:
        ``{"mmap_threshold": ..., "trim_threshold": ...}`` when applied, ``None`` when it is not
        possible (not Linux/glibc, or ``mallopt`` refused) or disabled by
        ``SEGKIT_MALLOC_TUNING=0``. Never raises: this is a speed setting, not a requirement.
        Idempotent; affects the whole process (all threads, all libraries).
    """
    global _applied
    if os.environ.get("SEGKIT_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int

    def clamp(v):  # mallopt takes a C int
        return int(min(max(v, 0), 2**31 - 1))

    if mallopt(M_MMAP_THRESHOLD, clamp(mmap_threshold)) != 1 or mallopt(M_TRIM_THRESHOLD, clamp(trim_threshold)) != 1:
        return None
    _applied = {"mmap_threshold": clamp(mmap_threshold), "trim_threshold": clamp(trim_threshold)}
    return dict(_applied)


def allocator_settings() -> dict | None:
    """What :func:`tune_cpu_allocator` applied in this process (``None`` if never applied)."""
    return None if _applied is None else dict(_applied)


# ----------------------------------------------------------------------------- process memory (Linux /proc)
def proc_status_kb(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM`` …), or ``None`` where unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def available_memory_bytes() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (what can be allocated without swapping), or ``None``."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``), so that RSS growth measures new use."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> bool:
    """Reset the process' peak RSS (``VmHWM``) to its current RSS (``/proc/self/clear_refs``, Linux ≥ 4.0)."""
    trim_heap()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------- autocast (AMP)
AMP_DTYPES = ("bf16", "fp16")


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bfloat16 natively (``avx512_bf16`` or ``amx_bf16``).

    Read from ``/proc/cpuinfo`` on Linux; elsewhere from PyTorch's CPU capability string
    (``torch.backends.cpu.get_cpu_capability()`` names ``AMX`` on AMX machines). Without it,
    oneDNN emulates bfloat16 and autocast is slower than float32.
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    import torch

    return "AMX" in str(torch.backends.cpu.get_cpu_capability()).upper()


DEVICES = "auto, cpu, cuda or cuda:N"  # what segkit accepts wherever a device is named


def resolve_device(name, what: str = "device"):
    """The ``torch.device`` for ``name``: ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda``,
    ``cuda:N`` (or a ``torch.device`` of those types); one check for the CLI's ``--device``, the config's
    ``train.device`` and the Python API's ``device=``. ``what`` names the setting in messages.

    Raises :class:`segkit.errors.UsageError` (exit 2) for any other name, listing what segkit accepts, and
    :class:`segkit.errors.DeviceError` (exit 1) for a CUDA device this machine does not have (a CPU-only
    build, no driver, ``cuda:3`` with two GPUs), saying what there is.
    """
    import re

    import torch

    from segkit.errors import DeviceError, UsageError

    if isinstance(name, torch.device):
        name = str(name)
    text = str(name).strip().lower() if isinstance(name, str) else None
    if text is None or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise UsageError(f"{what} {name!r}: segkit accepts {DEVICES}")
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(text)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                f"this PyTorch {torch.__version__} is a CPU-only build"
                if torch.version.cuda is None
                else f"no CUDA GPU is visible (PyTorch {torch.__version__} built with CUDA {torch.version.cuda})"
            )
            raise DeviceError(f"{what} {name}: CUDA is not available on this machine: {why}; use cpu or auto")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise DeviceError(f"{what} {name}: only {count} CUDA device(s) visible (cuda:0 … cuda:{count - 1})")
    return dev


def check_amp(amp: str | None, device, what: str = "--amp") -> None:
    """Refuse an autocast dtype this device does not run fast, with the reason.

    ``amp``: ``None``, ``"bf16"`` or ``"fp16"``; ``device``: a ``torch.device`` or its string;
    ``what``: how the setting is named in the message (``--amp``, ``train.amp``).
    fp16 needs CUDA; bf16 needs a CUDA GPU that supports it or a CPU with native bfloat16
    (:func:`cpu_bf16_native`). Raises :class:`segkit.errors.UsageError` (exit code 2) otherwise.
    """
    import torch

    from segkit.errors import UsageError

    if amp is None:
        return
    if amp not in AMP_DTYPES:
        raise UsageError(f"{what} must be one of {', '.join(AMP_DTYPES)} (or left out), got {amp!r}")
    kind = torch.device(device).type
    if amp == "fp16" and kind != "cuda":
        raise UsageError(f"{what} fp16 needs a CUDA device (no fast float16 CPU kernels); on the CPU use bf16")
    if amp == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError(f"{what} bf16: this GPU does not support bfloat16; use fp16")
    if amp == "bf16" and kind == "cpu" and not cpu_bf16_native():
        raise UsageError(
            f"{what} bf16: this CPU has no native bfloat16 (no avx512_bf16 / amx_bf16 flag); PyTorch would "
            f"emulate it, slower than float32. Run without {what}"
        )


def resolve_amp(amp: str | None, device) -> str | None:
    """``"auto"`` → ``"bf16"`` where ``device`` runs bfloat16 natively (a CPU with
    :func:`cpu_bf16_native`, a GPU with ``torch.cuda.is_bf16_supported()``), else ``None``; other
    values unchanged."""
    if amp != "auto":
        return amp
    import torch

    kind = torch.device(device).type
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else None
    return "bf16" if kind == "cpu" and cpu_bf16_native() else None


def autocast(amp: str | None, device):
    """``torch.autocast`` for ``amp`` (``"bf16"`` / ``"fp16"``) on ``device``, or a no-op context for ``None``."""
    import contextlib

    import torch

    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
