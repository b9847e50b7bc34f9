"""Background jobs' records in the store: the ``jobs`` table (``llmos.jobs`` runs them).

A row is the truth about a job: its status moves ``queued -> running -> done | failed |
cancelled`` (``running -> queued`` again when its worker died or stopped, ``queued ->
cancelled`` when cancelled before a worker took it). The queue only says which job to run
next; whoever takes a message first *claims* the row (a conditional update), so a message
delivered twice, or one for a cancelled job, runs nothing.

Two sides use this class. What users ask (:meth:`JobStore.create`, :meth:`JobStore.get`,
:meth:`JobStore.list`, :meth:`JobStore.cancel`) takes the caller's user id and reads or writes
that user's rows only (an admin may pass ``admin=True`` to see everyone's). What workers do
(:meth:`JobStore.claim`, :meth:`JobStore.beat`, :meth:`JobStore.finish`, ...) acts on a job
by id for whoever owns it, and every write is conditional on the attempt the worker claimed:
a worker that was given up for dead (and whose job another worker took over) can write
nothing more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import select, update

from llmos.errors import LlmosError
from llmos.store.db import Store, check_text, valid_id
from llmos.store.models import Job, now

Status = Literal["queued", "running", "done", "failed", "cancelled"]
FINISHED = ("done", "failed", "cancelled")
LOG_LINES = 50  # lines of a job's log kept (the tail)
LINE_CHARS = 500  # characters of one log line or message kept
MAX_PARAMS_CHARS = 65_536  # a job's params as JSON; data belongs in the store, not in params


class JobError(LlmosError):
    """A job request the store refuses (unknown kind, params that are not small JSON)."""


@dataclass(frozen=True)
class JobRecord:
    """One job as read from the store (plain values, no ORM object)."""

    id: int
    user_id: int
    kind: str
    target: str  # the function a worker runs (not shown to users)
    params: dict[str, Any]
    status: Status
    progress: float
    message: str | None
    log: list[str]
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    max_attempts: int
    cancel_requested: bool
    worker: str | None
    heartbeat_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def as_json(self) -> dict[str, Any]:
        """The job as the HTTP routes answer it (times in ISO 8601, UTC)."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "target"}
        for key in ("heartbeat_at", "created_at", "started_at", "finished_at"):
            out[key] = out[key].isoformat() if out[key] is not None else None
        return out


def _record(row: Job) -> JobRecord:
    return JobRecord(
        id=row.id,
        user_id=row.user_id,
        kind=row.kind,
        target=row.target,
        params=dict(row.params or {}),
        status=row.status,  # type: ignore[arg-type]
        progress=row.progress,
        message=row.message,
        log=list(row.log or []),
        result=row.result,
        error=row.error,
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        cancel_requested=row.cancel_requested,
        worker=row.worker,
        heartbeat_at=row.heartbeat_at,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def clip(text: str | None) -> str | None:
    """A message or log line as stored: one line of at most LINE_CHARS, no NUL."""
    if text is None:
        return None
    text = text.replace("\0", "").rstrip("\n")
    return text if len(text) <= LINE_CHARS else text[: LINE_CHARS - 1] + "…"


class JobStore:
    """The ``jobs`` table of a :class:`~llmos.store.db.Store`."""

    def __init__(self, store: Store) -> None:
        self.session = store.session

    # --- what users ask (per user) ---------------------------------------------------------

    def create(
        self, user_id: int, kind: str, target: str, params: dict[str, Any], max_attempts: int = 3
    ) -> JobRecord:
        """A new queued job of ``user_id``; ``target`` is the ``module:function`` that runs it."""
        check_text(Job.kind.expression, kind)  # type: ignore[arg-type]
        check_text(Job.target.expression, target)  # type: ignore[arg-type]
        if not isinstance(params, dict):
            raise JobError(f"a job's params must be a JSON object, got {type(params).__name__}")
        try:
            size = len(json.dumps(params))
        except (TypeError, ValueError) as e:
            raise JobError(f"a job's params must be JSON: {e}") from None
        if size > MAX_PARAMS_CHARS:
            raise JobError(
                f"a job's params are {size:,} characters of JSON; at most {MAX_PARAMS_CHARS:,} "
                "(keep data in the store and pass its id)"
            )
        if max_attempts < 1:
            raise JobError(f"max_attempts must be at least 1, got {max_attempts}")
        with self.session.begin() as s:
            row = Job(
                user_id=user_id,
                kind=kind,
                target=target,
                params=params,
                status="queued",
                progress=0.0,
                log=[],
                attempts=0,
                max_attempts=max_attempts,
                cancel_requested=False,
            )
            s.add(row)
            s.flush()
            return _record(row)

    def get(self, user_id: int, job_id: int, admin: bool = False) -> JobRecord | None:
        """The job, if it is ``user_id``'s (any user's with ``admin``); None otherwise."""
        if not valid_id(job_id):
            return None
        q = select(Job).where(Job.id == job_id)
        if not admin:
            q = q.where(Job.user_id == user_id)
        with self.session() as s:
            row = s.scalar(q)
            return _record(row) if row is not None else None

    def list(
        self,
        user_id: int,
        status: Status | None = None,
        limit: int = 50,
        admin: bool = False,
    ) -> list[JobRecord]:
        """The user's newest jobs first (every user's with ``admin``)."""
        q = select(Job)
        if not admin:
            q = q.where(Job.user_id == user_id)
        if status is not None:
            q = q.where(Job.status == status)
        with self.session() as s:
            return [_record(r) for r in s.scalars(q.order_by(Job.id.desc()).limit(limit))]

    def cancel(self, user_id: int, job_id: int, admin: bool = False) -> JobRecord | None:
        """Cancel a job: a queued one is cancelled now; a running one is asked to stop (its
        worker sees the request within a heartbeat and the job stops at its next check); a
        finished one stays as it is. None when the user has no such job."""
        if self.get(user_id, job_id, admin) is None:
            return None
        with self.session.begin() as s:
            s.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "queued")
                .values(
                    status="cancelled",
                    cancel_requested=True,
                    finished_at=now(),
                    message="cancelled before it started",
                )
            )
            s.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "running")
                .values(cancel_requested=True)
            )
        return self.get(user_id, job_id, admin)

    # --- what workers do (by job id, conditional on the attempt claimed) ------------------

    def claim(self, job_id: int, worker: str) -> JobRecord | None:
        """Take a queued job to run it (attempts + 1); None when it is not queued any more
        (cancelled, or claimed by another worker)."""
        t = now()
        with self.session.begin() as s:
            row = s.get(Job, job_id)
            if row is None or row.status != "queued":
                return None
            claimed = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "queued", Job.attempts == row.attempts)
                .values(
                    status="running",
                    attempts=row.attempts + 1,
                    worker=clip(worker),
                    heartbeat_at=t,
                    started_at=row.started_at or t,
                )
            ).rowcount
        return self.by_id(job_id) if claimed == 1 else None

    def by_id(self, job_id: int) -> JobRecord | None:
        """A job by id, whoever's it is (workers only: no route calls this)."""
        with self.session() as s:
            row = s.get(Job, job_id)
            return _record(row) if row is not None else None

    def _mine(self, job_id: int, attempt: int) -> Any:
        return update(Job).where(Job.id == job_id, Job.status == "running", Job.attempts == attempt)

    def beat(
        self,
        job_id: int,
        attempt: int,
        progress: float | None = None,
        message: str | None = None,
        log: list[str] | None = None,
    ) -> bool | None:
        """Renew a running job's heartbeat (and write its progress, message and log tail
        when given). Returns whether a cancel was requested, or None when the job is no
        longer this attempt's (given up for dead, or finished)."""
        values: dict[str, Any] = {"heartbeat_at": now()}
        if progress is not None:
            values["progress"] = min(max(float(progress), 0.0), 1.0)
        if message is not None:
            values["message"] = clip(message)
        if log is not None:
            values["log"] = [clip(x) for x in log[-LOG_LINES:]]
        with self.session.begin() as s:
            if s.execute(self._mine(job_id, attempt).values(**values)).rowcount != 1:
                return None
            return bool(s.scalar(select(Job.cancel_requested).where(Job.id == job_id)))

    def finish(
        self,
        job_id: int,
        attempt: int,
        status: Literal["done", "failed", "cancelled"],
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        progress: float | None = None,
        message: str | None = None,
        log: list[str] | None = None,
    ) -> bool:
        """End this attempt of a running job; False when it is no longer this attempt's."""
        values: dict[str, Any] = {"status": status, "finished_at": now(), "heartbeat_at": now()}
        if status == "done":
            values["progress"] = 1.0
        elif progress is not None:
            values["progress"] = min(max(float(progress), 0.0), 1.0)
        if message is not None:
            values["message"] = clip(message)
        if log is not None:
            values["log"] = [clip(x) for x in log[-LOG_LINES:]]
        values["result"], values["error"] = result, error
        with self.session.begin() as s:
            return s.execute(self._mine(job_id, attempt).values(**values)).rowcount == 1

    def requeue(self, job_id: int, attempt: int, message: str) -> bool:
        """Put a running job back in the queue because its worker is stopping (not a crash:
        ``max_attempts`` grows by one, so a restart does not use up the job's tries). The
        caller enqueues it again."""
        with self.session.begin() as s:
            q = self._mine(job_id, attempt).values(
                status="queued",
                worker=None,
                message=clip(message),
                max_attempts=Job.max_attempts + 1,
            )
            return s.execute(q).rowcount == 1

    def recover(self, stale_after: float) -> list[int]:
        """Jobs whose worker stopped renewing their heartbeat ``stale_after`` seconds ago
        (killed, or its machine lost): each goes back to the queue, or is failed once it has
        used up ``max_attempts``, or cancelled when that was asked. Returns the ids to enqueue
        again. Safe to run from several workers at once: each row changes once."""
        cutoff = now() - timedelta(seconds=stale_after)
        q = select(Job.id, Job.attempts, Job.max_attempts, Job.cancel_requested, Job.worker).where(
            Job.status == "running", Job.heartbeat_at < cutoff
        )
        out = []
        with self.session() as s:
            stale = s.execute(q).all()
        for job_id, attempts, max_attempts, cancel, worker in stale:
            gone = f"worker {worker} stopped answering"
            if cancel:
                values = {"status": "cancelled", "finished_at": now(), "message": clip(gone)}
            elif attempts >= max_attempts:
                values = {
                    "status": "failed",
                    "finished_at": now(),
                    "error": f"{gone} on attempt {attempts} of {max_attempts}; not retried",
                }
            else:
                values = {"status": "queued", "worker": None, "message": clip(f"{gone}; requeued")}
            with self.session.begin() as s:
                changed = s.execute(self._mine(job_id, attempts).values(**values)).rowcount
            if changed == 1 and values["status"] == "queued":
                out.append(job_id)
        return out

    def queued(self) -> list[int]:
        """Every queued job's id, oldest first."""
        with self.session() as s:
            return list(s.scalars(select(Job.id).where(Job.status == "queued").order_by(Job.id)))
