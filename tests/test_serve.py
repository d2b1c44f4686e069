"""``segkit serve`` through FastAPI's TestClient: every endpoint and format, labels equal to
``segkit.Segmenter`` (and to the ONNX predictor for the ONNX export) on every pixel, each error status
with a real bad input, dynamic batching, ``/health`` while busy, the batcher's rules, and the command's
usage errors."""

import asyncio
import base64
import io
import json
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason='segkit serve needs the serve extra: pip install "segkit[serve]"')

from fastapi.testclient import TestClient  # noqa: E402
from serve_helpers import (  # noqa: E402
    camvid_test_images,
    exported_onnx,
    label_of_png,
    odd_images,
    png_bomb,
    trained_camvid,
)

import segkit  # noqa: E402
from segkit.cli import main as cli  # noqa: E402
from segkit.data import read_image  # noqa: E402
from segkit.engine.visualize import overlay as overlay_array  # noqa: E402
from segkit.serve import Batcher, Closed, QueueFull, QueueTimeout, create_app  # noqa: E402
from segkit.serve.backends import TorchBackend  # noqa: E402


@pytest.fixture(scope="module")
def final(tmp_path_factory):
    return trained_camvid(tmp_path_factory)


@pytest.fixture(scope="module")
def segmenter(final):
    return segkit.Segmenter(final, device="cpu")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return camvid_test_images(2) + odd_images(tmp_path_factory.mktemp("odd"))


@pytest.fixture(scope="module")
def client(final):
    with TestClient(create_app(final, device="cpu", max_batch=4)) as c:
        yield c


def post(client, path, data: bytes, name="image.png", ctype="image/png", **kw):
    return client.post(path, files={"image": (name, data, ctype)}, **kw)


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


# ----------------------------------------------------------------------------- formats and labels
def test_json_labels_equal_the_segmenter_on_every_pixel(client, segmenter, images):
    for path in images:
        r = post(client, "/predict", path.read_bytes(), name=path.name)
        assert r.status_code == 200, r.text
        body = r.json()
        expected = segmenter(path)
        label = label_of_png(base64.b64decode(body["label_png"]))
        assert label.shape == expected.label.shape == (body["height"], body["width"])
        assert np.array_equal(label, expected.label), path.name  # all pixels
        assert body["classes"] == segmenter.classes and body["palette"] == segmenter.palette
        assert list(body["areas"]) == list(expected.areas()) and body["areas"] == pytest.approx(expected.areas())
        assert sum(body["areas"].values()) == pytest.approx(1.0)


def test_png_overlay_and_rle_formats(client, segmenter, images):
    from pycocotools import mask as mask_utils

    path = images[0]
    expected = segmenter(path)
    r = post(client, "/predict?format=png", path.read_bytes())
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    png = Image.open(io.BytesIO(r.content))
    assert png.mode == "P" and png.getpalette()[:6] == [c for rgb in segmenter.palette[:2] for c in rgb]
    assert np.array_equal(np.array(png), expected.label)

    r = post(client, "/predict?format=overlay", path.read_bytes())
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert np.array_equal(np.array(Image.open(io.BytesIO(r.content))), np.array(expected.overlay(legend=True)))

    r = post(client, "/predict?format=rle", path.read_bytes())
    body = r.json()
    assert r.status_code == 200 and "label_png" not in body and set(body["rle"]) == set(expected.areas())
    assert body["rle"] == expected.rle()  # SegResult.rle of the same image, class-id order
    covered = np.zeros(expected.label.shape, bool)
    for name, enc in body["rle"].items():
        mask = mask_utils.decode({"size": enc["size"], "counts": enc["counts"].encode()}).astype(bool)
        assert np.array_equal(mask, expected.label == segmenter.classes.index(name)), name
        assert not (covered & mask).any()
        covered |= mask
    assert covered.all()

    r = post(client, "/predict?overlay=true", path.read_bytes())
    plain = np.array(Image.open(io.BytesIO(base64.b64decode(r.json()["overlay_png"]))))
    assert np.array_equal(plain, overlay_array(expected.image, expected.label.astype(np.int64), segmenter.palette))


def test_binary_model_is_served_through_its_threshold(images, tmp_path):
    """A one-logit binary model: labels 0 / 1 from its threshold, equal to the Segmenter's."""
    import torch

    torch.manual_seed(0)
    model = segkit.build_model("segformer-b0", 1, task="binary", decoder_dim=16, threshold=0.5)
    model.class_names, model.palette = ["background", "foreground"], [[0, 0, 0], [255, 255, 255]]
    model.save_pretrained(tmp_path / "binary")
    expected = segkit.Segmenter(tmp_path / "binary", device="cpu")(images[0]).label
    assert set(np.unique(expected)) == {0, 1}  # both sides of the threshold occur (an arg-max of 1 logit gives 0s)
    with TestClient(create_app(tmp_path / "binary", device="cpu")) as client:
        r = post(client, "/predict?format=png", images[0].read_bytes())
    assert r.status_code == 200 and np.array_equal(label_of_png(r.content), expected)


def test_onnx_export_serves_the_same_labels_without_torch(tmp_path_factory, final, segmenter, images, tmp_path):
    """The ONNX backend: labels equal the ONNX predictor of ``segkit predict --onnx`` on every pixel, and the
    PyTorch Segmenter of the same model (differences allowed only at float near-ties of the two runtimes:
    none on this model and these images when written); and the whole path runs with torch made unimportable."""
    from segkit.tools.onnx_predict import OnnxSegmenter

    onnx = exported_onnx(tmp_path_factory, final)
    reference = OnnxSegmenter(onnx)
    with TestClient(create_app(onnx, max_batch=4)) as client:
        assert client.get("/health").json()["backend"] == "onnx"
        for path in images:
            r = post(client, "/predict", path.read_bytes(), name=path.name)
            assert r.status_code == 200, r.text
            label = label_of_png(base64.b64decode(r.json()["label_png"]))
            assert np.array_equal(label, reference.predict(read_image(path))), path.name
            assert (label != segmenter(path).label).mean() <= 1e-3, path.name

    code = (
        "import sys, json; sys.modules['torch'] = None\n"
        "from fastapi.testclient import TestClient\n"
        "from segkit.serve import create_app\n"
        f"app = create_app({str(onnx)!r})\n"
        "with TestClient(app) as c:\n"
        f"    r = c.post('/predict?format=png', files={{'image': open({str(images[0])!r}, 'rb')}})\n"
        "torch = any(m.split('.')[0] == 'torch' for m, v in sys.modules.items() if v is not None)\n"
        "print(json.dumps([r.status_code, r.headers['content-type'], torch]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [200, "image/png", False]


# ----------------------------------------------------------------------------- page, health, metrics
def test_page_health_and_metrics(client, segmenter):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    page = r.text
    assert 'id="file"' in page and "predict?format=json&overlay=true" in page
    # nothing from elsewhere: no absolute URL in any src / href / fetch / url()
    assert not [m for m in re.findall(r"(?:src|href)=[\"']([^\"']+)", page) if "//" in m]
    assert "http://" not in page and "https://" not in page

    h = client.get("/health").json()
    assert h["status"] == "ok" and h["model"] == "segformer-b0" and h["classes"] == segmenter.classes
    assert h["backend"] == "torch" and h["device"] == "cpu" and h["auth"] is False
    assert "64x48" in h["protocol"]

    before = client.get("/metrics").text
    post(client, "/predict", b"")  # a 400
    text = client.get("/metrics").text
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")

    def value(metrics: str, line: str) -> float:
        found = [float(x.rsplit(" ", 1)[1]) for x in metrics.splitlines() if x.startswith(line + " ")]
        return found[0] if found else 0.0

    key = 'segkit_serve_requests_total{endpoint="/predict",status="400"}'
    assert value(text, key) == value(before, key) + 1
    for name in ("segkit_serve_request_seconds_bucket", "segkit_serve_batch_size_count", "segkit_serve_queue_length"):
        assert name in text


def test_openapi_describes_the_upload_and_no_cdn_docs(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert body["schema"]["required"] == ["image"]
    assert client.get("/docs").status_code == 404  # the Swagger page would load scripts from a CDN


# ----------------------------------------------------------------------------- errors
def test_error_statuses_for_real_bad_inputs(client, segmenter, images, tmp_path):
    rng = np.random.default_rng(0)
    text_png = tmp_path / "notes.png"
    text_png.write_text("these are my notes, not a picture\n" * 20)
    cases = {
        "random bytes": (rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "image/png", 400, "not a decodable"),
        "text named .png": (text_png.read_bytes(), "image/png", 415, "text file"),
        "0-byte upload": (b"", "image/png", 400, "empty upload"),
        "declared text/plain": (images[0].read_bytes(), "text/plain", 415, "declared as text/plain"),
        "truncated PNG": (encoded(Image.open(images[0]))[:3000], "image/png", 400, "truncated"),
        "GIF": (encoded(Image.new("P", (8, 8)), "GIF"), "image/gif", 415, "GIF images are not accepted"),
    }
    for what, (data, ctype, status, words) in cases.items():
        r = post(client, "/predict", data, ctype=ctype)
        assert r.status_code == status, (what, r.text)
        assert set(r.json()) == {"error"} and words in r.json()["error"], (what, r.text)
        assert "Traceback" not in r.text

    # a 60000x60000 PNG header in a small file: refused before decoding (Pillow's limit), and a 7000x7000
    # one (49 Mpx: under Pillow's limit, over --max-pixels 40 M): refused by the header check
    for side, words in ((60000, "pixel limit"), (7000, "--max-pixels")):
        bomb = png_bomb(side, side)
        assert len(bomb) < 10_000
        t0 = time.perf_counter()
        r = post(client, "/predict", bomb, name=f"bomb{side}.png")
        assert r.status_code == 413 and words in r.json()["error"], r.text
        assert time.perf_counter() - t0 < 5  # no 10 GB decode

    # a 1x1 image is an image: served like segkit predict serves it (the test resize upscales it)
    one = images[-1]
    r = post(client, "/predict", one.read_bytes())
    assert r.status_code == 200 and (r.json()["width"], r.json()["height"]) == (1, 1)
    assert np.array_equal(label_of_png(base64.b64decode(r.json()["label_png"])), segmenter(one).label)

    for bad in (
        client.post("/predict", json={"image": "http://example.org/a.jpg"}),  # no URL fetching: not even parsed
        client.post("/predict", files={"photo": ("a.png", one.read_bytes(), "image/png")}),
        client.post("/predict?format=jpeg", files={"image": ("a.png", one.read_bytes(), "image/png")}),
        client.get("/nowhere"),
    ):
        assert bad.status_code in (400, 404, 415) and set(bad.json()) == {"error"}, bad.text
    assert client.post("/predict", json={"image": "http://example.org/a.jpg"}).status_code == 415


def test_byte_and_pixel_limits_and_the_api_key(final, images):
    noise = np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    big = encoded(Image.fromarray(noise))  # ~360 kB of incompressible PNG
    assert len(big) > 0.2 * 2**20
    small = encoded(Image.open(images[-2]).resize((100, 75)))
    app = create_app(final, device="cpu", max_upload_mb=0.2, max_pixels=100_000, api_key="s3cret")
    key = {"Authorization": "Bearer s3cret"}
    with TestClient(app) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            r = post(client, "/predict", small, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and "API key" in r.json()["error"]
            assert client.get("/metrics", headers=headers).status_code == 401
        assert post(client, "/predict", small, headers=key).status_code == 200
        assert client.get("/metrics", headers=key).status_code == 200
        assert client.get("/health").json()["auth"] is True and client.get("/").status_code == 200

        r = post(client, "/predict", big, headers=key)  # Content-Length over the limit
        assert r.status_code == 413 and "--max-upload-mb" in r.json()["error"]
        boundary = "segkitboundary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
                f"Content-Type: image/png\r\n\r\n"
            ).encode()
            + big
            + f"\r\n--{boundary}--\r\n".encode()
        )
        r = client.post(  # streamed without Content-Length: refused while reading
            "/predict",
            content=(body[i : i + 65536] for i in range(0, len(body), 65536)),
            headers={**key, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert r.status_code == 413 and "--max-upload-mb" in r.json()["error"]

        over = encoded(Image.open(images[-2]).resize((400, 300)))  # 120 000 px, a small file
        r = post(client, "/predict", over, headers=key)
        assert r.status_code == 413 and "120000 pixels" in r.json()["error"]


class SlowBackend:
    """The real backend with ``delay`` seconds added to every batch; records the batch sizes."""

    def __init__(self, inner, delay: float):
        self.inner, self.delay, self.batches = inner, delay, []
        for name in ("model_name", "classes", "palette", "device", "amp", "protocol", "kind"):
            setattr(self, name, getattr(inner, name))

    def prepare(self, image):
        return self.inner.prepare(image)

    def run(self, items):
        self.batches.append(len(items))
        time.sleep(self.delay)
        return self.inner.run(items)


def concurrently(fn, args: list) -> list:
    out = [None] * len(args)

    def one(i):
        out[i] = fn(args[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(args))]
    for t in threads:
        t.start()
        time.sleep(0.01)
    for t in threads:
        t.join(60)
    return out


@pytest.fixture(scope="module")
def torch_backend(final):
    return TorchBackend(final, device="cpu")


def test_queue_full_is_503_with_retry_after_and_timeout_is_504(torch_backend, images):
    data = images[0].read_bytes()
    slow = SlowBackend(torch_backend, 0.4)
    with TestClient(create_app(slow, max_batch=1, max_queue=1, max_wait_ms=0)) as client:
        responses = concurrently(lambda _: post(client, "/predict", data), list(range(5)))
        statuses = sorted(r.status_code for r in responses)
        assert set(statuses) == {200, 503} and statuses.count(200) >= 2, statuses
        for r in responses:
            if r.status_code == 503:
                assert int(r.headers["retry-after"]) >= 1 and "queue is full" in r.json()["error"]
    slow = SlowBackend(torch_backend, 0.5)
    with TestClient(create_app(slow, max_batch=1, timeout_s=0.2)) as client:
        r = post(client, "/predict", data)
        assert r.status_code == 504 and "0.2 s" in r.json()["error"]
        time.sleep(0.5)
        assert client.get("/health").json()["in_flight"] == 0


def test_dynamic_batching_and_health_while_busy(torch_backend, segmenter, images):
    """Requests whose network inputs share a shape (480x360 and 470x350 both run at 64x64) form one batch
    while the worker is busy; labels still equal the Segmenter's; /health answers during the batch."""
    slow = SlowBackend(torch_backend, 0.6)
    with TestClient(create_app(slow, max_batch=8, max_wait_ms=50)) as client:
        first = threading.Thread(target=post, args=(client, "/predict", images[3].read_bytes()))
        first.start()
        time.sleep(0.2)  # the first request runs alone (nothing else came within 50 ms); the next four queue up
        t0 = time.perf_counter()
        h = client.get("/health").json()
        assert time.perf_counter() - t0 < 0.5 and h["in_flight"] >= 1  # answered during inference
        batch = [images[0], images[1], images[2], images[0]]  # 480x360 and 470x350
        responses = concurrently(lambda p: post(client, "/predict", p.read_bytes()), batch)
        first.join(30)
    assert [r.status_code for r in responses] == [200] * 4
    for path, r in zip(batch, responses):
        assert np.array_equal(label_of_png(base64.b64decode(r.json()["label_png"])), segmenter(path).label)
    assert slow.batches[0] == 1 and 4 in slow.batches[1:], slow.batches  # the four ran as one batch


def test_a_failing_model_is_a_json_500_without_traceback(torch_backend, images):
    class Broken(SlowBackend):
        def run(self, items):
            raise RuntimeError("kernel exploded at /secret/path.py line 3")

    with TestClient(create_app(Broken(torch_backend, 0)), raise_server_exceptions=False) as client:
        r = post(client, "/predict", images[0].read_bytes())
        assert r.status_code == 500 and set(r.json()) == {"error"}
        assert "RuntimeError" in r.json()["error"] and "/secret" not in r.text and "Traceback" not in r.text
        assert client.get("/health").status_code == 200  # still serving


# ----------------------------------------------------------------------------- the batcher alone
def test_batcher_groups_by_key_waits_and_bounds_the_queue():
    calls = []

    def run(items):
        calls.append(list(items))
        time.sleep(0.05)
        return [x * 10 for x in items]

    async def scenario():
        b = Batcher(run, max_batch=3, max_wait_s=0.1, max_queue=5)
        await b.start()
        tasks = [asyncio.create_task(b.submit(k, i)) for i, k in enumerate("aabab")]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):  # 5 waiting: the sixth is refused at once
            await b.submit("a", 99)
        results = await asyncio.gather(*tasks)
        t0 = time.perf_counter()
        assert await b.submit("c", 7) == 70
        waited = time.perf_counter() - t0
        with pytest.raises(QueueTimeout):
            await b.submit("d", 1, timeout=0.01)  # still waiting for its batch to fill: removed, never runs
        await b.close()
        with pytest.raises(Closed):
            await b.submit("a", 1)
        return results, waited

    results, waited = asyncio.run(scenario())
    assert results == [0, 10, 20, 30, 40]
    assert calls[:2] == [[0, 1, 3], [2, 4]]  # oldest key first, up to max_batch, arrival order kept
    assert calls[2] == [7] and 0.1 <= waited < 1.0  # alone: waited max_wait_s for company, then ran
    assert [1] not in calls[3:]  # the timed-out request never ran


def test_batcher_workers_run_batches_side_by_side():
    spans = []

    def run(items):
        t0 = time.perf_counter()
        time.sleep(0.2)
        spans.append((t0, time.perf_counter()))
        return items

    async def scenario():
        b = Batcher(run, max_batch=1, max_wait_s=0.0, max_queue=10, workers=2)
        await b.start()
        out = await asyncio.gather(*(b.submit("k", i) for i in range(2)))
        await b.close()
        return out

    assert asyncio.run(scenario()) == [0, 1]
    (a0, a1), (b0, b1) = sorted(spans)
    assert b0 < a1  # the second batch started before the first ended: two worker threads


def test_batcher_finishes_the_queue_on_close():
    def run(items):
        time.sleep(0.02)
        return items

    async def scenario():
        b = Batcher(run, max_batch=2, max_wait_s=0.0, max_queue=10)
        await b.start()
        tasks = [asyncio.create_task(b.submit("k", i)) for i in range(6)]
        await asyncio.sleep(0)
        await b.close()
        return await asyncio.gather(*tasks)

    assert asyncio.run(scenario()) == list(range(6))


# ----------------------------------------------------------------------------- the command
def test_serve_command_usage_and_model_errors(final, tmp_path, capsys):
    def run(*args):
        rc = cli(["serve", *map(str, args)])
        return rc, capsys.readouterr().err

    rc, err = run(final, "--backend", "onnx")
    assert rc == 2 and "export" in err and "Traceback" not in err
    rc, err = run(final, "--port", "70000")
    assert rc == 2 and "--port" in err
    rc, err = run(tmp_path / "missing_model", "--port", "0")
    assert rc == 1 and "missing_model" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as e:
        cli(["serve", str(final), "--max-batch", "0"])
    assert e.value.code == 2

    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        rc, err = run(final, "--port", taken.getsockname()[1], "--device", "cpu")
    assert rc == 1 and "cannot listen on 127.0.0.1" in err


def test_create_app_refuses_bad_settings_before_loading(tmp_path):
    from segkit.errors import UsageError

    for kwargs in ({"max_batch": 0}, {"max_wait_ms": -1}, {"api_key": " "}, {"max_pixels": 0}, {"timeout_s": 0}):
        with pytest.raises(UsageError, match=next(iter(kwargs))):  # the setting named, not the missing model
            create_app(tmp_path / "never_loaded", **kwargs)


def test_loopback_detection_and_the_exposure_warning():
    from segkit.cli.serve import exposure_warning, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("127.3.2.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("192.168.1.4")
    assert "without an API key" in exposure_warning("0.0.0.0", None)
    assert exposure_warning("0.0.0.0", "key") is None and exposure_warning("127.0.0.1", None) is None
