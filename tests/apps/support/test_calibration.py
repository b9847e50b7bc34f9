"""A knowledge base's own BM25 weight (``KbIndex.calibrate``): the leave-one-out MRR it
measures equals one computed outside the index (numpy cosine, a separate bm25s index, the
fusion formula written out), and on two bases built to have a known answer it picks the
known weight: words that point to the wrong entry -> 0, an encoder that knows nothing -> the
largest weight. Also: too few wordings keep the default, a fixed weight is never changed,
the weight survives save/load, and the base is measured again once it has grown."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import pytest

from llmos.apps.support.index import (
    BM25_WEIGHT,
    CALIBRATION_WEIGHTS,
    MIN_CALIBRATION,
    RRF_K,
    SIGNIFICANCE,
    KbIndex,
)
from llmos.apps.support.local import PipelineEmbedder
from llmos.store.kb import KbSnapshot
from llmos.store.models import KbEntry
from llmos.text.words import words

SUBJECTS = ["老师", "学生", "公司", "农民", "记者", "医生", "工人", "司机"]
VERBS = ["讨论", "学习", "发展", "保护", "介绍", "研究"]
OBJECTS = ["经济", "历史", "市场", "环境", "艺术", "科学", "文化"]


def entry(i: int, wordings: list[str], answer: str = "") -> KbEntry:
    return KbEntry(id=i, question=wordings[0], answer=answer, alternatives=wordings[1:], tags=[])


def snapshot(entries: list[KbEntry], revision: int = 1) -> KbSnapshot:
    return KbSnapshot(0, "faq", revision, entries)


def sentence_base(n: int, per_entry: int = 3) -> list[KbEntry]:
    """``n`` entries of ``per_entry`` Chinese wordings built from overlapping words."""
    combos = list(itertools.product(SUBJECTS, VERBS, OBJECTS))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(combos))
    out = []
    for i in range(n):
        picked = [combos[j] for j in order[i * per_entry : (i + 1) * per_entry]]
        out.append(entry(i, ["".join(c) for c in picked], answer=f"答案{i}"))
    return out


@pytest.fixture(scope="module")
def embedder(tiny_encoder: Path) -> PipelineEmbedder:
    return PipelineEmbedder(tiny_encoder)


def reference_rr(entries: list[KbEntry], embed: Any) -> dict[float, np.ndarray]:
    """Leave-one-out reciprocal ranks per weight, computed without the index (every wording
    asked: each entry has an answer, and the base is below MAX_CALIBRATION)."""
    rows = []  # (entry, text, kind)
    for e in entries:
        for t in [e.question, *e.alternatives]:
            rows.append((e.id, t, "query"))
        rows.append((e.id, e.answer, "passage"))
    vec = {}
    for kind in ("query", "passage"):
        idx = [i for i, r in enumerate(rows) if r[2] == kind]
        v = embed([rows[i][1] for i in idx], kind)
        for i, x in zip(idx, v, strict=True):
            vec[i] = x / np.linalg.norm(x)
    bm25 = bm25s.BM25()
    bm25.index([list(words(r[1])) for r in rows], show_progress=False)
    vocab = bm25.vocab_dict
    asked = [i for i, r in enumerate(rows) if r[2] == "query"]
    rr: dict[float, list[float]] = {w: [] for w in CALIBRATION_WEIGHTS}
    for q in asked:
        cos = {i: float(vec[q] @ vec[i]) for i in range(len(rows)) if i != q}
        tokens = [w for w in words(rows[q][1]) if w in vocab]
        lex = bm25.get_scores(tokens) if tokens else np.zeros(len(rows))
        lexical = {i: float(lex[i]) for i in range(len(rows)) if i != q and lex[i] > 0}

        def ranks(scores: dict[int, float]) -> dict[int, int]:
            best: dict[int, float] = {}
            for i, s in scores.items():
                best[rows[i][0]] = max(best.get(rows[i][0], -np.inf), s)
            order = sorted(best, key=lambda e: (-best[e], e))
            return {e: k + 1 for k, e in enumerate(order)}

        dense_rank, bm25_rank = ranks(cos), ranks(lexical)
        for w in CALIBRATION_WEIGHTS:
            fused = {e: 1 / (RRF_K + r) for e, r in dense_rank.items()}
            for e, r in bm25_rank.items():
                fused[e] = fused.get(e, 0.0) + w / (RRF_K + r)
            order = sorted(fused, key=lambda e: (-fused[e], e))
            rr[w].append(1 / (order.index(rows[q][0]) + 1))
    return {w: np.asarray(v) for w, v in rr.items()}


def reference_mrr(entries: list[KbEntry], embed: Any) -> dict[float, float]:
    return {w: float(v.mean()) for w, v in reference_rr(entries, embed).items()}


@pytest.mark.parametrize(
    ("n", "per_entry"),
    [(14, 3), (36, 1)],
    ids=["three wordings an entry", "a question and its answer"],
)
def test_the_measured_mrr_equals_one_computed_outside_the_index(
    embedder: PipelineEmbedder, n: int, per_entry: int
) -> None:
    entries = sentence_base(n, per_entry)
    index = KbIndex(embedder.name)
    index.sync(snapshot(entries), embedder)
    c = index.calibration
    assert c is not None and c["wordings"] == c["asked"] == n * per_entry
    rr = reference_rr(entries, embedder)
    got = {float(w): v for w, v in c["mrr"].items()}
    assert got == pytest.approx({w: v.mean() for w, v in rr.items()}, abs=1e-5)
    # the rule: the best of the weights whose paired gain over the default is significant
    better = []
    for w, v in rr.items():
        gain = v - rr[BM25_WEIGHT]
        if gain.mean() > SIGNIFICANCE * gain.std(ddof=1) / np.sqrt(len(gain)):
            better.append(w)
    expected = max(better, key=lambda w: rr[w].mean()) if better else BM25_WEIGHT
    assert index.bm25_weight == expected == c["weight"]


class KnowsEntries:
    """An encoder built for the test: every wording of entry ``i`` gets (nearly) the entry's
    own direction, so dense search alone is always right."""

    name = "knows-entries"

    def __init__(self, owner: dict[str, int], dim: int = 64) -> None:
        rng = np.random.default_rng(1)
        self.owner, self.dirs = owner, rng.standard_normal((max(owner.values()) + 1, dim))
        self.rng = rng

    def __call__(self, texts: list[str], kind: str) -> np.ndarray:
        v = np.stack([self.dirs[self.owner[t]] for t in texts])
        v = v + 0.05 * self.rng.standard_normal(v.shape)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


class KnowsNothing:
    """An encoder whose vectors are noise."""

    name = "noise"

    def __init__(self) -> None:
        self.rng = np.random.default_rng(2)

    def __call__(self, texts: list[str], kind: str) -> np.ndarray:
        v = self.rng.standard_normal((len(texts), 32))
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_words_that_mislead_get_no_weight() -> None:
    # Entry i's wordings share no word with each other, and each shares its one word with
    # entry i+1's answer: BM25 always prefers the wrong entry; the encoder is always right.
    n = 12
    entries, owner = [], {}
    for i in range(n):
        wordings = [f"token{3 * i + k}" for k in range(3)]
        prev = [f"token{3 * ((i - 1) % n) + k}" for k in range(3)]
        entries.append(entry(i, wordings, answer=" ".join(prev)))
        owner.update({t: i for t in wordings})
        owner[" ".join(prev)] = i
    embed = KnowsEntries(owner)
    index = KbIndex(embed.name)
    index.sync(snapshot(entries), embed)
    mrr = index.calibration["mrr"]
    assert mrr["0.0"] == pytest.approx(1.0)
    assert mrr["2.0"] < 0.9
    assert index.bm25_weight == 0.0


def test_an_encoder_that_knows_nothing_leaves_it_to_the_words() -> None:
    # Each entry's two wordings and answer share a word of their own, and nothing else is
    # shared; the vectors are noise. At weight 2 the entry's BM25 rank 1 (2/61) beats any
    # other entry (1/61 at best, from the dense side alone); at 0.5 it loses whenever its
    # dense rank is 62 or worse (of 80), at 1 it ties when it has no dense rank at all.
    entries = [
        entry(i, [f"topic{i} filler{2 * i}", f"topic{i} filler{2 * i + 1}"], f"topic{i} end{i}")
        for i in range(80)
    ]
    index = KbIndex("noise")
    index.sync(snapshot(entries), KnowsNothing())
    mrr = index.calibration["mrr"]
    assert mrr["2.0"] == pytest.approx(1.0)
    assert mrr["0.0"] < 0.3 and mrr["0.5"] < 1.0
    assert index.bm25_weight >= 1.0 and mrr[str(index.bm25_weight)] == pytest.approx(1.0)


def test_weights_that_score_alike_keep_the_default() -> None:
    # Every entry's wordings share a word of their own, and the encoder knows the entries
    # too: every weight finds every entry, so none is better than the default.
    entries, owner = [], {}
    for i in range(15):
        wordings = [f"topic{i} filler{2 * i}", f"topic{i} filler{2 * i + 1}"]
        entries.append(entry(i, wordings, f"topic{i} end{i}"))
        owner.update({t: i for t in [*wordings, f"topic{i} end{i}"]})
    embed = KnowsEntries(owner)
    index = KbIndex(embed.name)
    index.sync(snapshot(entries), embed)
    assert set(index.calibration["mrr"].values()) == {1.0}
    assert index.bm25_weight == BM25_WEIGHT


def test_small_bases_keep_the_default_and_fixed_weights_stay(
    embedder: PipelineEmbedder,
) -> None:
    few = sentence_base(MIN_CALIBRATION // 3 - 1)  # below MIN_CALIBRATION wordings
    index = KbIndex(embedder.name)
    index.sync(snapshot(few), embedder)
    assert index.calibration is None and index.bm25_weight == BM25_WEIGHT
    # an entry with one wording and no answer cannot be asked (nothing else would find it)
    singles = [entry(i, [e.question]) for i, e in enumerate(sentence_base(40, 1))]
    index = KbIndex(embedder.name)
    index.sync(snapshot(singles), embedder)
    assert index.calibration is None and index.bm25_weight == BM25_WEIGHT

    fixed = KbIndex(embedder.name, bm25_weight=1.5)
    fixed.sync(snapshot(sentence_base(14)), embedder)
    assert fixed.calibration is None and fixed.bm25_weight == 1.5


def test_the_weight_survives_a_restart_and_is_measured_again_as_the_base_grows(
    tmp_path: Path, embedder: PipelineEmbedder
) -> None:
    entries = sentence_base(14)
    index = KbIndex(embedder.name)
    index.sync(snapshot(entries), embedder)
    index.bm25_weight = 2.0  # as if the base had chosen it: load must give it back
    index.calibration = {**index.calibration, "weight": 2.0}
    index.save(tmp_path / "kb")
    back = KbIndex.load(tmp_path / "kb")
    assert back.bm25_weight == 2.0 and back.calibration == index.calibration

    # one more entry (3 of 42 wordings, under 10 %): not measured again
    back.sync(snapshot(sentence_base(15), 2), embedder)
    assert back.calibration["wordings"] == 42 and back.bm25_weight == 2.0
    # two more (6 more wordings): measured again, on the whole base
    back.sync(snapshot(sentence_base(16), 3), embedder)
    assert back.calibration["wordings"] == 48
    assert back.calibration["mrr"] == pytest.approx(
        {str(w): v for w, v in reference_mrr(sentence_base(16), embedder).items()}, abs=1e-5
    )

    # an index saved before bases chose their weight: chosen as it loads
    meta = json.loads((tmp_path / "kb" / "meta.json").read_text())
    for key in ("bm25_weight", "fixed_weight", "calibration"):
        del meta[key]
    (tmp_path / "kb" / "meta.json").write_text(json.dumps(meta))
    old = KbIndex.load(tmp_path / "kb")
    assert old.calibration is not None and old.calibration["wordings"] == 42
    assert old.calibration["mrr"] == pytest.approx(
        {str(w): v for w, v in reference_mrr(entries, embedder).items()}, abs=1e-5
    )

    fixed = KbIndex(embedder.name, bm25_weight=0.25)
    fixed.sync(snapshot(entries), embedder)
    fixed.save(tmp_path / "fixed")
    again = KbIndex.load(tmp_path / "fixed")
    assert again.fixed_weight and again.bm25_weight == 0.25 and again.calibration is None
