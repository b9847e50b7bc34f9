"""The recommendation app's admin jobs: import a catalog, retrain the served recommender.

``PUT /v1/apps/recommend/catalog`` and ``POST /v1/apps/recommend/train`` queue a job and are
answered at once (202). :class:`JobRunner` runs the jobs one at a time, in the order they came,
on one worker thread of its own: a training (EASE inverts an items x items matrix: 0.4 s for
MovieLens's 1,682 films in bench/recommend_eval.py, growing with the cube of the item count;
embedding the items' text takes longer) never runs in the event loop or in the thread pool
that serves requests. What a job does is :class:`CatalogJobs`' business:

- **import** (:meth:`CatalogJobs.import_catalog`): a new item list replaces the served
  catalog. The checkpoint is written where the served one is (or, with none served yet, as
  ``models_dir/recommend_model``). When the catalog keeps its name, the interactions the old
  checkpoint keeps are kept, less those of items that are gone
  (:func:`~llmos.apps.recommend.train.retrain_recommender`); under another name it starts from
  the store's events alone (:func:`~llmos.apps.recommend.train.train_recommender`, EASE at its
  default ``reg`` unless given). A catalog nobody has taken yet is accepted: until users'
  events are trained on, it ranks by text, tags and wishes only.
- **retrain** (:meth:`CatalogJobs.retrain`): the served catalog, same items, from the
  interactions its checkpoint keeps plus every store user's events on it now.

Both learn from every store user's events on the catalog, and embed the items' text with the
service's ``embed`` (the served ``recommend_encoder``, as E5 passages) when that encoder is
served; vectors of unchanged items are reused when the encoder is the one that embedded them.
Without it, no text is embedded: the previous vectors stay when every item has one, else the
model has none (no wishes); the job's result says which. A sequential model
is never carried over (it needs a training run: ``llmos recommend train --sasrec-steps``).

Jobs live in memory: every queued or running one, and the last :data:`HISTORY` finished ones.
A restart forgets them all, but never leaves a half-written checkpoint: the checkpoint is
written into a temp directory renamed into place, so a job that fails or is cut short leaves
the old model served.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import queue
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from llmos.apps.recommend.service import NoRecommender, RecommendService
from llmos.apps.recommend.train import (
    REG,
    Embed,
    retrain_recommender,
    store_acts,
    train_recommender,
)
from llmos.checkpoint.recommender import (
    CONFIG_FILE,
    TASK_FILE,
    RecommenderCheckpoint,
    is_recommender,
    read_recommender,
)
from llmos.data.interactions import Item
from llmos.errors import CheckpointError, DataError, LlmosError

log = logging.getLogger("llmos.apps.recommend")

HISTORY = 100  # finished jobs kept for GET /jobs
MAX_WAITING = 10  # queued jobs; more are refused until one has run
MAX_ITEMS = 10_000  # EASE holds items x items float64 matrices: 0.8 GB each at this size
Status = Literal["queued", "running", "done", "failed"]
Kind = Literal["catalog", "train"]


class UnknownJob(LlmosError):
    """No job of that id (never submitted, forgotten, or before a restart)."""


class JobsBusy(LlmosError):
    """Too many jobs wait already."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Job:
    """One job and where it stands. ``request``: what was asked (the catalog's name and item
    count of an import); ``result``: what was trained, once ``done``; ``error``: why not, once
    ``failed``."""

    id: str
    kind: Kind
    request: dict[str, Any]
    status: Status = "queued"
    created_at: datetime = field(default_factory=_now)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    result: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")

    def as_json(self) -> dict[str, Any]:
        """The job as the HTTP routes answer it (times in ISO 8601, UTC)."""
        out = dataclasses.asdict(self)
        for key in ("created_at", "started_at", "finished_at"):
            out[key] = out[key].isoformat() if out[key] is not None else None
        return out


class JobRunner:
    """Runs jobs one at a time on one worker thread (started by the first job), keeping every
    unfinished job and the last ``history`` finished ones.

    Args:
        history: finished jobs kept (the oldest are forgotten first).
        max_waiting: queued jobs at most; :meth:`submit` refuses more (:class:`JobsBusy`).
    """

    def __init__(self, history: int = HISTORY, max_waiting: int = MAX_WAITING) -> None:
        self.history, self.max_waiting = history, max_waiting
        self._jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._work: queue.SimpleQueue[tuple[Job, Callable[[], dict[str, Any]]] | None] = (
            queue.SimpleQueue()
        )
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(
        self, kind: Kind, work: Callable[[], dict[str, Any]], request: dict[str, Any]
    ) -> Job:
        """Queue ``work`` (run on the worker thread; it returns the job's result, or raises:
        an :class:`~llmos.errors.LlmosError`'s message is the job's error). Returns a copy
        of the queued job."""
        with self._changed:
            if self._closed:
                raise LlmosError("the server is stopping: no new jobs")
            waiting = sum(j.status == "queued" for j in self._jobs.values())
            if waiting >= self.max_waiting:
                raise JobsBusy(
                    f"{waiting} jobs wait already; retry when one has run (GET "
                    "/v1/apps/recommend/jobs)"
                )
            job = Job(uuid.uuid4().hex[:12], kind, request)
            self._jobs[job.id] = job
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="llmos-recommend-jobs", daemon=True
                )
                self._thread.start()
            self._work.put((job, work))
            return dataclasses.replace(job)

    def get(self, job_id: str) -> Job:
        """A copy of the job ``job_id`` (:class:`UnknownJob` if none)."""
        with self._changed:
            job = self._jobs.get(job_id)
            if job is None:
                raise UnknownJob(f"no job {job_id!r} (jobs are forgotten at a restart)")
            return dataclasses.replace(job)

    def list(self) -> list[Job]:
        """Copies of every job kept, the newest first."""
        with self._changed:
            return [dataclasses.replace(j) for j in reversed(self._jobs.values())]

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """The job once finished, or as it stands after ``timeout`` seconds."""
        with self._changed:
            self._changed.wait_for(
                lambda: (job := self._jobs.get(job_id)) is None or job.finished, timeout
            )
        return self.get(job_id)

    def close(self, timeout: float | None = None) -> None:
        """Take no more jobs, fail the queued ones, and wait up to ``timeout`` seconds for
        the running one (a job still running then is cut off with the process; its checkpoint
        write is atomic)."""
        with self._changed:
            self._closed = True
            for job in self._jobs.values():
                if job.status == "queued":
                    self._finish(job, error="the server stopped before the job ran")
        self._work.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while (item := self._work.get()) is not None:
            job, work = item
            with self._changed:
                if job.status != "queued":  # failed by close()
                    continue
                job.status, job.started_at = "running", _now()
                self._changed.notify_all()
            log.info("job %s (%s) started", job.id, job.kind)
            try:
                result = work()
            except LlmosError as e:
                log.warning("job %s (%s) failed: %s", job.id, job.kind, e)
                with self._changed:
                    self._finish(job, error=str(e))
            except Exception as e:  # a bug: the job says what, the log has the traceback
                log.exception("job %s (%s) failed", job.id, job.kind)
                with self._changed:
                    self._finish(job, error=f"internal error ({type(e).__name__}: {e})")
            else:
                log.info("job %s (%s) done: %s", job.id, job.kind, result)
                with self._changed:
                    self._finish(job, result=result)

    def _finish(
        self, job: Job, result: dict[str, Any] | None = None, error: str | None = None
    ) -> None:
        """Mark ``job`` done (with ``result``) or failed (with ``error``), forget the oldest
        finished jobs past ``history``, and wake the waiters. The caller holds the lock."""
        job.status = "failed" if error is not None else "done"
        job.result, job.error, job.finished_at = result, error, _now()
        finished = [j.id for j in self._jobs.values() if j.finished]
        for old in finished[: max(len(finished) - self.history, 0)]:
            del self._jobs[old]
        self._changed.notify_all()


def check_items(items: list[Item]) -> None:
    """What a catalog's item list must be beyond each item's fields: 1 to :data:`MAX_ITEMS`
    items, no id twice (the error names the place, ``items[12].id``)."""
    if not 1 <= len(items) <= MAX_ITEMS:
        raise LlmosError(f"items: a catalog has 1 to {MAX_ITEMS} items, got {len(items)}")
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        if item.id in first:
            raise LlmosError(
                f"items[{i}].id: {item.id!r} appears twice (items[{first[item.id]}] has it)"
            )
        first[item.id] = i


class CatalogJobs:
    """The admin jobs of one server's recommendation app (see the module docstring).

    Args:
        service: the app: its store, ``locate`` (the served checkpoint), ``embed`` and the
            encoder's digest; told to read the model again after each write.
        new_path: where a catalog is written when no recommender is served yet.
        published: called with a written checkpoint's directory before its job is done (the
            server rescans its models directory for a new model); it may raise an
            :class:`~llmos.errors.LlmosError` that fails the job.
        encoder: the name ``task.json`` records for the encoder behind ``service.embed``.
        runner: runs the jobs (default: a new :class:`JobRunner`).
    """

    def __init__(
        self,
        service: RecommendService,
        new_path: Path,
        published: Callable[[Path], None] | None = None,
        encoder: str | None = None,
        runner: JobRunner | None = None,
    ) -> None:
        self.service, self.new_path, self.encoder = service, Path(new_path), encoder
        self.published = published
        self.runner = runner or JobRunner()

    # --- what the routes call (quick: they queue) -----------------------------------------

    def import_catalog(
        self,
        catalog: str,
        items: list[Item],
        reg: float | None = None,
        half_life_days: float | None = None,
    ) -> Job:
        """Queue an import of ``items`` as the served catalog ``catalog`` (checked first:
        :func:`check_items`)."""
        check_items(items)
        items = list(items)
        request = {
            "catalog": catalog,
            "items": len(items),
            "reg": reg,
            "half_life_days": half_life_days,
        }
        return self.runner.submit(
            "catalog", lambda: self._import(catalog, items, reg, half_life_days), request
        )

    def retrain(self, reg: float | None = None, half_life_days: float | None = None) -> Job:
        """Queue a retraining of the served catalog (same items)."""
        request = {"reg": reg, "half_life_days": half_life_days}
        return self.runner.submit("train", lambda: self._retrain(reg, half_life_days), request)

    def get(self, job_id: str) -> Job:
        return self.runner.get(job_id)

    def list(self) -> list[Job]:
        return self.runner.list()

    def close(self, timeout: float | None = None) -> None:
        self.runner.close(timeout)

    # --- what the worker thread runs ------------------------------------------------------

    def _import(
        self, catalog: str, items: list[Item], reg: float | None, half_life_days: float | None
    ) -> dict[str, Any]:
        path, current = self._target()
        notes: list[str] = []
        if current is not None and current.catalog != catalog:
            notes.append(
                f"the catalog {current.catalog!r} it replaces was another: none of its "
                "interactions are kept"
            )
        events = store_acts(self.service.store, catalog)
        embed, digest = self._embedder(notes)
        if current is not None and current.catalog == catalog:
            out = retrain_recommender(
                current,
                path,
                items=items,
                store_events=events,
                reg=reg,
                half_life_days=half_life_days,
                embed=embed,
                encoder=self.encoder,
                encoder_digest=digest,
                allow_empty=True,
            )
        else:
            out = train_recommender(
                items,
                path,
                store_events=events,
                catalog=catalog,
                reg=REG if reg is None else reg,
                half_life_days=half_life_days,
                embed=embed,
                encoder=self.encoder,
                encoder_digest=digest,
                allow_empty=True,
            )
        return self._publish(out, notes)

    def _retrain(self, reg: float | None, half_life_days: float | None) -> dict[str, Any]:
        try:
            path = self.service.locate()
        except NoRecommender as e:
            raise LlmosError(
                f"{e}: there is nothing to retrain (import a catalog first: PUT "
                "/v1/apps/recommend/catalog)"
            ) from None
        current = read_recommender(path)
        events = store_acts(self.service.store, current.catalog)
        if current.interactions is None and not events:
            raise DataError(
                f"nothing to learn from: the checkpoint keeps no interactions and no user has "
                f"events on the catalog {current.catalog!r} yet"
            )
        notes: list[str] = []
        embed, digest = self._embedder(notes)
        out = retrain_recommender(
            current,
            path,
            store_events=events,
            reg=reg,
            half_life_days=half_life_days,
            embed=embed,
            encoder=self.encoder,
            encoder_digest=digest,
        )
        return self._publish(out, notes)

    def _target(self) -> tuple[Path, RecommenderCheckpoint | None]:
        """Where the catalog goes, and the checkpoint there now (None: none, or unreadable)."""
        try:
            path = self.service.locate()
        except NoRecommender as e:
            path = self.new_path
            if path.is_dir() and any(path.iterdir()) and not is_recommender(path):
                raise LlmosError(
                    f"{e}, and {path} holds something else: name a free directory with "
                    "--recommend-model"
                ) from None
            return path, None
        try:
            return path, read_recommender(path)
        except CheckpointError as e:
            log.warning("replacing the unreadable recommender %s: %s", path, e)
            return path, None

    def _embedder(self, notes: list[str]) -> tuple[Embed | None, str | None]:
        """The service's ``embed`` and its encoder's digest when that encoder is served;
        else (None, None), with a note."""
        digest = self.service.encoder_digest() if self.service.encoder_digest else None
        if self.service.embed is None or digest is None:
            note = (
                f"the encoder {self.encoder!r} is not served, so no item text was embedded: "
                "the previous vectors are kept only if every item has one (content_vectors "
                "says whether the model has any; without them wishes go unused)"
            )
            log.warning(note)
            notes.append(note)
            return None, None
        return self.service.embed, digest

    def _publish(self, out: Path, notes: list[str]) -> dict[str, Any]:
        """Make the written checkpoint the served one, and say what was trained."""
        if self.published is not None:
            self.published(out)
        self.service.forget()
        # its small files only (the service reads the weights at the next request)
        config = json.loads((out / CONFIG_FILE).read_text(encoding="utf-8"))
        meta = json.loads((out / TASK_FILE).read_text(encoding="utf-8"))
        trained, retrained = meta["trained_on"], meta.get("retrained") or {}
        if retrained.get("sasrec"):
            notes.append(retrained["sasrec"])
        return {
            "catalog": meta["catalog"],
            "items": config["num_items"],
            "users": trained["users"],
            "interactions": trained["interactions"],
            "store_users": trained["store_users"],
            "kept_interactions": retrained.get("kept_interactions", 0),
            "dropped_items": retrained.get("dropped_items", 0),
            "content_vectors": config["content_dim"] is not None,
            "encoder": meta.get("encoder"),
            "notes": notes,
        }
