"""``segkit serve``: a trained model as an HTTP service — FastAPI + uvicorn, dynamic batching, limits,
Prometheus metrics and a self-contained web page (``docs/serve.md``).

* :func:`create_app` (:mod:`segkit.serve.app`) — the FastAPI app: ``POST /predict``, ``GET /``, ``/health``,
  ``/metrics``;
* :class:`~segkit.serve.batching.Batcher` — dynamic batching off the event loop;
* :mod:`segkit.serve.backends` — PyTorch (via :class:`segkit.Segmenter`) and onnxruntime (no PyTorch);
* :mod:`segkit.serve.upload` — in-memory multipart uploads, format and pixel checks before decoding.

Needs the ``serve`` extra: ``pip install "segkit[serve]"``. Importing this package imports neither
FastAPI nor PyTorch.
"""

from segkit.serve.app import create_app
from segkit.serve.batching import Batcher, Closed, QueueFull, QueueTimeout

__all__ = ["create_app", "Batcher", "QueueFull", "QueueTimeout", "Closed"]
