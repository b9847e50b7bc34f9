"""The character n-gram LM: normalisation, discounts and probabilities computed by hand, equality
with a plain dict-of-tuples implementation of the formulas, the window scores, save/load."""

from __future__ import annotations

import gzip
import json
import math
import random
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from llmos.errors import CheckpointError
from llmos.models.ngram import FALLBACK_DISCOUNTS, CharNgramLM, kn_discounts


def random_corpus(n: int = 300, seed: int = 0) -> list[str]:
    """Sentences of Zipf-distributed characters: orders 2 to 4 see counts 1 to 4."""
    rng = random.Random(seed)
    chars = "我们在学校他再见的了天气好人大中国是有不这来上个到说时"
    weights = [1 / (i + 1) for i in range(len(chars))]
    return ["".join(rng.choices(chars, weights, k=rng.randint(1, 8))) for _ in range(n)]


def reference_kn(sentences: list[str], order: int):
    """Interpolated modified Kneser–Ney straight from the formulas, over dicts of tuples."""
    raw: Counter[tuple[str, ...]] = Counter()
    for s in sentences:
        toks = ("<s>", *s, "</s>")
        for k in range(1, order + 1):
            for i in range(len(toks) - k + 1):
                raw[toks[i : i + k]] += 1
    before: defaultdict[tuple[str, ...], set[str]] = defaultdict(set)
    for g in raw:
        if len(g) > 1:
            before[g[1:]].add(g[0])

    def adjusted(g: tuple[str, ...]) -> int:
        return raw[g] if len(g) == order or g[0] == "<s>" else len(before[g])

    children: defaultdict[tuple[str, ...], dict[str, int]] = defaultdict(dict)
    for g in raw:
        if g != ("<s>",):
            children[g[:-1]][g[-1]] = adjusted(g)
    discounts = {
        k: kn_discounts(np.array([adjusted(g) for g in raw if len(g) == k and g != ("<s>",)]))
        for k in range(1, order + 1)
    }
    n_tokens = len({t for g in raw for t in g}) - 1 + 1  # without <s>, with <unk>

    def prob(h: tuple[str, ...] | None, w: str) -> float:
        if h is None:
            return 1 / n_tokens
        lower = prob(h[1:] if h else None, w)
        kids = children.get(h)
        if not kids:
            return lower
        D = (0.0, *discounts[len(h) + 1])
        total = sum(kids.values())
        c = kids.get(w, 0)
        gamma = sum(D[min(a, 3)] for a in kids.values()) / total
        return (c - D[min(c, 3)]) / total + gamma * lower

    return prob


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_distributions_sum_to_one(order: int) -> None:
    lm = CharNgramLM.train(random_corpus(), order=order, progress=False)
    outcomes = [*lm.vocab, lm.EOS, "☃"]  # ☃ stands for every unseen character (<unk>)
    for context in ["", "我们", "我们在学", "天气的了", "☃☃", "校校校校", random_corpus()[3]]:
        for bos in (True, False):
            total = sum(math.exp(lm.logprob(context, c, bos=bos)) for c in outcomes)
            assert total == pytest.approx(1.0, abs=1e-6), (context, bos)


def test_discounts_and_probabilities_by_hand() -> None:
    # Sentences a x4, c x3, d x2, e, f, g; order 2. Bigram counts: <s>a 4, a</s> 4, <s>c 3,
    # c</s> 3, <s>d 2, d</s> 2, and six of 1 (<s>e e</s> <s>f f</s> <s>g g</s>), so n1..n4 =
    # 6, 2, 2, 2: Y = 6 / (6 + 2*2) = 0.6, D1 = 1 - 2*0.6*2/6 = 0.6, D2 = 2 - 3*0.6*2/2 = 0.2,
    # D3+ = 3 - 4*0.6*2/2 = 0.6. Unigram continuation counts: a c d e f g 1 each, </s> 6 (six
    # distinct predecessors): n2 = 0, so KenLM's fallback (0.5, 1, 1.5).
    lm = CharNgramLM.train(["a"] * 4 + ["c"] * 3 + ["d"] * 2 + ["e", "f", "g"], 2, False)
    assert lm.discounts[0] == FALLBACK_DISCOUNTS
    assert lm.discounts[1] == pytest.approx((0.6, 0.2, 0.6))
    # Unigrams: total 12, gamma_1 = (0.5*6 + 1.5*1)/12 = 4.5/12; uniform over the 8 tokens
    # other than <s> (6 characters, </s>, <unk>): P1(a) = 0.5/12 + 4.5/12/8 = 1.0625/12.
    # After <s>: total 4+3+2+1+1+1 = 12, gamma(<s>) = (0.6*3 + 0.2*1 + 0.6*2)/12 = 3.2/12;
    # P(a|<s>) = (4 - 0.6)/12 + 3.2/12 * 1.0625/12 = 0.306944...; P(<unk>|<s>) =
    # 3.2/12 * 4.5/12 / 8 = 0.0125.
    assert math.exp(lm.logprob("", "a")) == pytest.approx(3.4 / 12 + 3.2 / 12 * 1.0625 / 12)
    assert math.exp(lm.logprob("", "z")) == pytest.approx(0.0125)
    # P(</s>|a): a's only bigram is a</s> (4, D3+ 0.6): 3.4/4 + 0.6/4 * P1(</s>), where
    # P1(</s>) = (6 - 1.5)/12 + 4.5/12/8.
    p_end = (6 - 1.5) / 12 + 4.5 / 12 / 8
    assert math.exp(lm.logprob("a", lm.EOS)) == pytest.approx(3.4 / 4 + 0.6 / 4 * p_end)


def test_kn_discounts_formula_and_fallback() -> None:
    counts = np.array([1] * 4 + [2] * 2 + [3] + [4] + [9] * 5)  # n1..n4 = 4, 2, 1, 1
    # Y = 4/8 = 0.5; D1 = 1 - 2*.5*2/4 = 0.5; D2 = 2 - 3*.5*1/2 = 1.25; D3 = 3 - 4*.5*1/1 = 1.
    assert kn_discounts(counts) == pytest.approx((0.5, 1.25, 1.0))
    assert kn_discounts(np.array([1, 1, 2, 3])) == FALLBACK_DISCOUNTS  # n4 = 0


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_equals_the_formulas_over_dicts(order: int) -> None:
    corpus = random_corpus()
    lm = CharNgramLM.train(corpus, order=order, progress=False)
    assert FALLBACK_DISCOUNTS not in lm.discounts[1:]  # estimates (unigrams: too few counts)
    prob = reference_kn(corpus, order)
    for text in ["我们在学校", "他再见了ab", "☃的在", corpus[7], corpus[8] + corpus[9]]:
        toks = ["<s>", *text, "</s>"]
        want = [  # an unseen character (☃) has no count anywhere: the reference's <unk>
            math.log(prob(tuple(toks[max(0, i - order + 1) : i]), t))
            for i, t in enumerate(toks[1:], 1)
        ]
        assert lm.char_logprobs(text) == pytest.approx(want, rel=1e-12)


def test_window_scores_rank_as_whole_sentences() -> None:
    lm = CharNgramLM.train(random_corpus(), order=4, progress=False)
    text = "我们再学校的了"
    for start in range(len(text)):
        for end in range(start + 1, len(text) + 1):
            reps = [text[start:end], "在" * (end - start), "☃" * (end - start)]
            window = lm.window_logprobs(text, start, end, reps)
            whole = [lm.sentence_logprob(text[:start] + r + text[end:]) for r in reps]
            np.testing.assert_allclose(window - window[0], np.subtract(whole, whole[0]))
    assert lm.window_logprob(text, 2, 3) == pytest.approx(sum(lm.char_logprobs(text)[2:6]))
    with pytest.raises(ValueError):
        lm.window_logprobs(text, 3, 3, [""])


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_substitutions_equal_their_windows_exactly(order: int) -> None:
    """The substitution path walks only the new character's n-grams and reuses the text's own
    nodes (CharNgramLM._substitution_sums); the numbers are the windows' to the last bit."""
    lm = CharNgramLM.train(random_corpus(), order=order, progress=False)
    for text in ["我们再学校的了", "在", "ab☃我"]:
        options = [(i, ["在", text[i], "了", "☃"]) for i in range(len(text))]
        got = lm.substitution_logprobs(text, options)
        for (i, opts), sums in zip(options, got, strict=True):
            np.testing.assert_array_equal(sums, lm.window_logprobs(text, i, i + 1, opts))
    with pytest.raises(ValueError, match="single characters"):
        lm.substitution_logprobs("我们", [(0, ["在在"])])


def test_many_texts_in_one_batch_equal_one_at_a_time() -> None:
    lm = CharNgramLM.train(random_corpus(), order=4, progress=False)
    texts = ["abcab", "ca", "", "bbbbbbbb"]
    options = [[(0, "ab"), (4, "cab")], [(1, "a")], [], [(3, "abc"), (7, "c"), (0, "b")]]
    many = lm.substitution_logprobs_many(texts, options)
    assert [len(m) for m in many] == [2, 1, 0, 3]
    for text, opts, got in zip(texts, options, many, strict=True):
        for a, b in zip(got, lm.substitution_logprobs(text, opts) if opts else [], strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="position < 2"):
        lm.substitution_logprobs_many(["ab", "ca"], [[], [(2, "a")]])


def test_training_skips_blank_lines_and_newlines() -> None:
    a = CharNgramLM.train(["ab\n", "\n", "", "abc\r\n"], order=3, progress=False)
    b = CharNgramLM.train(["ab", "abc"], order=3, progress=False)
    assert a.vocab == b.vocab == ["a", "b", "c"]
    assert a.char_logprobs("abcd") == b.char_logprobs("abcd")
    with pytest.raises(ValueError, match="no sentences"):
        CharNgramLM.train(["", "\n"], progress=False)


def test_save_load_roundtrip(tmp_path: Path) -> None:
    lm = CharNgramLM.train(random_corpus(), order=4, progress=False)
    path = lm.save(tmp_path / "lm.json.gz")
    back = CharNgramLM.load(path)
    assert (back.order, back.vocab, back.discounts) == (lm.order, lm.vocab, lm.discounts)
    for text in ["我们在学校", "☃ab", ""]:
        assert back.char_logprobs(text) == lm.char_logprobs(text)
    assert back.save(tmp_path / "again.json.gz").read_bytes() == path.read_bytes()
    # written atomically: no temp file left beside them
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.json.gz", "lm.json.gz"]


def test_corrupt_files_raise_checkpoint_error(tmp_path: Path) -> None:
    good = CharNgramLM.train(random_corpus(50), order=3, progress=False).save(tmp_path / "m.gz")
    doc = json.loads(gzip.decompress(good.read_bytes()))
    bad_count = json.loads(json.dumps(doc))
    bad_count["counts"][2][0] = 0
    missing_key = {k: v for k, v in doc.items() if k != "key_deltas"}
    dangling = json.loads(json.dumps(doc))
    dangling["key_deltas"][1][0] += 10**9  # a trigram whose parent does not exist
    cases = {
        "text.gz": b"not a model",
        "truncated.gz": good.read_bytes()[:200],
        "other.gz": gzip.compress(json.dumps({"format": "arpa", "version": 1}).encode()),
        "count.gz": gzip.compress(json.dumps(bad_count).encode()),
        "missing.gz": gzip.compress(json.dumps(missing_key).encode()),
        "dangling.gz": gzip.compress(json.dumps(dangling).encode()),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match=name):
            CharNgramLM.load(tmp_path / name)
    with pytest.raises(CheckpointError, match="no such"):
        CharNgramLM.load(tmp_path / "absent.gz")
