"""segkit.runtime: glibc allocator tuning (run in subprocesses: it changes process-wide state)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CODE = (
    "import json; from segkit.runtime import tune_cpu_allocator as t, allocator_settings as s; "
    "r = t(); print(json.dumps([r, s()]))"
)


def _run(env_value: str | None) -> list:
    env = dict(os.environ)
    env.pop("SEGKIT_MALLOC_TUNING", None)
    if env_value is not None:
        env["SEGKIT_MALLOC_TUNING"] = env_value
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_tune_cpu_allocator_applies_and_reports():
    applied, settings = _run(None)
    assert applied == settings == {"mmap_threshold": 1 << 30, "trim_threshold": 1 << 30}


def test_tune_cpu_allocator_can_be_disabled():
    assert _run("0") == [None, None]
