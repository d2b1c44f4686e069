"""Every Python block of README.md and docs/*.md runs as written (issue 24, "Docs run as written").

Each block runs in its own Python process, in a fresh folder laid out like a clone beside the data
(``../shared/data`` → the real data sets), with what the blocks name made here:

* ``street.jpg`` / ``photo.jpg``: a CamVid test image (a WebP under a .jpg name: read by content); ``street.mp4``:
  a 3-frame video of CamVid test images;
* ``work_dirs/segformer-b0_camvid_10min/final``: the README model's folder (random weights, CamVid classes, a
  small test resize);
* registry weights from offline caches built here (``HF_HUB_OFFLINE=1``): NVIDIA's SegFormer-B0 ADE20K repo in a
  Hugging Face cache (a transformers SegFormer with random weights under its repo id), SegNeXt-T ADE20K in
  segkit's converted-model cache;
* a ``segkit serve`` of the README model for the blocks that call one: the only change made to a block is its URL,
  ``http://127.0.0.1:8000`` → the port the test's server got (a fixed port may be taken on a CI machine).

A block that cannot run here must be preceded by ``<!-- not run: <reason> -->``; the reason is required. Blocks with
results worth checking have their checks in ``CHECKS`` (code appended to the block, files it must write, text its
output must hold)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, require_dataset

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SERVE_URL = "http://127.0.0.1:8000"


def python_blocks() -> list[tuple[str, int, str, str | None]]:
    """``(file, line, code, not-run reason or None)`` of every fenced ``python`` block."""
    out = []
    for path in DOCS:
        text = path.read_text()
        for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
            line = text[: m.start()].count("\n") + 1
            before = text[: m.start()].rstrip().splitlines()[-1:] or [""]
            skip = re.fullmatch(r"<!--\s*not run:\s*(.*?)\s*-->", before[0].strip())
            out.append((str(path.relative_to(REPO)), line, m.group(1), skip.group(1) if skip else None))
    return out


BLOCKS = python_blocks()

# a line of the block → (code appended after it, files it must have written, text its stdout + stderr must hold)
CHECKS = {
    'weights = segkit.hub.resolve_weights("segformer-b0_ade20k-512")': (
        "assert labels.shape == (1, 360, 480) and int(labels.max()) < 150\n"
        "assert report.missing == [] and report.unexpected == [], report\n",
        ["my-model/config.json", "my-model/model.safetensors"],
        "non-commercial",  # NVIDIA's licence, printed at the first download
    ),
    'seg = segkit.Segmenter("segformer-b0_ade20k-512")': ("", ["overlay.png"], "non-commercial"),
    'for r in seg.stream("street.mp4")': (
        "assert r.frame_index == 2 and r.label.shape == (360, 480)\n",
        ["street_overlay.mp4"],
        "2 0.2",  # the last frame's index and time (10 fps)
    ),
    'seg = segkit.Segmenter("segnext-t_ade20k-512")': ("", ["overlay.png"], ""),
    "r = httpx.post(": ("assert label.shape == (360, 480)\n", [], "{"),
}


def check_for(code: str):
    found = [v for k, v in CHECKS.items() if k in code]
    return found[0] if found else ("", [], "")


def test_every_python_block_is_found_and_skips_say_why():
    files = {f for f, *_ in BLOCKS}
    assert "README.md" in files and len(BLOCKS) >= 6, BLOCKS
    for f, line, _, reason in BLOCKS:
        assert reason is None or len(reason) >= 10, f"{f}:{line}: a not-run marker needs a reason"
    for key in CHECKS:  # every check still finds its block
        assert any(key in code for _, _, code, _ in BLOCKS), f"no block holds {key!r} any more"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """The shared inputs: data link, images, video, the README model, offline caches, a server."""
    import cv2
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    import segkit
    from segkit.data import meta, read_image
    from segkit.data.protocol import TestProtocol

    camvid = require_dataset("camvid")
    base = tmp_path_factory.mktemp("docs")
    (base / "shared").mkdir()
    os.symlink(camvid.parent, base / "shared" / "data")
    inputs = base / "inputs"
    inputs.mkdir()
    tests = sorted((camvid / "images" / "test").iterdir())
    for name in ("street.jpg", "photo.jpg"):
        (inputs / name).write_bytes(tests[0].read_bytes())
    writer = cv2.VideoWriter(str(inputs / "street.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (480, 360))
    for f in tests[:3]:
        writer.write(cv2.cvtColor(read_image(f), cv2.COLOR_RGB2BGR))
    writer.release()
    info = json.loads((camvid / "meta.json").read_text())
    model = segkit.build_model("segformer-b0", 11, class_names=info["classes"], palette=info["palette"])
    model.test_protocol = TestProtocol(scale=(96, 72), keep_ratio=True, size_divisor=32).to_dict()
    final = inputs / "work_dirs" / "segformer-b0_camvid_10min" / "final"
    model.save_pretrained(final)
    # registry weights: NVIDIA's repo in an offline Hugging Face cache, SegNeXt-T in segkit's converted cache
    names = list(meta.ADE20K_CLASSES)
    cfg = SegformerConfig(num_labels=150, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = base / "hf" / "models--nvidia--segformer-b0-finetuned-ade-512-512"
    SegformerForSemanticSegmentation(cfg).save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    segkit.build_model("segnext-t", 150).save_pretrained(base / "cache" / "models" / "segnext-t_ade20k-512")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
        "SEGKIT_DATA": "",
        "HF_HUB_CACHE": str(base / "hf"),
        "HF_HUB_OFFLINE": "1",
        "SEGKIT_CACHE": str(base / "cache"),
        "OPENCV_FFMPEG_LOGLEVEL": "-8",
    }
    server = None
    if any(SERVE_URL in code for _, _, code, _ in BLOCKS):
        from serve_helpers import ServerProcess

        server = ServerProcess(final, base / "serve.log", "--device", "cpu")
    yield base, inputs, env, server
    if server is not None:
        server.stop()


@pytest.mark.parametrize("block", BLOCKS, ids=[f"{f}:{line}" for f, line, *_ in BLOCKS])
def test_python_block_runs_as_written(block, sandbox):
    base, inputs, env, server = sandbox
    path, line, code, reason = block
    if reason is not None:
        return  # not run, with its reason in the document (checked above)
    cwd = base / f"run_{Path(path).stem}_{line}"
    cwd.mkdir()
    for item in inputs.iterdir():  # the inputs, shared read-only by link
        (cwd / item.name).symlink_to(item)
    if SERVE_URL in code:
        code = code.replace(SERVE_URL, server.url)
    extra, files, expect = check_for(code)
    r = subprocess.run(
        [sys.executable, "-c", code + "\n" + extra],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, f"{path}:{line} failed:\n{r.stderr[-3000:]}"
    for f in files:
        assert (cwd / f).is_file(), f"{path}:{line}: {f} was not written"
    assert expect in r.stdout + r.stderr, f"{path}:{line}: {expect!r} not in its output:\n{r.stdout[-2000:]}"
