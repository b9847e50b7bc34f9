"""Background jobs end to end: real ``llmos worker`` processes on a real store (SQLite and
PostgreSQL), running the kinds of :mod:`jobs.kinds`. Tests wait on the job's row (its
status, its progress), never on a fixed sleep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llmos.jobs import Jobs, register_kind
from llmos.store.db import Store
from llmos.store.jobs import JobError, JobStore

TESTS = Path(__file__).resolve().parents[1]
# Fast timings: a heartbeat every 0.1 s, a job given up for dead after 1 s of silence.
TIMINGS = ["--heartbeat", "0.1", "--stale-after", "1", "--poll", "0.1"]


@pytest.fixture(autouse=True)
def kinds() -> None:
    register_kind("test.count", "jobs.kinds:count")
    register_kind("test.fail", "jobs.kinds:fail")


def worker_env(url: str) -> dict[str, str]:
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    return os.environ | {"LLMOS_DATABASE_URL": url, "PYTHONPATH": path}


def start_worker(url: str, *extra: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "llmos", "worker", *TIMINGS, *extra]
    return subprocess.Popen(command, env=worker_env(url))


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(15)


def wait_for(get: Callable[[], dict], until: Callable[[dict], bool], what: str, timeout=30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = get()
        if until(job):
            return job
        if time.monotonic() > deadline or job["finished_at"] is not None:
            pytest.fail(f"{what}: the job is still {job}")
        time.sleep(0.02)


@pytest.fixture()
def setup(database_url: str) -> Iterator[tuple[str, Store, Jobs, int, int]]:
    store = Store(database_url)
    alice = store.create_user("alice")[0].id
    bob = store.create_user("bob")[0].id
    jobs = Jobs(store)
    yield database_url, store, jobs, alice, bob
    jobs.close()
    store.close()


def test_a_job_goes_queued_running_done_with_progress_log_and_result(setup, tmp_path) -> None:
    url, _, jobs, alice, _ = setup
    job = jobs.submit(alice, "test.count", {"n": 12, "sleep": 0.05, "state": str(tmp_path / "s")})
    assert job["status"] == "queued" and job["progress"] == 0
    worker = start_worker(url)
    try:
        get = lambda: jobs.get(alice, job["id"])  # noqa: E731
        running = wait_for(get, lambda j: j["status"] == "running" and j["progress"] > 0, "run")
        assert running["progress"] < 1 and running["message"].startswith("step ")
        assert running["attempts"] == 1 and running["worker"]
        done = wait_for(get, lambda j: j["status"] == "done", "finish")
    finally:
        stop(worker)
    assert done["result"] == {"counted": 12, "resumed_from": 0, "attempt": 1}
    assert done["progress"] == 1.0 and done["error"] is None
    assert done["log"][0] == "attempt 1 starts at 0" and done["log"][-1] == "step 12"
    assert done["started_at"] <= done["finished_at"]


def test_cancel_a_queued_and_a_running_job_and_a_failing_one(setup, tmp_path) -> None:
    url, _, jobs, alice, bob = setup
    params = {"n": 1000, "sleep": 0.02, "state": str(tmp_path / "s")}
    queued = jobs.submit(alice, "test.count", params)
    assert jobs.cancel(bob, queued["id"]) is None  # not bob's
    assert jobs.cancel(alice, queued["id"])["status"] == "cancelled"  # before any worker
    failing = jobs.submit(alice, "test.fail", {})
    long = jobs.submit(alice, "test.count", params)
    worker = start_worker(url)
    try:
        get = lambda: jobs.get(alice, long["id"])  # noqa: E731
        wait_for(get, lambda j: j["status"] == "running" and j["progress"] > 0, "run")
        asked = jobs.cancel(alice, long["id"])
        assert asked["status"] == "running" and asked["cancel_requested"]
        cancelled = wait_for(get, lambda j: j["status"] == "cancelled", "cancel")
        failed = jobs.get(alice, failing["id"])
    finally:
        stop(worker)
    assert 0 < cancelled["progress"] < 0.5 and cancelled["finished_at"]
    assert failed["status"] == "failed"
    assert failed["error"] == "ValueError: the test kind fails on purpose"
    assert any("ValueError" in line for line in failed["log"])
    assert jobs.get(alice, queued["id"])["attempts"] == 0  # never ran


def test_a_killed_worker_s_job_resumes_in_a_new_worker(setup, tmp_path) -> None:
    url, _, jobs, alice, _ = setup
    job = jobs.submit(alice, "test.count", {"n": 30, "sleep": 0.05, "state": str(tmp_path / "s")})
    get = lambda: jobs.get(alice, job["id"])  # noqa: E731
    first = start_worker(url)
    try:
        wait_for(get, lambda j: j["status"] == "running" and j["progress"] >= 0.2, "run")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    killed_at = int((tmp_path / "s").read_text())
    assert get()["status"] == "running"  # nobody knows yet
    second = start_worker(url)
    try:
        done = wait_for(get, lambda j: j["status"] == "done", "resume")
    finally:
        stop(second)
    assert done["attempts"] == 2
    assert done["result"]["attempt"] == 2 and done["result"]["resumed_from"] >= killed_at > 0
    assert "attempt 2 starts at" in "\n".join(done["log"])


def test_a_stopped_worker_puts_its_job_back_without_using_a_try(setup, tmp_path) -> None:
    url, _, jobs, alice, _ = setup
    job = jobs.submit(
        alice, "test.count", {"n": 200, "sleep": 0.02, "state": str(tmp_path / "s")}, 1
    )
    get = lambda: jobs.get(alice, job["id"])  # noqa: E731
    worker = start_worker(url)
    try:
        wait_for(get, lambda j: j["status"] == "running" and j["progress"] > 0, "run")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(15) == 0
        back = get()
        assert back["status"] == "queued" and back["max_attempts"] == 2
    finally:
        stop(worker)


def test_each_user_sees_only_their_own_jobs(setup, tmp_path) -> None:
    _, store, jobs, alice, bob = setup
    a = jobs.submit(alice, "test.fail", {})
    b = jobs.submit(bob, "test.fail", {})
    assert [j["id"] for j in jobs.list(alice)] == [a["id"]]
    assert jobs.get(alice, b["id"]) is None and jobs.get(alice, 2**40) is None
    assert {j["id"] for j in jobs.list(alice, admin=True)} == {a["id"], b["id"]}
    with pytest.raises(JobError, match="no job kind 'nope'"):
        jobs.submit(alice, "nope", {})
    with pytest.raises(JobError, match="must be JSON"):
        jobs.submit(alice, "test.fail", {"x": object()})
    with pytest.raises(JobError, match=r"package\.module:function"):
        register_kind("bad", "not a path")
    assert JobStore(store).claim(b["id"], "w") is not None  # a worker takes any user's job
    assert JobStore(store).claim(b["id"], "w") is None  # but only once
