"""The micro-batcher on its own: batches form by key up to max_batch, every caller gets its own
result, a full queue refuses at once, deadlines drop waiting requests, withdrawn requests take
no slot, and one bad request fails alone.

No test waits for wall time to order events: a test that needs the worker busy holds it on a
gate and waits until it has taken its batch, and deadlines and waits for company run on a fake
clock that the test moves."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from llmos.serve.batcher import Batcher, BatcherClosed, DeadlineExceeded, QueueFull
from llmos.serve.operations import isolating

FAR = 1e9


class Recorder:
    """A batch function that doubles numbers and records every batch it saw."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[tuple[object, list[int]]] = []
        self.gate = gate

    def __call__(self, key: object, payloads: list[int]) -> list[int]:
        if self.gate is not None:
            self.gate.wait(10)
        self.batches.append((key, list(payloads)))
        return [2 * p for p in payloads]


def run(coro):
    return asyncio.run(coro)


class FakeClock:
    """A clock that stands still until the test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def taken(b: Batcher) -> None:
    """Return once the worker has taken every queued request (its batch is running)."""
    for _ in range(10_000):
        if not b.depth:
            return
        await asyncio.sleep(0)  # one turn of the event loop, no wall time
    pytest.fail("the worker never took the queued requests")


async def turns(n: int = 20) -> None:
    """Let the event loop run ``n`` turns (the worker may act on what was queued)."""
    for _ in range(n):
        await asyncio.sleep(0)


def test_concurrent_requests_share_batches_and_get_their_own_results() -> None:
    async def main() -> tuple[list[int], Recorder]:
        rec = Recorder()
        b = Batcher("m", rec, max_batch=16, max_wait=0.2, queue_size=100)
        futures = [b.submit("k", i, 1, time.monotonic() + FAR) for i in range(40)]
        results = await asyncio.gather(*futures)
        await b.close()
        return results, rec

    results, rec = run(main())
    assert results == [2 * i for i in range(40)]
    assert [len(p) for _, p in rec.batches] == [16, 16, 8]
    assert [x for _, p in rec.batches for x in p] == list(range(40))  # first come, first served


def test_keys_never_mix_and_a_large_request_runs_alone() -> None:
    async def main() -> Recorder:
        rec = Recorder()
        b = Batcher("m", rec, max_batch=4, max_wait=0.1, queue_size=100)
        fs = [
            b.submit("a", 1, 1, FAR),
            b.submit("b", 2, 1, FAR),
            b.submit("a", 3, 10, FAR),  # 10 texts: over max_batch, so alone
            b.submit("a", 4, 1, FAR),
            b.submit("b", 5, 1, FAR),
        ]
        await asyncio.gather(*fs)
        await b.close()
        return rec

    rec = run(main())
    assert rec.batches == [("a", [1, 4]), ("b", [2, 5]), ("a", [3])]


def test_a_full_queue_refuses_with_a_retry_estimate() -> None:
    async def main() -> None:
        gate = threading.Event()
        b = Batcher("m", Recorder(gate), max_batch=1, max_wait=0, queue_size=3)
        first = b.submit("k", 0, 1, FAR)
        await taken(b)  # the worker took it and blocks on the gate
        waiting = [b.submit("k", i, 1, FAR) for i in range(3)]
        with pytest.raises(QueueFull, match="busy") as e:
            b.submit("k", 9, 1, FAR)
        assert e.value.retry_after >= 1
        gate.set()
        assert await asyncio.gather(first, *waiting) == [0, 0, 2, 4]
        await b.close()

    run(main())


def test_deadlines_drop_waiting_requests_and_withdrawn_ones_take_no_slot() -> None:
    async def main() -> Recorder:
        gate = threading.Event()
        rec = Recorder(gate)
        clock = FakeClock()
        b = Batcher("m", rec, max_batch=8, max_wait=0, queue_size=100, clock=clock)
        busy = b.submit("k", 0, 1, FAR)
        await taken(b)  # the worker is busy: what comes next waits in the queue
        late = b.submit("k", 1, 1, clock() + 0.05)
        gone = b.submit("k", 2, 1, FAR)
        kept = b.submit("k", 3, 1, FAR)
        gone.cancel()  # the client disconnected
        clock.advance(0.1)  # late's deadline passes while it waits
        gate.set()
        assert await busy == 0 and await kept == 6
        with pytest.raises(DeadlineExceeded, match="deadline"):
            await late
        await b.close()
        return rec

    rec = run(main())
    assert [p for _, p in rec.batches] == [[0], [3]]


def test_one_bad_request_fails_alone() -> None:
    def fragile(key: object, payloads: list[int]) -> list[int]:
        if any(p < 0 for p in payloads):
            raise ValueError(f"negative input {min(payloads)}")
        return [p + 1 for p in payloads]

    async def main() -> list[object]:
        b = Batcher("m", isolating(fragile), max_batch=8, max_wait=0.1, queue_size=100)
        fs = [b.submit("k", p, 1, FAR) for p in (1, -5, 3)]
        out = await asyncio.gather(*fs, return_exceptions=True)
        await b.close()
        return out

    ok1, bad, ok3 = run(main())
    assert ok1 == 2 and ok3 == 4
    assert isinstance(bad, ValueError) and "negative input -5" in str(bad)


def test_close_serves_what_is_queued_then_refuses() -> None:
    async def main() -> None:
        b = Batcher("m", Recorder(), max_batch=2, max_wait=0.5, queue_size=100)
        fs = [b.submit("k", i, 1, FAR) for i in range(5)]
        await b.close()
        assert [f.result() for f in fs] == [0, 2, 4, 6, 8]
        with pytest.raises(BatcherClosed):
            b.submit("k", 1, 1, FAR)

    run(main())


def test_a_lone_request_on_an_idle_model_does_not_wait_but_a_busy_stream_does() -> None:
    async def main() -> Recorder:
        rec = Recorder()
        clock = FakeClock()
        b = Batcher("m", rec, max_batch=8, max_wait=0.9, queue_size=100, clock=clock)
        # Nothing arrived lately: no company to wait for, so it runs at once. (The clock stands
        # still: had it waited for company, it would never run; the 60 s only stop a hang.)
        assert await asyncio.wait_for(b.submit("k", 1, 1, FAR), 60) == 2
        # A burst: arrivals close together bring the mean gap below max_wait ...
        await asyncio.gather(*(b.submit("k", i, 1, FAR) for i in range(10, 18)))
        assert b.gap < b.max_wait
        # ... so the next request waits for company (while the clock stands still, it waits
        # however often the worker looks) ...
        late = b.submit("k", 100, 1, FAR)
        await turns()
        assert not late.done()
        # ... company comes within max_wait, and when max_wait has passed, the two run as one
        # batch (the company's arrival wakes the worker after the clock has moved on).
        clock.advance(0.5)
        company = b.submit("k", 101, 1, FAR)
        clock.advance(0.5)
        assert await asyncio.gather(late, company) == [200, 202]
        await b.close()
        return rec

    rec = run(main())
    assert [p for _, p in rec.batches] == [[1], list(range(10, 18)), [100, 101]]
