"""Verbalizers found from a few labelled examples, for cloze classification with many labels.

PET reads each label as a verbalizer word at a pattern's mask (:mod:`llmos.inference.cloze`).
With two labels a person writes them (好 / 差, great / terrible); with forty intents there is
no obvious single word for each, and a poor one costs accuracy. This module chooses them from
the examples, in the manner of automatic label-word search (Gao et al. 2021, "Making
Pre-trained Language Models Better Few-shot Learners", section 5.1, which shortlists each
label's words by the masked LM's likelihood on that label's examples; Schick et al. 2020,
"Automatically Identifying Words That Can Serve as Labels for Few-Shot Text Classification",
which chooses words by how well they tell the label's examples from the rest):

1. **Candidates**: every piece of the vocabulary that is a whole word, letters or CJK
   characters only (``▁great``, ``好``, ``天气``), which :func:`~llmos.inference.cloze.word_piece`
   reads back as that same piece. Sub-word pieces, digits, punctuation and special tokens
   are not words a pattern can end in.
2. **Evidence**: each example's log-probability of every candidate at the mask, averaged over
   the patterns.
3. **Shortlist** (LM-BFF's pruning): a label's ``shortlist`` candidates of highest mean
   log-probability over its own examples: words the masked LM finds natural there. Without
   it the ratio of step 4 favours rare words whose tiny probabilities differ by a large
   factor.
4. **Score**: a shortlisted word's mean log-probability over the label's examples less its mean
   over the other labels' examples (a log-likelihood ratio: how much likelier the word is for
   this label than for the rest).
5. **Assignment**: each label gets a different word. Greedily, the (label, word) pair of best
   score among the labels still without one and the words still free is taken first; a label
   whose shortlist is used up takes its best free word of the whole vocabulary.
   ``per_label`` > 1 repeats the assignment with the taken words removed.
6. **Shortlist size**: steps 3-5 run for each of ``shortlists`` (10, 30, 100, 300 words),
   and the words that score the examples themselves best as cloze verbalizers win (accuracy,
   then the mean log-probability of the right label), as LM-BFF chooses among its candidate
   assignments by their accuracy on the few-shot training set.

The search reads the masked LM as it is, before PET fine-tunes it; PET then trains the
chosen words' scores (:func:`llmos.train.pet.train_pet` calls this when no verbalizer is
given). :class:`VerbalizerSearch` keeps the evidence so a caller can print why each word won.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from llmos.errors import LlmosError
from llmos.inference.cloze import BLANK_PIECE, check_pattern, fill, word_piece
from llmos.inference.zeroshot import MaskScorer

log = logging.getLogger("llmos.inference")

SHORTLISTS = (10, 30, 100, 300)


def word_candidates(tokenizer: Tokenizer) -> dict[int, str]:
    """``{piece id: word}`` for every piece of ``tokenizer``'s vocabulary that is a whole word
    of letters or CJK characters and that the tokenizer reads that word back as (step 1 of
    the module docstring), in id order."""
    found: dict[int, str] = {}
    for piece, pid in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        word = piece[len(BLANK_PIECE) :] if piece.startswith(BLANK_PIECE) else piece
        if word and word.isalpha() and word_piece(tokenizer, word) == pid:
            found[pid] = word
    return found


@dataclass
class VerbalizerSearch:
    """What the search found: each label's words, and for each its score (the
    log-likelihood ratio of step 4 of the module docstring) and its mean log-probability over
    the label's examples."""

    verbalizers: dict[str, list[str]]
    scores: dict[str, list[float]]
    log_probs: dict[str, list[float]]
    candidates: int
    shortlist: int  # the shortlist size chosen
    tried: dict[int, tuple[float, float]]  # each size's (accuracy, mean log-prob) on the examples


def search_verbalizers(
    scorer: MaskScorer,
    tokenizer: Tokenizer,
    examples: Mapping[str, Sequence[str]],
    patterns: str | Sequence[str],
    *,
    per_label: int = 1,
    shortlists: Sequence[int] = SHORTLISTS,
    batch_size: int = 32,
) -> VerbalizerSearch:
    """Choose ``per_label`` distinct verbalizer words for each label of ``examples`` (the
    module docstring's steps).

    Args:
        scorer: the masked LM (a pipeline with an MLM head, or PET's in-memory scorer).
        tokenizer: its tokenizer (for the vocabulary's candidate words).
        examples: ``{label: [texts]}``, at least one text per label.
        patterns: one pattern or several, each with ``{text}`` and ``[MASK]`` once.
        per_label: words per label.
        shortlists: the shortlist sizes tried (step 6 of the module docstring).

    Raises:
        LlmosError: a bad pattern, a label without examples, or fewer candidate words in
            the vocabulary than labels need.
    """
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    if not patterns:
        raise LlmosError("verbalizer search needs a pattern ('{text} It was about [MASK].')")
    for pattern in patterns:
        check_pattern(pattern, scorer.mask_token)
    labels = list(examples)
    empty = [lab for lab in labels if not examples[lab]]
    if empty:
        raise LlmosError(f"verbalizer search: no examples of {empty}")
    if per_label < 1 or not shortlists or min(shortlists) < 1:
        raise LlmosError(
            f"per_label and every shortlist size must be >= 1, got {per_label}, {shortlists}"
        )
    words = word_candidates(tokenizer)
    if len(words) < per_label * len(labels):
        raise LlmosError(
            f"the vocabulary has {len(words)} whole-word pieces; {len(labels)} labels x "
            f"{per_label} words need more"
        )
    ids = list(words)
    texts = [t for lab in labels for t in examples[lab]]
    owner = np.array([i for i, lab in enumerate(labels) for _ in examples[lab]])
    logp = np.zeros((len(texts), len(ids)), dtype=np.float64)
    for pattern in patterns:
        filled = [fill(pattern, t, scorer.mask_token) for t in texts]
        logp += scorer.mask_scores(filled, ids, batch_size)
    logp /= len(patterns)
    k = len(labels)
    sums = np.stack([logp[owner == c].sum(0) for c in range(k)])  # (K, C)
    counts = np.bincount(owner, minlength=k).astype(np.float64)[:, None]
    own = sums / counts
    rest = counts.sum() - counts
    # the other labels' mean (0 for a single label, whose ratio is then its own mean)
    others = (sums.sum(0, keepdims=True) - sums) / np.maximum(rest, 1.0)
    ratio = own - others
    sizes = sorted({min(n, len(ids)) for n in shortlists})
    assigned = {size: _assign(own, ratio, size, per_label) for size in sizes}
    tried = {size: _fit_on_examples(logp, owner, picks) for size, picks in assigned.items()}
    size = max(sizes, key=lambda n: tried[n])  # the first (smallest) of equals
    picks = assigned[size]
    chosen = {lab: [words[ids[c]] for c in picks[i]] for i, lab in enumerate(labels)}
    scores = {lab: [float(ratio[i, c]) for c in picks[i]] for i, lab in enumerate(labels)}
    means = {lab: [float(own[i, c]) for c in picks[i]] for i, lab in enumerate(labels)}
    log.info(
        "verbalizers from %d examples, %d candidate words: %s",
        len(texts),
        len(ids),
        ", ".join(f"{lab}={'/'.join(ws)}" for lab, ws in chosen.items()),
    )
    return VerbalizerSearch(chosen, scores, means, len(ids), size, tried)


def _assign(own: np.ndarray, ratio: np.ndarray, shortlist: int, per_label: int) -> list[list[int]]:
    """Each label's candidate columns: steps 3-5 of the module docstring."""
    k = own.shape[0]
    short = np.zeros_like(ratio, dtype=bool)
    top = np.argpartition(-own, shortlist - 1, axis=1)[:, :shortlist]
    np.put_along_axis(short, top, True, axis=1)
    picks: list[list[int]] = [[] for _ in range(k)]
    taken = np.zeros(own.shape[1], dtype=bool)
    for _ in range(per_label):
        waiting = set(range(k))
        while waiting:
            rows = sorted(waiting)
            # the shortlist first; a label whose shortlist is used up reads every candidate
            usable = short[rows] & ~taken
            usable[~usable.any(1)] = ~taken
            masked = np.where(usable, ratio[rows], -np.inf)
            r, c = np.unravel_index(int(np.argmax(masked)), masked.shape)
            taken[c] = True
            waiting.discard(rows[r])
            picks[rows[r]].append(int(c))
    return picks


def _fit_on_examples(
    logp: np.ndarray, owner: np.ndarray, picks: list[list[int]]
) -> tuple[float, float]:
    """(accuracy, mean log-probability of the right label) of cloze scoring with these words
    on the examples themselves: a label's score is the log of its words' mean probability
    (the patterns' log-probabilities averaged), normalised over the labels."""
    cols = [np.logaddexp.reduce(logp[:, c], axis=1) - np.log(len(c)) for c in picks]
    label = np.stack(cols, axis=1)
    label = label - np.logaddexp.reduce(label, axis=1, keepdims=True)
    right = label[np.arange(len(owner)), owner]
    return float((label.argmax(1) == owner).mean()), float(right.mean())
