"""``/v1/jobs`` on a real uvicorn server started with ``workers=1`` (``llmos serve --workers
1``): its worker process runs a test kind, each user reads and cancels only their own jobs,
and stopping the server stops the worker, which puts its running job back in the queue."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from llmos.jobs import register_kind
from llmos.store.db import Store
from llmos.store.jobs import JobStore

from .conftest import start

TESTS = Path(__file__).resolve().parents[1]


def poll(client: httpx.Client, job_id: int, until, what: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        job = r.json()
        if until(job):
            return job
        if time.monotonic() > deadline or job["finished_at"] is not None:
            pytest.fail(f"{what}: the job is still {job}")
        time.sleep(0.02)


def test_jobs_over_http_with_workers_beside_the_server(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_kind("test.count", "jobs.kinds:count")
    # The server's worker process inherits these: the tests' kinds and fast timings.
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    )
    for name, value in (("HEARTBEAT", "0.1"), ("STALE_AFTER", "1"), ("POLL", "0.1")):
        monkeypatch.setenv(f"LLMOS_{name}", value)
    models = tmp_path / "models"
    models.mkdir()
    runner, live = start(models, database_url, rate_limit=0, workers=1, apps_dir=tmp_path)
    with runner:
        jobs = live.app.state.jobs
        store = Store(database_url)
        alice_id = store.user("alice").id
        short = jobs.submit(alice_id, "test.count", {"n": 8, "state": str(tmp_path / "a")})
        long = jobs.submit(
            alice_id, "test.count", {"n": 2000, "sleep": 0.02, "state": str(tmp_path / "b")}
        )
        last = jobs.submit(
            alice_id, "test.count", {"n": 2000, "sleep": 0.02, "state": str(tmp_path / "c")}
        )
        with live.client(live.alice) as alice, live.client(live.bob) as bob:
            done = poll(alice, short["id"], lambda j: j["status"] == "done", "finish")
            assert done["result"]["counted"] == 8 and done["progress"] == 1.0
            running = poll(alice, long["id"], lambda j: j["progress"] > 0, "run")
            assert running["status"] == "running"

            # bob sees none of it: 404 as for a job that does not exist
            for method, path in (("GET", ""), ("POST", "/cancel")):
                r = bob.request(method, f"/v1/jobs/{long['id']}{path}")
                assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
            assert bob.get("/v1/jobs").json() == {"jobs": []}
            assert bob.get("/v1/jobs?all=true").status_code == 403
            mine = alice.get("/v1/jobs").json()["jobs"]
            assert [j["id"] for j in mine] == [last["id"], long["id"], short["id"]]
            assert "target" not in mine[0]
            with live.client(live.admin) as admin:
                assert len(admin.get("/v1/jobs?all=true").json()["jobs"]) == 3
            assert httpx.get(f"{live.url}/v1/jobs").status_code == 401
            assert alice.get("/v1/jobs/0").status_code == 422

            r = alice.post(f"/v1/jobs/{long['id']}/cancel")
            assert r.status_code == 200 and r.json()["cancel_requested"]
            cancelled = poll(alice, long["id"], lambda j: j["status"] == "cancelled", "cancel")
            assert cancelled["progress"] < 0.5
            poll(alice, last["id"], lambda j: j["progress"] > 0, "run the last")
    # the server stopped its worker, which put the running job back in the queue
    back = JobStore(store).by_id(last["id"])
    store.close()
    assert back is not None and back.status == "queued" and back.attempts == 1
