"""Spelling correction decoded with a character n-gram language model, alone (pycorrector's
"classic" method) or with a spelling model's evidence added (hybrid decoding).

Every position whose character has confusion-set candidates (same pinyin, similar shape) is a
place where a candidate may replace it. A candidate's **gain** is the change of the sentence's
log-probability under the n-gram LM when it goes in
(:meth:`~llmos.models.ngram.CharNgramLM.substitution_logprobs`), plus, in hybrid decoding, a
**bias** from the spelling model read once over the original text:

    score(i, c) = LM gain(i, c) + alpha * (log p(c) - log p(x_i)) + beta * logit(detect_i)

where p is the correction head's distribution at position i and detect_i its detection
probability. ``alpha`` and ``beta`` weigh the model against the LM; both 0 is the classic
method. A **prior** may be added to the bias: a noisy-channel term per (position, candidate)
(:mod:`llmos.inference.csc_channel`). Edits are accepted greedily, best score first, while the
best exceeds ``threshold``; after each, the positions within N-1 of it are re-scored by the LM
with the new character in place (the bias is not re-read), and a corrected position is not
changed again.

Why both: the n-gram LM ranks a position's candidates well but cannot tell a rare correct
character from a typo, and the spelling model alone finds few typos; decoded together they beat
either under the same cap on false alarms (docs/BENCHMARKS.md, "Spelling correction": how much).

An accepted run at a higher threshold is a prefix of the run at a lower one, so
:func:`fit_decoding` scores a whole grid of thresholds from one run per sentence.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from llmos.checkpoint.task import SpellingLM
from llmos.inference.correct import Correction, apply_corrections
from llmos.models.ngram import CharNgramLM
from llmos.text.cjk import is_hanzi
from llmos.text.csc_metrics import sentence_scores

# One position's spelling-model evidence: its detection logit and the correction head's log-
# probabilities of [the character itself, *its candidates] (None where the decoding does not
# read them: alpha 0).
Evidence = tuple[float, np.ndarray | None]


class Prior(Protocol):
    """A prior per position (:class:`llmos.inference.csc_channel.ChannelPrior`): nats added to
    each option's score (0 for the character itself), read once on the text as given, like
    the evidence; :meth:`upper` bounds them cheaply, and the search computes the prior only
    at positions where a candidate could pass the threshold with it (the same edits)."""

    def __call__(self, text: str, i: int, options: Sequence[str]) -> np.ndarray: ...

    def upper(self, text: str, i: int, options: Sequence[str]) -> float: ...


@dataclass(frozen=True)
class Substitution:
    """One accepted edit: a character's offset, the original, the replacement, its score at
    acceptance (log-probability gain + model bias, in nats)."""

    offset: int
    original: str
    suggestion: str
    score: float


def usable_candidates(candidates: Callable[[str], Sequence[str]]) -> Callable[[str], list[str]]:
    """``candidates`` restricted to what a substitution may put in: single Chinese characters
    other than the character itself, each once, for Chinese characters only (cached per
    character: confusion sets are fixed)."""
    cache: dict[str, list[str]] = {}

    def usable(ch: str) -> list[str]:
        if ch not in cache:
            found = dict.fromkeys(candidates(ch)) if is_hanzi(ch) else {}
            cache[ch] = [c for c in found if c != ch and len(c) == 1 and is_hanzi(c)]
        return cache[ch]

    return usable


def _bias(evidence: Evidence | None, alpha: float, beta: float, n: int) -> np.ndarray | float:
    """The model's term of each of ``n`` options' scores (0 for the character itself)."""
    if evidence is None or (alpha == 0 and beta == 0):
        return 0.0
    logit, logp = evidence
    if logp is None:
        if alpha != 0:
            raise ValueError("alpha != 0 needs the correction head's log-probabilities")
        out = np.full(n, beta * logit)
    else:
        out = alpha * (logp - logp[0]) + beta * logit
    out[0] = 0.0
    return out


def greedy_substitutions(
    lm: CharNgramLM,
    text: str,
    candidates: Callable[[str], Sequence[str]],
    threshold: float,
    evidence: Mapping[int, Evidence] | None = None,
    alpha: float = 0.0,
    beta: float = 0.0,
    prior: Prior | None = None,
) -> list[Substitution]:
    """The accepted edits of ``text`` in the order they were accepted (module docstring).

    Args:
        lm: the character language model.
        candidates: a character's replacements (single characters other than itself, in the
            order the evidence's log-probabilities follow).
        threshold: the least score for an edit.
        evidence: per character offset, the spelling model's evidence (:data:`Evidence`);
            offsets without any get no bias.
        alpha, beta: the weights of the correction log-probability ratio and the detection
            logit.
        prior: nats added to each option's score (:data:`Prior`).
    """
    return decode_many(
        lm, [text], candidates, threshold, [evidence or {}], alpha, beta, prior=prior
    )[0]


def decode_many(
    lm: CharNgramLM,
    texts: Sequence[str],
    candidates: Callable[[str], Sequence[str]],
    threshold: float,
    evidence: Sequence[Mapping[int, Evidence]] | None = None,
    alpha: float = 0.0,
    beta: float = 0.0,
    threads: int = 1,
    prior: Prior | None = None,
) -> list[list[Substitution]]:
    """:func:`greedy_substitutions` of each text; the first scoring of every text is one batch
    of LM lookups (:meth:`CharNgramLM.substitution_logprobs_many`). With ``threads`` > 1 the
    texts are cut into that many parts searched in threads (numpy's table lookups release the
    GIL; with 2 on 2 cores the search of 50-character sentences went from 1.4 to 1.2 ms a
    sentence without a prior, 2.0 to 1.7-2.0 with one, whose features are Python); the result
    is the same."""
    if threads > 1 and len(texts) >= 2 * threads:
        cut = -(-len(texts) // threads)
        parts = [range(a, min(a + cut, len(texts))) for a in range(0, len(texts), cut)]
        with ThreadPoolExecutor(len(parts)) as pool:
            runs = pool.map(
                lambda r: decode_many(
                    lm,
                    [texts[i] for i in r],
                    candidates,
                    threshold,
                    None if evidence is None else [evidence[i] for i in r],
                    alpha,
                    beta,
                    prior=prior,
                ),
                parts,
            )
            return [found for run in runs for found in run]
    options = []
    of: dict[str, list[str]] = {}  # a character's options, built once per call
    for text in texts:
        for ch in text:
            if ch not in of:
                of[ch] = [ch, *candidates(ch)]
        options.append({i: of[ch] for i, ch in enumerate(text) if len(of[ch]) > 1})
    first = lm.substitution_logprobs_many(texts, [list(o.items()) for o in options])
    out = []
    for n, text in enumerate(texts):
        found = {} if evidence is None else evidence[n]
        out.append(_greedy(lm, text, options[n], first[n], found, alpha, beta, threshold, prior))
    return out


def _greedy(
    lm: CharNgramLM,
    text: str,
    options: dict[int, list[str]],
    first: list[np.ndarray],
    evidence: Mapping[int, Evidence],
    alpha: float,
    beta: float,
    threshold: float,
    prior: Prior | None = None,
) -> list[Substitution]:
    """One text's search, from the LM sums of its options in ``text`` as it is (``first``)."""
    chars = list(text)
    bias = {i: _bias(evidence.get(i), alpha, beta, len(options[i])) for i in options}
    priors: dict[int, np.ndarray] = {}
    uppers: dict[int, float] = {}

    def best(positions: list[int], sums: list[np.ndarray]) -> dict[int, tuple[float, str]]:
        out = {}
        for i, s in zip(positions, sums, strict=True):
            s = s - s[0] + bias[i]
            if prior is not None:
                if i not in priors:
                    if i not in uppers:
                        uppers[i] = prior.upper(text, i, options[i])
                    top = float(s[1:].max()) + uppers[i]
                    if top <= threshold:  # no candidate can pass: an upper bound stands in
                        out[i] = (top, options[i][1])
                        continue
                    priors[i] = prior(text, i, options[i])
                s = s + priors[i]
            k = int(s[1:].argmax()) + 1
            out[i] = (float(s[k]), options[i][k])
        return out

    scores = best(list(options), first)
    reach = lm.order - 1
    accepted = []
    while scores:
        i = max(scores, key=lambda j: scores[j][0])  # ties: the leftmost
        score, suggestion = scores.pop(i)
        if score <= threshold:
            break
        accepted.append(Substitution(i, text[i], suggestion, score))
        chars[i] = suggestion
        near = [j for j in range(i - reach, i + reach + 1) if j in scores]
        if near:
            now = "".join(chars)
            scores |= best(near, lm.substitution_logprobs(now, [(j, options[j]) for j in near]))
    return accepted


def lm_corrections(
    lm: CharNgramLM,
    texts: Sequence[str],
    evidence: Sequence[Mapping[int, Evidence]],
    candidates: Callable[[str], Sequence[str]],
    how: SpellingLM,
    threads: int = 1,
    prior: Prior | None = None,
    logprobs: Callable[[list[tuple[int, int, str]]], list[float]] | None = None,
) -> list[list[Correction]]:
    """Each text's corrections (by offset) decoded with ``lm`` and the spelling model's
    ``evidence`` under a checkpoint's weights and threshold (``how``); a correction's
    ``detect`` is the model's detection probability at it, ``prob`` its correction
    probability of the suggestion (0 without evidence there). ``threads``, ``prior``: as
    :func:`decode_many` (the prior ``how.channel`` describes, built by the caller).

    ``logprobs``: for evidence without the head's log-probabilities (alpha 0), the head's
    log-probability of each accepted edit, given as (text, offset, suggestion), in one call.
    """
    out = []
    runs = decode_many(
        lm,
        texts,
        candidates,
        how.threshold,
        evidence,
        how.alpha,
        how.beta,
        threads=threads,
        prior=prior,
    )
    later: dict[tuple[int, int], float] = {}
    if logprobs is not None:
        asked = [
            (t, e.offset, e.suggestion)
            for t, (subs, found) in enumerate(zip(runs, evidence, strict=True))
            for e in subs
            if e.offset in found and found[e.offset][1] is None
        ]
        later = {(t, off): lp for (t, off, _), lp in zip(asked, logprobs(asked), strict=True)}
    for t, (subs, found) in enumerate(zip(runs, evidence, strict=True)):
        row = []
        for e in sorted(subs, key=lambda e: e.offset):
            logit, logp = found.get(e.offset, (float("-inf"), None))
            prob = 0.0
            if logp is not None:
                prob = math.exp(float(logp[list(candidates(e.original)).index(e.suggestion) + 1]))
            elif (t, e.offset) in later:
                prob = math.exp(later[t, e.offset])
            detect = 1 / (1 + math.exp(-logit)) if logit > -700 else 0.0
            row.append(Correction(e.offset, e.original, e.suggestion, detect, prob))
        out.append(row)
    return out


@dataclass(frozen=True)
class DecodingFit:
    """The weights and threshold chosen by :func:`fit_decoding`, with their validation scores."""

    alpha: float
    beta: float
    threshold: float
    sentence_f1: float
    fpr: float


def sweep_decoding(
    lm: CharNgramLM,
    pairs: Sequence[tuple[str, str]],
    candidates: Callable[[str], Sequence[str]],
    grid: Sequence[float],
    evidence: Sequence[Mapping[int, Evidence]] | None = None,
    weights: Sequence[tuple[float, float]] = ((0.0, 0.0),),
    prior: Prior | None = None,
) -> list[DecodingFit]:
    """The validation scores of every (alpha, beta) of ``weights`` and threshold of ``grid``
    on (source, target) ``pairs``: one search per pair and weight, at the lowest threshold
    (module docstring); per weight, the highest threshold first.

    Args:
        evidence: per pair, the spelling model's evidence (needed for non-zero weights).
        prior: nats added to each option's score (:data:`Prior`), as in the search.
    """
    if not grid or not pairs or not weights:
        raise ValueError("sweep_decoding needs a non-empty grid, pairs and weights")
    if evidence is not None and len(evidence) != len(pairs):
        raise ValueError(f"{len(evidence)} evidence maps for {len(pairs)} pairs")
    sources = [s for s, _ in pairs]
    targets = [t for _, t in pairs]
    tried: list[DecodingFit] = []
    for alpha, beta in weights:
        if (alpha or beta) and evidence is None:
            raise ValueError("non-zero weights need the spelling model's evidence")
        runs = decode_many(lm, sources, candidates, min(grid), evidence, alpha, beta, prior=prior)
        for t in sorted(grid, reverse=True):
            predictions = []
            for src, run in zip(sources, runs, strict=True):
                k = next((k for k, e in enumerate(run) if e.score <= t), len(run))
                predictions.append(apply_corrections(src, run[:k]))
            s = sentence_scores(sources, predictions, targets)
            tried.append(DecodingFit(alpha, beta, t, s["sentence_f1"], s["fpr"]))
    return tried


def best_decoding(tried: Sequence[DecodingFit], max_fpr: float | None = None) -> DecodingFit:
    """The best sentence F1 of :func:`sweep_decoding`'s ``tried`` among those that change at
    most ``max_fpr`` of the clean pairs (if given and any do; else among all); ties: the first
    (the higher threshold, the earlier weights)."""
    quiet = [f for f in tried if max_fpr is None or f.fpr <= max_fpr] or list(tried)
    return max(quiet, key=lambda f: f.sentence_f1)


def fit_decoding(
    lm: CharNgramLM,
    pairs: Sequence[tuple[str, str]],
    candidates: Callable[[str], Sequence[str]],
    grid: Sequence[float],
    evidence: Sequence[Mapping[int, Evidence]] | None = None,
    weights: Sequence[tuple[float, float]] = ((0.0, 0.0),),
    max_fpr: float | None = None,
    prior: Prior | None = None,
) -> DecodingFit:
    """:func:`best_decoding` of :func:`sweep_decoding`."""
    tried = sweep_decoding(lm, pairs, candidates, grid, evidence, weights, prior)
    return best_decoding(tried, max_fpr)
