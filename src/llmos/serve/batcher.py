"""Micro-batching: many small requests to one model become a few large forward passes.

Each loaded model has one :class:`Batcher`: requests join its bounded queue; one worker takes
the oldest request, waits up to ``max_wait`` for others that can share its forward pass (the
same operation and options: the batch *key*), and runs them together, up to ``max_batch`` texts,
in the model's own thread. Every caller gets its own slice of the result.

Backpressure and deadlines: a full queue refuses new requests at once (:class:`QueueFull`, with
an estimate of when to retry) rather than piling up latency; a request still queued at its
deadline is dropped with :class:`DeadlineExceeded`; a request whose caller went away (its future
cancelled) is skipped when the batch is formed and costs nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("llmos.serve")

# The arrival gaps' running mean: each new gap's weight, and the most one gap counts for.
GAP_WEIGHT = 0.3
MAX_GAP = 1.0


class QueueFull(Exception):
    """The model's queue is full; ``retry_after`` seconds is a fair wait before trying again."""

    def __init__(self, model: str, retry_after: int) -> None:
        super().__init__(f"model {model!r} is busy (its queue is full); retry in {retry_after} s")
        self.retry_after = retry_after


class DeadlineExceeded(Exception):
    """A request waited in the queue past its deadline and was dropped unserved."""


class BatcherClosed(Exception):
    """The model was unloaded while the request waited; sending it again loads it anew."""


@dataclass
class Request:
    key: Hashable
    payload: Any
    size: int
    deadline: float
    future: asyncio.Future
    enqueued: float

    def dead(self, now: float) -> bool:
        return self.future.done() or now >= self.deadline


# A run function: (key, payloads of the batch) -> one result per payload, in order. It runs in
# the model's thread; an exception fails every request of the batch.
RunFn = Callable[[Hashable, list[Any]], list[Any]]


class Batcher:
    """The queue and worker of one model (see the module docstring).

    Args:
        name: the model's name (for messages and metrics).
        run: the batch function.
        max_batch: most texts per batch (a single larger request runs alone).
        max_wait: seconds the oldest request waits for company.
        queue_size: most waiting requests.
        observe: optional callback ``(batch_texts, seconds)`` after each batch (metrics).
        clock: the seconds that deadlines and waits are measured in (``time.monotonic``, as
            the deadlines given to :meth:`submit`); tests pass a fake one.
    """

    def __init__(
        self,
        name: str,
        run: RunFn,
        *,
        max_batch: int,
        max_wait: float,
        queue_size: int,
        observe: Callable[[int, float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.run = run
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.queue_size = queue_size
        self.observe = observe
        self.clock = clock
        self.queue: collections.deque[Request] = collections.deque()
        self.closed = False
        self.batch_seconds = 0.05  # running mean of one batch's duration, for Retry-After
        # Running mean of the seconds between arrivals (each gap counted up to MAX_GAP): the
        # worker waits for company only while it is below max_wait. It starts at MAX_GAP, so a
        # first lone request is not held unless max_wait is longer than that.
        self.gap = MAX_GAP
        self._last_arrival = clock() - MAX_GAP
        # One thread per model: a model never runs two batches at once, and the event loop
        # stays free while it computes.
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"llmos-{name}")
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._work(), name=f"batcher {name}")

    @property
    def depth(self) -> int:
        return len(self.queue)

    def retry_after(self) -> int:
        batches = math.ceil((len(self.queue) + 1) / self.max_batch)
        return max(1, math.ceil(batches * self.batch_seconds))

    def submit(self, key: Hashable, payload: Any, size: int, deadline: float) -> asyncio.Future:
        """Queue a request of ``size`` texts; the returned future resolves to its result.
        Cancel the future to withdraw the request (a disconnected client)."""
        if self.closed:
            raise BatcherClosed(f"model {self.name!r} was unloaded")
        if len(self.queue) >= self.queue_size:
            raise QueueFull(self.name, self.retry_after())
        future = asyncio.get_running_loop().create_future()
        request = Request(key, payload, max(1, size), deadline, future, self.clock())
        gap = min(request.enqueued - self._last_arrival, MAX_GAP)
        self.gap += GAP_WEIGHT * (gap - self.gap)
        self._last_arrival = request.enqueued
        self.queue.append(request)
        self._wake.set()
        return future

    async def close(self) -> None:
        """Refuse new requests, serve the queued ones, then stop the worker and its thread."""
        self.closed = True
        self._wake.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.executor.shutdown(wait=True)

    def _drop_dead(self) -> None:
        now = self.clock()
        alive = collections.deque()
        for r in self.queue:
            if not r.future.done() and now >= r.deadline:
                r.future.set_exception(
                    DeadlineExceeded(
                        f"the request waited {now - r.enqueued:.1f} s in the queue of model "
                        f"{self.name!r} and passed its deadline"
                    )
                )
            if not r.dead(now):
                alive.append(r)
        self.queue = alive

    def _companions(self, key: Hashable) -> int:
        return sum(r.size for r in self.queue if r.key == key)

    def _take(self) -> list[Request]:
        """The oldest request and the queued ones sharing its key, up to ``max_batch`` texts."""
        head = self.queue[0]
        batch, rest, total = [], collections.deque(), 0
        for r in self.queue:
            if r.key == head.key and (not batch or total + r.size <= self.max_batch):
                batch.append(r)
                total += r.size
            else:
                rest.append(r)
        self.queue = rest
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._drop_dead()
            if not self.queue:
                if self.closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            head = self.queue[0]
            # Wait for company until the batch is full or the oldest request has waited enough
            # (or reached its deadline, which may come sooner), if company is likely to come.
            while (
                not self.closed
                and self.gap < self.max_wait
                and self._companions(head.key) < self.max_batch
            ):
                wake_at = min(head.enqueued + self.max_wait, head.deadline)
                remaining = wake_at - self.clock()
                if remaining <= 0 or head.future.done():
                    break
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), remaining)
            self._drop_dead()
            if head.future.done():  # withdrawn or timed out while it waited: the next one leads
                continue
            batch = self._take()
            start = time.monotonic()  # compute time, for Retry-After and metrics: real seconds
            try:
                results = await loop.run_in_executor(
                    self.executor, self.run, batch[0].key, [r.payload for r in batch]
                )
            except Exception as e:
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(e)
            else:
                for r, result in zip(batch, results, strict=True):
                    if not r.future.done():
                        r.future.set_result(result)
            seconds = time.monotonic() - start
            self.batch_seconds = 0.8 * self.batch_seconds + 0.2 * seconds
            if self.observe is not None:
                self.observe(sum(r.size for r in batch), seconds)
