"""``/v1/jobs``: the caller's background jobs (training an adapter, ...), where each stands,
and cancelling one.

Jobs are submitted by the routes of the apps that own them (``request.app.state.jobs.submit``,
:class:`~llmos.jobs.runner.Jobs`), never here: a kind's params are that app's contract. A user
sees and cancels only their own jobs (another user's job is a 404, as a missing one); an admin
may list everyone's with ``?all=true`` and read or cancel any.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from llmos.jobs.runner import Jobs
from llmos.serve.deps import ApiError, UserDep

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
JobId = Annotated[int, Path(ge=1, le=2**31 - 1)]


class JobOut(BaseModel):
    """A background job. ``progress`` runs 0..1; ``log`` holds its last lines; ``attempt``
    counts the runs begun (more than 1 after a worker died mid-job)."""

    id: int
    user_id: int
    kind: str
    params: dict[str, Any]
    status: Literal["queued", "running", "done", "failed", "cancelled"]
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


class JobList(BaseModel):
    jobs: list[JobOut]


def jobs_of(request: Request) -> Jobs:
    jobs = getattr(request.app.state, "jobs", None)
    if jobs is None:
        raise ApiError(503, "not_ready", "the server is starting or stopping")
    return jobs


def not_found(job_id: int) -> ApiError:
    return ApiError(404, "not_found", f"no job {job_id} of yours (GET /v1/jobs lists them)")


@router.get("", response_model=JobList)
async def list_jobs(
    request: Request,
    user: UserDep,
    status: Literal["queued", "running", "done", "failed", "cancelled"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    all: bool = False,
) -> Any:
    """The caller's newest jobs first (everyone's for an admin with ``all=true``)."""
    if all and not user.is_admin:
        raise ApiError(403, "forbidden", "all=true is for admins (llmos users create --admin)")
    jobs = jobs_of(request)
    return {"jobs": await run_in_threadpool(jobs.list, user.id, status, limit, all)}


@router.get("/{job_id}", response_model=JobOut)
async def get_job(request: Request, user: UserDep, job_id: JobId) -> Any:
    """One job: its status, progress, log tail and, once done, its result."""
    job = await run_in_threadpool(jobs_of(request).get, user.id, job_id, user.is_admin)
    if job is None:
        raise not_found(job_id)
    return job


@router.post("/{job_id}/cancel", response_model=JobOut)
async def cancel_job(request: Request, user: UserDep, job_id: JobId) -> Any:
    """Cancel a job: a queued one at once; a running one stops at its next check (within a
    worker heartbeat and a step of the job), then reads ``cancelled``. A finished job is
    answered as it is."""
    job = await run_in_threadpool(jobs_of(request).cancel, user.id, job_id, user.is_admin)
    if job is None:
        raise not_found(job_id)
    return job
