"""Emulate an AVX2-only x86 CPU (e.g. AMD Zen 3) on an AVX-512 machine, for the benchmark scripts.

    python benchmarks/latency.py --emulate-avx2 …      (also train_speed.py, strip_conv.py)

PyTorch picks its kernels per CPU once, when a library first runs, from what the CPU reports
unless the environment caps it:

* ``ATEN_CPU_CAPABILITY=avx2`` — ATen's own vectorised kernels (element-wise ops, reductions,
  ``upsample_bilinear2d``, ``argmax`` …);
* ``ONEDNN_MAX_CPU_ISA=AVX2`` — oneDNN (convolutions, and the matmuls PyTorch routes to it);
* ``MKL_ENABLE_INSTRUCTIONS=AVX2`` — MKL's BLAS (``torch.mm`` / ``bmm`` / ``F.linear`` in float32).
  The first two alone leave MKL on its AVX-512 code path (a 1024² sgemm: 17 ms with them alone,
  34–36 ms with the MKL cap too, on the Ice Lake of ``docs/benchmarks.md``), which would make
  every matmul-heavy model look faster than on a real AVX2 CPU.

All three must be set before ``torch`` is imported, so :func:`reexec_if_requested` is called by
the scripts before their ``import torch``: given ``--emulate-avx2`` on the command line and
the variables not yet set, it re-executes the same command with them set. :func:`isa_info`
records what the process really ran with (``torch.backends.cpu.get_cpu_capability()`` and the
three variables) in the results' ``machine`` field.

This is an emulation: the instruction set is capped, the micro-architecture (caches, memory
bandwidth, the cost of each instruction) stays the host's. Figures taken this way are labelled
"AVX2 emulated on <host CPU>", never as measurements of an AVX2 CPU.
"""

from __future__ import annotations

import os
import sys

FLAG = "--emulate-avx2"
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def emulating_avx2() -> bool:
    """True if this process runs with all three AVX2 caps set (see module docstring)."""
    return all(os.environ.get(k, "").lower() == v.lower() for k, v in AVX2_ENV.items())


def reexec_if_requested(argv: list[str] | None = None) -> None:
    """Re-execute this script with :data:`AVX2_ENV` set if ``--emulate-avx2`` is given and the caps are not.

    Must run before ``torch`` is imported. Raises ``RuntimeError`` if torch is already imported
    (the caps would then not apply to this process).
    """
    argv = sys.argv if argv is None else argv
    if FLAG not in argv or emulating_avx2():
        return
    if "torch" in sys.modules:
        raise RuntimeError(f"{FLAG}: torch is already imported; the ISA caps must be set before")
    os.execve(sys.executable, [sys.executable, *argv], {**os.environ, **AVX2_ENV})


def isa_info() -> dict:
    """The instruction set this process runs with: ATen's CPU capability and the ISA caps in the environment."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    info = {
        "aten_cpu_capability": capability,
        "env": {k: os.environ.get(k) for k in AVX2_ENV},
        "emulated_avx2": emulating_avx2(),
    }
    if info["emulated_avx2"] and capability != "AVX2":
        raise RuntimeError(f"AVX2 caps set but torch reports CPU capability {capability}")
    return info


def isa_label(machine: dict) -> str:
    """A phrase for tables: ``native AVX512`` or ``AVX2 emulated on <cpu> (ATEN_CPU_CAPABILITY=avx2, …)``."""
    isa = machine.get("isa") or {}
    if isa.get("emulated_avx2"):
        caps = ", ".join(f"{k}={v}" for k, v in AVX2_ENV.items())
        return f"AVX2 emulated on {machine.get('cpu', 'this CPU')} ({caps}), not a real AVX2-only CPU"
    return f"native {isa.get('aten_cpu_capability', '?')}"


def suffix() -> str:
    """``"_avx2"`` for an emulated run (result files get it), else ``""``."""
    return "_avx2" if emulating_avx2() else ""
