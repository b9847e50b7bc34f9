"""PET and iPET on a random-init masked LM: the few-shot loss against a hand computation from
the model's own MLM logits at the mask, the few-shot step learning its examples, the
distilled classifier's reported agreement against the ensemble recomputed from the run's pool
scores, iPET's growing, balanced, confidence-drawn training sets, determinism and resume, the
CLI, and clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from inference.test_zeroshot import tiny_e5

import llmos
from llmos.checkpoint.io import read_checkpoint, read_weights, save_checkpoint
from llmos.checkpoint.task import Classification, Embedding
from llmos.cli import main
from llmos.config.model import BertConfig
from llmos.config.pet import PetConfig
from llmos.errors import ConfigError, DataError, LlmosError
from llmos.inference import cloze
from llmos.models.bert import BertForPreTraining
from llmos.text.tokenizer import load_tokenizer
from llmos.train.pet import train_pet
from llmos.train.tasks.pet import ClozeBatches, pseudo_labelled

EXAMPLES = {
    "study": ["今天我们学习经济", "现在学生研究历史", "老师学习"],
    "city": ["去年老师参观城市", "the city is big", "公司一直发展技术"],
}
POOL = ["昨天工人保护环境", "我们喜欢音乐", "students read books", "城市很大", "学习历史"]
PATTERNS = ["{text}，总之很[MASK]。", "[MASK]：{text}"]
VERBALIZERS = {"study": ["学"], "city": ["市", "城"]}
FAST = PetConfig(steps=6, batch_size=4, lr=1e-3, distill_steps=4, distill_batch=4, progress=False)


@pytest.fixture(scope="module")
def ckpts(tiny_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("pet")
    found = tiny_e5(tiny_tokenizer, out)  # a random-init encoder with an MLM head, and a GPT
    cfg = read_checkpoint(found["e5"]).config
    sizes = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32}
    bare = BertConfig(vocab_size=cfg.vocab_size, max_position=64, heads="none", **sizes)
    tok = load_tokenizer(tiny_tokenizer)
    spec = Embedding(query_prefix="query: ", passage_prefix="passage: ")
    found["bare"] = save_checkpoint(out / "bare", BertForPreTraining(bare), bare, tok, spec)
    run = out / "run"
    found["trained"] = train_pet(
        found["e5"], EXAMPLES, POOL, PATTERNS, VERBALIZERS, out / "trained", FAST, run_dir=run
    ).checkpoint
    found["run"] = run
    return found


def encode(ckpt: Path, pattern: str, texts: list[str]) -> tuple[list[np.ndarray], list[int]]:
    c = read_checkpoint(ckpt)
    mask = c.tokenizer.token_to_id("[MASK]")
    filled = [cloze.fill(pattern, t, "[MASK]") for t in texts]
    inputs, positions, _ = cloze.encode_cloze(c.tokenizer, filled, mask, 64)
    return inputs, positions


def test_few_shot_loss_is_the_cross_entropy_of_the_verbalizers_softmax(ckpts) -> None:
    c = read_checkpoint(ckpts["e5"])
    model = BertForPreTraining(c.config)
    model.load_state_dict(c.weights())
    model.eval()
    texts = [t for ts in EXAMPLES.values() for t in ts]
    y = np.array([0, 0, 0, 1, 1, 1])
    inputs, positions = encode(ckpts["e5"], PATTERNS[0], texts)
    piece = {w: c.tokenizer.encode(w, add_special_tokens=False).ids[0] for w in "学市城"}
    pieces, owner = [piece["学"], piece["市"], piece["城"]], [0, 1, 1]
    task = ClozeBatches(inputs, positions, y, pieces, owner, 5, seed=0, pad_id=0)
    batches = task.batches(0)
    totals = [sum(task.counts(b)[0] for b in batches)]
    assert [len(b["labels"]) for b in batches] == [4, 1]  # sorted by length, groups of 4
    got = [task.loss(model, b, totals) for b in batches]
    loss = sum(float(x.detach()) for x, _ in got)

    # By hand: each text alone, its MLM logits at the mask; a label's score is the log of
    # the mean probability of its pieces; the loss is the mean cross-entropy over labels.
    chosen = np.random.default_rng([0, 0]).choice(6, size=5, replace=False)
    assert sorted(chosen.tolist()) == sorted(i for b in batches for i in b["rows"].tolist())
    want = []
    for i in chosen:
        with torch.no_grad():
            at = torch.tensor([positions[i]])
            out = model(torch.from_numpy(inputs[i])[None], mlm_positions=at)
        logp = out.mlm_logits[0].double().log_softmax(-1)
        study = logp[piece["学"]]
        city = torch.logsumexp(logp[[piece["市"], piece["城"]]], 0) - np.log(2)
        scores = torch.stack([study, city])
        want.append(float(-(scores - torch.logsumexp(scores, 0))[y[i]]))
    assert loss == pytest.approx(np.mean(want), rel=1e-5)
    assert sum(logs["loss"] for _, logs in got) == pytest.approx(np.mean(want), rel=1e-5)
    lengths = [len(inputs[i]) for b in batches for i in b["rows"].tolist()]
    assert lengths == sorted(lengths)


def test_few_shot_step_learns_its_examples(ckpts, tmp_path: Path) -> None:
    # Untrained, the random head scores every example near 50/50; after 30 steps at a high
    # rate every training example is scored right by the run's own pool scores (the examples
    # are the pool here).
    texts = [t for ts in EXAMPLES.values() for t in ts]
    cfg = PetConfig(steps=30, batch_size=6, lr=1e-2, distill_steps=0, progress=False)
    run = tmp_path / "run"
    train_pet(
        ckpts["e5"], EXAMPLES, texts, PATTERNS[:1], VERBALIZERS, tmp_path / "o", cfg, run_dir=run
    )
    scores = np.load(run / "g0-p0-r0" / "pool.npy")
    assert scores.shape == (6, 2)
    np.testing.assert_allclose(np.exp(scores).sum(1), 1.0, atol=1e-5)  # log-probabilities
    assert scores.argmax(1).tolist() == [0, 0, 0, 1, 1, 1]
    metrics = [json.loads(x) for x in (run / "g0-p0-r0" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    # Once its pool is scored, a model's weights are gone from the run; its curve stays.
    assert not (run / "g0-p0-r0" / "checkpoint").exists()
    assert (run / "g0-p0-r0" / "loss.png").is_file()


def test_classifier_reports_its_agreement_with_the_ensemble(ckpts) -> None:
    spec = read_checkpoint(ckpts["trained"]).task
    assert isinstance(spec, Classification)
    assert spec.labels == ("study", "city") and spec.text_prefix == "query: "
    meta = json.loads((ckpts["trained"] / "task.json").read_text())["pet"]
    assert meta["models"] == 2 and meta["unlabelled"] == len(POOL)
    # The ensemble: the mean of the two models' label log-probabilities of the pool.
    runs = [ckpts["run"] / f"g0-p{p}-r0" / "pool.npy" for p in range(2)]
    ensemble = np.mean([np.load(r) for r in runs], axis=0)
    got = [r["label"] for r in llmos.load(ckpts["trained"]).classify(POOL)]
    labels = np.array(spec.labels)[ensemble.argmax(1)]
    assert meta["pool_agreement"] == pytest.approx(np.mean(labels == np.array(got)))


def test_pseudo_labels_are_balanced_confident_and_seeded() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 3)) * 3
    scores = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    rows, labels = pseudo_labelled(scores, np.array([10, 5, 0]), seed=1)
    assert np.bincount(labels, minlength=3).tolist() == [10, 5, 0]
    assert (scores[rows].argmax(1) == labels).all()  # each row is what the ensemble says
    assert len(set(rows.tolist())) == 15
    again = pseudo_labelled(scores, np.array([10, 5, 0]), seed=1)
    assert rows.tolist() == again[0].tolist()
    # Confidence-weighted: over many draws, the chosen rows are surer than the label's rows.
    mine = np.flatnonzero(scores.argmax(1) == 0)
    picked = np.concatenate(
        [pseudo_labelled(scores, np.array([10, 0, 0]), s)[0] for s in range(50)]
    )
    assert scores[picked, 0].mean() > scores[mine, 0].mean()
    # Fewer rows than asked: all of them.
    few = pseudo_labelled(scores, np.array([1000, 0, 0]), seed=1)[0]
    assert sorted(few.tolist()) == sorted(mine.tolist())


def test_ipet_grows_each_generation_from_the_others(ckpts, tmp_path: Path) -> None:
    cfg = PetConfig(
        steps=2, batch_size=4, lr=1e-3, generations=2, growth=1.5, distill_steps=1, progress=False
    )
    pool = POOL * 4  # repeated texts count once
    run = tmp_path / "run"
    train_pet(ckpts["e5"], EXAMPLES, pool, PATTERNS, VERBALIZERS, tmp_path / "o", cfg, run_dir=run)
    for gen, total in ((0, 6), (1, 9), (2, 14)):  # 6 labelled x 1.5^g, rounded per label
        for p in range(2):
            got = json.loads((run / f"g{gen}-p{p}-r0" / "examples.json").read_text())
            assert sum(got["per_label"].values()) <= total
            assert got["pseudo_labelled"] == sum(got["per_label"].values()) - 6
            if gen == 0:
                assert got["per_label"] == {"study": 3, "city": 3}
    # Generation 1's model 0 learned from pool texts that model 1 of generation 0 labelled.
    g1 = json.loads((run / "g1-p0-r0" / "examples.json").read_text())
    assert g1["pseudo_labelled"] > 0


def test_same_seed_same_classifier_and_resume(ckpts, tmp_path: Path) -> None:
    again = train_pet(ckpts["e5"], EXAMPLES, POOL, PATTERNS, VERBALIZERS, tmp_path / "a", FAST)
    a, b = read_weights(ckpts["trained"]), read_weights(again.checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Cut off during the second model and during the final classifier: the second model
    # starts again (its scores were never written), the classifier resumes from its step.
    run = tmp_path / "run"
    shutil.copytree(ckpts["run"], run)
    (run / "g0-p1-r0" / "pool.npy").unlink()
    steps = sorted((run / "distill" / "checkpoints").iterdir())
    assert steps
    shutil.rmtree(run / "distill" / "checkpoint")
    with pytest.raises(ConfigError, match="not empty"):
        train_pet(
            ckpts["e5"], EXAMPLES, POOL, PATTERNS, VERBALIZERS, tmp_path / "r", FAST, run_dir=run
        )
    resumed = train_pet(
        ckpts["e5"],
        EXAMPLES,
        POOL,
        PATTERNS,
        VERBALIZERS,
        tmp_path / "r",
        FAST,
        run_dir=run,
        resume=True,
    )
    c = read_weights(resumed.checkpoint)
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_cli_trains_the_same_classifier(ckpts, tmp_path: Path, capsys) -> None:
    examples = tmp_path / "few.jsonl"
    rows = [{"text": t, "label": lab} for lab, ts in EXAMPLES.items() for t in ts]
    examples.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), "utf-8")
    pool = tmp_path / "pool.txt"
    pool.write_text("\n".join(POOL) + "\n", "utf-8")
    out = tmp_path / "clf"
    args = ["pet", str(ckpts["e5"]), "--examples", str(examples), "--unlabelled", str(pool)]
    args += ["--pattern", PATTERNS[0], "--pattern", PATTERNS[1], "--verbalizer", "study=学"]
    args += ["--verbalizer", "city=市", "--verbalizer", "city=城", "--out", str(out)]
    args += ["--steps", "6", "--lr", "1e-3", "--distill-steps", "4"]
    cfg = PetConfig(steps=6, lr=1e-3, distill_steps=4, progress=False)
    want = train_pet(ckpts["e5"], EXAMPLES, POOL, PATTERNS, VERBALIZERS, tmp_path / "api", cfg)
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"classifier: {out}" in printed and "models: 2" in printed
    a, b = read_weights(want.checkpoint), read_weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert main([*args[:-6], "--pattern", "no slot"]) == 2  # a bad pattern: a clear error
    assert main([*args, "--resume"]) == 2  # --resume without --run-dir


def test_mistakes_are_refused(ckpts, tmp_path: Path) -> None:
    out = tmp_path / "x"
    with pytest.raises(ConfigError, match="no masked-LM head"):
        train_pet(ckpts["bare"], EXAMPLES, POOL, PATTERNS, VERBALIZERS, out, FAST)
    with pytest.raises(ConfigError, match="masked LM"):
        train_pet(ckpts["gpt"], EXAMPLES, POOL, PATTERNS, VERBALIZERS, out, FAST)
    with pytest.raises(DataError, match="no verbalizer for \\['city'\\]"):
        train_pet(ckpts["e5"], EXAMPLES, POOL, PATTERNS, {"study": ["学"]}, out, FAST)
    with pytest.raises(LlmosError, match="not one token"):
        train_pet(
            ckpts["e5"],
            EXAMPLES,
            POOL,
            PATTERNS,
            {"study": ["the city"], "city": ["市"]},
            out,
            FAST,
        )
    with pytest.raises(DataError, match="unlabelled"):
        train_pet(ckpts["e5"], EXAMPLES, ["  "], PATTERNS, VERBALIZERS, out, FAST)
    with pytest.raises(LlmosError, match="exactly once"):
        train_pet(ckpts["e5"], EXAMPLES, POOL, ["{text}"], VERBALIZERS, out, FAST)
    with pytest.raises(DataError, match="at least 2 labels"):
        train_pet(ckpts["e5"], {"study": ["a"]}, POOL, PATTERNS, VERBALIZERS, out, FAST)
    with pytest.raises(ConfigError, match="growth"):
        PetConfig(growth=0.5)


def test_the_schedule_follows_the_number_of_labels_unless_given(ckpts, tmp_path: Path) -> None:
    two, many = PetConfig().for_labels(2), PetConfig().for_labels(40)
    assert (two.steps, two.distill_steps, two.distill_lr) == (100, 200, 2e-5)
    assert (many.steps, many.distill_steps, many.distill_lr) == (300, 500, 1e-4)
    mine = PetConfig(steps=7, distill_lr=3e-3).for_labels(40)
    assert (mine.steps, mine.distill_steps, mine.distill_lr) == (7, 500, 3e-3)
    # A run records the schedule it resolved: two labels here, the steps given, the rest not.
    cfg = PetConfig(steps=2, distill_steps=1, progress=False)
    run = train_pet(ckpts["e5"], EXAMPLES, POOL, PATTERNS[:1], VERBALIZERS, tmp_path / "o", cfg)
    meta = json.loads((run.checkpoint / "task.json").read_text())["pet"]
    assert (meta["steps"], meta["distill_steps"], meta["distill_lr"]) == (2, 1, 2e-5)
    with pytest.raises(ConfigError, match="distill_lr must be positive"):
        PetConfig(distill_lr=0.0)
