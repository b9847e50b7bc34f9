"""The recommendation app's admin jobs without HTTP: one worker thread runs them in order, one
at a time, keeping a bounded history; imports and retrainings over a real store write the
checkpoint the service then serves."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from llmos.apps.recommend.jobs import (
    MAX_ITEMS,
    CatalogJobs,
    JobRunner,
    JobsBusy,
    UnknownJob,
    check_items,
)
from llmos.apps.recommend.service import NoRecommender, RecommendService
from llmos.apps.recommend.train import train_recommender
from llmos.checkpoint.recommender import read_recommender
from llmos.data.interactions import Interactions, Item
from llmos.errors import LlmosError
from llmos.store.db import Store

WAIT = 60  # seconds: a generous deadline, never a sleep


def test_jobs_run_in_order_one_at_a_time_and_report_their_end() -> None:
    runner = JobRunner()
    gate, running, overlap = threading.Event(), [], []

    def work(name: str) -> object:
        def run() -> dict:
            overlap.append(len(running))
            running.append(name)
            if name == "first":
                assert gate.wait(WAIT)
            running.remove(name)
            if name == "bad":
                raise LlmosError("no interactions to learn from")
            if name == "bug":
                raise KeyError("oops")
            return {"name": name}

        return run

    jobs = [runner.submit("train", work(n), {"n": n}) for n in ("first", "bad", "bug", "last")]
    assert [j.status for j in jobs] == ["queued"] * 4
    assert runner.get(jobs[1].id).status == "queued"  # waits behind the first, which waits
    gate.set()
    done = [runner.wait(j.id, WAIT) for j in jobs]
    assert [j.status for j in done] == ["done", "failed", "failed", "done"]
    assert done[0].result == {"name": "first"} and done[0].error is None
    assert done[1].error == "no interactions to learn from" and done[1].result is None
    assert done[2].error == "internal error (KeyError: 'oops')"
    assert overlap == [0, 0, 0, 0]  # never two at once
    assert all(j.created_at <= j.started_at <= j.finished_at for j in done)
    assert [j.id for j in runner.list()] == [j.id for j in reversed(jobs)]
    assert done[3].as_json()["finished_at"].endswith("+00:00")
    with pytest.raises(UnknownJob, match="no job 'nope'"):
        runner.get("nope")
    runner.close(WAIT)
    with pytest.raises(LlmosError, match="stopping"):
        runner.submit("train", work("late"), {})


def test_the_history_is_bounded_and_the_queue_too() -> None:
    runner = JobRunner(history=2, max_waiting=2)
    started, gate = threading.Event(), threading.Event()

    def first_work() -> dict:
        started.set()
        return {"ok": gate.wait(WAIT)}

    first = runner.submit("train", first_work, {})
    assert started.wait(WAIT)  # running: it no longer waits
    queued = [runner.submit("train", dict, {}) for _ in range(2)]
    with pytest.raises(JobsBusy, match="2 jobs wait already"):
        runner.submit("train", dict, {})
    gate.set()
    runner.wait(queued[-1].id, WAIT)
    assert [j.id for j in runner.list()] == [queued[1].id, queued[0].id]  # the first forgotten
    with pytest.raises(UnknownJob):
        runner.get(first.id)
    runner.close(WAIT)


def test_close_fails_the_queued_jobs() -> None:
    runner = JobRunner()
    started, gate = threading.Event(), threading.Event()

    def first_work() -> dict:
        started.set()
        return {"ok": gate.wait(WAIT)}

    running = runner.submit("train", first_work, {})
    assert started.wait(WAIT)
    waiting = runner.submit("catalog", dict, {})
    closer = threading.Thread(target=runner.close, args=(WAIT,))
    closer.start()
    job = runner.wait(waiting.id, WAIT)  # failed by close(), while the first still runs
    assert job.status == "failed" and job.error == "the server stopped before the job ran"
    assert runner.get(running.id).status == "running"
    gate.set()
    closer.join(WAIT)
    assert runner.get(running.id).status == "done"


def test_an_item_list_is_checked_before_it_is_queued() -> None:
    check_items([Item("a", "A"), Item("b", "B")])
    with pytest.raises(LlmosError, match=r"items\[2\]\.id: 'a' appears twice \(items\[0\] has"):
        check_items([Item("a", "A"), Item("b", "B"), Item("a", "C")])
    with pytest.raises(LlmosError, match=f"1 to {MAX_ITEMS} items, got 0"):
        check_items([])


FILMS = [Item(f"f{i}", f"Film {i}", "", ("Drama",)) for i in range(5)]


@pytest.fixture()
def app(tmp_path: Path) -> tuple[CatalogJobs, RecommendService, Store]:
    """A service whose recommender is ``tmp_path/rec`` once written (none before)."""
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    path = tmp_path / "rec"

    def locate() -> Path:
        if not (path / "config.json").is_file():
            raise NoRecommender("no recommender named 'rec'")
        return path

    svc = RecommendService(store, locate)
    jobs = CatalogJobs(svc, path, encoder="e5")
    yield jobs, svc, store
    jobs.close(WAIT)
    store.close()


def done(jobs: CatalogJobs, job_id: str) -> dict:
    job = jobs.runner.wait(job_id, WAIT)
    assert job.status == "done", job.error
    return job.result


def test_an_import_then_a_retraining_over_the_store(app: tuple) -> None:
    jobs, svc, store = app
    with pytest.raises(NoRecommender):
        svc.model()
    result = done(jobs, jobs.import_catalog("films", FILMS).id)
    assert result["items"] == 5 and result["interactions"] == 0
    assert not result["content_vectors"] and "'e5' is not served" in result["notes"][0]
    assert svc.catalog == "films" and [i.id for i in svc.model().items] == [i.id for i in FILMS]
    fans = [store.create_user(f"fan{n}")[0].id for n in range(3)]
    for user in fans:
        svc.add_events(user, [("like", "f1", None), ("like", "f3", None)])
    ann = store.create_user("ann")[0].id
    svc.add_events(ann, [("like", "f1", None)])
    assert svc.recommend(ann, 1)[0].source != "personal"  # the model knows no co-likes yet
    result = done(jobs, jobs.retrain().id)
    assert result["store_users"] == 4 and result["interactions"] == 7
    first = svc.recommend(ann, 1)[0]
    assert (first.item.id, first.source) == ("f3", "personal")


def interactions() -> Interactions:
    """Users who took f0 with f2, f2 with f4."""
    pairs = [(u, i) for u in range(6) for i in ((0, 2) if u % 2 else (2, 4))]
    users, items = zip(*pairs, strict=True)
    return Interactions(
        tuple(map(str, range(6))),
        tuple(i.id for i in FILMS),
        np.asarray(users),
        np.asarray(items),
        np.ones(len(pairs), np.float32),
        np.zeros(len(pairs)),
    )


def test_a_reimport_keeps_the_interactions_of_the_same_catalog_only(
    app: tuple, tmp_path: Path
) -> None:
    jobs, svc, _ = app
    train_recommender(FILMS, tmp_path / "rec", inter=interactions(), catalog="films", reg=1.0)
    new = [*FILMS[1:], Item("n", "New")]  # f0 is gone
    result = done(jobs, jobs.import_catalog("films", new).id)
    assert (result["kept_interactions"], result["dropped_items"]) == (9, 1)
    assert svc.model().index.keys() == {i.id for i in new}
    assert read_recommender(tmp_path / "rec").meta["ease_reg"] == 1.0  # kept
    result = done(jobs, jobs.import_catalog("shop", FILMS, reg=5.0).id)
    assert result["kept_interactions"] == 0 and "'films' it replaces was another" in str(
        result["notes"]
    )
    assert svc.catalog == "shop"


def test_a_job_never_writes_over_something_else(app: tuple, tmp_path: Path) -> None:
    jobs, _, _ = app
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "notes.txt").write_text("mine")
    job = jobs.runner.wait(jobs.import_catalog("films", FILMS).id, WAIT)
    assert job.status == "failed" and "holds something else" in job.error
    assert (tmp_path / "rec" / "notes.txt").read_text() == "mine"
    job = jobs.runner.wait(jobs.retrain().id, WAIT)
    assert job.status == "failed" and "nothing to retrain" in job.error
