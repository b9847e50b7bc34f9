"""The ``recommend.sequential`` job end to end: real ``llmos worker`` processes over a real store
(SQLite and PostgreSQL) train a tiny recommender's SASRec, and a service that was serving the
checkpoint all along serves the new one without a restart. A cancelled job, or one whose
checkpoint was rewritten meanwhile, writes nothing; a killed worker's job resumes its run.
Tests wait on the job's row and on the service's answers, never on a fixed sleep. (The HTTP
route's test, tests/serve/test_recommend_sequential_http.py, is the quick one of the path.)"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from jobs.test_jobs import start_worker, stop, wait_for

from llmos.apps.recommend.events import Act, fold
from llmos.apps.recommend.sequential import (
    JOB_KIND,
    MAX_STEPS,
    RUN_PREFIX,
    AlreadyQueued,
    check_steps,
    queue_sequential,
)
from llmos.apps.recommend.service import RecommendService
from llmos.apps.recommend.train import retrain_recommender, train_recommender
from llmos.checkpoint.recommender import read_recommender, read_revision, read_task
from llmos.data.interactions import Interactions, Item
from llmos.errors import DataError, LlmosError
from llmos.jobs import Jobs
from llmos.store.db import Store

ITEMS = [Item(f"i{i}", f"Film {i}", "", ("g",)) for i in range(8)]
WAIT = 240  # seconds a tiny job may take on a busy 2-core machine: a deadline, polled


def walks(users: int = 16) -> Interactions:
    """Every user walks the catalog in order from i0 or i1: i is followed by i + 1."""
    user, item, time_ = [], [], []
    for u in range(users):
        for t, i in enumerate(range(u % 2, u % 2 + 6)):
            user.append(u)
            item.append(i)
            time_.append(float(t))
    return Interactions(
        tuple(map(str, range(users))),
        tuple(i.id for i in ITEMS),
        np.asarray(user),
        np.asarray(item),
        np.ones(len(item), np.float32),
        np.asarray(time_),
    )


@pytest.fixture()
def setup(database_url: str, tmp_path: Path) -> Iterator[tuple[str, Store, Jobs, int, Path]]:
    store = Store(database_url)
    admin = store.create_user("admin", admin=True)[0].id
    jobs = Jobs(store)
    path = train_recommender(ITEMS, tmp_path / "walks" / "checkpoint", inter=walks(), reg=1.0)
    yield database_url, store, jobs, admin, path
    jobs.close()
    store.close()


def runs(path: Path) -> list[Path]:
    return list(path.parent.glob(f".{path.name}{RUN_PREFIX}*"))


@pytest.mark.slow  # a worker process trains a SASRec
def test_the_job_trains_the_sequential_model_that_a_running_service_then_serves(setup) -> None:
    url, store, jobs, admin, path = setup
    svc = RecommendService(store, lambda: path)  # the server's default: a look every second
    ann = store.create_user("ann")[0].id
    svc.add_events(ann, [("like", "i2", None), ("like", "i3", None)])
    assert svc.model().sasrec is None
    before = read_revision(path)
    job = queue_sequential(jobs, admin, path, steps=20)
    assert job["kind"] == JOB_KIND and job["user_id"] == admin and job["status"] == "queued"
    assert job["params"] == {
        "checkpoint": str(path.resolve()),
        "revision": before,
        "steps": 20,
        "reg": None,
        "half_life_days": None,
    }
    with pytest.raises(AlreadyQueued, match=f"job {job['id']} is training"):
        queue_sequential(jobs, admin, path, steps=20)
    get = lambda: jobs.get(admin, job["id"])  # noqa: E731
    worker = start_worker(url)
    try:
        running = wait_for(get, lambda j: j["progress"] > 0, "run", WAIT)
        assert running["status"] == "running" and running["message"].startswith("SASRec step ")
        assert svc.model().sasrec is None  # the old model answers while the job trains
        done = wait_for(get, lambda j: j["status"] == "done", "finish", WAIT)
    finally:
        stop(worker)
    assert done["progress"] == 1.0 and done["attempts"] == 1
    result = done["result"]
    assert result["steps"] == 20 and "ndcg@10" in result["valid"]
    assert result["revision"] == read_revision(path) != before
    assert runs(path) == []  # its run is removed once the checkpoint is written
    deadline = time.monotonic() + 10
    while (model := svc.model()).sasrec is None:  # read again within a second (check_s)
        assert time.monotonic() < deadline, "the service still serves the old checkpoint"
        time.sleep(0.05)
    assert model.meta["sasrec"]["steps"] == 20 and model.meta["retrained"]["sasrec"] is None
    assert set(model._signals(fold(svc.acts(ann)), None, ())) == {"personal", "sequence"}
    assert len(svc.recommend(ann, 3)) == 3
    ckpt = read_recommender(path)  # EASE and the kept interactions are the ones it had
    assert ckpt.interactions is not None and len(ckpt.interactions[0]) == len(walks())


@pytest.mark.slow  # a worker process trains a SASRec
def test_a_cancelled_job_leaves_the_old_checkpoint_served(setup) -> None:
    url, store, jobs, admin, path = setup
    svc = RecommendService(store, lambda: path, check_s=0)
    served = svc.model()
    before = read_revision(path)
    job = queue_sequential(jobs, admin, path, steps=MAX_STEPS)
    get = lambda: jobs.get(admin, job["id"])  # noqa: E731
    worker = start_worker(url)
    try:
        wait_for(get, lambda j: j["status"] == "running" and j["progress"] > 0, "run", WAIT)
        assert jobs.cancel(admin, job["id"])["cancel_requested"]
        cancelled = wait_for(get, lambda j: j["status"] == "cancelled", "cancel", WAIT)
    finally:
        stop(worker)
    assert cancelled["progress"] < 0.5 and cancelled["result"] is None
    assert read_revision(path) == before and read_task(path)["sasrec"] is None
    assert svc.model() is served  # the same revision: not even read again


@pytest.mark.slow  # a worker process trains a SASRec
def test_a_checkpoint_rewritten_after_queueing_is_not_overwritten(setup) -> None:
    url, _, jobs, admin, path = setup
    job = queue_sequential(jobs, admin, path, steps=5)
    retrain_recommender(read_recommender(path), path, reg=2.0)  # an admin's retraining
    rewritten = read_revision(path)
    get = lambda: jobs.get(admin, job["id"])  # noqa: E731
    worker = start_worker(url)
    try:
        failed = wait_for(get, lambda j: j["status"] == "failed", "fail", WAIT)
    finally:
        stop(worker)
    assert "was rewritten since this job was queued" in failed["error"]
    assert read_revision(path) == rewritten and read_task(path)["ease_reg"] == 2.0


@pytest.mark.slow  # a worker process trains a SASRec
def test_a_killed_workers_job_resumes_its_run_in_a_new_worker(setup) -> None:
    url, _, jobs, admin, path = setup
    job = queue_sequential(jobs, admin, path, steps=40)  # a resume checkpoint every 4 steps
    get = lambda: jobs.get(admin, job["id"])  # noqa: E731
    first = start_worker(url)
    try:
        wait_for(get, lambda j: j["status"] == "running" and j["progress"] >= 0.25, "run", WAIT)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert runs(path) and (runs(path)[0] / "sasrec" / "checkpoints").is_dir()
    assert read_task(path)["sasrec"] is None  # nothing written yet
    second = start_worker(url)
    try:
        done = wait_for(get, lambda j: j["status"] == "done", "resume", WAIT)
    finally:
        stop(second)
    assert done["attempts"] == 2 and done["result"]["steps"] == 40
    assert any("attempt 2, resuming its run" in line for line in done["log"])
    assert read_task(path)["sasrec"]["steps"] == 40 and runs(path) == []


def test_what_cannot_be_queued(setup, tmp_path: Path) -> None:
    _, _, jobs, admin, path = setup
    for bad in (0, -1, MAX_STEPS + 1, 1.5, True, "10"):
        with pytest.raises(LlmosError, match=f"an integer from 1 to {MAX_STEPS}"):
            check_steps(bad)  # type: ignore[arg-type]
    with pytest.raises(LlmosError, match="sasrec_steps"):
        queue_sequential(jobs, admin, path, steps=0)
    with pytest.raises(LlmosError, match=r"task\.json: not found"):
        queue_sequential(jobs, admin, tmp_path / "nothing")
    # trained on store events only: it keeps no interactions file
    bare = train_recommender(ITEMS, tmp_path / "bare", store_events={1: [Act("like", "i1")]})
    with pytest.raises(DataError, match="keeps no interactions file"):
        queue_sequential(jobs, admin, bare)
    assert jobs.list(admin) == []
