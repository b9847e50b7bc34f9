"""The writing assistant's shared material index built while the server runs, as ``make run``
leaves it (``llmos setup --background materials``): until the job is done, suggestions come
from the caller's documents only; the server's own worker process runs the job, and the next
suggestion comes from the shared index too, without a restart. Waits on the job's row, never
on a fixed sleep."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from jobs.test_jobs import wait_for
from setup_fakes import write_materials

from llmos.apps.write.materials_job import queue_materials
from llmos.data.materials import SourceDocument
from serve.conftest import WRITE_SHARED, build_writer, start

WAIT = 240  # seconds a tiny job may take on a busy 2-core machine: a deadline, polled


def test_suggestions_take_in_the_shared_index_once_its_job_wrote_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_tokenizer: Path,
    bpe_tokenizer: Path,
) -> None:
    monkeypatch.setenv("LLMOS_HOME", str(tmp_path / "home"))  # the worker process's too
    models = build_writer(tmp_path, tiny_tokenizer, bpe_tokenizer)
    index = tmp_path / "apps" / "write" / "materials"
    shutil.rmtree(index)  # not built yet: the job builds it from the prepared corpus
    docs = [SourceDocument("tang", f"tang-{i}", t, (t,)) for i, t in enumerate(WRITE_SHARED)]
    write_materials(tmp_path / "home" / "data", docs)
    db = f"sqlite:///{tmp_path / 'llmos.db'}"
    runner, live = start(
        models,
        db,
        rate_limit=0,
        write_encoder="emb",
        apps_dir=tmp_path / "apps",
        workers=1,  # make run's worker process
    )
    with runner, live.client(live.alice) as alice, live.client(live.admin) as admin:
        mine = alice.post(
            "/v1/apps/write/documents", json={"title": "笔记", "text": "黄河入海流到东方。"}
        ).json()

        def suggest() -> dict:
            r = alice.post("/v1/apps/write/suggest", json={"text": "黄河入海流", "k": 3})
            assert r.status_code == 200, r.text
            return r.json()

        before = suggest()
        assert before["shared"] is False
        assert [x["source"]["doc"] for x in before["suggestions"]] == [str(mine["id"])]
        job, _ = queue_materials(index, models / "emb", "admin", None, url=db)
        assert job is not None
        get = lambda: admin.get(f"/v1/jobs/{job['id']}").json()  # noqa: E731
        done = wait_for(get, lambda j: j["status"] == "done", "finish", WAIT)
        assert done["result"]["documents"] == len(WRITE_SHARED)
        after = suggest()
        assert after["shared"] is True
        sources = [(x["source"]["corpus"], x["source"]["doc"]) for x in after["suggestions"]]
        assert ("tang", "tang-1") in sources and ("user", str(mine["id"])) in sources
