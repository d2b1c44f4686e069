"""A real ``segkit serve`` process on 127.0.0.1 (a free port): a bounded load test with httpx (200 requests,
concurrency 8, a fixed image set, every label checked), a full queue (each request served or answered 503,
none lost), and SIGTERM during load (in-flight requests complete, new ones are refused, exit status 0).

Traffic goes to 127.0.0.1 only; every loop is bounded in count and time."""

import asyncio
import base64
import time

import numpy as np
import pytest

httpx = pytest.importorskip("httpx", reason='the serve tests need httpx: pip install -e ".[test]"')
pytest.importorskip("uvicorn", reason='segkit serve needs the serve extra: pip install "segkit[serve]"')

from serve_helpers import (  # noqa: E402
    ServerProcess,
    camvid_test_images,
    label_of_png,
    odd_images,
    trained_camvid,
)

import segkit  # noqa: E402

REQUESTS, CONCURRENCY = 200, 8


@pytest.fixture(scope="module")
def final(tmp_path_factory):
    return trained_camvid(tmp_path_factory)


@pytest.fixture(scope="module")
def image_set(tmp_path_factory, final):
    """The fixed request images (4 CamVid test images, a 470x350 JPEG, a 301x227 PNG), their bytes and the
    labels ``segkit.Segmenter`` gives them."""
    paths = camvid_test_images(4) + odd_images(tmp_path_factory.mktemp("odd"))[:2]
    seg = segkit.Segmenter(final, device="cpu")
    return [(p.name, p.read_bytes(), seg(p).label) for p in paths]


@pytest.fixture(scope="module")
def server(final, tmp_path_factory):
    s = ServerProcess(final, tmp_path_factory.mktemp("serve") / "server.log", "--device", "cpu", "--max-batch", "8")
    yield s
    s.stop()


def metric(text: str, line: str) -> float:
    found = [float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(line + " ")]
    return found[0] if found else 0.0


async def load(url: str, image_set, n: int, concurrency: int, keepalive: bool = True, on_result=None):
    """``n`` requests (``format=png``, every fifth ``json``) over ``image_set`` with ``concurrency`` in flight;
    returns ``[(index, start, end, status or exception, label or None)]``. Bounded: 60 s per request."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency if keepalive else 0)
    results = []
    queue = list(range(n))

    async def one(client, i):
        name, data, _ = image_set[i % len(image_set)]
        fmt = "json" if i % 5 == 0 else "png"
        t0 = time.monotonic()
        try:
            r = await client.post(f"{url}/predict?format={fmt}", files={"image": (name, data)})
            label = None
            if r.status_code == 200:
                label = label_of_png(base64.b64decode(r.json()["label_png"]) if fmt == "json" else r.content)
            results.append((i, t0, time.monotonic(), r.status_code, label, r))
        except httpx.TransportError as e:
            results.append((i, t0, time.monotonic(), e, None, None))
        if on_result is not None:
            on_result(results)

    async def worker(client):
        while queue:
            await one(client, queue.pop(0))

    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return sorted(results, key=lambda r: r[0])


def test_load_200_requests_at_concurrency_8(server, image_set):
    health_times = []

    async def main():
        async def poll_health():
            async with httpx.AsyncClient(timeout=10) as client:
                for _ in range(40):  # bounded
                    t0 = time.monotonic()
                    assert (await client.get(f"{server.url}/health")).status_code == 200
                    health_times.append(time.monotonic() - t0)
                    await asyncio.sleep(0.05)

        poller = asyncio.create_task(poll_health())
        results = await load(server.url, image_set, REQUESTS, CONCURRENCY)
        await poller
        return results

    t0 = time.monotonic()
    results = asyncio.run(main())
    wall = time.monotonic() - t0
    assert len(results) == REQUESTS
    errors = [(i, status) for i, _, _, status, _, _ in results if status != 200]
    assert not errors, errors[:5]  # zero errors
    for i, _, _, _, label, _ in results:
        assert np.array_equal(label, image_set[i % len(image_set)][2]), i  # every label equals the Segmenter's
    assert max(health_times) < 2.0, health_times  # /health answered while the worker was busy
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert metric(text, 'segkit_serve_requests_total{endpoint="/predict",status="200"}') >= REQUESTS
    batches, images = metric(text, "segkit_serve_batch_size_count"), metric(text, "segkit_serve_batch_size_sum")
    assert images >= REQUESTS and batches < images, (batches, images)  # concurrent requests were batched
    print(f"{REQUESTS} requests, concurrency {CONCURRENCY}: {wall:.1f} s, mean batch {images / batches:.2f}")


def test_full_queue_answers_503_and_loses_no_request(final, image_set, tmp_path):
    s = ServerProcess(
        final, tmp_path / "server.log", "--device", "cpu", "--max-batch", "1", "--max-queue", "2", "--max-wait-ms", "0"
    )
    try:
        results = asyncio.run(load(s.url, image_set, 48, 16))
        text = httpx.get(f"{s.url}/metrics", timeout=10).text
    finally:
        s.stop()
    statuses = [r[3] for r in results]
    assert len(results) == 48 and set(statuses) <= {200, 503}, statuses  # each served or answered 503
    assert statuses.count(503) > 0 and statuses.count(200) > 0, statuses
    for i, _, _, status, label, response in results:
        if status == 503:
            assert int(response.headers["retry-after"]) >= 1 and "queue is full" in response.json()["error"]
        else:
            assert np.array_equal(label, image_set[i % len(image_set)][2])
    served = metric(text, 'segkit_serve_requests_total{endpoint="/predict",status="200"}')
    refused = metric(text, 'segkit_serve_requests_total{endpoint="/predict",status="503"}')
    assert (served, refused) == (statuses.count(200), statuses.count(503))  # the server counted the same


def test_sigterm_during_load_finishes_in_flight_requests_and_exits_0(final, image_set, tmp_path):
    """SIGTERM with 24 requests in flight (a new connection each): the server stops accepting (a new connection
    made while it drains is refused), answers every request it had accepted, and exits with status 0."""
    s = ServerProcess(final, tmp_path / "server.log", "--device", "cpu", "--max-batch", "2")
    events = {}

    async def terminate_under_load(results_box):
        while len(results_box) < 12:  # under load first
            await asyncio.sleep(0.005)
        s.terminate()
        events["term"] = time.monotonic()
        for _ in range(2000):  # bounded: 10 s
            if "Shutting down" in s.log.read_text():
                break
            await asyncio.sleep(0.005)
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                events["probe"] = (await client.get(f"{s.url}/health")).status_code
        except httpx.TransportError as e:
            events["probe"] = e
        events["alive_after_probe"] = s.proc.poll() is None

    async def main():
        box = []
        stopper = asyncio.create_task(terminate_under_load(box))
        results = await load(s.url, image_set, 96, 24, keepalive=False, on_result=lambda r: box.append(len(r)))
        await stopper
        return results

    try:
        results = asyncio.run(main())
        rc = s.wait(60)
    finally:
        s.stop()
    log = s.log.read_text()
    assert rc == 0, log[-2000:]
    assert "Shutting down" in log and "segkit serve: stopped" in log and "Traceback" not in log
    assert isinstance(events["probe"], httpx.ConnectError), events  # a new connection while draining: refused
    assert events["alive_after_probe"], "the server exited before the probe; no in-flight work to drain"
    ok = [r for r in results if r[3] == 200]
    failed = [r for r in results if r[3] != 200]
    assert all(isinstance(r[3], httpx.TransportError) for r in failed), [r[3] for r in failed][:5]  # no 5xx
    for i, _, _, _, label, _ in ok:
        assert np.array_equal(label, image_set[i % len(image_set)][2])  # complete, correct answers
    t_term = events["term"]
    drained = [r for r in ok if r[1] < t_term < r[2]]
    assert drained, "no request in flight at SIGTERM completed"
    print(f"SIGTERM: {len(drained)} in-flight requests completed after it, {len(failed)} refused")
