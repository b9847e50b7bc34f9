"""The served recommender's sequential model (SASRec), trained as a background job.

EASE fits in seconds; the sequential model beside it (:func:`~llmos.apps.recommend.generators.
fit_sequential`, llmos's GPT over item sequences) takes minutes: 6-9 on 2 CPU cores for
MovieLens-100K's 1,200 steps, past what ``llmos setup`` may spend on the demo. So it is trained
by a durable job of kind ``recommend.sequential`` (:mod:`llmos.jobs`), in a worker process
(``llmos serve --workers 1``, what ``make run`` starts, or ``llmos worker``), queued by:

- ``llmos setup --demo-user NAME`` (:func:`~llmos.apps.recommend.demo.queue_demo_sequential`):
  for the demo recommender, when it has no sequential model and no such job is queued or
  running; the job is the demo user's (the admin that setup creates);
- an admin, ``POST /v1/apps/recommend/train`` with ``sasrec_steps``: for the served
  recommender; the job is the caller's.

The job is :func:`~llmos.apps.recommend.train.retrain_recommender` with ``sasrec_steps``: the
checkpoint fitted again from the interactions it keeps plus every store user's events on its
catalog now (as the admin's retraining does), its text vectors reused, and a SASRec trained on
the kept interactions. Its SASRec run lives beside the checkpoint, in the hidden directory
``.<name>.sasrec-job-<job id>`` (the model scan skips it), with a resume checkpoint at each of
its ten validations: a worker killed mid-job leaves the job to another attempt
(:mod:`llmos.jobs.worker`), which resumes there. The new checkpoint replaces the old one
atomically (:func:`~llmos.files.atomic_directory`), and only if the old one is still the
revision the job was queued for: a catalog imported or a model retrained meanwhile is not
overwritten (the job fails and says so). A cancelled or failed job writes nothing, so the old
model stays served. A running server reads the new checkpoint within a second
(:class:`~llmos.apps.recommend.service.RecommendService` watches its revision).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from llmos.apps.recommend.train import retrain_recommender, store_acts
from llmos.checkpoint.recommender import (
    WEIGHTS_FILE,
    read_recommender,
    read_revision,
    read_task,
)
from llmos.errors import DataError, LlmosError
from llmos.files import atomic_directory
from llmos.jobs import JobContext, Jobs, register_kind
from llmos.store.db import Store, database_url

log = logging.getLogger("llmos.apps.recommend")
JOB_KIND = "recommend.sequential"
DEFAULT_STEPS = 1200  # MovieLens-100K: bench/recommend_live.py's SASRec; 6-9 min on 2 cores
MAX_STEPS = 20_000
RUN_PREFIX = ".sasrec-job-"


class AlreadyQueued(LlmosError):
    """A sequential training of that checkpoint is queued or running already."""


def check_steps(steps: int, name: str = "sasrec_steps") -> int:
    """``steps`` if it is a valid SASRec step count (1 to :data:`MAX_STEPS`); the error
    calls it ``name`` (the field or the flag that gave it)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise LlmosError(f"{name} must be an integer from 1 to {MAX_STEPS}, got {steps!r}")
    return steps


def has_sequential(path: str | Path) -> bool:
    """Whether the recommender checkpoint at ``path`` has a sequential model (its
    ``task.json`` says so; the weights are not read)."""
    return bool(read_task(path).get("sasrec"))


def keeps_interactions(path: str | Path) -> bool:
    """Whether the checkpoint keeps the interactions file it was trained on (``train.*``),
    which the sequential model learns from (the weights file's header only is read)."""
    f = Path(path) / WEIGHTS_FILE
    try:
        with safe_open(str(f), "pt") as weights:
            return "train.item" in weights.keys()  # noqa: SIM118 - safe_open has no __contains__
    except (SafetensorError, OSError) as e:
        raise LlmosError(f"{f}: cannot read the recommender's weights ({e})") from None


def queue_sequential(
    jobs: Jobs,
    user_id: int,
    path: str | Path,
    steps: int = DEFAULT_STEPS,
    reg: float | None = None,
    half_life_days: float | None = None,
) -> dict[str, Any]:
    """Queue the training of the sequential model of the recommender checkpoint at ``path``
    for ``user_id`` (its owner in the jobs table); returns the job as JSON. ``reg`` and
    ``half_life_days``: EASE's and popularity's, as in the admin's retraining (default: the
    checkpoint's).

    Raises:
        LlmosError: bad ``steps``, or no recommender checkpoint at ``path``.
        DataError: the checkpoint keeps no interactions to learn the sequences from.
        AlreadyQueued: such a job of that checkpoint is queued or running (its id is said).
    """
    check_steps(steps)
    path = Path(path).resolve()
    revision = read_revision(path)
    if not keeps_interactions(path):
        raise DataError(
            f"{path}: the recommender keeps no interactions file to learn sequences from "
            "(train it with llmos recommend train --inter FILE)"
        )
    found = jobs.pending(JOB_KIND, "checkpoint", str(path))
    if found is not None:
        raise AlreadyQueued(
            f"job {found['id']} is training the sequential model of {path} already "
            f"({found['status']}; GET /v1/jobs/{found['id']})"
        )
    params = {
        "checkpoint": str(path),
        "revision": revision,
        "steps": steps,
        "reg": reg,
        "half_life_days": half_life_days,
    }
    return jobs.submit(user_id, JOB_KIND, params)


def run_dir(path: Path, job_id: int) -> Path:
    """Where job ``job_id`` trains the SASRec of the checkpoint at ``path`` (hidden: the
    model scan skips it)."""
    return path.parent / f".{path.name}{RUN_PREFIX}{job_id}"


def _same_revision(path: Path, revision: str | None) -> None:
    now = read_revision(path)
    if now != revision:
        raise LlmosError(
            f"{path} was rewritten since this job was queued (revision {revision} -> {now}: "
            "a catalog import or a retraining): nothing written; queue the job again"
        )


def run_sequential_job(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """The ``recommend.sequential`` job (a worker runs it; see the module docstring)."""
    path = Path(params["checkpoint"])
    steps = check_steps(params["steps"])
    revision = params.get("revision")
    _same_revision(path, revision)
    run = run_dir(path, ctx.job_id)
    for old in path.parent.glob(f".{path.name}{RUN_PREFIX}*"):
        if old != run:  # an earlier cancelled or failed job's run: never resumed now
            shutil.rmtree(old, ignore_errors=True)
    ckpt = read_recommender(path)
    store = Store(database_url())  # the worker's store (LLMOS_DATABASE_URL)
    try:
        events = store_acts(store, ckpt.catalog)
    finally:
        store.close()

    def on_step(step: int, total: int) -> None:
        ctx.progress(step / total, f"SASRec step {step}/{total}")
        ctx.check_cancelled()

    resumed = (run / "sasrec" / "checkpoints").is_dir()
    ctx.log(
        f"training the sequential model of {path} ({steps} steps, attempt {ctx.attempt}"
        f"{', resuming its run' if resumed else ''}; {len(events)} store users' events)"
    )
    staged = retrain_recommender(
        ckpt,
        run / "out",
        store_events=events,
        reg=params.get("reg"),
        half_life_days=params.get("half_life_days"),
        sasrec_steps=steps,
        sasrec_run=run / "sasrec",
        on_step=on_step,
    )
    ctx.check_cancelled()
    ctx.progress(1.0, "writing the checkpoint")

    def fill(tmp: Path) -> None:
        _same_revision(path, revision)  # checked last, just before the swap
        for f in staged.iterdir():
            os.replace(f, tmp / f.name)

    atomic_directory(path, fill)
    shutil.rmtree(run, ignore_errors=True)
    meta = read_task(path)
    valid = (meta.get("sasrec") or {}).get("valid", {})
    ctx.log(f"wrote {path}: SASRec valid " + ", ".join(f"{k} {v:.4f}" for k, v in valid.items()))
    return {
        "checkpoint": str(path),
        "revision": meta.get("revision"),
        "steps": steps,
        "valid": valid,
        "interactions": meta["trained_on"]["interactions"],
        "store_users": meta["trained_on"]["store_users"],
    }


register_kind(JOB_KIND, f"{__name__}:run_sequential_job")
