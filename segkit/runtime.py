"""Process-level CPU runtime settings: the glibc allocator.

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
