"""Background jobs: long work started from the server (training a user's adapter), run by
worker processes (``llmos worker``, or ``llmos serve --workers N``) on any machine that shares
the store's database.

A job is a row of the store's ``jobs`` table (:mod:`llmos.store.jobs`: status, progress, log
tail, result) plus a message in huey's queue (:mod:`llmos.jobs.queue`, which says why huey).
Kinds, the job context and both sides of a job are in :mod:`llmos.jobs.runner`; worker
processes in :mod:`llmos.jobs.worker`; the HTTP routes in :mod:`llmos.serve.routes.jobs`.

Adding a kind::

    # llmos/apps/write/adapters.py
    def run_adapter_job(ctx: JobContext, params: dict) -> dict:
        for step in range(n):
            if ctx.cancelled():
                raise JobCancelled
            ...                                   # resume=ctx.attempt > 1
            ctx.progress((step + 1) / n, f"step {step + 1}/{n}")
        return {"adapter": name}

    register_kind("write.adapter", "llmos.apps.write.adapters:run_adapter_job")

Submitting from a route: ``await run_in_threadpool(request.app.state.jobs.submit, user.id,
"write.adapter", {...})`` returns the job as JSON (its ``id`` for ``GET /v1/jobs/{id}``).
"""

from llmos.jobs.runner import (
    KINDS,
    JobCancelled,
    JobContext,
    Jobs,
    register_kind,
    submit_once,
)

__all__ = ["KINDS", "JobCancelled", "JobContext", "Jobs", "register_kind", "submit_once"]
