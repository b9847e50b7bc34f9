"""The noisy-channel prior of spelling correction: its features by hand, its fit, and how the
search adds it to the n-gram LM's gains."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from llmos.data.spelling import ConfusionSet
from llmos.inference.csc_channel import (
    FEATURES,
    ChannelFeatures,
    ChannelPrior,
    ChannelWeights,
    fit_channel,
    word_score,
)
from llmos.inference.csc_lm import decode_many, greedy_substitutions, usable_candidates
from llmos.models.ngram import CharNgramLM

# 在/再 sound alike (same tone), 在/左 do not but look alike; 学/雪 sound alike.
CONFUSION = ConfusionSet(
    same_tone={"在": ("再",), "再": ("在",), "学": ("雪",), "雪": ("学",)},
    other_tone={},
    stroke={"在": ("左",), "左": ("在",)},
)
WORDS = {"学校": 2.0, "在学校": 3.0, "下雪": 2.5, "雪花": 1.0, "再见": 2.0}
NAMES = {"北京": 4.0}
COMMON = frozenset("我们在再学雪校下花见")


def sentences(n: int, seed: int) -> list[str]:
    """在 before places, 再 before verbs of repetition; 学 in 学校/学习, 雪 in 下雪/雪花."""
    rng = random.Random(seed)
    who = ["我们", "他", "她", "你们", "老师"]
    where = ["学校", "家里", "公园", "教室"]
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.5:
            out.append(rng.choice(who) + "在" + rng.choice(where))
        elif kind < 0.8:
            out.append(rng.choice(who) + rng.choice(["明天再来", "再见", "再说一遍"]))
        else:
            out.append(rng.choice(["外面下雪了", "雪花很大", "今天下大雪"]))
    return out


@pytest.fixture(scope="module")
def lm() -> CharNgramLM:
    return CharNgramLM.train(sentences(300, 0), order=3, progress=False)


@pytest.fixture(scope="module")
def features(lm: CharNgramLM) -> ChannelFeatures:
    return ChannelFeatures(CONFUSION, lm, WORDS, NAMES, COMMON)


def test_word_score_is_the_best_word_over_the_position() -> None:
    assert word_score(WORDS, "我们在学校", 3) == 6.0  # 在学校 (3 + 3) beats 学校 (2 + 2)
    assert word_score(WORDS, "我们在学校", 4) == 6.0
    assert word_score(WORDS, "我们在学校", 1) == 0.0  # no word covers 们
    assert word_score(WORDS, "下雪", 0) == 4.5
    assert word_score({}, "下雪", 0) == 0.0


def test_features_by_hand(lm: CharNgramLM, features: ChannelFeatures) -> None:
    text = "我们再学校"  # 再 for 在: the candidates of 再 are [在]
    [row] = features.matrix(text, 2, ["在"])
    got = dict(zip(FEATURES, row, strict=True))
    # 再 is in 在's same-tone set (of one), not in its other-tone or shape sets
    assert got["same_tone"] == 1.0 and got["same_tone_log_size"] == pytest.approx(math.log(2))
    assert got["other_tone"] == got["other_tone_log_size"] == got["shape"] == 0.0
    assert got["shape_log_size"] == 0.0
    assert got["log_candidates"] == 0.0  # one candidate
    total = lm.total_chars
    assert got["log_freq_suggestion"] == pytest.approx(math.log((lm.char_count("在") + 1) / total))
    assert got["log_freq_original"] == pytest.approx(math.log((lm.char_count("再") + 1) / total))
    assert lm.char_count("在") > lm.char_count("再") > 0 and lm.char_count("龘") == 0
    # 在学校 mends a word of 3 + 3; nothing covered 再 before
    assert (got["word_gain"], got["word_after"], got["word_before"]) == (6.0, 1.0, 0.0)
    assert got["name_gain"] == got["name_before"] == 0.0
    assert got["common_original"] == got["common_suggestion"] == 1.0
    assert got["starts_clause"] == got["ends_clause"] == 0.0
    # 左 for 在 at a clause's start: a shape confusion, 左 not common, a word broken
    [row] = features.matrix("在学校，", 0, ["左"])
    got = dict(zip(FEATURES, row, strict=True))
    assert got["shape"] == 1.0 and got["same_tone"] == 0.0
    assert got["word_gain"] == -6.0 and got["word_before"] == 1.0 and got["word_after"] == 0.0
    assert got["common_suggestion"] == 0.0 and got["starts_clause"] == 1.0
    [row] = features.matrix("北京在", 2, ["左"])
    assert dict(zip(FEATURES, row, strict=True))["ends_clause"] == 1.0
    two = features.matrix("在学校", 0, ["再", "左"])
    assert two.shape == (2, len(FEATURES)) and two[0, 6] == two[1, 6] == pytest.approx(math.log(2))


def test_weights_name_every_feature() -> None:
    weights = dict.fromkeys(FEATURES, 0.0)
    del weights["word_gain"]
    with pytest.raises(ValueError, match=r"missing \['word_gain'\]"):
        ChannelWeights(weights, 0.0)
    with pytest.raises(ValueError, match=r"unknown \['typo'\]"):
        ChannelWeights(dict.fromkeys(FEATURES, 0.0) | {"typo": 1.0}, 0.0)


def test_a_zero_prior_is_the_plain_search_and_a_strong_one_decides(
    lm: CharNgramLM, features: ChannelFeatures
) -> None:
    cands = usable_candidates(CONFUSION.candidates)
    texts = ["我们再学校", "外面下学了", "我们在学校", "他明天在来", "再说一遍"]
    zero = ChannelPrior(features, ChannelWeights(dict.fromkeys(FEATURES, 0.0), 0.0))
    assert decode_many(lm, texts, cands, 1.0, prior=zero) == decode_many(lm, texts, cands, 1.0)
    plain = greedy_substitutions(lm, "我们再学校", cands, 1.0)
    assert [(e.offset, e.suggestion) for e in plain] == [(2, "在")]
    # A prior of -100 nats on every substitution: nothing changes. A word-gain weight alone
    # moves each score by exactly weight x word gain.
    assert (
        greedy_substitutions(
            lm,
            "我们再学校",
            cands,
            1.0,
            prior=ChannelPrior(features, ChannelWeights(zero.weights.weights, -100.0)),
        )
        == []
    )
    half = ChannelPrior(
        features, ChannelWeights(dict.fromkeys(FEATURES, 0.0) | {"word_gain": 0.5}, 0.0)
    )
    [with_prior] = greedy_substitutions(lm, "我们再学校", cands, 1.0, prior=half)
    assert with_prior.score == pytest.approx(plain[0].score + 0.5 * 6.0)
    np.testing.assert_allclose(half("我们再学校", 2, ["再", "在"]), [0.0, 3.0])


def corrupted(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for target in sentences(n, seed):
        spots = [i for i, ch in enumerate(target) if ch in "在再学雪"]
        source = list(target)
        if spots and rng.random() < 0.7:
            i = rng.choice(spots)
            source[i] = CONFUSION.same_tone[target[i]][0]  # typos sound alike: never 左
        pairs.append(("".join(source), target))
    return pairs


def test_fit_learns_what_the_typos_look_like(lm: CharNgramLM, features: ChannelFeatures) -> None:
    cands = usable_candidates(CONFUSION.candidates)
    weights = fit_channel(lm, corrupted(200, 1), cands, features)
    assert set(weights.weights) == set(FEATURES)
    # every typo was a homophone, so a homophone candidate is worth more than a look-alike
    assert weights.weights["same_tone"] > weights.weights["shape"]
    # centred: the prior averages 0 over the candidates it was fitted on
    prior = ChannelPrior(features, weights)
    pairs = corrupted(200, 1)
    values = [
        v
        for s, _ in pairs
        for i, ch in enumerate(s)
        if cands(ch)
        for v in prior(s, i, [ch, *cands(ch)])[1:]
    ]
    assert abs(np.mean(values)) < 1e-6
    with pytest.raises(ValueError, match="needs pairs"):
        fit_channel(lm, [], cands, features)
    with pytest.raises(ValueError, match="both right and wrong"):
        fit_channel(lm, [("我们在学校", "我们在学校")], cands, features)


def test_word_features_equal_word_scores_with_the_candidate_in_place(lm: CharNgramLM) -> None:
    # Windows whose left or right part is no word's prefix or suffix are skipped: the scores
    # must be those of word_score over the text with each candidate put in.
    rng = random.Random(3)
    alphabet = "一二三四五六"
    lexicon = {
        "".join(rng.choice(alphabet) for _ in range(rng.choice([2, 3, 4]))): rng.uniform(0, 5)
        for _ in range(120)
    }
    feats = ChannelFeatures(CONFUSION, lm, lexicon, {}, COMMON)
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 9)))
        i = rng.randrange(len(text))
        cands = rng.sample(alphabet, 3)
        got = feats.matrix(text, i, cands)
        before = word_score(lexicon, text, i)
        for k, c in enumerate(cands):
            after = word_score(lexicon, text[:i] + c + text[i + 1 :], i)
            assert got[k, FEATURES.index("word_gain")] == pytest.approx(after - before)
            assert got[k, FEATURES.index("word_after")] == (after > 0)


class _Unbounded:
    """A prior with no useful bound: the search computes it everywhere."""

    def __init__(self, prior: ChannelPrior) -> None:
        self.prior = prior

    def __call__(self, text: str, i: int, options: list[str]) -> np.ndarray:
        return self.prior(text, i, options)

    def upper(self, text: str, i: int, options: list[str]) -> float:
        return math.inf


def test_the_bound_holds_and_skipping_by_it_changes_no_edit(
    lm: CharNgramLM, features: ChannelFeatures
) -> None:
    cands = usable_candidates(CONFUSION.candidates)
    rng = random.Random(4)
    weights = {f: rng.uniform(-2, 2) for f in FEATURES}
    prior = ChannelPrior(features, ChannelWeights(weights, rng.uniform(-1, 1)))
    texts = [s for s, _ in corrupted(60, 7)] + ["在学校，北京下雪", "左学校再见"]
    for text in texts:
        for i, ch in enumerate(text):
            if cands(ch):
                options = [ch, *cands(ch)]
                assert prior.upper(text, i, options) >= prior(text, i, options)[1:].max() - 1e-9
    for threshold in (-3.0, 0.0, 2.0, 5.0):
        bounded = decode_many(lm, texts, cands, threshold, prior=prior)
        assert bounded == decode_many(lm, texts, cands, threshold, prior=_Unbounded(prior))
