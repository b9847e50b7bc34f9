"""Decoding spelling corrections with an n-gram LM and a spelling model's evidence
(llmos.inference.csc_lm), on the classic corrector's generated corpus: the score of an edit is
the LM's log-probability gain plus the weighted evidence, exactly; evidence can make an edit the
LM alone would not, and veto one it would; the fit's one-run-per-sentence sweep equals decoding
at each threshold of the grid."""

from __future__ import annotations

import random

import numpy as np
import pytest
from apps.write.test_classic import confusions, corpus

from llmos.checkpoint.task import SpellingLM
from llmos.inference.correct import apply_corrections
from llmos.inference.csc_lm import (
    decode_many,
    fit_decoding,
    greedy_substitutions,
    lm_corrections,
    usable_candidates,
)
from llmos.models.ngram import CharNgramLM
from llmos.text.csc_metrics import sentence_scores


@pytest.fixture(scope="module")
def lm() -> CharNgramLM:
    return CharNgramLM.train(corpus(), order=4, progress=False)


CANDIDATES = usable_candidates(confusions)


def test_usable_candidates_are_other_single_chinese_characters() -> None:
    fn = usable_candidates(lambda ch: ["在", ch, "再", "ab", "x", "再"])
    assert fn("再") == ["在"] and fn("学") == ["在", "再"] and fn("a") == []


def test_score_is_the_lm_gain_plus_the_weighted_evidence(lm: CharNgramLM) -> None:
    text = "我们再学校"  # 再 -> 在: the LM's gain is large
    gain = lm.sentence_logprob("我们在学校") - lm.sentence_logprob(text)
    [alone] = greedy_substitutions(lm, text, CANDIDATES, 0.0)
    assert (alone.offset, alone.suggestion) == (2, "在")
    assert alone.score == pytest.approx(gain, abs=1e-9)
    logp = np.log(np.array([0.6, 0.3]))  # [再, 在]: the model prefers the input
    evidence = {2: (-1.5, logp)}
    [both] = greedy_substitutions(lm, text, CANDIDATES, 0.0, evidence, alpha=2.0, beta=0.5)
    expected = gain + 2.0 * (np.log(0.3) - np.log(0.6)) + 0.5 * -1.5
    assert both.score == pytest.approx(expected, abs=1e-9)


def test_evidence_makes_and_vetoes_edits(lm: CharNgramLM) -> None:
    text = "他在学校"  # 他 / 她: the corpus cannot tell them apart (gain near 0)
    assert greedy_substitutions(lm, text, CANDIDATES, 1.0) == []
    sure = {0: (4.0, np.log(np.array([0.05, 0.95])))}  # the model: 她, confidently
    [edit] = greedy_substitutions(lm, text, CANDIDATES, 1.0, sure, alpha=1.0, beta=1.0)
    assert (edit.offset, edit.original, edit.suggestion) == (0, "他", "她")
    # A confident "this character is right" vetoes an edit the LM alone makes.
    typo = "我们再学校"
    assert greedy_substitutions(lm, typo, CANDIDATES, 1.0)
    clean = {2: (-20.0, np.log(np.array([0.99, 0.01])))}
    assert greedy_substitutions(lm, typo, CANDIDATES, 1.0, clean, alpha=1.0, beta=1.0) == []


def test_corrections_carry_the_models_probabilities(lm: CharNgramLM) -> None:
    evidence = [{2: (0.0, np.log(np.array([0.75, 0.25])))}, {}]
    how = SpellingLM("lm.json.gz", alpha=1.0, beta=1.0, threshold=0.0)
    found = lm_corrections(lm, ["我们再学校", "我们在学校"], evidence, CANDIDATES, how)
    [c] = found[0]
    assert (c.offset, c.original, c.suggestion) == (2, "再", "在")
    assert c.detect == pytest.approx(0.5) and c.prob == pytest.approx(0.25)
    assert found[1] == []


def pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """Sentences of the corpus, two thirds with one confusable character swapped."""
    rng = random.Random(seed)
    out = []
    for target in corpus(n, seed):
        spots = [i for i, ch in enumerate(target) if CANDIDATES(ch)]
        source = target
        if spots and rng.random() < 0.67:
            i = rng.choice(spots)
            source = target[:i] + rng.choice(CANDIDATES(target[i])) + target[i + 1 :]
        out.append((source, target))
    return out


def noisy_evidence(pairs_: list[tuple[str, str]], seed: int) -> list[dict]:
    """A model that is right four times in five: detection logits and log-probabilities over
    [the character, *its candidates] that favour the gold character, or a wrong one."""
    rng = np.random.default_rng(seed)
    out = []
    for source, target in pairs_:
        ev = {}
        for i, ch in enumerate(source):
            opts = [ch, *CANDIDATES(ch)]
            if len(opts) == 1:
                continue
            gold = opts.index(target[i]) if target[i] in opts else 0
            pick = gold if rng.random() < 0.8 else int(rng.integers(len(opts)))
            p = np.full(len(opts), 0.1)
            p[pick] = 1.0
            ev[i] = (3.0 if pick else -3.0, np.log(p / p.sum()))
        out.append(ev)
    return out


def test_fit_equals_decoding_at_every_threshold_of_the_grid(lm: CharNgramLM) -> None:
    valid = pairs(150, 1)
    evidence = noisy_evidence(valid, 0)
    grid = [-2.0, 0.0, 1.0, 3.0, 6.0]
    weights = [(0.0, 0.0), (1.0, 0.5), (0.5, 1.0)]
    sources, targets = [s for s, _ in valid], [t for _, t in valid]
    scores = {}
    for a, b in weights:
        for t in grid:
            pred = [
                apply_corrections(s, greedy_substitutions(lm, s, CANDIDATES, t, e, a, b))
                for s, e in zip(sources, evidence, strict=True)
            ]
            scores[a, b, t] = sentence_scores(sources, pred, targets)
    fit = fit_decoding(lm, valid, CANDIDATES, grid, evidence, weights)
    best = max(scores.values(), key=lambda s: s["sentence_f1"])["sentence_f1"]
    assert fit.sentence_f1 == pytest.approx(best)
    chosen = scores[fit.alpha, fit.beta, fit.threshold]
    assert (chosen["sentence_f1"], chosen["fpr"]) == pytest.approx((fit.sentence_f1, fit.fpr))
    # Under a cap on clean sentences changed, the best of those within it.
    cap = min(s["fpr"] for s in scores.values()) + 1e-9
    quiet = fit_decoding(lm, valid, CANDIDATES, grid, evidence, weights, max_fpr=cap)
    assert quiet.fpr <= cap
    assert quiet.sentence_f1 == pytest.approx(
        max(s["sentence_f1"] for s in scores.values() if s["fpr"] <= cap)
    )
    with pytest.raises(ValueError, match="evidence"):
        fit_decoding(lm, valid, CANDIDATES, grid, None, weights)


def test_threads_give_the_same_edits(lm: CharNgramLM) -> None:
    valid = pairs(41, 3)
    sources = [s for s, _ in valid]
    evidence = noisy_evidence(valid, 1)
    one = decode_many(lm, sources, CANDIDATES, 0.0, evidence, 1.0, 0.5)
    assert any(one)
    for threads in (2, 3):
        assert decode_many(lm, sources, CANDIDATES, 0.0, evidence, 1.0, 0.5, threads) == one
    assert one == [
        greedy_substitutions(lm, s, CANDIDATES, 0.0, e, 1.0, 0.5)
        for s, e in zip(sources, evidence, strict=True)
    ]
