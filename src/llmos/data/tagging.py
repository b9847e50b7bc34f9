"""Sequence-labelling schemes: tags <-> spans, valid transitions, constrained Viterbi.

Two schemes: ``"bio"`` (``B-X``, ``I-X``, ``O``) and ``"bmes"`` (``B-X``, ``M-X``, ``E-X``,
``S-X``, ``O``). Labels may be bare (``B``, ``M``, ``E``, ``S``), as in Chinese word
segmentation; their type is ``""``. A span is ``(type, start, end)`` with ``end`` exclusive.

Decoding tags into spans is lenient and matches seqeval's default (CoNLL) mode,
:func:`seqeval.metrics.sequence_labeling.get_entities`: an ``I-X`` after ``O`` or after another
type opens a span, a change of type closes one, and in BMES a dangling ``B``/``M`` still forms a
span (``M`` is read as IOBES ``I``). See
https://github.com/chakki-works/seqeval/blob/v1.2.2/seqeval/metrics/sequence_labeling.py
One deliberate difference: seqeval names the type of a bare label ``"_"``, here it is ``""``.
"""

from __future__ import annotations

import numpy as np

SCHEMES: dict[str, frozenset[str]] = {
    "bio": frozenset("BI"),
    "bmes": frozenset("BMES"),
}


def parse_label(label: str, scheme: str) -> tuple[str, str]:
    """Split a label into ``(prefix, type)``; ``"O"`` gives ``("O", "")``.

    Raises:
        ValueError: for an unknown scheme or a label whose prefix the scheme does not use.
    """
    prefixes = _prefixes(scheme)
    if label == "O":
        return "O", ""
    prefix, dash, type_ = label.partition("-")
    if prefix not in prefixes or (dash and not type_):
        raise ValueError(
            f"label {label!r} is not valid in scheme {scheme!r}: expected 'O', a bare prefix "
            f"or PREFIX-TYPE with PREFIX in {sorted(prefixes)}"
        )
    return prefix, type_


def _prefixes(scheme: str) -> frozenset[str]:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown tagging scheme {scheme!r}; choose one of {sorted(SCHEMES)}")
    return SCHEMES[scheme]


def _label(prefix: str, type_: str) -> str:
    return f"{prefix}-{type_}" if type_ else prefix


def _chunk_ends(prev: str, tag: str, prev_type: str, type_: str) -> bool:
    # seqeval's end_of_chunk, with tags already mapped to IOBES letters.
    if prev in "ES" or (prev in "BI" and tag in "BSO"):
        return True
    return prev != "O" and prev_type != type_


def _chunk_starts(prev: str, tag: str, prev_type: str, type_: str) -> bool:
    # seqeval's start_of_chunk, with tags already mapped to IOBES letters.
    if tag in "BS" or (prev in "ESO" and tag in "EI"):
        return True
    return tag != "O" and prev_type != type_


def tags_to_spans(tags: list[str], scheme: str) -> list[tuple[str, int, int]]:
    """Decode a tag sequence into ``(type, start, end_exclusive)`` spans, in order.

    Ill-formed sequences are decoded as seqeval's ``get_entities`` does (see the module
    docstring), so scores computed from these spans equal seqeval's.

    Args:
        tags: One label per token.
        scheme: ``"bio"`` or ``"bmes"``.

    Returns:
        The spans, sorted by start.
    """
    spans: list[tuple[str, int, int]] = []
    prev, prev_type, begin = "O", "", 0
    for i, label in enumerate([*tags, "O"]):
        tag, type_ = parse_label(label, scheme)
        tag = "I" if tag == "M" else tag
        if _chunk_ends(prev, tag, prev_type, type_):
            spans.append((prev_type, begin, i))
        if _chunk_starts(prev, tag, prev_type, type_):
            begin = i
        prev, prev_type = tag, type_
    return spans


def spans_to_tags(spans: list[tuple[str, int, int]], length: int, scheme: str) -> list[str]:
    """Encode non-overlapping spans as tags; the inverse of :func:`tags_to_spans`.

    Args:
        spans: ``(type, start, end_exclusive)`` triples; ``type`` may be ``""`` for bare labels.
        length: Number of tokens.
        scheme: ``"bio"`` or ``"bmes"``.

    Raises:
        ValueError: if a span is empty, out of range, or overlaps another.
    """
    _prefixes(scheme)
    tags = ["O"] * length
    for type_, start, end in sorted(spans, key=lambda s: s[1]):
        if not 0 <= start < end <= length:
            raise ValueError(f"span {(type_, start, end)} is empty or outside [0, {length})")
        if any(t != "O" for t in tags[start:end]):
            raise ValueError(f"span {(type_, start, end)} overlaps another span")
        if scheme == "bio":
            tags[start:end] = [_label("B", type_)] + [_label("I", type_)] * (end - start - 1)
        elif end - start == 1:
            tags[start] = _label("S", type_)
        else:
            inner = [_label("M", type_)] * (end - start - 2)
            tags[start:end] = [_label("B", type_), *inner, _label("E", type_)]
    return tags


def allowed_transitions(
    labels: list[str], scheme: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which label sequences are valid under ``scheme``.

    BIO: ``I-X`` only follows ``B-X`` or ``I-X`` and cannot start. BMES: ``B-X``/``M-X`` are
    followed only by ``M-X``/``E-X``; ``B``, ``S`` and ``O`` only follow ``E``, ``S``, ``O``
    (or the start); a sequence starts on ``B``/``S``/``O`` and ends on ``E``/``S``/``O``.

    Args:
        labels: The label of each class index.
        scheme: ``"bio"`` or ``"bmes"``.

    Returns:
        ``allowed`` (K, K) with ``allowed[i, j]`` true when label j may follow label i,
        ``start`` (K,) and ``end`` (K,): labels that may open and close a sequence.
    """
    parsed = [parse_label(label, scheme) for label in labels]
    prefix = np.array([p for p, _ in parsed])
    types = np.array([t for _, t in parsed])
    same_type = types[:, None] == types[None, :]  # (K, K)
    if scheme == "bio":
        inside = prefix == "I"
        allowed = ~inside[None, :] | (same_type & (prefix[:, None] != "O"))
        return allowed, ~inside, np.ones(len(labels), dtype=bool)
    open_ = np.isin(prefix, ["B", "M"])  # a span is open after this label
    continues = np.isin(prefix, ["M", "E"])  # this label continues an open span
    allowed = np.where(open_[:, None], continues[None, :] & same_type, ~continues[None, :])
    return allowed, ~continues, ~open_


def viterbi_decode(
    scores: np.ndarray, allowed: np.ndarray, start_allowed: np.ndarray, end_allowed: np.ndarray
) -> list[int]:
    """Highest-scoring label sequence among those the transition masks allow.

    Args:
        scores: (T, K) per-token log-probabilities or logits; a path scores their sum.
        allowed: (K, K) boolean, ``allowed[i, j]`` = label j may follow label i.
        start_allowed: (K,) boolean, labels a sequence may start with.
        end_allowed: (K,) boolean, labels a sequence may end with.

    Returns:
        T label indices.

    Raises:
        ValueError: if no sequence of length T is allowed.
    """
    scores = np.asarray(scores, dtype=np.float64)
    T, K = scores.shape
    if T == 0:
        return []
    trans = np.where(allowed, 0.0, -np.inf)  # (K, K)
    best = scores[0] + np.where(start_allowed, 0.0, -np.inf)  # (K,)
    back = np.zeros((T, K), dtype=np.int64)
    for t in range(1, T):
        cand = best[:, None] + trans  # (K_prev, K)
        back[t] = cand.argmax(axis=0)
        best = cand[back[t], np.arange(K)] + scores[t]
    best = best + np.where(end_allowed, 0.0, -np.inf)
    last = int(best.argmax())
    if not np.isfinite(best[last]):
        raise ValueError(f"no label sequence of length {T} satisfies the transition constraints")
    path = [last]
    for t in range(T - 1, 0, -1):
        path.append(int(back[t, path[-1]]))
    return path[::-1]


def label_set(spans: list[list[tuple[str, int, int]]], scheme: str, with_o: bool) -> list[str]:
    """All labels a model needs for these spans: ``O`` (when ``with_o``) then each type's labels.

    Types are sorted; bare (``""``) types give bare labels (``B``, ``M``, ``E``, ``S``).
    """
    _prefixes(scheme)
    prefixes = "BI" if scheme == "bio" else "BMES"
    types = sorted({t for sent in spans for t, _, _ in sent})
    return (["O"] if with_o else []) + [_label(p, t) for t in types for p in prefixes]


def align_spans(
    offsets: list[tuple[int, int]], spans: list[tuple[str, int, int]]
) -> tuple[list[tuple[str, int, int]], int]:
    """Map character spans onto tokens with the given character ``offsets``.

    A span covers the tokens that overlap it. A span whose edges fall inside a token (a subword
    merges characters of two words) still gets the tokens it overlaps, so its decoded character
    span is wider than the gold one; a span that shares a token with an earlier one, or covers
    no token (whitespace only), is dropped.

    Returns:
        ``(type, first_token, last_token + 1)`` spans, and how many spans were dropped.
    """
    starts = np.array([s for s, _ in offsets], dtype=np.int64)
    ends = np.array([e for _, e in offsets], dtype=np.int64)
    out: list[tuple[str, int, int]] = []
    dropped = 0
    taken = 0  # tokens before this index belong to earlier spans
    for type_, start, end in sorted(spans, key=lambda s: s[1]):
        first = int(np.searchsorted(ends, start, side="right"))  # first token ending after start
        last = int(np.searchsorted(starts, end, side="left"))  # tokens starting before end
        if first >= last or first < taken:
            dropped += 1
            continue
        out.append((type_, first, last))
        taken = last
    return out, dropped
