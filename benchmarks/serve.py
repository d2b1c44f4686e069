"""``segkit serve`` under load: throughput and p50 / p95 / p99 latency of ``POST /predict`` with dynamic
batching off (``--max-batch 1``) and on (``--max-batch 8``), at concurrency 1, 4 and 16.

    python benchmarks/serve.py MODEL [--data ../shared/data/camvid] [--requests 64] [--rounds 2]
                               [--concurrency 1 4 16] [--max-batch 1 8] [--max-wait-ms 10] [--tag ""]

MODEL is what ``segkit serve`` takes; the README's figures use the README model
(``work_dirs/segformer-b0_camvid_10min/final``, its stored test protocol: keep-ratio resize into 360×270,
sides to multiples of 32, so CamVid's 480×360 images run at 384×288).

One ``segkit serve`` process per ``--max-batch`` value (``--device cpu --no-access-log``), all started
before the first measurement and run round-robin: cell after cell (concurrency × max-batch) in each
round, so load from other processes hits both settings alike. Each cell sends ``--requests`` requests
(the first ``--images`` CamVid test images in turn, ``format=png``) from an httpx client in this process,
with ``concurrency`` requests in flight; a request's latency is from sending to the last byte of the
answer. Throughput = requests / wall time of the cell. The client shares the machine with the server:
on a 2-core machine it takes CPU from the server, for both settings alike.

Recorded per cell: the 1-minute load average before it, the share of the machine's CPU used by other
processes during it (``/proc/stat`` minus this process and the servers), and the mean batch size the
server formed (from its ``/metrics``).

Writes ``benchmarks/results/serve<tag>.json`` and ``serve<tag>.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine spent busy since boot (``/proc/stat``; None elsewhere)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> dict:
    import platform

    info = {"cpu": platform.processor() or "unknown", "logical_cpus": os.cpu_count()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)}
        info["cpu"] = fields.get("Model name", info["cpu"])
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


class Server:
    """A ``segkit serve`` process on a free port of 127.0.0.1."""

    def __init__(self, model: str, max_batch: int, max_wait_ms: float, log: Path):
        cmd = [sys.executable, "-m", "segkit", "serve", model, "--port", "0", "--device", "cpu", "--no-access-log"]
        cmd += ["--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms), "--max-queue", "256"]
        self.log = log
        self.file = open(log, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.file, stderr=subprocess.STDOUT, cwd=ROOT)
        for _ in range(1200):  # 120 s
            text = log.read_text()
            m = re.search(r"listening on (http://127\.0\.0\.1:\d+)/", text)
            if m and "Application startup complete" in text:
                self.url = m.group(1)
                return
            if self.proc.poll() is not None:
                raise SystemExit(f"segkit serve exited:\n{text}")
            time.sleep(0.1)
        self.proc.kill()
        raise SystemExit(f"segkit serve did not start:\n{log.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)
        self.file.close()


def batch_counts(url: str) -> tuple[float, float]:
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=30).text

    def value(name):
        return next((float(x.split()[-1]) for x in text.splitlines() if x.startswith(name + " ")), 0.0)

    return value("segkit_serve_batch_size_count"), value("segkit_serve_batch_size_sum")


async def cell(url: str, images: list[tuple[str, bytes]], requests: int, concurrency: int) -> tuple[list, float]:
    """``requests`` POSTs with ``concurrency`` in flight; returns (latencies in s, wall s). A non-200 stops the run."""
    import httpx

    latencies: list[float] = []
    todo = list(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client):
        while todo:
            i = todo.pop(0)
            name, data = images[i % len(images)]
            t0 = time.perf_counter()
            r = await client.post(f"{url}/predict?format=png", files={"image": (name, data)})
            await r.aread()
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                raise SystemExit(f"request {i}: HTTP {r.status_code}: {r.text[:200]}")

    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return latencies, wall


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="what `segkit serve` takes (the README model's final/ folder)")
    data_default = Path(os.environ.get("SEGKIT_DATA") or ROOT.parent / "shared" / "data") / "camvid"
    p.add_argument("--data", default=str(data_default), help="CamVid root (images/test)")
    p.add_argument("--images", type=int, default=8, help="how many CamVid test images to send, in turn")
    p.add_argument("--requests", type=int, default=64, help="requests per cell and round")
    p.add_argument("--rounds", type=int, default=2, help="round-robin rounds over all cells")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--max-batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--max-wait-ms", type=float, default=10.0)
    p.add_argument("--tag", default="", help="appended to the result file names")
    args = p.parse_args(argv)

    data = Path(args.data)
    stems = (data / "splits" / "test.txt").read_text().split()[: args.images]
    images = [(f"{s}.webp", (data / "images" / "test" / f"{s}.webp").read_bytes()) for s in stems]
    tmp = Path(tempfile.mkdtemp(prefix="segkit-serve-bench-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the servers are stopped in `finally`
    servers = {b: Server(args.model, b, args.max_wait_ms, tmp / f"server_b{b}.log") for b in args.max_batch}
    load_start = os.getloadavg()
    cells: dict[tuple[int, int], dict] = {}
    try:
        for b, s in servers.items():  # warm-up: first forward passes, allocator, thread pools
            asyncio.run(cell(s.url, images, 2 * max(args.concurrency), max(args.concurrency)))
        for r in range(args.rounds):
            for c in args.concurrency:
                for b, s in servers.items():
                    before = batch_counts(s.url)
                    load = os.getloadavg()[0]
                    busy0, own0 = busy_cpu_seconds(), sum(os.times()[:2])
                    srv0 = {x.proc.pid: process_cpu_seconds(x.proc.pid) for x in servers.values()}
                    lat, wall = asyncio.run(cell(s.url, images, args.requests, c))
                    busy1, own1 = busy_cpu_seconds(), sum(os.times()[:2])
                    ours = own1 - own0 + sum(process_cpu_seconds(pid) - v for pid, v in srv0.items())
                    foreign = None
                    if busy0 is not None and busy1 is not None:
                        foreign = max(0.0, (busy1 - busy0 - ours) / (wall * (os.cpu_count() or 1)))
                    after = batch_counts(s.url)
                    empty = {"latencies": [], "walls": [], "loads": [], "foreign": [], "batches": []}
                    d = cells.setdefault((b, c), empty)
                    d["latencies"] += lat
                    d["walls"].append(wall)
                    d["loads"].append(load)
                    d["foreign"].append(foreign)
                    d["batches"].append((after[1] - before[1]) / max(after[0] - before[0], 1))
                    print(
                        f"round {r + 1} max-batch {b:>2} concurrency {c:>2}: {args.requests / wall:6.2f} req/s, "
                        f"p50 {1000 * statistics.median(lat):7.1f} ms, mean batch {d['batches'][-1]:.2f}, "
                        f"load {load:.2f}",
                        flush=True,
                    )
    finally:
        for s in servers.values():
            s.stop()
    load_end = os.getloadavg()

    rows = []
    for (b, c), d in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        lat = d["latencies"]
        foreign = [f for f in d["foreign"] if f is not None]
        rows.append(
            {
                "max_batch": b,
                "concurrency": c,
                "requests": len(lat),
                "throughput_rps": len(lat) / sum(d["walls"]),
                "p50_ms": 1000 * percentile(lat, 0.50),
                "p95_ms": 1000 * percentile(lat, 0.95),
                "p99_ms": 1000 * percentile(lat, 0.99),
                "mean_batch": statistics.mean(d["batches"]),
                "load_avg_1min": statistics.mean(d["loads"]),
                "foreign_cpu_share": statistics.mean(foreign) if foreign else None,
            }
        )
    import torch

    result = {
        "command": f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python benchmarks/serve.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "torch": torch.__version__,
        "model": str(args.model),
        "images": [n for n, _ in images],
        "max_wait_ms": args.max_wait_ms,
        "rounds": args.rounds,
        "load_avg_start": load_start,
        "load_avg_end": load_end,
        "rows": rows,
    }
    out = ROOT / "benchmarks" / "results"
    (out / f"serve{args.tag}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"serve{args.tag}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        f"<!-- generated by `{r['command']}` -->",
        "",
        "## `segkit serve`: dynamic batching on and off",
        "",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs; torch {r['torch']}; {r['date']}. "
        f"Model `{Path(r['model']).parent.name}/{Path(r['model']).name}`, CamVid test images "
        f"({len(r['images'])}, 480×360 WebP) sent in turn as `format=png`; `--max-wait-ms {r['max_wait_ms']:g}`; "
        f"{r['rounds']} round-robin rounds. The httpx client runs on the same machine as the server. "
        f"Load average (1 / 5 / 15 min) at the start {' / '.join(f'{v:.2f}' for v in r['load_avg_start'])}, "
        f"at the end {' / '.join(f'{v:.2f}' for v in r['load_avg_end'])}.",
        "",
        "| concurrency | --max-batch | requests | throughput (req/s) | p50 (ms) | p95 (ms) | p99 (ms) | mean batch "
        "| load avg | other processes' CPU |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        foreign = "—" if row["foreign_cpu_share"] is None else f"{100 * row['foreign_cpu_share']:.0f} %"
        lines.append(
            f"| {row['concurrency']} | {row['max_batch']} | {row['requests']} | {row['throughput_rps']:.2f} | "
            f"{row['p50_ms']:.0f} | {row['p95_ms']:.0f} | {row['p99_ms']:.0f} | {row['mean_batch']:.2f} | "
            f"{row['load_avg_1min']:.2f} | {foreign} |"
        )
    by = {(row["max_batch"], row["concurrency"]): row for row in r["rows"]}
    batches = sorted({row["max_batch"] for row in r["rows"]})
    if len(batches) >= 2:
        lo, hi = batches[0], batches[-1]
        lines += ["", f"Throughput of `--max-batch {hi}` relative to `--max-batch {lo}`:"]
        for c in sorted({row["concurrency"] for row in r["rows"]}):
            if (lo, c) in by and (hi, c) in by:
                ratio = by[(hi, c)]["throughput_rps"] / by[(lo, c)]["throughput_rps"]
                p95 = by[(hi, c)]["p95_ms"] / by[(lo, c)]["p95_ms"]
                lines.append(f"- concurrency {c}: ×{ratio:.2f} throughput, ×{p95:.2f} p95 latency")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
