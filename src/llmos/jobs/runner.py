"""Job kinds, the context a job runs with, and both sides of a job: submitting (the server's
:class:`Jobs`) and running (a worker's :class:`Runner`).

A kind names a function by dotted path, ``"package.module:function"``, with the signature
``run(ctx: JobContext, params: dict) -> dict``. The path is written into the job's row when
it is submitted, and a worker imports it from there: a worker needs no registry of its own,
and importing the function (torch, a model) costs the worker, never the server.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import socket
import threading
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

from llmos.errors import LlmosError
from llmos.jobs.queue import make_huey, message_id
from llmos.store.db import Store
from llmos.store.jobs import LOG_LINES, JobError, JobRecord, JobStore, Status

log = logging.getLogger("llmos.jobs")

# Built-in kinds: name -> "module:function". An app adds its kind here (or calls
# register_kind before submitting); the function runs in a worker process.
KINDS: dict[str, str] = {}
KIND_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,99}$")
TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def register_kind(name: str, target: str) -> None:
    """Make ``name`` a job kind run by ``target``, ``"package.module:function"`` with the
    signature ``run(ctx: JobContext, params: dict) -> dict``. The function is imported by
    the worker that runs the job (not here), so its module must be importable there."""
    if not KIND_NAME.match(name):
        raise JobError(f"a job kind is 1-100 characters of a-z, 0-9, '.', '_', '-': {name!r}")
    if not TARGET.match(target):
        raise JobError(f"a job kind's target is 'package.module:function', got {target!r}")
    KINDS[name] = target


def resolve(target: str) -> Callable[[JobContext, dict[str, Any]], Any]:
    """The function a ``"module:function"`` path names (in a worker)."""
    module, _, name = target.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise JobError(f"cannot load the job function {target!r}: {e}") from None
    if not callable(fn):
        raise JobError(f"the job function {target!r} is not callable")
    return fn


class JobCancelled(Exception):
    """Raised by a job (or :meth:`JobContext.check_cancelled`) that stops because it was
    cancelled; the job ends ``cancelled``."""


class JobContext:
    """What a running job sees: its ids, ``attempt`` (1 on the first run; more after its
    worker died, when the job should pick up its own saved work), and the calls that report
    back. Reports are kept in memory and written to the store by the worker's heartbeat (every
    ``--heartbeat`` seconds), so a job may call :meth:`progress` on every step."""

    def __init__(self, record: JobRecord) -> None:
        self.job_id = record.id
        self.user_id = record.user_id
        self.kind = record.kind
        self.attempt = record.attempts
        self._lock = threading.Lock()
        self._progress = record.progress
        self._message = record.message
        self._log: deque[str] = deque(record.log, maxlen=LOG_LINES)
        self._cancel = threading.Event()
        self.cancel_seen = False  # whether the job was told it was cancelled

    def progress(self, fraction: float, message: str | None = None) -> None:
        """How far the job is, 0..1 (clipped), and optionally what it is doing."""
        with self._lock:
            self._progress = min(max(float(fraction), 0.0), 1.0)
            if message is not None:
                self._message = message
        if message is not None:
            log.debug("job %d: %.0f%% %s", self.job_id, 100 * fraction, message)

    def log(self, line: str) -> None:
        """Add a line to the job's log (the last lines are kept and shown)."""
        with self._lock:
            self._log.extend(str(line).splitlines() or [""])

    def cancelled(self) -> bool:
        """Whether the job was cancelled (check it between steps: then return, or raise
        :class:`JobCancelled`)."""
        if self._cancel.is_set():
            self.cancel_seen = True
            return True
        return False

    def check_cancelled(self) -> None:
        """Raise :class:`JobCancelled` when the job was cancelled."""
        if self.cancelled():
            raise JobCancelled

    def snapshot(self) -> tuple[float, str | None, list[str]]:
        with self._lock:
            return self._progress, self._message, list(self._log)


class Jobs:
    """The server's side: submit, read and cancel jobs (``request.app.state.jobs``).

    Every method does database I/O: call it from a route with ``run_in_threadpool``. Each
    returns the job as JSON (:meth:`~llmos.store.jobs.JobRecord.as_json`), or None when the
    caller has no such job.
    """

    def __init__(self, store: Store) -> None:
        self.jobs = JobStore(store)
        self.huey, self.task = make_huey(store.url, _not_here)

    def submit(
        self,
        user_id: int,
        kind: str,
        params: dict[str, Any] | None = None,
        max_attempts: int = 3,
    ) -> dict[str, Any]:
        """Queue a job of a registered ``kind`` for ``user_id``; a worker runs it."""
        target = KINDS.get(kind)
        if target is None:
            known = ", ".join(sorted(KINDS)) or "none"
            raise JobError(f"no job kind {kind!r} (registered kinds: {known})")
        record = self.jobs.create(user_id, kind, target, params or {}, max_attempts)
        enqueue(self.huey, self.task, record.id)
        return record.as_json()

    def get(self, user_id: int, job_id: int, admin: bool = False) -> dict[str, Any] | None:
        record = self.jobs.get(user_id, job_id, admin)
        return record.as_json() if record is not None else None

    def list(
        self, user_id: int, status: Status | None = None, limit: int = 50, admin: bool = False
    ) -> list[dict[str, Any]]:
        return [r.as_json() for r in self.jobs.list(user_id, status, limit, admin)]

    def pending(self, kind: str, param: str, value: Any) -> dict[str, Any] | None:
        """The running or queued job of ``kind`` (anyone's) whose ``params[param]`` is
        ``value``, or None: what a caller that queues one job per target looks for first."""
        for status in ("running", "queued"):
            for job in self.list(0, status, 500, admin=True):  # type: ignore[arg-type]
                if job["kind"] == kind and job["params"].get(param) == value:
                    return job
        return None

    def cancel(self, user_id: int, job_id: int, admin: bool = False) -> dict[str, Any] | None:
        """Cancel a job: a queued one at once (its message is revoked), a running one at its
        next check of ``ctx.cancelled()``."""
        record = self.jobs.cancel(user_id, job_id, admin)
        if record is None:
            return None
        if record.status == "cancelled":
            self.huey.revoke_by_id(message_id(job_id), revoke_once=True)
        return record.as_json()

    def close(self) -> None:
        self.huey.storage.close()


def submit_once(
    user: str,
    kind: str,
    param: str,
    value: Any,
    submit: Callable[[Jobs, int], dict[str, Any]],
    url: str | None = None,
) -> tuple[dict[str, Any], bool]:
    """Queue a job for the store user named ``user`` with ``submit(jobs, user_id)``, unless a
    job of ``kind`` with ``params[param] == value`` is running or queued already (anyone's).
    Returns the job (the new or the pending one) and whether it is new.

    Raises:
        LlmosError: no store user ``user`` to own the job.
    """
    store = Store(url)
    try:
        owner = store.user(user)
        if owner is None:
            raise LlmosError(f"no store user {user!r} to own the job (llmos users create)")
        jobs = Jobs(store)
        try:
            found = jobs.pending(kind, param, value)
            if found is not None:
                return found, False
            return submit(jobs, owner.id), True
        finally:
            jobs.close()
    finally:
        store.close()


def _not_here(job_id: int) -> None:  # pragma: no cover - the server only enqueues
    raise AssertionError("jobs run in workers (llmos worker), not in the server")


def enqueue(huey: Any, task: Any, job_id: int) -> None:
    huey.enqueue(task.s(job_id, id=message_id(job_id)))


class Runner:
    """A worker's side: claim a job, run its function with a :class:`JobContext`, renew its
    heartbeat (writing progress and log) until it ends, and record how it ended. Also puts back
    in the queue the jobs of workers that died (:meth:`sweep`)."""

    def __init__(self, store: Store, heartbeat_s: float, stale_after_s: float) -> None:
        self.jobs = JobStore(store)
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.huey, self.task = make_huey(store.url, self.execute)
        self.running: dict[int, JobContext] = {}

    def sweep(self, startup: bool = False) -> None:
        """Requeue (or fail) the jobs whose worker stopped renewing their heartbeat. At
        startup, also enqueue again every queued job that has no message in the queue (its
        message was lost with a worker killed between taking it and claiming the job, or with
        a server that died before enqueueing): a duplicate message is harmless, as only one
        claim of a queued job succeeds."""
        for job_id in self.jobs.recover(self.stale_after_s):
            log.warning("job %d: its worker stopped answering; queued again", job_id)
            enqueue(self.huey, self.task, job_id)
        if startup:
            pending = {t.id for t in self.huey.pending()}
            for job_id in self.jobs.queued():
                if message_id(job_id) not in pending:
                    enqueue(self.huey, self.task, job_id)

    def interrupted(self, job_id: int) -> None:
        """This worker is stopping with the job running: put it back in the queue."""
        ctx = self.running.get(job_id)
        if ctx is None:
            return
        # Queued again first, then told to stop: the other order let a job that checks often
        # see the stop, end as cancelled and be finished as such before the requeue (seen on
        # PostgreSQL under load). Its own finish then finds it queued and writes nothing.
        requeued = self.jobs.requeue(
            job_id, ctx.attempt, f"worker {self.name} stopped; queued again"
        )
        ctx._cancel.set()  # the job stops at its next check, if the process lives that long
        if requeued:
            enqueue(self.huey, self.task, job_id)
            log.info("job %d: queued again (worker stopping)", job_id)

    def execute(self, job_id: int) -> None:
        """Run one job (the huey task); nothing when it is not queued any more."""
        record = self.jobs.claim(job_id, self.name)
        if record is None:
            return
        ctx = JobContext(record)
        self.running[job_id] = ctx
        stop = threading.Event()
        beat = threading.Thread(target=self._beat, args=(ctx, stop), daemon=True)
        beat.start()
        log.info("job %d (%s) attempt %d started", job_id, record.kind, ctx.attempt)
        status: Status = "done"
        result, error = None, None
        try:
            out = resolve(record.target)(ctx, dict(record.params))
            result = {} if out is None else out
            if not isinstance(result, dict):
                raise JobError(f"a job returns a dict, got {type(result).__name__}")
            json.dumps(result)
            if ctx.cancel_seen:
                status = "cancelled"
        except JobCancelled:
            status = "cancelled"
        except Exception as e:
            status, error = "failed", f"{type(e).__name__}: {e}"
            result = None
            for line in traceback.format_exc().splitlines()[-20:]:
                ctx.log(line)
            log.warning("job %d failed: %s", job_id, error)
        finally:
            stop.set()
            beat.join()
            self.running.pop(job_id, None)
        progress, message, lines = ctx.snapshot()
        if status == "cancelled":
            message = "cancelled"
        if not self.jobs.finish(
            job_id,
            ctx.attempt,
            status,
            result=result,
            error=error,
            progress=progress,
            message=message,
            log=lines,
        ):
            log.warning("job %d: finished here, but another worker had taken it over", job_id)
            return
        log.info("job %d (%s) %s", job_id, record.kind, status)

    def _beat(self, ctx: JobContext, stop: threading.Event) -> None:
        """Every heartbeat: write the job's progress, message and log, and learn whether it
        was cancelled (or taken over: then it is told to stop too)."""
        while not stop.wait(self.heartbeat_s):
            progress, message, lines = ctx.snapshot()
            try:
                cancel = self.jobs.beat(ctx.job_id, ctx.attempt, progress, message, lines)
            except Exception as e:  # a database hiccup: try again next beat
                log.warning("job %d: heartbeat failed (%s)", ctx.job_id, e)
                continue
            if cancel is None or cancel:
                ctx._cancel.set()
