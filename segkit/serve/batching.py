"""Dynamic batching: concurrent requests whose network inputs have the same shape run as one batch.

::

    batcher = Batcher(run, max_batch=8, max_wait_s=0.010, max_queue=64)
    await batcher.start()                                   # on the server's event loop (its lifespan)
    label = await batcher.submit(key=(3, 96, 128), item=x, timeout=30.0)
    await batcher.close()                                   # no new work; what is queued is finished

``run(items) -> results`` is called with up to ``max_batch`` items that share one ``key`` (the shape of
the normalised tensor after the test resize), in a worker thread, never on the event loop: the server
keeps answering ``/health`` and ``/metrics`` while a batch runs.

How a batch is formed (the choices, each switchable through the arguments):

* The oldest queued request decides the key; the batch is the queued requests of that key in arrival
  order, up to ``max_batch``. Requests of other keys keep their place (first come, first served across
  keys: a rare shape is never starved by a frequent one).
* The batch waits for more requests at most ``max_wait_s`` counted from the arrival of its oldest request
  (Triton's ``max_queue_delay`` rule), and not at all once it is full. When the workers were busy, the
  requests that piled up meanwhile are already past their wait and run at once: waiting adds latency
  only when the server is idle, which is when it costs least.
* ``max_batch=1`` never waits: one request per forward pass.
* ``max_queue`` bounds the requests waiting for a worker (not those running): beyond it :meth:`submit`
  raises :class:`QueueFull` at once, so a client is told to retry (HTTP 503) instead of waiting without
  bound.
* ``timeout``: a request that has not got its result after ``timeout`` seconds (queue wait + inference)
  raises :class:`QueueTimeout` (HTTP 504); if it was still queued it is removed and never runs.
* ``workers`` threads take batches from the one queue (one model in memory, shared: PyTorch modules in
  inference mode and onnxruntime sessions may be called from several threads).

Pure asyncio + ``concurrent.futures``; no PyTorch import.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence


class QueueFull(Exception):
    """The queue holds ``max_queue`` requests already; ``retry_after`` is a hint in whole seconds (>= 1)."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class QueueTimeout(Exception):
    """A request did not get its result within its timeout (waiting + inference)."""


class Closed(Exception):
    """The batcher is shutting down (or not started) and takes no new request."""


@dataclass
class _Job:
    key: Hashable
    item: Any
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    """Collects requests into batches of the same key and runs them in worker threads (module docstring).

    Args:
        run: ``run(items: list) -> list`` of the same length, one result per item; called in a worker
            thread with 1..``max_batch`` items of one key. An exception it raises is given to every
            request of that batch.
        max_batch: most items per call of ``run`` (>= 1).
        max_wait_s: longest wait for a batch to fill, in seconds from its oldest request's arrival (>= 0).
        max_queue: most requests waiting for a worker (>= 1); more raise :class:`QueueFull`.
        workers: worker threads running batches (>= 1).
        on_batch: optional ``on_batch(size, seconds)`` called on the event loop after every batch (metrics).

    Raises ``ValueError`` for an argument out of range.
    """

    def __init__(
        self,
        run: Callable[[list], Sequence],
        max_batch: int = 8,
        max_wait_s: float = 0.010,
        max_queue: int = 64,
        workers: int = 1,
        on_batch: Callable[[int, float], None] | None = None,
    ):
        if int(max_batch) < 1 or int(max_queue) < 1 or int(workers) < 1 or float(max_wait_s) < 0:
            raise ValueError(
                f"max_batch, max_queue and workers must be >= 1 and max_wait_s >= 0, got "
                f"{max_batch}, {max_queue}, {workers} and {max_wait_s}"
            )
        self.run = run
        self.max_batch, self.max_queue, self.workers = int(max_batch), int(max_queue), int(workers)
        self.max_wait_s = float(max_wait_s)
        self.on_batch = on_batch
        self._pending: deque[_Job] = deque()
        self._running = 0  # requests in batches that are running now
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False
        self._batch_seconds = 0.0  # moving average of a batch's run time (the Retry-After hint)

    # ------------------------------------------------------------------ state
    @property
    def queued(self) -> int:
        """Requests waiting for a worker."""
        return len(self._pending)

    @property
    def in_flight(self) -> int:
        """Requests queued or running."""
        return len(self._pending) + self._running

    @property
    def started(self) -> bool:
        return bool(self._tasks) and not self._closing

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the batches ahead of it times the recent batch time (>= 1)."""
        batches = -(-max(self.queued, 1) // self.max_batch)
        return max(1, int(batches * self._batch_seconds / self.workers + 0.999))

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        """Start the worker loops on the running event loop (call once, from the server's start-up)."""
        if self._tasks:
            return
        self._closing = False
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="segkit-serve")
        self._tasks = [asyncio.create_task(self._worker(), name=f"segkit-batcher-{i}") for i in range(self.workers)]

    async def close(self) -> None:
        """Take no new request (:class:`Closed`), finish every queued and running one, stop the workers."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    # ------------------------------------------------------------------ requests
    async def submit(self, key: Hashable, item: Any, timeout: float | None = None) -> Any:
        """Queue ``item`` under ``key`` and return its result from ``run``.

        Raises :class:`Closed` when not started or shutting down, :class:`QueueFull` when ``max_queue``
        requests are waiting, :class:`QueueTimeout` after ``timeout`` seconds, or what ``run`` raised."""
        if not self.started:
            raise Closed("the server is shutting down" if self._closing else "the batcher is not started")
        if len(self._pending) >= self.max_queue:
            raise QueueFull(
                f"the queue is full ({self.max_queue} requests waiting); retry later", retry_after=self.retry_after()
            )
        job = _Job(key, item, asyncio.get_running_loop().create_future())
        self._pending.append(job)
        self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except asyncio.TimeoutError:
            self._drop(job)
            raise QueueTimeout(f"no result within {timeout:g} s (queue wait + inference)") from None
        except asyncio.CancelledError:  # the client went away
            self._drop(job)
            raise

    def _drop(self, job: _Job) -> None:
        try:
            self._pending.remove(job)  # still waiting: it never runs
        except ValueError:
            pass  # already running: its result is dropped

    # ------------------------------------------------------------------ workers
    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if batch is None:
                return
            self._running += len(batch)
            t0 = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self.run, [j.item for j in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"run returned {len(results)} results for {len(batch)} items")
                for job, result in zip(batch, results):
                    if not job.future.done():
                        job.future.set_result(result)
            except Exception as e:  # given to every request of the batch
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(e)
            finally:
                self._running -= len(batch)
                seconds = time.perf_counter() - t0
                self._batch_seconds = seconds if not self._batch_seconds else 0.8 * self._batch_seconds + 0.2 * seconds
                if self.on_batch is not None:
                    self.on_batch(len(batch), seconds)

    async def _next_batch(self) -> list[_Job] | None:
        """The next batch (oldest request's key, up to ``max_batch``), after its wait; None when closed and empty."""
        while True:
            while not self._pending:
                if self._closing:
                    return None
                self._wake.clear()
                await self._wake.wait()
            first = self._pending[0]
            deadline = first.arrived + self.max_wait_s
            while not self._closing and self._count(first.key) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except asyncio.TimeoutError:
                    break
            if not self._pending or self._pending[0] is not first:  # it timed out meanwhile: start again
                continue
            batch = [j for j in self._pending if j.key == first.key][: self.max_batch]
            for job in batch:
                self._pending.remove(job)
            if self._pending:
                self._wake.set()  # another worker may take the next batch
            return batch

    def _count(self, key: Hashable) -> int:
        return sum(1 for j in self._pending if j.key == key)


__all__ = ["Batcher", "QueueFull", "QueueTimeout", "Closed"]
