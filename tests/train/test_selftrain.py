"""Zero-shot self-training on a random-init E5-like encoder: the teacher's scores and the
balanced selection against hand computations on hand-made vectors, a student that learns a
toy task from two descriptions and unlabelled texts alone, the reported agreement against the
run's own teacher scores, exact resume across rounds, the CLI, and clear errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from inference.test_zeroshot import tiny_e5
from tiny_words import ADVERBS, SUBJECTS, VERBS

import llmos
from llmos.checkpoint.io import read_checkpoint, read_weights
from llmos.checkpoint.task import Classification
from llmos.cli import main
from llmos.config.selftrain import SelfTrainConfig
from llmos.errors import ConfigError, DataError
from llmos.train import selftrain
from llmos.train.selftrain import select_confident, teacher_scores, train_self_training

DESCRIPTIONS = {"econ": "经济", "env": "环境"}


def toy(obj: str, n: int, seed: int) -> list[str]:
    """``n`` sentences of the tiny corpus's words whose object is ``obj``: the label."""
    rng = random.Random(seed)
    return [
        rng.choice(ADVERBS) + rng.choice(SUBJECTS) + rng.choice(VERBS) + obj + "。"
        for _ in range(n)
    ]


POOL = toy("经济", 60, 1) + toy("环境", 60, 2)  # no labels: the trainer never sees which
HELD_OUT = toy("经济", 50, 3) + toy("环境", 50, 4)
HELD_OUT_LABELS = ["econ"] * 50 + ["env"] * 50
FAST = SelfTrainConfig(steps=100, lr=3e-3, progress=False)


@pytest.fixture(scope="module")
def ckpts(tiny_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("selftrain")
    found = tiny_e5(tiny_tokenizer, out)  # a random-init encoder with E5's prefixes, and a GPT
    run = out / "run"
    trained = train_self_training(
        found["e5"], DESCRIPTIONS, POOL, out / "trained", FAST, run_dir=run
    )
    return {**found, "trained": trained.checkpoint, "run": run}


class FakeEmbedder:
    """Hand-made vectors by (kind, text): the teacher must embed the pool as queries and the
    descriptions as passages (anything else is a KeyError)."""

    def __init__(self, vectors: dict[tuple[str, str], list[float]]) -> None:
        self.vectors = vectors

    def embed(self, texts: list[str], *, kind: str | None = None, batch_size: int = 32):
        return np.array([self.vectors[kind, t] for t in texts], dtype=np.float32)


def test_teacher_is_similarity_less_each_labels_mean_over_the_pool() -> None:
    pipe = FakeEmbedder(
        {
            ("passage", "A1"): [1, 0, 0],
            ("passage", "A2"): [0, 0, 1],  # a's direction: (1, 0, 1) / sqrt 2
            ("passage", "B"): [0, 2, 0],
            ("query", "p0"): [1, 0, 1],
            ("query", "p1"): [0, 3, 0],
            ("query", "p2"): [1, 1, 0],
        }
    )
    got = teacher_scores(pipe, {"a": ["A1", "A2"], "b": ["B"]}, ["p0", "p1", "p2"])
    r = 1 / np.sqrt(2)
    cosines = np.array([[1, 0], [0, 1], [0.5, r]])  # by hand: unit rows, unit directions
    np.testing.assert_allclose(got, cosines - cosines.mean(0), atol=1e-6)


def test_selection_is_balanced_and_takes_the_largest_margins() -> None:
    scores = np.array(
        [
            [0.9, 0.1, 0.0],  # a, margin 0.8
            [0.5, 0.4, 0.0],  # a, 0.1
            [0.7, 0.0, 0.2],  # a, 0.5
            [0.6, 0.3, 0.1],  # a, 0.3
            [0.0, 0.8, 0.1],  # b, 0.7
            [0.2, 0.5, 0.0],  # b, 0.3
            [0.1, 0.2, 0.9],  # c, 0.7
            [0.3, 0.0, 0.6],  # c, 0.3
            [0.0, 0.35, 0.4],  # c, 0.05
        ]
    )
    # b is the least predicted (2 texts): every label gets fraction x 2 texts.
    rows, labels = select_confident(scores, 1.0)
    assert rows.tolist() == [0, 2, 4, 5, 6, 7] and labels.tolist() == [0, 0, 1, 1, 2, 2]
    rows, labels = select_confident(scores, 0.5)
    assert rows.tolist() == [0, 4, 6] and labels.tolist() == [0, 1, 2]
    assert select_confident(scores, 0.1)[0].tolist() == [0, 4, 6]  # at least one each
    # Log-probabilities work alike (any scores whose larger is better).
    logp = np.log(np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55], [0.7, 0.3]]))
    assert select_confident(logp, 1.0)[0].tolist() == [0, 4, 2, 3]
    with pytest.raises(DataError, match="none of the 9 unlabelled texts as 'c'"):
        select_confident(scores[:, [0, 1, 0]] * [1, 1, 0], 0.5, ["a", "b", "c"])


def test_student_learns_the_task_from_descriptions_alone(ckpts: dict[str, Path]) -> None:
    # The run never saw a label: the teacher's pseudo-labels and the selection gave them.
    got = [r["label"] for r in llmos.load(ckpts["trained"]).classify(HELD_OUT)]
    accuracy = np.mean([a == b for a, b in zip(got, HELD_OUT_LABELS, strict=True)])
    assert accuracy >= 0.9  # chance is 0.5
    selected = json.loads((ckpts["run"] / "round-1" / "selected.json").read_text())
    assert selected["per_label"] == {"econ": 29, "env": 29}  # balanced: int(0.5 x 58) each


def test_checkpoint_records_the_run_and_its_agreement(ckpts: dict[str, Path]) -> None:
    spec = read_checkpoint(ckpts["trained"]).task
    assert isinstance(spec, Classification)
    assert spec.labels == ("econ", "env") and spec.text_prefix == "query: "
    assert spec.pooling == "mean" and spec.max_length == 64  # the tiny encoder's own length
    meta = json.loads((ckpts["trained"] / "task.json").read_text())["self_training"]
    assert meta["method"] == "zero-shot self-training"
    assert meta["descriptions"] == {"econ": ["经济"], "env": ["环境"]}
    assert (meta["unlabelled"], meta["fraction"], meta["rounds"]) == (120, 0.5, 1)
    assert (meta["steps"], meta["lr"], meta["seed"]) == (100, 3e-3, 0)
    assert meta["selected"] == {"econ": 29, "env": 29}
    # The teacher's labels of the pool (kept in the run) against the checkpoint's own.
    teacher = np.load(ckpts["run"] / "teacher.npy").argmax(1)
    got = [r["label"] for r in llmos.load(ckpts["trained"]).classify(POOL)]
    want = np.mean(np.array(["econ", "env"])[teacher] == np.array(got))
    assert meta["teacher_agreement"] == pytest.approx(want)
    assert meta["per_round"][0]["agreement"] == pytest.approx(want)


class Cut(Exception):
    """The run is killed."""


def test_resume_ends_where_an_uninterrupted_run_does(
    ckpts: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = SelfTrainConfig(steps=8, lr=3e-3, rounds=2, progress=False)
    whole = train_self_training(ckpts["e5"], DESCRIPTIONS, POOL, tmp_path / "whole", cfg)
    # Cut off at step 5 of round 2 (its last step checkpoint: step 4).
    fit, calls = selftrain.fit, []

    def cut_in_round_two(*args, **kwargs):
        calls.append(args[4])
        if len(calls) == 2:

            def stop(step: int, total: int) -> None:
                if step == 5:
                    raise Cut

            kwargs["on_step"] = stop
        return fit(*args, **kwargs)

    run = tmp_path / "run"
    monkeypatch.setattr(selftrain, "fit", cut_in_round_two)
    with pytest.raises(Cut):
        train_self_training(ckpts["e5"], DESCRIPTIONS, POOL, tmp_path / "o", cfg, run_dir=run)
    monkeypatch.undo()
    assert calls == [run / "round-1", run / "round-2"]
    # Round 1 is done: its pool scores stay, its weights went.
    assert (run / "round-1" / "pool.npy").is_file()
    assert not (run / "round-1" / "checkpoints").exists()
    assert [p.name for p in (run / "round-2" / "checkpoints").iterdir()] == ["step-0000004"]
    with pytest.raises(ConfigError, match="not empty"):
        train_self_training(ckpts["e5"], DESCRIPTIONS, POOL, tmp_path / "o", cfg, run_dir=run)
    resumed = train_self_training(
        ckpts["e5"], DESCRIPTIONS, POOL, tmp_path / "o", cfg, run_dir=run, resume=True
    )
    a, b = read_weights(whole.checkpoint), read_weights(resumed.checkpoint)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.selected == whole.selected
    assert resumed.teacher_agreement == whole.teacher_agreement
    # A run directory of another pool is refused, not mixed in.
    with pytest.raises(ConfigError, match="another run"):
        train_self_training(
            ckpts["e5"], DESCRIPTIONS, POOL[:50], tmp_path / "o", cfg, run_dir=run, resume=True
        )


def test_bad_inputs_are_refused(ckpts: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "x"
    with pytest.raises(DataError, match="unlabelled texts"):
        train_self_training(ckpts["e5"], DESCRIPTIONS, ["  ", ""], out, FAST)
    with pytest.raises(DataError, match="label 'env' has no description"):
        train_self_training(ckpts["e5"], {"econ": "经济", "env": []}, POOL, out, FAST)
    with pytest.raises(DataError, match="at least 2 labels"):
        train_self_training(ckpts["e5"], {"econ": "经济"}, POOL, out, FAST)
    # One text (or copies of it): each label's score less its pool mean is 0, so the teacher
    # gives every text the first label and never the second.
    with pytest.raises(DataError, match="labels none of the 3 unlabelled texts as 'env'"):
        train_self_training(ckpts["e5"], DESCRIPTIONS, [POOL[0]] * 3, out, FAST)
    with pytest.raises(ConfigError, match="GPT"):
        train_self_training(ckpts["gpt"], DESCRIPTIONS, POOL, out, FAST)
    for field, value in (("fraction", 0.0), ("fraction", 1.5), ("rounds", 0), ("steps", 0)):
        with pytest.raises(ConfigError, match=f"self-train {field} must"):
            SelfTrainConfig(**{field: value})


def test_cli_trains_the_same_classifier(
    ckpts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = tmp_path / "pool.jsonl"  # as `llmos pet` reads its pool: JSONL with "text" too
    pool.write_text("\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in POOL), "utf-8")
    out = tmp_path / "clf"
    args = ["self-train", str(ckpts["e5"]), "--labels", "econ=经济", "env=环境"]
    args += ["--unlabelled", str(pool), "--out", str(out), "--steps", "100", "--lr", "3e-3"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"classifier: {out}" in printed and "econ 29, env 29" in printed
    assert "agreement with the zero-shot teacher" in printed
    a, b = read_weights(ckpts["trained"]), read_weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the API's run: the same defaults and seed


def test_cli_mistakes_exit_2(
    ckpts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = tmp_path / "pool.txt"
    pool.write_text("\n".join(POOL) + "\n", "utf-8")
    base = ["self-train", str(ckpts["e5"]), "--unlabelled", str(pool), "--out", str(tmp_path)]
    labels = ["--labels", "econ=经济", "env=环境"]
    assert main([*base, *labels, "--resume"]) == 2  # --resume without --run-dir
    assert main([*base, "--labels", "econ=经济", "环境"]) == 2  # not NAME=DESCRIPTION
    assert "--labels '环境': expected NAME=DESCRIPTION, e.g. pos=" in capsys.readouterr().err
    assert main([*base, "--labels", "econ=经济"]) == 2  # one label
    assert main([*base, *labels, "--fraction", "0"]) == 2
    missing = ["self-train", str(ckpts["e5"]), *labels, "--unlabelled", str(tmp_path / "no")]
    assert main([*missing, "--out", str(tmp_path / "o")]) == 2
