"""Job kinds for the tests, imported by real worker processes (``tests/`` is on their
PYTHONPATH): ``count`` counts to ``n``, one step every ``sleep`` seconds, saving each step in
``state`` (a file) so that a later attempt resumes where the killed one stopped; ``fail``
raises."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from llmos.jobs import JobCancelled, JobContext


def count(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    n, state = int(params["n"]), Path(params["state"])
    start = int(state.read_text()) if ctx.attempt > 1 and state.exists() else 0
    ctx.log(f"attempt {ctx.attempt} starts at {start}")
    for i in range(start, n):
        if ctx.cancelled():
            raise JobCancelled
        time.sleep(float(params.get("sleep", 0.05)))
        state.write_text(str(i + 1))
        ctx.progress((i + 1) / n, f"step {i + 1}/{n}")
        ctx.log(f"step {i + 1}")
    return {"counted": n, "resumed_from": start, "attempt": ctx.attempt}


def fail(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    ctx.progress(0.5, "about to fail")
    raise ValueError("the test kind fails on purpose")
