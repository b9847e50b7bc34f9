"""Multi-task fine-tuning (``task: multitask``): intent, slots (a CRF tagger) and a second
dataset's sentiment learned on one encoder; one pass of the checkpoint gives what each head's
own pipeline gives; the run resumes exactly; held-out intents are left out of every split."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from recipes.test_finetune_tagging_cjk_split import (
    ADVERBS,
    OBJECTS,
    SUBJECTS,
    VERBS,
    unigram_encoder,
)

import llmos
from llmos.checkpoint.io import read_checkpoint, read_weights
from llmos.checkpoint.task import Classification, MultiTask, Tagging, parse_task
from llmos.config import FinetuneConfig, load_config
from llmos.errors import CheckpointError, ConfigError, LlmosError
from llmos.recipes.finetune import finetune


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unigram_encoder(tmp_path_factory.mktemp("mt-enc") / "checkpoint")


def intent_rows(n: int, seed: int) -> list[dict]:
    """``<adverb><subject><verb><object>。``: the verb is the intent, the subject and the
    object are slots (the subject shares a piece with the verb unless characters are split)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, s, v, o = (rng.choice(x) for x in (ADVERBS, SUBJECTS, VERBS, OBJECTS))
        text = f"{a}{s}{v}{o}。"
        i, j = len(a), len(a) + len(s) + len(v)
        slots = [
            {"name": "who", "value": s, "start": i, "end": i + len(s)},
            {"name": "what", "value": o, "start": j, "end": j + len(o)},
        ]
        rows.append({"text": text, "intent": v, "slots": slots})
    return rows


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_datasets(tmp_path_factory)


def write_datasets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An intents dataset (intent and slots of each row) and a sentiment one."""
    intents = tmp_path_factory.mktemp("intents")
    for split, n, seed in (("train", 300, 0), ("valid", 40, 1), ("test", 60, 2)):
        lines = [json.dumps(r, ensure_ascii=False) for r in intent_rows(n, seed)]
        (intents / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # Sentiment, another dataset: "today" is good news, any other day bad.
    mood = tmp_path_factory.mktemp("mood")
    for split, n, seed in (("train", 300, 3), ("valid", 40, 4), ("test", 60, 5)):
        rows = ["text\tlabel"]
        for r in intent_rows(n, seed):
            rows.append(f"{r['text']}\t{'pos' if r['text'].startswith('今天') else 'neg'}")
        (mood / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return intents, mood


def config(encoder: Path, datasets: tuple[Path, Path], out: Path, *more: str) -> FinetuneConfig:
    intents, mood = datasets
    cfg = {
        "name": "desk",
        "out_dir": str(out),
        "init": str(encoder),
        "task": "multitask",
        "retain": 0.1,
        "heads": [
            {
                "name": "intent",
                "data": {"dataset": str(intents), "label_key": "intent", "max_length": 24},
            },
            {
                "name": "slots",
                "task": "tagging",
                "crf": True,
                "data": {"dataset": str(intents), "spans_key": "slots", "max_length": 24},
            },
            {"name": "sentiment", "data": {"dataset": str(mood), "max_length": 24}},
        ],
        "optim": {"lr": 3e-3, "warmup_steps": 5},
        "train": {
            "max_steps": 180,
            "batch_size": 16,
            "eval_every": 60,
            "save_every": 60,
            "progress": False,
            "precision": "fp32",
        },
    }
    path = out / "desk.yaml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg), encoding="utf-8")  # JSON is YAML
    return load_config(FinetuneConfig, path, list(more))


@pytest.fixture(scope="module")
def trained(encoder: Path, datasets: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    return finetune(config(encoder, datasets, tmp_path_factory.mktemp("mt-run")))


def test_every_head_learns_its_task(trained) -> None:
    report = json.loads((trained.run_dir / "report.json").read_text())
    heads = report["heads"]
    assert heads["intent"]["accuracy"] > 0.95, heads["intent"]
    assert heads["sentiment"]["accuracy"] > 0.95, heads["sentiment"]
    # The subject shares a piece with the verb in the shipped tokenizer: only split characters
    # let the tagger find it, so an F1 this high also says the split tokenizer was used.
    assert heads["slots"]["unrepresentable_spans"] == 0
    assert heads["slots"]["f1"] > 0.9, heads["slots"]
    for head in ("intent", "slots", "sentiment"):
        assert (trained.run_dir / f"{head}_test.png").is_file()
    best = report["best"]["metrics"]
    assert {"intent_macro_f1", "slots_f1", "sentiment_macro_f1", "score", "retain_cosine"} <= set(
        best
    )
    assert best["score"] == pytest.approx(
        np.mean([best["intent_macro_f1"], best["slots_f1"], best["sentiment_macro_f1"]])
    )
    assert 0.0 < best["retain_cosine"] <= 1.0


def test_checkpoint_records_every_head(trained) -> None:
    ckpt = read_checkpoint(trained.checkpoint)
    spec = ckpt.task
    assert isinstance(spec, MultiTask)
    assert list(spec.heads) == ["intent", "slots", "sentiment"]
    assert isinstance(spec.heads["intent"], Classification)
    assert spec.heads["intent"].labels == tuple(sorted(VERBS))
    assert spec.heads["intent"].pooling == "mean"
    slots = spec.heads["slots"]
    assert isinstance(slots, Tagging) and slots.crf and slots.scheme == "bio"
    assert set(slots.labels) == {"O", "B-who", "I-who", "B-what", "I-what"}
    raw = json.loads((trained.checkpoint / "task.json").read_text())
    assert parse_task(raw).to_json() == raw  # the nested format round-trips
    weights = read_weights(trained.checkpoint)
    assert {"heads.intent.weight", "heads.slots.weight", "crfs.slots.transitions"} <= set(weights)
    assert not any(k.startswith("bert.pooler.") for k in weights)


def test_one_pass_equals_each_heads_pipeline(trained) -> None:
    pipe = llmos.load(trained.checkpoint)
    texts = ["昨天农民研究经济。", "今天记者参观城市。", "现在老师保护农村。"]
    results, vectors = pipe.analyze(texts)
    intents = pipe.head("intent").classify(texts)
    moods = pipe.head("sentiment").classify(texts)
    slots = pipe.head("slots").tag(texts)
    for r, i, m, s in zip(results, intents, moods, slots, strict=True):
        assert r["intent"]["label"] == i["label"]
        assert r["intent"]["score"] == pytest.approx(i["score"], abs=1e-5)
        assert r["sentiment"]["label"] == m["label"]
        assert [(x["label"], x["start"], x["end"]) for x in r["slots"]] == [
            (x["label"], x["start"], x["end"]) for x in s
        ]
    np.testing.assert_allclose(vectors, pipe.embed(texts), atol=1e-5)
    assert [r["intent"]["label"] for r in results] == ["研究", "参观", "保护"]
    assert [r["sentiment"]["label"] for r in results] == ["neg", "pos", "neg"]
    assert [x["text"] for x in results[1]["slots"]] == ["记者", "城市"]
    # A text longer than the model's window: each head reads it in its own windows.
    long = "今天记者参观城市。" * 6
    (res,), vec = pipe.analyze([long])
    assert res["intent"]["label"] == pipe.head("intent").classify([long])[0]["label"]
    assert len(res["slots"]) == len(pipe.head("slots").tag([long])[0])
    np.testing.assert_allclose(vec, pipe.embed([long]), atol=1e-5)


def test_plain_operations_point_to_the_heads(trained) -> None:
    pipe = llmos.load(trained.checkpoint)
    with pytest.raises(LlmosError, match=r"multitask model \(heads: intent, slots, sentiment\)"):
        pipe.classify(["今天记者参观城市。"])
    with pytest.raises(LlmosError, match="no head 'mood'; this model's heads: intent"):
        pipe.head("mood")


def test_multitask_resumes_exactly(trained, tmp_path: Path) -> None:
    killed = tmp_path / "killed"
    shutil.copytree(trained.run_dir, killed)
    shutil.rmtree(killed / "checkpoints" / "step-0000180")
    shutil.rmtree(killed / "checkpoint")
    cfg = load_config(
        FinetuneConfig, trained.run_dir / "config.yaml", [f"out_dir={tmp_path}", "name=killed"]
    )
    resumed = finetune(cfg, resume=True)
    a = read_weights(trained.run_dir / "checkpoints" / "step-0000180")
    b = read_weights(resumed.run_dir / "checkpoints" / "step-0000180")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_heads_share_steps_by_weight(encoder, datasets, tmp_path: Path) -> None:
    from llmos.train.runs import load_init
    from llmos.train.tasks.multitask import setup_multitask

    cfg = config(encoder, datasets, tmp_path, "heads.0.weight=3")
    trainer = setup_multitask(cfg, load_init(cfg)).task
    drawn = [trainer.head_at(s) for s in range(2000)]
    share = drawn.count("intent") / len(drawn)
    assert abs(share - 3 / 5) < 0.04  # weights 3, 1, 1
    assert drawn == [trainer.head_at(s) for s in range(2000)]  # the same on every rank


def test_exclude_leaves_rows_out_of_every_split(encoder, datasets, tmp_path: Path) -> None:
    from llmos.train.runs import load_init
    from llmos.train.tasks.multitask import setup_multitask

    cfg = config(encoder, datasets, tmp_path)
    cfg.heads[0].exclude = {"intent": ["保护"]}
    setup = setup_multitask(cfg, load_init(cfg))
    assert setup.meta["heads"]["intent"]["labels"] == ["参观", "研究"]
    kept = tmp_path / "desk" / "data" / "intent"
    for split in ("train", "valid", "test"):
        rows = [json.loads(x) for x in (kept / f"{split}.jsonl").read_text().splitlines()]
        assert rows and all(r["intent"] != "保护" for r in rows)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["heads.0.name=bad name"], "heads\\[\\].name must be an identifier"),
        (["heads.1.name=intent"], "heads: names must differ"),
        (["heads.0.crf=true"], "heads\\[intent\\].crf needs task: tagging"),
        (["heads.0.weight=0"], "heads\\[intent\\].weight must be > 0"),
        (["heads.0.data.text_prefix='query: '"], "every head of a multi-task model reads"),
        (["heads.0.data.char_tags=true"], "heads\\[intent\\].data.char_tags is for task: tagging"),
        (["task=classification"], "heads are for task: multitask"),
    ],
)
def test_config_errors_name_the_field(encoder, datasets, tmp_path, change, message) -> None:
    with pytest.raises(ConfigError, match=message):
        config(encoder, datasets, tmp_path, *change)


def test_task_json_errors_name_the_head() -> None:
    bad = {"task": "multitask", "heads": {"intent": {"task": "embedding"}}}
    with pytest.raises(CheckpointError, match=r"heads\.intent\.task' must be 'classification'"):
        parse_task(bad, "x/task.json")
    cls = {"task": "classification", "labels": ["a", "b"]}  # pooling cls: not a multitask head
    with pytest.raises(CheckpointError, match="a classifier reading the mean"):
        parse_task({"task": "multitask", "heads": {"intent": cls}}, "x/task.json")
    with pytest.raises(CheckpointError, match="field 'heads' must be a non-empty mapping"):
        parse_task({"task": "multitask", "heads": {}}, "x/task.json")
