"""What the ``segkit serve`` tests share: a small model trained on real CamVid images (made once per test
session, whichever serve test file asks first), its ONNX export, a few request images, and a real
``segkit serve`` process on a free port of 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from conftest import REPO, make_mini_camvid, require_dataset
from PIL import Image

SERVER_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "SEGKIT_DEBUG": ""}
TEST_SCALE = [64, 48]  # the stored test resize: CamVid's 480x360 runs at 64x64 (64x48, sides to multiples of 32)


def trained_camvid(tmp_path_factory) -> Path:
    """``final/`` of a SegFormer-B0 (decoder 32 channels) trained 4 iterations on 6 CamVid images with
    ``test_transform.scale`` 120x90, so it carries CamVid's classes, palette and a stored test protocol.
    Made once per session (kept under the session's base temp folder)."""
    from segkit.cli import main as cli

    base = tmp_path_factory.getbasetemp() / "serve_camvid_model"
    final = base / "work" / "final"
    if (final / "model.safetensors").is_file():
        return final
    base.mkdir(parents=True, exist_ok=True)
    root = make_mini_camvid(base, require_dataset("camvid"))
    cfg = {
        "model": "segformer-b0",
        "model_args": {"decoder_dim": 32, "drop_path_rate": 0.0},
        "data": {
            "train": {"type": "split", "root": str(root), "split": "train"},
            "val": {"type": "split", "root": str(root), "split": "val"},
        },
        "train_transform": {"scale": TEST_SCALE, "crop_size": [64, 64]},
        "test_transform": {"scale": TEST_SCALE},
        "optim": {"lr": 1e-3},
        "schedule": {"max_iters": 4, "warmup_iters": 1},
        "train": {
            "batch_size": 2,
            "num_workers": 0,
            "eval_interval": 4,
            "checkpoint_interval": 4,
            "log_interval": 2,
            "work_dir": str(base / "work"),
            "tensorboard": False,
            "threads": 1,
        },
    }
    (base / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert cli(["train", str(base / "cfg.yaml"), "--no-progress"]) == 0
    return final


def exported_onnx(tmp_path_factory, final: Path) -> Path:
    """The dynamic-H/W ONNX export of :func:`trained_camvid` (``segkit export``), made once per session."""
    from segkit.cli import main as cli

    path = final.parent.parent / "model.onnx"
    if not path.is_file():
        assert cli(["export", str(final), "--dynamic", "--shape", "96", "128", "--no-verify", "--out", str(path)]) == 0
    return path


def camvid_test_images(n: int = 4) -> list[Path]:
    camvid = require_dataset("camvid")
    stems = (camvid / "splits" / "test.txt").read_text().split()[:n]
    return [camvid / "images" / "test" / f"{s}.webp" for s in stems]


def odd_images(folder: Path) -> list[Path]:
    """Request images of other sizes and formats made from a CamVid test image: a 470x350 JPEG (the same
    network input as 480x360 after the test resize: batched with it), a 301x227 PNG, a 1x1 PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    src = Image.open(camvid_test_images(1)[0]).convert("RGB")
    out = []
    for name, size in (("crop_470x350.jpg", (470, 350)), ("small_301x227.png", (301, 227)), ("one_1x1.png", (1, 1))):
        path = folder / name
        if not path.exists():
            src.resize(size).save(path)
        out.append(path)
    return out


def png_bomb(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width x height`` RGB pixels, with one tiny compressed row: a few hundred
    bytes that would decode to ``3 * width * height`` bytes (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = zlib.compress(b"\x00" + b"\x00" * (3 * min(width, 1024)), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", row) + chunk(b"IEND", b"")


def label_of_png(data: bytes) -> np.ndarray:
    """Class indices of a palette label PNG (mode ``P``)."""
    import io

    img = Image.open(io.BytesIO(data))
    assert img.mode == "P"
    return np.array(img)


class ServerProcess:
    """``python -m segkit serve MODEL --port 0 …`` on 127.0.0.1; its output goes to a file (a pipe could fill
    and block the server), its port is read from the start-up line."""

    def __init__(self, model: Path, log: Path, *args: str, timeout: float = 120.0):
        self.log = log
        self._file = open(log, "w")
        cmd = [sys.executable, "-m", "segkit", "serve", str(model), "--port", "0", *args]
        self.proc = subprocess.Popen(cmd, stdout=self._file, stderr=subprocess.STDOUT, env=SERVER_ENV, cwd=REPO)
        deadline = time.monotonic() + timeout
        self.url = None
        while time.monotonic() < deadline:
            text = log.read_text()
            m = re.search(r"listening on (http://127\.0\.0\.1:\d+)/", text)
            if m and "Application startup complete" in text:
                self.url = m.group(1)
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"segkit serve exited with {self.proc.returncode}:\n{text}")
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"segkit serve did not start within {timeout} s:\n{log.read_text()}")

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._file.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self._file.close()


def health(url: str) -> dict:
    import httpx

    return json.loads(httpx.get(f"{url}/health", timeout=10).text)
