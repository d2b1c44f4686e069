"""The FastAPI application of ``segkit serve``: ``create_app(model, …)`` → a FastAPI app.

::

    from fastapi.testclient import TestClient
    from segkit.serve import create_app

    app = create_app("work_dirs/segformer-b0_camvid_10min/final", max_batch=8)
    with TestClient(app) as client:                    # `with`: the app's start-up starts the batcher
        r = client.post("/predict", files={"image": open("photo.jpg", "rb")})
        r.json()["areas"]                              # {"road": 0.31, …}

Endpoints (the contract of ``docs/serve.md``):

* ``POST /predict`` — multipart field ``image`` (JPEG / PNG / WebP / TIFF); query ``format``: ``json``
  (default: ``width``, ``height``, ``classes``, ``palette``, ``areas`` {class: fraction 0–1 of the pixels,
  largest first, classes present only}, ``label_png`` = base64 of the palette PNG of class indices at the
  image's size; ``overlay=true`` adds ``overlay_png``, the colour overlay without legend, base64 PNG),
  ``png`` (that label PNG as ``image/png``), ``overlay`` (overlay + legend as ``image/png``), ``rle``
  (the JSON fields but ``label_png`` replaced by ``rle`` {class: COCO RLE ``{"size": [H, W], "counts":
  str}``} of each class present, encoded by ``pycocotools.mask.encode``).
* ``GET /`` — the page (one self-contained HTML file, :data:`PAGE`; nothing fetched from elsewhere, which
  its Content-Security-Policy enforces in the browser).
* ``GET /health`` — model, classes, backend, device, queue; ``GET /metrics`` — Prometheus text format.

Errors are ``{"error": "<one line>"}`` with their status, never a traceback: 400 / 413 / 415 for uploads
(:mod:`segkit.serve.upload`), 401 for a missing or wrong ``Authorization: Bearer`` key when ``api_key`` is
set (``/predict`` and ``/metrics``; the page and ``/health`` stay open so that a load balancer and a person
can reach them, the page asks for the key), 503 + ``Retry-After`` when the queue is full or the server is
shutting down, 504 when a request gets no result within ``timeout_s`` (queue wait + inference).

No server-side requests (the server never fetches a URL) and no upload is written to disk.

This module has no ``from __future__ import annotations``: FastAPI reads the endpoints' annotations
(``Request``, imported inside the functions that add the routes, so that importing this module needs no
FastAPI) as objects.
"""

import base64
import logging
import secrets
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Literal

import numpy as np

from segkit.serve.batching import Batcher, Closed, QueueFull, QueueTimeout
from segkit.serve.upload import UploadError, open_image, read_image_part
from segkit.utils import require

log = logging.getLogger("segkit.serve")
FORMATS = ("json", "png", "overlay", "rle")
# the page may load nothing from elsewhere: scripts and styles are inline, images are data: / blob: URLs
PAGE_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def page_html() -> str:
    """The page served at ``/`` (``segkit/serve/page.html``, shipped as package data)."""
    return resources.files("segkit.serve").joinpath("page.html").read_text(encoding="utf-8")


class Metrics:
    """The Prometheus metrics of one app, in its own registry (several apps in one process do not clash).

    ``segkit_serve_requests_total{endpoint, status}``, ``segkit_serve_request_seconds{endpoint}`` (latency
    histogram, seconds), ``segkit_serve_batch_size`` (images per forward pass), ``segkit_serve_inference_seconds``
    (time of a batch), ``segkit_serve_queue_length`` (requests waiting for a worker)."""

    def __init__(self, max_batch: int, queue_length):
        prom = require("prometheus_client", "serve", "segkit serve")
        self.prom = prom
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.requests = prom.Counter(
            "segkit_serve_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.latency = prom.Histogram(
            "segkit_serve_request_seconds",
            "Request latency in seconds, by endpoint",
            ["endpoint"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        sizes = [s for s in sorted({1, 2, 4, 8, 16, 32, 64, max_batch}) if s <= max_batch]
        self.batch_size = prom.Histogram(
            "segkit_serve_batch_size", "Images per forward pass", buckets=sizes, registry=r
        )
        self.inference = prom.Histogram(
            "segkit_serve_inference_seconds",
            "Time of one batch (forward pass + label maps), seconds",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        queue = prom.Gauge("segkit_serve_queue_length", "Requests waiting for an inference worker", registry=r)
        queue.set_function(queue_length)

    def on_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)

    def text(self) -> tuple[bytes, str]:
        return self.prom.generate_latest(self.registry), self.prom.CONTENT_TYPE_LATEST


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def areas(label: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Share of the pixels per class present (0–1), largest first (as :meth:`segkit.SegResult.areas`)."""
    counts = np.bincount(label.ravel().astype(np.int64), minlength=len(classes))
    total = max(int(counts.sum()), 1)
    return {classes[i]: float(counts[i] / total) for i in np.argsort(-counts, kind="stable") if counts[i]}


def rle(label: np.ndarray, classes: list[str]) -> dict[str, dict]:
    """COCO RLE ``{"size": [H, W], "counts": str}`` of each class present in ``label`` ``(H, W)``, in class-id
    order: :func:`segkit.engine.result_formats.class_rles`, what :meth:`segkit.SegResult.rle` returns (encoded by
    ``pycocotools.mask.encode``; ``pycocotools.mask.decode`` gives the mask back). Torch-free."""
    from segkit.engine.result_formats import class_rles

    return class_rles(label, classes)


def render(backend, image: np.ndarray, label: np.ndarray, fmt: str, with_overlay: bool = False):
    """The response body of ``POST /predict`` for ``fmt``: ``(bytes, media type)`` or a JSON-ready dict."""
    from segkit.engine.visualize import label_png, overlay, overlay_with_legend, png_bytes

    if fmt == "png":
        return png_bytes(label_png(label, backend.palette)), "image/png"
    if fmt == "overlay":
        vis = overlay_with_legend(image, label.astype(np.int64), backend.palette, backend.classes, ignore_index=-1)
        return png_bytes(vis), "image/png"
    body = {
        "width": int(label.shape[1]),
        "height": int(label.shape[0]),
        "classes": backend.classes,
        "palette": backend.palette,
        "areas": areas(label, backend.classes),
    }
    if fmt == "rle":
        body["rle"] = rle(label, backend.classes)
    else:
        body["label_png"] = _b64(png_bytes(label_png(label, backend.palette)))
    if with_overlay:
        body["overlay_png"] = _b64(png_bytes(overlay(image, label.astype(np.int64), backend.palette, ignore_index=-1)))
    return body


def create_app(
    model,
    *,
    backend: str = "auto",
    device: str = "auto",
    amp: str | None = None,
    max_batch: int = 8,
    max_wait_ms: float = 10.0,
    max_queue: int = 64,
    max_upload_mb: float = 20.0,
    max_pixels: int = 40_000_000,
    timeout_s: float = 30.0,
    workers: int = 1,
    api_key: str | None = None,
):
    """The FastAPI app serving ``model`` (module docstring: endpoints, formats, errors).

    Args:
        model: what ``segkit predict`` takes (a ``final/`` folder, a checkpoint, a registry name, a Hub id),
            a ``Segmentor``, or an exported ``.onnx`` file; or a ready backend (:mod:`segkit.serve.backends`).
        backend: ``auto`` (``onnx`` for a ``.onnx`` file, else ``torch``), ``torch`` or ``onnx``.
        device, amp: PyTorch's device (``auto`` / ``cpu`` / ``cuda``) and autocast (``None`` / ``bf16``).
        max_batch: most images per forward pass; max_wait_ms: longest wait for a batch to fill (milliseconds,
            from its oldest request); max_queue: most requests waiting (then 503); workers: inference threads
            (:class:`~segkit.serve.batching.Batcher`).
        max_upload_mb: largest upload in MiB (413); max_pixels: largest width × height, checked on the header
            before decoding (413); timeout_s: longest wait for a result, seconds (504).
        api_key: when set, ``/predict`` and ``/metrics`` need ``Authorization: Bearer <api_key>`` (401).

    The model is loaded here (errors surface before a port is bound); the batcher starts with the app's
    lifespan, so use the app under a server or ``with TestClient(app)``. Raises what loading the model
    raises (``segkit.errors``), :class:`~segkit.errors.UsageError` for a limit out of range, and
    :class:`~segkit.errors.MissingDependencyError` naming ``segkit[serve]`` without FastAPI.
    """
    fastapi = require("fastapi", "serve", "segkit serve")
    require("python_multipart", "serve", "segkit serve uploads")
    _check_limits(max_batch, max_wait_ms, max_queue, max_upload_mb, max_pixels, timeout_s, workers, api_key)
    if hasattr(model, "prepare") and hasattr(model, "run"):
        engine = model
    else:
        from segkit.serve.backends import load_backend

        engine = load_backend(model, backend=backend, device=device, amp=amp)
    batcher = Batcher(
        engine.run, max_batch=max_batch, max_wait_s=max_wait_ms / 1000, max_queue=max_queue, workers=workers
    )
    metrics = Metrics(batcher.max_batch, lambda: batcher.queued)
    batcher.on_batch = metrics.on_batch
    state = {"shutting_down": False}

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        try:
            yield
        finally:
            state["shutting_down"] = True
            await batcher.close()  # after the server stopped taking connections: finishes what is queued

    app = fastapi.FastAPI(
        title="segkit serve",
        description=f"Semantic segmentation with {engine.model_name} ({engine.kind}). See docs/serve.md.",
        lifespan=lifespan,
        docs_url=None,  # the Swagger / ReDoc pages load their scripts from a CDN; /openapi.json stays
        redoc_url=None,
    )
    app.state.backend, app.state.batcher, app.state.metrics = engine, batcher, metrics
    _add_error_handlers(app, metrics)
    check_key = _key_check(api_key)
    _add_info_routes(app, engine, batcher, metrics, state, check_key)
    _add_predict_route(app, engine, batcher, check_key, int(max_upload_mb * 2**20), max_pixels, timeout_s)
    return app


def _check_limits(max_batch, max_wait_ms, max_queue, max_upload_mb, max_pixels, timeout_s, workers, api_key) -> None:
    """:func:`create_app`'s limits: :class:`~segkit.errors.UsageError` naming the first one out of range."""
    from segkit.errors import UsageError

    for name, value in {"max_upload_mb": max_upload_mb, "max_pixels": max_pixels, "timeout_s": timeout_s}.items():
        if not value > 0:
            raise UsageError(f"{name} must be > 0, got {value}")
    if api_key is not None and not str(api_key).strip():
        raise UsageError("api_key is empty: give a key, or None for no key")
    if min(int(max_batch), int(max_queue), int(workers)) < 1 or max_wait_ms < 0:
        raise UsageError(
            f"max_batch, max_queue and workers must be >= 1 and max_wait_ms >= 0, got {max_batch}, {max_queue}, "
            f"{workers} and {max_wait_ms}"
        )


def _error(status: int, message: str, headers: dict | None = None):
    """The JSON error response of every endpoint: ``{"error": message}`` with ``status``."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _add_error_handlers(app, metrics: Metrics) -> None:
    """Every error as ``{"error": …}`` (HTTP errors, invalid query values as 400, upload errors with their
    status, anything else as 500 with the traceback in the server log only), and the request counter and
    latency histogram of every request."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return _error(exc.status_code, str(exc.detail), headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        parts = []
        for e in exc.errors():
            where = ".".join(str(v) for v in e.get("loc", ()))
            parts.append(f"{where}: {e.get('msg')}")
        return _error(400, "; ".join(parts) or "invalid request")

    @app.exception_handler(UploadError)
    async def upload_error(request, exc):
        return _error(exc.status, str(exc))

    @app.exception_handler(Exception)
    async def internal_error(request, exc):
        log.exception("internal error on %s", request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}); the server log has the details")

    @app.middleware("http")
    async def count(request: Request, call_next):
        t0 = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            endpoint = getattr(route, "path", None) or "other"
            metrics.requests.labels(endpoint, str(status)).inc()
            metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)


def _key_check(api_key: str | None):
    """The FastAPI dependency that answers 401 unless ``Authorization: Bearer <api_key>`` (no check without a key;
    the comparison takes the same time whatever the sent key)."""
    from fastapi import Request
    from starlette.exceptions import HTTPException

    async def check_key(request: Request):
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), api_key.encode()):
            raise HTTPException(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'")

    check_key.needs_key = api_key is not None
    return check_key


def _add_info_routes(app, engine, batcher: Batcher, metrics: Metrics, state: dict, check_key) -> None:
    """``GET /`` (the page), ``GET /health`` and ``GET /metrics`` (behind the key, when one is set)."""
    from fastapi import Depends
    from fastapi.responses import HTMLResponse, Response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        headers = {"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff"}
        return HTMLResponse(page_html(), headers=headers)

    @app.get("/health")
    async def health():
        """The model and the server's state (never needs the API key)."""
        return {
            "status": "shutting down" if state["shutting_down"] else "ok",
            "model": engine.model_name,
            "classes": engine.classes,
            "palette": engine.palette,
            "backend": engine.kind,
            "device": engine.device,
            "amp": engine.amp,
            "protocol": engine.protocol,
            "max_batch": batcher.max_batch,
            "queue": batcher.queued,
            "in_flight": batcher.in_flight,
            "auth": check_key.needs_key,
        }

    @app.get("/metrics", dependencies=[Depends(check_key)], include_in_schema=False)
    async def prometheus():
        body, media = metrics.text()
        return Response(body, media_type=media)


# the multipart body of POST /predict in the OpenAPI schema (the endpoint reads the request itself, for the limits)
_UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


def _add_predict_route(app, engine, batcher: Batcher, check_key, max_bytes: int, max_pixels: int, timeout_s: float):
    """``POST /predict``: the upload (size and pixel limits), one place in the batcher's queue, the response in the
    asked ``format``; 503 / 504 / 413 / 400 as in the module docstring."""
    from fastapi import Depends, Query, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse, Response

    from segkit.errors import InsufficientMemoryError, SegkitError

    @app.post("/predict", dependencies=[Depends(check_key)], openapi_extra=_UPLOAD_SCHEMA)
    async def predict(
        request: Request,
        format: Literal["json", "png", "overlay", "rle"] = Query("json", description="response format"),
        overlay: bool = Query(False, description="format=json: also return overlay_png"),
    ):
        """Segment the uploaded image (multipart field ``image``)."""
        if batcher.queued >= batcher.max_queue:  # refused before the upload is read and decoded
            msg = f"the queue is full ({batcher.max_queue} requests waiting); retry later"
            return _error(503, msg, {"Retry-After": str(batcher.retry_after())})
        upload = await read_image_part(request, max_bytes)
        image = await run_in_threadpool(open_image, upload, max_pixels)
        try:
            key, item = await run_in_threadpool(engine.prepare, image)
            label = await batcher.submit(key, item, timeout=timeout_s)
        except QueueFull as e:
            return _error(503, str(e), {"Retry-After": str(e.retry_after)})
        except Closed as e:
            return _error(503, str(e), {"Retry-After": "5"})
        except QueueTimeout as e:
            return _error(504, str(e))
        except InsufficientMemoryError as e:
            return _error(413, str(e))
        except SegkitError as e:  # bad data / usage raised by the model's preprocessing
            return _error(400, str(e))
        out = await run_in_threadpool(render, engine, image, label, format, overlay)
        if isinstance(out, dict):
            return JSONResponse(out)
        body, media = out
        return Response(body, media_type=media)


__all__ = ["create_app", "page_html", "render", "areas", "rle", "Metrics", "FORMATS", "PAGE_CSP"]
