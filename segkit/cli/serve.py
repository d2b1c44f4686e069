"""``segkit serve``: a model as an HTTP service (FastAPI + uvicorn): ``POST /predict``, a web page at ``/``,
``/health``, ``/metrics``; dynamic batching, upload limits, an optional API key (``docs/serve.md``)."""

from __future__ import annotations

import os
import sys

from segkit.cli.common import DEVICE_HELP, Formatter, examples, non_negative_int, positive_float, positive_int
from segkit.errors import UsageError

NAME = "serve"
LOOPBACK_NAMES = ("localhost", "ip6-localhost")


def add_parser(sub):
    s = sub.add_parser(
        NAME,
        formatter_class=Formatter,
        help="serve a model over HTTP: POST /predict, a web page, /health, /metrics",
        epilog=examples(
            "segkit serve work_dirs/segformer-b0_camvid_10min/final --port 8000",
            "curl -F image=@photo.jpg 'http://127.0.0.1:8000/predict?format=overlay' -o overlay.png",
            'segkit serve model.onnx --host 0.0.0.0 --api-key "$KEY" --max-batch 8',
        ),
    )
    s.add_argument(
        "model",
        help="a save_pretrained / final folder, a training checkpoint .pth, a registry name, a Hub repo id, "
        "or an exported .onnx",
    )
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    s.add_argument("--port", type=non_negative_int, default=8000, help="TCP port (0: a free one, printed)")
    s.add_argument(
        "--backend", default="auto", choices=["auto", "torch", "onnx"], help="auto: onnx for a .onnx file, else torch"
    )
    s.add_argument("--device", default="auto", help=DEVICE_HELP)
    s.add_argument("--amp", choices=["bf16", "fp16"], help="autocast dtype for the network (PyTorch backend)")
    s.add_argument("--max-batch", type=positive_int, default=8, help="most images per forward pass")
    s.add_argument(
        "--max-wait-ms", type=float, default=10.0, help="longest wait for a batch to fill, from its first request"
    )
    s.add_argument("--max-queue", type=positive_int, default=64, help="most requests waiting (then 503)")
    s.add_argument("--max-upload-mb", type=positive_float, default=20.0, help="largest upload in MiB (then 413)")
    s.add_argument(
        "--max-pixels", type=positive_int, default=40_000_000, help="largest width x height, from the header (413)"
    )
    s.add_argument(
        "--timeout-s", type=positive_float, default=30.0, help="longest wait for a result: queue + inference (504)"
    )
    s.add_argument("--workers", type=positive_int, default=1, help="inference threads sharing the one model")
    s.add_argument(
        "--api-key",
        default=os.environ.get("SEGKIT_API_KEY"),
        help="require 'Authorization: Bearer KEY' on /predict and /metrics (default: $SEGKIT_API_KEY)",
    )
    s.add_argument("--no-access-log", action="store_true", help="do not log one line per request")
    return s


def is_loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """What start-up says when the server is reachable from other machines without an API key; else None."""
    if is_loopback(host) or api_key is not None:
        return None
    return (
        f"listening on {host}, reachable from other machines, without an API key (--api-key or $SEGKIT_API_KEY): "
        "anyone who can reach this port can use the model"
    )


def listen(host: str, port: int):
    """A listening TCP socket on ``host:port`` (bound here, so that a taken port is one clear error and
    ``--port 0`` gets a free port whose number is known). Raises :class:`~segkit.errors.OutputError`."""
    import socket

    from segkit.errors import OutputError

    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(f"--host {host}: not an address of this machine ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise OutputError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    sock.set_inheritable(True)
    return sock


def run(args) -> int:
    import signal

    from segkit.utils import require

    for module in ("fastapi", "uvicorn", "python_multipart", "prometheus_client"):
        require(module, "serve", "segkit serve")  # before the model loads
    if args.max_wait_ms < 0:
        raise UsageError(f"--max-wait-ms must be >= 0, got {args.max_wait_ms}")
    if args.port > 65535:
        raise UsageError(f"--port must be 0..65535, got {args.port}")
    if args.api_key is not None and not args.api_key.strip():
        raise UsageError("--api-key is empty: give a key, or leave the option out")
    import uvicorn

    from segkit.serve.app import create_app

    app = create_app(
        args.model,
        backend=args.backend,
        device=args.device,
        amp=args.amp,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_upload_mb=args.max_upload_mb,
        max_pixels=args.max_pixels,
        timeout_s=args.timeout_s,
        workers=args.workers,
        api_key=args.api_key,
    )
    sock = listen(args.host, args.port)
    port = sock.getsockname()[1]
    engine = app.state.backend
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"segkit serve: {engine.model_name} ({len(engine.classes)} classes, {engine.kind} on {engine.device}; "
        f"batch <= {args.max_batch}, wait <= {args.max_wait_ms:g} ms, queue <= {args.max_queue})",
        flush=True,
    )
    warning = exposure_warning(args.host, args.api_key)
    if warning:
        print(f"segkit serve: warning: {warning}", file=sys.stderr, flush=True)
    print(f"segkit serve: listening on http://{host}:{port}/ (page), POST /predict, GET /health, /metrics", flush=True)
    config = uvicorn.Config(
        app,
        log_level="info",
        access_log=not args.no_access_log,
        timeout_graceful_shutdown=args.timeout_s + 5,  # queued requests get their answer (or their 504) first
        lifespan="on",
    )
    server = uvicorn.Server(config)
    stopped = []
    # uvicorn shuts down gracefully on SIGTERM / SIGINT, restores the handlers it found and raises the signal
    # again; this handler takes that SIGTERM, so that a graceful stop exits with status 0.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stopped.append(signum))
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
    if not server.started:
        return 1
    print("segkit serve: stopped", flush=True)
    return 0
