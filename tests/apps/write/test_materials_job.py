"""The ``write.materials`` job (``llmos setup --background materials``) over a real store
(SQLite and PostgreSQL): a real ``llmos worker`` process builds the index that setup's step
builds, reporting each batch embedded; a job cancelled between batches writes nothing;
:func:`queue_materials` queues once, and not for an index built by the same encoder. Tests wait
on the job's row, never on a fixed sleep. (tests/serve/test_write_materials_http.py: a running
server picks the index up.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from jobs.test_jobs import start_worker, stop, wait_for
from setup_fakes import write_materials

from llmos.apps.support.local import PipelineEmbedder
from llmos.apps.write.materials import MaterialIndex
from llmos.apps.write.materials_job import JOB_KIND, queue_materials
from llmos.apps.write.suggestions import build_shared, setup_materials
from llmos.data.materials import SourceDocument
from llmos.errors import LlmosError
from llmos.jobs import JobContext, Jobs
from llmos.jobs import runner as runner_module
from llmos.store.db import Store

WAIT = 240  # seconds a tiny job may take on a busy 2-core machine: a deadline, polled
# 600 one-sentence documents; a sample of 400 is 400 passages: two batches (256 + 144).
WORDS = (["我们", "老师", "学生", "记者"], ["今天", "昨天", "经常"], ["喜欢", "研究", "讨论"])
DOCS = [
    SourceDocument(
        "peoples_daily",
        f"peoples_daily-{i:04d}",
        f"新闻 {i}",
        (f"{WORDS[0][i % 4]}{WORDS[1][i % 3]}{WORDS[2][i % 3]}第{i}号文件。",),
    )
    for i in range(600)
]
SAMPLE = 400


@pytest.fixture()
def setup(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Store, Jobs, int, str]]:
    """A store with an admin, and ``$LLMOS_HOME`` with the shared corpus prepared (the worker
    processes inherit it); yields the corpus's sha256 last."""
    monkeypatch.setenv("LLMOS_HOME", str(tmp_path / "home"))
    version = write_materials(tmp_path / "home" / "data", DOCS)
    store = Store(database_url)
    admin = store.create_user("admin", admin=True)[0].id
    jobs = Jobs(store)
    yield database_url, store, jobs, admin, version
    jobs.close()
    store.close()


def vectors(index: MaterialIndex) -> np.ndarray:
    return np.stack([index.dense.reconstruct(r) for r in sorted(index.rows)])


def test_the_job_builds_the_index_setup_builds_reporting_each_batch(
    setup, tiny_encoder: Path, tmp_path: Path
) -> None:
    url, _, jobs, admin, version = setup
    out = (tmp_path / "apps" / "write" / "materials").resolve()
    job, what = queue_materials(out, tiny_encoder, "admin", SAMPLE, url=url)
    assert job is not None and job["kind"] == JOB_KIND and job["user_id"] == admin
    assert job["params"] == {
        "out": str(out),
        "encoder": str(tiny_encoder.resolve()),
        "max_docs": SAMPLE,
    }
    assert what == f"queued job {job['id']} ({SAMPLE} documents into {out}) for user 'admin'"
    get = lambda: jobs.get(admin, job["id"])  # noqa: E731
    worker = start_worker(url)
    try:
        done = wait_for(get, lambda j: j["status"] == "done", "finish", WAIT)
    finally:
        stop(worker)
    assert done["progress"] == 1.0 and done["attempts"] == 1 and done["error"] is None
    embedded = [line for line in done["log"] if line.startswith("embedded ")]
    assert embedded == ["embedded 256 of 400 passages", "embedded 400 of 400 passages"]
    built = MaterialIndex.load(out)
    assert done["result"] == {
        "out": str(out),
        "encoder": built.encoder,
        "version": version,
        "documents": SAMPLE,
        "passages": SAMPLE,
    }
    # What `llmos setup`'s materials step builds in its place: the same passages and vectors.
    direct = setup_materials(tmp_path / "direct", tiny_encoder, SAMPLE)
    assert built.encoder == direct.encoder == PipelineEmbedder(tiny_encoder).name
    assert (built.version, built.next_row) == (direct.version, direct.next_row)
    assert built.rows == direct.rows and built.documents == direct.documents
    np.testing.assert_allclose(vectors(built), vectors(direct), atol=1e-5)
    assert queue_materials(out, tiny_encoder, "admin", SAMPLE, url=url) == (
        None,
        f"{out} is built (embedded by {tiny_encoder.resolve().name})",
    )


def test_a_job_cancelled_between_batches_writes_nothing(
    setup, tiny_encoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's runner (in this process) runs the job; at its first batch the job is
    cancelled through the jobs table, as a user cancels it, and the hook waits until the
    runner's heartbeat has told the job: it stops before the next batch."""
    url, store, jobs, admin, _ = setup
    out = tmp_path / "apps" / "write" / "materials"
    job, _ = queue_materials(out, tiny_encoder, "admin", SAMPLE, url=url)
    assert job is not None

    class CancelledAtFirstBatch(JobContext):
        def progress(self, fraction: float, message: str | None = None) -> None:
            super().progress(fraction, message)
            if (message or "").startswith("embedded ") and not self._cancel.is_set():
                assert jobs.cancel(admin, self.job_id)["cancel_requested"]
                assert self._cancel.wait(60), "the heartbeat never passed the cancellation on"

    monkeypatch.setattr(runner_module, "JobContext", CancelledAtFirstBatch)
    runner = runner_module.Runner(store, heartbeat_s=0.05, stale_after_s=5)
    try:
        runner.execute(job["id"])  # what a worker's huey task runs
    finally:
        runner.huey.storage.close()
    cancelled = jobs.get(admin, job["id"])
    assert cancelled["status"] == "cancelled" and cancelled["result"] is None
    assert cancelled["progress"] == 256 / 400
    assert [line for line in cancelled["log"] if line.startswith("embedded ")] == [
        "embedded 256 of 400 passages"
    ]
    assert not out.parent.exists()  # nothing saved, not even a temp directory


def test_queue_materials_queues_once_and_not_for_an_index_of_the_same_encoder(
    setup, tiny_encoder: Path, tmp_path: Path
) -> None:
    url, _, jobs, admin, _ = setup
    out = (tmp_path / "materials").resolve()
    nowhere = (tmp_path / "no-encoder").resolve()
    assert queue_materials(out, nowhere, "admin", 3, url=url) == (
        None,
        f"no encoder at {nowhere} to embed the materials with",
    )
    with pytest.raises(LlmosError, match="no store user 'nobody' to own the job"):
        queue_materials(out, tiny_encoder, "nobody", 3, url=url)
    job, _ = queue_materials(out, tiny_encoder, "admin", 3, url=url)
    again, what = queue_materials(out, tiny_encoder, "admin", 3, url=url)
    assert again is not None and again["id"] == job["id"]
    assert what == f"job {job['id']} (queued) is building it already"
    assert [j["id"] for j in jobs.list(admin, admin=True)] == [job["id"]]  # not twice
    jobs.cancel(admin, job["id"])
    # an index embedded by this encoder: nothing to do
    docs = [SourceDocument("tang", "tang-0", "静夜思", ("床前明月光",))]
    build_shared(docs, PipelineEmbedder(tiny_encoder)).save(out)
    assert queue_materials(out, tiny_encoder, "admin", 3, url=url) == (
        None,
        f"{out} is built (embedded by {tiny_encoder.resolve().name})",
    )
    # by another encoder (the server refuses it): queued, to be replaced
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps(meta | {"encoder": "sha256:another"}))
    other, what = queue_materials(out, tiny_encoder, "admin", 3, url=url)
    assert other is not None and other["id"] != job["id"] and other["status"] == "queued"
    assert what.endswith("; it replaces the index there, of another encoder")
