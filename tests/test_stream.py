"""Segmenter batching, streaming and video (issue 24 item 3): ``batch_size``, ``probs=True`` from the one forward,
``stream()`` over a video / folder / glob / generator with frame index and timestamp, memory flat over 300 frames,
per-frame labels equal to the segmenter's, corrupt frames reported without ending the stream, and ``video()`` as
what ``segkit predict`` writes.

Videos are made here with OpenCV (MJPG in AVI: every frame is its own JPEG, so one frame can be damaged while the
others still decode; mp4v for the predict path). The model is a two-layer toy segmentor (the stream's logic does not
depend on the network)."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_predict import tiny_model

import segkit
from segkit.data.protocol import TestProtocol
from segkit.errors import DataError

HERE = Path(__file__).resolve().parent
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's own lines about the damaged frames: segkit reports


def frame(i: int, size=(48, 64)) -> np.ndarray:
    """A BGR frame: a grey level and a bar that move with ``i``."""
    h, w = size
    f = np.full((h, w, 3), (i * 7) % 256, np.uint8)
    f[h // 4 : h // 2, (3 * i) % (w - 10) : (3 * i) % (w - 10) + 10] = (255, 40, 0)
    return f


def write_video(path: Path, n: int, size=(48, 64), fourcc="MJPG", fps=10.0) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (size[1], size[0]))
    assert writer.isOpened()
    for i in range(n):
        writer.write(frame(i, size))
    writer.release()
    return path


def damage_frame(src: Path, dst: Path, index: int) -> None:
    """A copy of the MJPG AVI ``src`` whose frame ``index`` is overwritten with zeros (its JPEG no longer decodes)."""
    data = bytearray(src.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i : i + 3] == b"\xff\xd8\xff"]  # each frame's JPEG SOI
    a, b = starts[index], starts[index + 1]
    data[a : b - 8] = bytes(b - 8 - a)
    dst.write_bytes(bytes(data))


def decoded(path: Path) -> list[np.ndarray]:
    """Every frame of a video read plainly with OpenCV, as RGB."""
    import cv2

    cap, out = cv2.VideoCapture(str(path)), []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    cap.release()
    return out


@pytest.fixture(scope="module")
def seg():
    return segkit.Segmenter(tiny_model(), device="cpu", protocol=TestProtocol(scale=None), batch_size=4)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    clean = write_video(root / "clip.avi", 40)
    damage_frame(clean, root / "damaged.avi", 20)
    return clean, root / "damaged.avi"


# ----------------------------------------------------------------------------- stream over a video
def test_stream_labels_index_and_time_equal_the_segmenter_on_the_decoded_frames(seg, clips):
    clean, _ = clips
    frames = decoded(clean)
    assert len(frames) == 40
    results = list(seg.stream(clean))
    assert [r.frame_index for r in results] == list(range(40))
    assert [r.timestamp for r in results] == pytest.approx([i / 10.0 for i in range(40)])  # position, 10 fps
    one = segkit.Segmenter(seg.model, device="cpu", protocol=seg.protocol, batch_size=1)
    for r, f in zip(results, frames):
        assert np.array_equal(r.image, f)
        assert np.array_equal(r.label, one(f).label)  # batched 4 in the stream, one at a time here
        assert r.path == str(clean) and r.name == f"clip_{r.frame_index:06d}"
    assert len({r.label.tobytes() for r in results}) > 1  # the frames differ, and so do their labels


def test_a_corrupt_frame_in_the_middle_is_reported_and_the_stream_goes_on(seg, clips):
    clean, damaged = clips
    frames = decoded(clean)  # the damaged file's other frames are the same JPEGs
    stream = seg.stream(damaged)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = list(stream)
    assert [r.frame_index for r in results] == [i for i in range(40) if i != 20]
    for r in results:
        assert np.array_equal(r.image, frames[r.frame_index]) and np.array_equal(r.label, seg(r.image).label)
    assert [(e.path, e.index) for e in stream.errors] == [(str(damaged), 20)]
    text = [str(w.message) for w in caught]
    assert any(f"{damaged}: frame(s) 20:" in t and "the stream goes on" in t for t in text), text
    assert any(t.startswith(f"stream over {damaged}: 1 image(s) or frame(s) could not be read") for t in text), text
    with pytest.raises(DataError, match=r"damaged.avi: frame 20: this frame could not be decoded"):
        list(seg.stream(damaged, on_error="raise"))


def test_stream_memory_stays_flat_over_300_frames(tmp_path):
    """In a fresh process: peak RSS at frame 50 and at frame 300 of a 320x240 video with a damaged frame at 150
    (within 10 %), every label equal to the segmenter's on the clean decoding, the damaged frame reported; and the
    same loop keeping its results grows by more than 10 % (the measurement can tell)."""
    script = tmp_path / "rss.py"
    script.write_text(
        f"""
import json, resource, sys, warnings
from pathlib import Path
sys.path.insert(0, {str(HERE)!r})
import cv2, numpy as np
import segkit
from segkit.data.protocol import TestProtocol
from test_predict import tiny_model
from test_stream import damage_frame, write_video

clean = write_video(Path({str(tmp_path / "long.avi")!r}), 300, size=(240, 320))
damage_frame(clean, clean.with_name("long_bad.avi"), 150)
seg = segkit.Segmenter(tiny_model(), device="cpu", protocol=TestProtocol(scale=None), batch_size=4)
ref = cv2.VideoCapture(str(clean))

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096

peak, now, same, n = {{}}, {{}}, 0, 0
stream = seg.stream(clean.with_name("long_bad.avi"))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for r in stream:
        n += 1
        while True:  # the clean file's frame of the same number
            ok, f = ref.read()
            if int(ref.get(cv2.CAP_PROP_POS_FRAMES)) - 1 == r.frame_index:
                break
        same += int(np.array_equal(r.label, seg(cv2.cvtColor(f, cv2.COLOR_BGR2RGB)).label))
        if n in (50, 299):
            peak[n] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            now[n] = rss()
kept, held = [], {{}}
for r in seg.stream(clean):
    kept.append(r)
    if len(kept) in (50, 300):
        held[len(kept)] = rss()
print(json.dumps(dict(peak=peak, now=now, same=same, n=n, errors=[e.index for e in stream.errors],
                      warned=[str(w.message) for w in caught], held=held)))
"""
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENCV_FFMPEG_LOGLEVEL": "-8"}
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["n"] == 299 and out["same"] == 299 and out["errors"] == [150]
    assert any("frame(s) 150:" in w for w in out["warned"])
    peak, now, held = out["peak"], out["now"], out["held"]
    print(f"RSS bytes: peak {peak}, current {now}, holding the results {held}")  # shown with pytest -s
    assert peak["299"] <= 1.10 * peak["50"], peak  # peak RSS at the end within 10 % of frame 50
    assert now["299"] <= 1.10 * now["50"], now
    assert held["300"] > 1.10 * held["50"], held  # holding the results would show


# ----------------------------------------------------------------------------- other sources
def test_stream_over_a_folder_a_glob_and_a_generator(seg, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    arrays = []
    for i in range(5):
        a = np.ascontiguousarray(frame(i, (40, 56))[:, :, ::-1])
        Image.fromarray(a).save(folder / f"p{i}.png")
        arrays.append(a)
    (folder / "p2.png").write_bytes(b"not a png")  # a broken image in the middle
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stream = seg.stream(folder)
        got = list(stream)
    assert [r.frame_index for r in got] == [0, 1, 3, 4] and [r.name for r in got] == ["p0", "p1", "p3", "p4"]
    assert all(r.timestamp is None for r in got)
    for r in got:
        assert np.array_equal(r.label, seg(arrays[r.frame_index]).label)
    assert [Path(e.path).name for e in stream.errors] == ["p2.png"]
    assert any("p2.png" in str(w.message) and "the stream goes on" in str(w.message) for w in caught)

    by_glob = list(seg.stream(str(folder / "p[34].png")))
    assert [r.name for r in by_glob] == ["p3", "p4"]
    assert np.array_equal(by_glob[0].label, got[2].label)
    with pytest.raises(FileNotFoundError, match=r"no image or video file matches"):
        list(seg.stream(str(tmp_path / "nothing*.jpg")))

    pulled = []

    def generate():
        for a in (arrays[0], arrays[1]):
            pulled.append(1)
            yield a

    lazy = iter(seg.stream(generate()))
    first = next(lazy)
    assert first.name == "image_0000" and np.array_equal(first.label, got[0].label)
    assert len(pulled) == 2  # read ahead at most batch_size (4), and no more than the source holds


def test_a_camera_that_cannot_be_opened_is_named(seg):
    with pytest.raises(DataError, match=r"^97: cannot open this camera"):
        list(seg.stream(97))


# ----------------------------------------------------------------------------- batching and probs
def test_batch_size_bounds_each_forward_and_keeps_the_labels(tmp_path):
    model = tiny_model()
    images = [np.ascontiguousarray(frame(i, (40, 56))[:, :, ::-1]) for i in range(7)]
    sizes = []
    orig = type(model).predict

    def spy(self, x, **kw):
        sizes.append(x.shape[0])
        return orig(self, x, **kw)

    one = segkit.Segmenter(model, device="cpu", protocol=TestProtocol(scale=None), batch_size=1)
    expected = [r.label for r in one(images)]
    for bs, chunks in ((3, [3, 3, 1]), (8, [7])):
        s = segkit.Segmenter(model, device="cpu", protocol=TestProtocol(scale=None), batch_size=bs)
        sizes.clear()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(type(s.runner), "predict", spy)
            labels = [r.label for r in s(images)]
        assert sizes == chunks
        assert all(np.array_equal(a, b) for a, b in zip(labels, expected))
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        segkit.Segmenter(model, device="cpu", batch_size=0)


def test_probs_at_call_time_come_from_the_same_forward(seg):
    images = [np.ascontiguousarray(frame(i, (40, 56))[:, :, ::-1]) for i in range(3)]
    calls = []
    runner = seg.runner
    orig_inf, orig_pred = runner.inference, runner.predict
    runner.inference = lambda *a, **k: calls.append("inference") or orig_inf(*a, **k)
    runner.predict = lambda *a, **k: calls.append("predict") or orig_pred(*a, **k)
    try:
        results = seg(images, probs=True)
        probs = [r.probs() for r in results]
        assert calls == ["inference"]  # one forward for the batch, nothing more for probs()
        calls.clear()
        lazy = seg(images[0])
        lazy.probs()
        assert calls == ["predict", "inference"]  # without probs=True, probs() runs the network again
    finally:
        del runner.inference, runner.predict
    for img, r, p in zip(images, results, probs):
        assert p.shape == (5, 40, 56) and p.dtype == np.float32
        np.testing.assert_allclose(p.sum(0), 1.0, atol=1e-5)
        np.testing.assert_allclose(p, seg.probabilities(img), atol=1e-6)
        assert np.array_equal(r.label, p.argmax(0))
        assert np.array_equal(r.label, seg(img).label)
    streamed = next(iter(seg.stream(iter(images), probs=True)))
    np.testing.assert_allclose(streamed.probs(), probs[0], atol=1e-6)


def test_progress_bar_over_a_call_and_a_stream(seg, clips, capsys):
    images = [np.ascontiguousarray(frame(i, (40, 56))[:, :, ::-1]) for i in range(6)]
    seg(images, progress=True)
    assert "6/6" in capsys.readouterr().err
    list(seg.stream(clips[0], progress=True))
    assert "40/40" in capsys.readouterr().err
    seg(images)
    assert capsys.readouterr().err == ""  # off by default


# ----------------------------------------------------------------------------- video() and segkit predict
def test_video_writes_the_overlay_and_labels_that_predict_writes(seg, tmp_path, monkeypatch):
    import cv2

    clip = write_video(tmp_path / "walk.mp4", 12, fourcc="mp4v", fps=12.5)
    written = seg.video(clip, tmp_path / "api" / "walk_overlay.mp4", save_labels=True)
    assert [p.name for p in written[:2]] == ["walk_overlay.mp4", "walk_000000_label.png"] and len(written) == 13
    cap = cv2.VideoCapture(str(written[0]))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12 and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(12.5)
    cap.release()
    for i, f in enumerate(decoded(clip)):
        assert np.array_equal(np.array(Image.open(tmp_path / "api" / f"walk_{i:06d}_label.png")), seg(f).label)
    with pytest.raises(segkit.errors.OutputExistsError):
        seg.video(clip, tmp_path / "api" / "walk_overlay.mp4")

    from segkit.engine.predict import predict_paths  # what `segkit predict` runs

    calls = []
    orig = segkit.Segmenter.video
    monkeypatch.setattr(segkit.Segmenter, "video", lambda self, *a, **k: calls.append(a) or orig(self, *a, **k))
    predict_paths(seg.model, clip, tmp_path / "cli", save_labels=True, scale=0, progress=False)
    assert calls and Path(calls[0][1]) == tmp_path / "cli" / "walk_overlay.mp4"  # predict goes through video()
    for i in range(12):
        name = f"walk_{i:06d}_label.png"
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "api" / name).read_bytes()


def test_video_with_a_damaged_frame_writes_the_rest_and_names_it(seg, clips, tmp_path):
    from segkit.engine.stream import VideoFramesError

    _, damaged = clips
    with pytest.raises(VideoFramesError, match=r"frame\(s\) 20 of 40 .* wrote the 39 readable frame\(s\)") as e:
        seg.video(damaged, tmp_path / "out.avi")
    assert e.value.frames == [20] and e.value.written[0] == tmp_path / "out.avi"
    assert len(decoded(tmp_path / "out.avi")) == 39
    assert not list(tmp_path.glob(".*part*"))  # no partial file left
    with pytest.raises(segkit.errors.UsageError, match=r"written as .mp4"):
        seg.video(damaged, tmp_path / "out.gif")


def test_stream_results_equal_for_float_and_tensor_inputs(seg):
    rgb = np.ascontiguousarray(frame(3, (40, 56))[:, :, ::-1])
    a, b = seg.stream([rgb, torch.from_numpy(rgb).permute(2, 0, 1)])
    assert np.array_equal(a.label, b.label) and a.name == "image_0000" and b.name == "image_0001"
    with pytest.raises(ValueError, match="input 0: an array must be uint8"):
        list(seg.stream([rgb.astype(np.float32)]))
