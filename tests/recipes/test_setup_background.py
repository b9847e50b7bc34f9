"""``llmos setup --background materials`` (what ``make run`` runs): the material index's step
is left to a job of the demo user, queued once, and the plan and the summary say so; the
flag's mistakes stop setup before any work. (tests/apps/write/test_materials_job.py runs the
job.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from setup_fakes import fake_outputs, queued_jobs

from llmos.apps.write.materials_job import JOB_KIND
from llmos.cli import main
from llmos.recipes import defaults as S

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLMOS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LLMOS_DATABASE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    return tmp_path / "runs"


def test_background_needs_the_demo_user_and_a_step_that_can_be_left_to_a_job(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["setup", "--models", str(env), "--configs", str(ROOT / "configs" / "run"), "--dry-run"]
    assert main([*argv, "--background", "materials"]) == 2
    err = capsys.readouterr().err
    assert "llmos: error: --background materials needs --demo-user NAME" in err
    assert main([*argv, "--background", "gpt-zh", "--demo-user", "demo"]) == 2
    err = capsys.readouterr().err
    assert (
        "llmos: error: --background gpt-zh: no such step is built in the background (the "
        "steps that can be: materials)"
    ) in err
    assert main([*argv, "--background", "materials", "--demo-user", "demo"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("setup: building bpe-zh, e5-zh, sentiment-zh")
    assert "movielens, gpt-zh into" in out  # not materials: that is the job's
    assert out.rstrip().endswith(
        "; queued as a background job for the demo user: materials (a job worker builds it "
        "while the demo is served, about 2 min)"
    )
    assert not env.exists() and not (env.parent / "store.db").exists()


def test_setup_leaves_the_index_to_one_job_of_the_demo_user(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_outputs(env)  # every step built, but the material index
    index = S.output_of(next(s for s in S.DEFAULT_STEPS if s.kind == "materials"), env)
    meta = (index / "meta.json").read_text()
    shutil.rmtree(index)
    argv = ["setup", "--models", str(env), "--demo-user", "demo", "--background", "materials"]
    outs = []
    for _ in range(2):
        assert main(argv) == 0
        outs.append(capsys.readouterr().out)
    queued, demo_id = queued_jobs("demo")
    assert len(queued) == 1, queued  # not twice
    job = queued[0]
    assert job["kind"] == JOB_KIND and job["user_id"] == demo_id and job["status"] == "queued"
    assert job["params"] == {
        "out": str(index.resolve()),
        "encoder": str((env / "e5-zh").resolve()),
        "max_docs": S.MATERIAL_DOCS,
    }
    first = outs[0]
    assert first.startswith(
        "setup: nothing to build now; already built: bpe-zh, e5-zh, sentiment-zh"
    )
    (row,) = [line for line in first.splitlines() if line.startswith("  materials ")]
    assert row.split() == ["materials", "background", "left", "to", "a", "job"]
    assert f"setup: 0 built, {len(S.DEFAULT_STEPS) - 1} kept, 1 in the background" in first
    assert (
        f"shared material index (a sample of {S.MATERIAL_DOCS} documents): queued job "
        f"{job['id']} ({S.MATERIAL_DOCS} documents into {index.resolve()}) for user 'demo'"
    ) in first
    assert (
        "  a job worker builds it while the demo is served (llmos serve --workers 1, as make "
        "run starts, or llmos worker): about 2 minutes on 2 cores"
    ) in first
    assert f"job {job['id']} (queued) is building it already" in outs[1]
    index.mkdir(parents=True)  # as the job leaves it, once done
    (index / "meta.json").write_text(meta)
    assert json.loads(meta)["encoder"] == str((env / "e5-zh").resolve())
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "nothing to do" in out and "shared material index" not in out
    assert f"setup: 0 built, {len(S.DEFAULT_STEPS)} kept, 0 s in all" in out
