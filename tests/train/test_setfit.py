"""SetFit-style few-shot classifiers on a random-init E5-like encoder: the pair loss against a
hand computation over explicit pairs, the checkpoint's probabilities against a logistic
regression fitted by hand on the tuned encoder's vectors, determinism and resume, the CLI, and
clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from inference.test_zeroshot import tiny_e5
from sklearn.linear_model import LogisticRegression

import llmos
from llmos.checkpoint.io import read_checkpoint, read_weights, save_checkpoint
from llmos.checkpoint.task import Classification
from llmos.cli import main
from llmos.errors import ConfigError, DataError
from llmos.models.bert import BertForSequenceClassification
from llmos.text.tokenizer import load_tokenizer
from llmos.train.setfit import PairBatches, SetFitConfig, linear_weights, train_setfit

EXAMPLES = {
    "study": ["今天我们学习经济。", "现在学生研究历史。", "students read books", "老师学习"],
    "city": ["去年老师参观城市。", "the city is big", "公司一直发展技术。"],
    "music": ["we like music", "我们喜欢音乐"],
}
TEXTS = ["昨天工人保护环境。", "the city is big", "我们喜欢音乐", "students"]
FAST = SetFitConfig(steps=4, labels_per_batch=3, per_label=3, lr=1e-3, progress=False)


@pytest.fixture(scope="module")
def ckpts(tiny_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("setfit")
    found = tiny_e5(tiny_tokenizer, out)  # a random-init encoder with E5's prefixes, and a GPT
    cfg = read_checkpoint(found["e5"]).config
    clf = BertForSequenceClassification(cfg, 2, pooling="mean")
    tok = load_tokenizer(tiny_tokenizer)
    return {
        **found,
        "classifier": save_checkpoint(out / "clf", clf, cfg, tok, Classification(("a", "b"))),
        "trained": train_setfit(found["e5"], EXAMPLES, out / "trained", FAST).checkpoint,
    }


def test_pair_loss_is_the_cosine_error_over_every_distinct_pair(ckpts: dict[str, Path]) -> None:
    model = BertForSequenceClassification(read_checkpoint(ckpts["e5"]).config, 3, pooling="mean")
    model.eval()  # no dropout: the same vectors both ways
    tok = read_checkpoint(ckpts["e5"]).tokenizer
    texts = [t for ts in EXAMPLES.values() for t in ts]
    labels = np.array([i for i, ts in enumerate(EXAMPLES.values()) for _ in ts])
    ids = [np.asarray(tok.encode(t).ids) for t in texts]
    cfg = SetFitConfig(labels_per_batch=3, per_label=3)  # "music" has 2: drawn with replacement
    task = PairBatches(ids, labels, cfg, pad_id=0)
    batch = task.batch(0)
    assert len(batch["labels"]) == 9
    total = task.counts(batch)[0]
    loss, _ = task.loss(model, batch, [total])

    # By hand: each example alone through the encoder, its mean vector, every pair i < j of
    # distinct examples, (cosine - same label)^2, averaged.
    with torch.no_grad():
        vecs = [model.bert(torch.from_numpy(ids[i])[None]).mean(1)[0] for i in batch["example"]]
    errs = []
    ex, lab = batch["example"].tolist(), batch["labels"].tolist()
    for i in range(9):
        for j in range(i + 1, 9):
            if ex[i] != ex[j]:
                cos = torch.nn.functional.cosine_similarity(vecs[i], vecs[j], dim=0)
                errs.append((float(cos) - float(lab[i] == lab[j])) ** 2)
    assert total == len(errs) > 0
    assert float(loss.detach()) == pytest.approx(sum(errs) / len(errs), rel=1e-4)


def test_batches_depend_on_seed_and_step_only(ckpts: dict[str, Path]) -> None:
    ids = [np.array([1, 2, 3])] * 9
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    a = PairBatches(ids, labels, SetFitConfig(labels_per_batch=2, per_label=2), 0)
    b = PairBatches(ids, labels, SetFitConfig(labels_per_batch=2, per_label=2), 0)
    steps_a = a.steps(type("Info", (), {"world": 1})(), 4)
    firsts = [next(steps_a)[0]["example"].tolist() for _ in range(3)]
    b.load_state({"step": 2})
    assert next(b.steps(type("Info", (), {"world": 1})(), 4))[0]["example"].tolist() == firsts[2]
    assert a.state() == {"step": 3}
    # Each batch holds two examples of each of its two labels.
    for got in firsts:
        assert sorted(np.bincount(labels[got], minlength=3).tolist()) == [0, 2, 2]


def test_checkpoint_is_the_logistic_regression_on_the_tuned_vectors(
    ckpts: dict[str, Path],
) -> None:
    ckpt = read_checkpoint(ckpts["trained"])
    spec = ckpt.task
    assert isinstance(spec, Classification)
    assert spec.labels == tuple(EXAMPLES) and spec.pooling == "mean"
    assert spec.text_prefix == "query: "
    # The encoder moved away from the one it started from.
    before, after = read_weights(ckpts["e5"]), read_weights(ckpts["trained"])
    key = "bert.layers.0.attn.qkv.weight"
    assert not torch.equal(before[key], after[key])

    pipe = llmos.load(ckpts["trained"])
    texts = [t for ts in EXAMPLES.values() for t in ts]
    y = [lab for lab, ts in EXAMPLES.items() for _ in ts]
    vecs = pipe.embed(["query: " + t for t in texts], pooling="mean", normalize=False)
    scale = np.linalg.norm(vecs, axis=1).mean()
    head = LogisticRegression(C=FAST.C, max_iter=2000).fit(vecs / scale, y)
    new = pipe.embed(["query: " + t for t in TEXTS], pooling="mean", normalize=False)
    want = head.predict_proba(new / scale)
    got = pipe.classify(TEXTS)
    for row, probs in zip(got, want, strict=True):
        for label, p in zip(head.classes_, probs, strict=True):
            assert row["scores"][label] == pytest.approx(p, abs=1e-4)


def test_binary_head_gives_the_regressions_probabilities() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 4))
    y = (x[:, 0] > 0).astype(int)
    head = LogisticRegression().fit(x, y)
    w, b = linear_weights(head, 2)
    logits = x @ w.T + b
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(probs, head.predict_proba(x), atol=1e-5)


def test_same_seed_same_classifier_and_resume(ckpts: dict[str, Path], tmp_path: Path) -> None:
    again = train_setfit(ckpts["e5"], EXAMPLES, tmp_path / "again", FAST).checkpoint
    a, b = read_weights(ckpts["trained"]), read_weights(again)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # A run kept in run_dir and resumed from its step checkpoint ends where one run does.
    run = tmp_path / "run"
    half = SetFitConfig(steps=4, labels_per_batch=3, per_label=3, lr=1e-3, progress=False)
    train_setfit(ckpts["e5"], EXAMPLES, tmp_path / "first", half, run_dir=run)
    ckpt_dirs = sorted((run / "checkpoints").iterdir())
    assert ckpt_dirs, "the loop kept step checkpoints"
    for d in ckpt_dirs[1:]:  # as if it had been cut off after its first saved step
        import shutil

        shutil.rmtree(d)
    resumed = train_setfit(
        ckpts["e5"], EXAMPLES, tmp_path / "resumed", half, run_dir=run, resume=True
    )
    c = read_weights(resumed.checkpoint)
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_cli_trains_a_classifier_that_predict_reads(
    ckpts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    examples = tmp_path / "few.jsonl"
    rows = [{"text": t, "label": lab} for lab, ts in EXAMPLES.items() for t in ts]
    examples.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), "utf-8")
    out = tmp_path / "clf"
    args = ["setfit", str(ckpts["e5"]), "--examples", str(examples), "--out", str(out)]
    args += ["--steps", "4", "--labels-per-batch", "3", "--per-label", "3", "--lr", "1e-3"]
    assert main(args) == 0
    assert f"classifier: {out}" in capsys.readouterr().out
    a, b = read_weights(ckpts["trained"]), read_weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the API's run, the same defaults and seed


@pytest.mark.parametrize(
    ("examples", "match"),
    [
        ({"only": ["a", "b"]}, "at least 2 labels"),
        ({"a": ["x"], "b": []}, "label 'b'"),
        ({"a": ["x"], "b": "not a list"}, "label 'b'"),
        ({"a": ["x"], "b": ["  "]}, "label 'b'"),
    ],
)
def test_bad_examples_are_refused(
    ckpts: dict[str, Path], tmp_path: Path, examples: dict, match: str
) -> None:
    with pytest.raises(DataError, match=match):
        train_setfit(ckpts["e5"], examples, tmp_path / "x", FAST)


def test_bad_checkpoints_and_settings_are_refused(ckpts: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GPT"):
        train_setfit(ckpts["gpt"], EXAMPLES, tmp_path / "x", FAST)
    with pytest.raises(ConfigError, match="classification"):
        train_setfit(ckpts["classifier"], EXAMPLES, tmp_path / "x", FAST)
    with pytest.raises(ConfigError, match="per_label"):
        SetFitConfig(per_label=1)
    with pytest.raises(ConfigError, match="steps"):
        SetFitConfig(steps=0)


def test_cli_mistakes_exit_2(ckpts: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n', "utf-8")
    args = ["setfit", str(ckpts["e5"]), "--examples", str(bad), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert main([*args[:-2], "--out", str(tmp_path / "o"), "--resume"]) == 2
