"""``POST /v1/apps/recommend/train`` with ``sasrec_steps`` on a real server started with one
job worker (``llmos serve --workers 1``, what ``make run`` runs): an admin queues the
``recommend.sequential`` job, the worker process trains it, and the server answers with the new
checkpoint without a restart. Users may not queue it; a bad step count is a 422."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from llmos.apps.recommend.sequential import JOB_KIND, MAX_STEPS
from llmos.checkpoint.recommender import read_revision
from serve.conftest import start

BASE = "/v1/apps/recommend"
WAIT = 240  # seconds the tiny job may take on a busy 2-core machine: a deadline, polled


def test_an_admin_queues_the_sequential_model_that_the_server_then_serves(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in (("HEARTBEAT", "0.2"), ("STALE_AFTER", "5"), ("POLL", "0.1")):
        monkeypatch.setenv(f"LLMOS_{name}", value)  # the worker process's timings
    models = tmp_path / "models"
    for name in ("emb", "movielens"):
        shutil.copytree(models_dir / name, models / name)
    db = f"sqlite:///{tmp_path / 'llmos.db'}"
    runner, live = start(models, db, rate_limit=0, recommend_encoder="emb", workers=1)
    with runner, live.client(live.admin) as admin, live.client(live.alice) as alice:
        service = live.app.state.server.recommend
        assert service.model().sasrec is None
        r = alice.post(f"{BASE}/train", json={"sasrec_steps": 5})
        assert r.status_code == 403, r.text
        for bad in (0, -3, MAX_STEPS + 1, 1.5, "10"):
            r = admin.post(f"{BASE}/train", json={"sasrec_steps": bad})
            assert r.status_code == 422, (bad, r.text)
            assert r.json()["error"]["type"] == "invalid_request" and "sasrec_steps" in r.text
        # without sasrec_steps: the in-process retraining, as before (waited for, as it
        # rewrites the checkpoint)
        r = admin.post(f"{BASE}/train", json={"sasrec_steps": None})
        assert r.status_code == 202 and r.json()["kind"] == "train", r.text
        retrain = r.json()
        deadline = time.monotonic() + WAIT
        while retrain["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, retrain
            time.sleep(0.05)
            retrain = admin.get(f"{BASE}/jobs/{retrain['id']}").json()
        assert retrain["status"] == "done", retrain
        before = read_revision(models / "movielens")
        r = admin.post(f"{BASE}/train", json={"sasrec_steps": 10})
        assert r.status_code == 202, r.text
        job = r.json()
        assert r.headers["location"] == f"/v1/jobs/{job['id']}"
        assert job["kind"] == JOB_KIND and job["status"] == "queued"
        assert job["params"]["steps"] == 10
        assert admin.get("/v1/me").json()["id"] == job["user_id"]
        r = admin.post(f"{BASE}/train", json={"sasrec_steps": 10})
        assert r.status_code == 409 and f"job {job['id']}" in r.text
        assert alice.get(f"/v1/jobs/{job['id']}").status_code == 404  # the admin's job
        deadline = time.monotonic() + WAIT
        while (job := admin.get(f"/v1/jobs/{job['id']}").json())["status"] in (
            "queued",
            "running",
        ):
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        assert job["status"] == "done", job
        assert job["result"]["revision"] != before
        r = alice.post(f"{BASE}/events", json={"events": [{"kind": "like", "item": "c1"}]})
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 10
        while service.model().sasrec is None:  # the server reads it within a second
            assert time.monotonic() < deadline, "the server still serves the old checkpoint"
            time.sleep(0.05)
        r = alice.get(BASE, params={"k": 3})
        assert r.status_code == 200 and len(r.json()["items"]) == 3
