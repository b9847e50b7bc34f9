"""Tagging schemes against seqeval's get_entities, and constrained Viterbi against brute force."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from seqeval.metrics.sequence_labeling import get_entities

from llmos.data.tagging import (
    align_spans,
    allowed_transitions,
    label_set,
    spans_to_tags,
    tags_to_spans,
    viterbi_decode,
)
from llmos.inference.tag import best_window, windows

BIO = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
BMES = ["O", "B-PER", "M-PER", "E-PER", "S-PER", "B-LOC", "M-LOC", "E-LOC", "S-LOC"]
BMES_BARE = ["B", "M", "E", "S"]
BIO_BARE = ["O", "B", "I"]


def seqeval_spans(tags: list[str]) -> list[tuple[str, int, int]]:
    # seqeval's ends are inclusive and bare labels get type "_".
    return [("" if t == "_" else t, s, e + 1) for t, s, e in get_entities(tags)]


def is_valid(path: list[int], allowed, start, end) -> bool:
    if not path:
        return True
    steps = all(allowed[i, j] for i, j in itertools.pairwise(path))
    return bool(start[path[0]] and end[path[-1]] and steps)


@pytest.mark.parametrize(
    ("tags", "spans"),
    [
        ([], []),
        (["O", "O"], []),
        (["I-PER", "I-PER", "O"], [("PER", 0, 2)]),  # I- without B- opens a span
        (["O", "I-PER"], [("PER", 1, 2)]),
        (["B-PER"], [("PER", 0, 1)]),  # single token
        (["B-PER", "B-PER"], [("PER", 0, 1), ("PER", 1, 2)]),
        (["O", "B-LOC", "I-LOC"], [("LOC", 1, 3)]),  # entity at the end
        (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 3)]),  # type change
        (["B", "I", "O", "I"], [("", 0, 2), ("", 3, 4)]),
    ],
)
def test_bio_tags_to_spans(tags: list[str], spans: list[tuple[str, int, int]]) -> None:
    assert tags_to_spans(tags, "bio") == spans
    assert seqeval_spans(tags) == spans


@pytest.mark.parametrize(
    ("tags", "spans"),
    [
        (["S-PER"], [("PER", 0, 1)]),
        (["B-PER", "M-PER", "E-PER", "S-LOC"], [("PER", 0, 3), ("LOC", 3, 4)]),
        (["B-PER", "M-PER", "O"], [("PER", 0, 2)]),  # dangling B/M still forms a span
        (["O", "B-PER"], [("PER", 1, 2)]),  # dangling B at the end
        (["E-PER", "E-PER"], [("PER", 0, 1), ("PER", 1, 2)]),  # E without B
        (["B-PER", "E-LOC"], [("PER", 0, 1), ("LOC", 1, 2)]),  # type change
        (["S-PER", "M-PER", "E-PER"], [("PER", 0, 1), ("PER", 1, 3)]),
    ],
)
def test_bmes_tags_to_spans(tags: list[str], spans: list[tuple[str, int, int]]) -> None:
    assert tags_to_spans(tags, "bmes") == spans


def test_bare_bmes_segments_words() -> None:
    text = "我们爱天安门"
    tags = ["B", "E", "S", "B", "M", "E"]
    spans = tags_to_spans(tags, "bmes")
    assert spans == [("", 0, 2), ("", 2, 3), ("", 3, 6)]
    assert [text[s:e] for _, s, e in spans] == ["我们", "爱", "天安门"]
    assert spans_to_tags(spans, 6, "bmes") == tags


def test_invalid_labels_raise() -> None:
    with pytest.raises(ValueError, match="not valid"):
        tags_to_spans(["M-PER"], "bio")
    with pytest.raises(ValueError, match="not valid"):
        tags_to_spans(["I-PER"], "bmes")
    with pytest.raises(ValueError, match="unknown tagging scheme"):
        tags_to_spans([], "iobes")
    with pytest.raises(ValueError, match="overlaps"):
        spans_to_tags([("A", 0, 2), ("B", 1, 3)], 4, "bio")


@pytest.mark.parametrize("labels", [BIO, BIO_BARE])
def test_bio_matches_seqeval_on_random_sequences(labels: list[str]) -> None:
    rng = random.Random(0)
    for _ in range(600):
        tags = [rng.choice(labels) for _ in range(rng.randint(0, 12))]
        assert tags_to_spans(tags, "bio") == seqeval_spans(tags), tags


@pytest.mark.parametrize("labels", [BMES, [*BMES_BARE, "O"]])
def test_bmes_matches_seqeval_iobes_with_m_as_i(labels: list[str]) -> None:
    rng = random.Random(1)
    for _ in range(600):
        tags = [rng.choice(labels) for _ in range(rng.randint(0, 12))]
        iobes = ["I" + t[1:] if t.startswith("M") else t for t in tags]
        assert tags_to_spans(tags, "bmes") == seqeval_spans(iobes), tags


@pytest.mark.parametrize(("labels", "scheme"), [(BIO, "bio"), (BMES, "bmes")])
def test_spans_round_trip_on_valid_sequences(labels: list[str], scheme: str) -> None:
    allowed, start, end = allowed_transitions(labels, scheme)
    rng = np.random.default_rng(2)
    for _ in range(200):
        path = viterbi_decode(
            rng.normal(size=(rng.integers(1, 10), len(labels))), allowed, start, end
        )
        tags = [labels[k] for k in path]
        assert spans_to_tags(tags_to_spans(tags, scheme), len(tags), scheme) == tags


def test_allowed_transitions_bio() -> None:
    allowed, start, end = allowed_transitions(BIO, "bio")
    idx = {label: k for k, label in enumerate(BIO)}
    assert allowed[idx["B-PER"], idx["I-PER"]] and allowed[idx["I-PER"], idx["I-PER"]]
    assert not allowed[idx["O"], idx["I-PER"]] and not allowed[idx["B-LOC"], idx["I-PER"]]
    assert allowed[idx["I-PER"], idx["B-LOC"]] and allowed[idx["O"], idx["O"]]
    assert start.tolist() == [True, True, False, True, False] and end.all()


def test_allowed_transitions_bmes_bare() -> None:
    allowed, start, end = allowed_transitions(BMES_BARE, "bmes")
    # rows: previous B, M, E, S; columns: next B, M, E, S
    assert allowed.tolist() == [
        [False, True, True, False],
        [False, True, True, False],
        [True, False, False, True],
        [True, False, False, True],
    ]
    assert start.tolist() == [True, False, False, True]
    assert end.tolist() == [False, False, True, True]


def test_allowed_transitions_bmes_typed() -> None:
    allowed, _, _ = allowed_transitions(BMES, "bmes")
    idx = {label: k for k, label in enumerate(BMES)}
    assert allowed[idx["B-PER"], idx["E-PER"]] and not allowed[idx["B-PER"], idx["E-LOC"]]
    assert not allowed[idx["B-PER"], idx["O"]] and allowed[idx["E-PER"], idx["S-LOC"]]
    assert not allowed[idx["O"], idx["M-LOC"]]


@pytest.mark.parametrize(
    ("labels", "scheme"), [(BIO, "bio"), (BMES, "bmes"), (BMES_BARE, "bmes"), (BIO_BARE, "bio")]
)
def test_viterbi_equals_brute_force(labels: list[str], scheme: str) -> None:
    allowed, start, end = allowed_transitions(labels, scheme)
    K = len(labels)
    rng = np.random.default_rng(3)
    for T in range(1, 5 if K > 5 else 6):
        valid = [
            p
            for p in itertools.product(range(K), repeat=T)
            if is_valid(list(p), allowed, start, end)
        ]
        for _ in range(10):
            scores = rng.normal(size=(T, K))
            brute = max(scores[np.arange(T), list(p)].sum() for p in valid)
            path = viterbi_decode(scores, allowed, start, end)
            assert is_valid(path, allowed, start, end)
            assert scores[np.arange(T), path].sum() == pytest.approx(brute)


@pytest.mark.parametrize(("labels", "scheme"), [(BIO, "bio"), (BMES, "bmes")])
def test_viterbi_valid_on_random_scores_and_argmax_when_valid(
    labels: list[str], scheme: str
) -> None:
    allowed, start, end = allowed_transitions(labels, scheme)
    rng = np.random.default_rng(4)
    n_argmax_valid = 0
    for _ in range(300):
        scores = np.log(rng.dirichlet(np.ones(len(labels)), size=rng.integers(1, 15)))
        path = viterbi_decode(scores, allowed, start, end)
        assert is_valid(path, allowed, start, end)
        greedy = scores.argmax(axis=1).tolist()
        if is_valid(greedy, allowed, start, end):
            n_argmax_valid += 1
            assert path == greedy
    assert n_argmax_valid > 10


def test_viterbi_edge_cases() -> None:
    allowed, start, end = allowed_transitions(BMES_BARE, "bmes")
    assert viterbi_decode(np.zeros((0, 4)), allowed, start, end) == []
    # "M" scores highest everywhere, but a 1-token sequence can only be "S".
    assert viterbi_decode(np.array([[0.0, 9.0, 5.0, 1.0]]), allowed, start, end) == [3]
    with pytest.raises(ValueError, match="no label sequence"):
        viterbi_decode(np.zeros((1, 2)), allowed[:2, :2], start[:2], end[:2])


def test_align_spans_to_tokens() -> None:
    # tokens: "江" "泽" "民" "在" "1997" " " skipped, "年"
    offsets = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 8), (9, 10)]
    spans = [("PER", 0, 3), ("T", 4, 6), ("T", 6, 8), ("X", 8, 9), ("Y", 9, 10)]
    aligned, dropped = align_spans(offsets, spans)
    # "1997" holds two gold words: the first gets the token, the second shares it and is
    # dropped; the whitespace-only span covers no token.
    assert aligned == [("PER", 0, 3), ("T", 4, 5), ("Y", 5, 6)]
    assert dropped == 2
    assert align_spans([], []) == ([], 0)


def test_label_set() -> None:
    spans = [[("PER", 0, 2)], [("LOC", 1, 2), ("PER", 3, 4)]]
    assert label_set(spans, "bio", True) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert label_set([[("", 0, 1)]], "bmes", False) == ["B", "M", "E", "S"]
    with pytest.raises(ValueError, match="unknown tagging scheme"):
        label_set(spans, "bilou", True)


def test_windows_cover_every_token_with_most_context() -> None:
    assert windows(5, 8, 4) == [0]
    assert windows(20, 8, 4) == [0, 4, 8, 12]
    starts = windows(20, 8, 4)
    choice = best_window(20, 8, starts)
    for pos, w in enumerate(choice):
        s = starts[w]
        assert s <= pos < s + 8
        best = max(min(pos - t, t + 7 - pos) for t in starts if t <= pos < t + 8)
        assert min(pos - s, s + 7 - pos) == best
