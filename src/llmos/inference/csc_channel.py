"""A noisy-channel prior for Chinese spelling correction decoded with a character n-gram LM.

The n-gram search (:mod:`llmos.inference.csc_lm`) scores a substitution of candidate ``c`` for
the character ``x`` at position ``i`` by the LM's gain alone: every candidate of the confusion
set is equally likely a priori, and every character equally likely a typo. The noisy-channel
view of spelling correction (Kernighan, Church & Gale 1990) adds log P(x typed | c meant), and
what makes a character suspect in the first place. This module adds that as a per-(position,
candidate) **prior** in nats, a linear function of features of the substitution:

- how ``x`` relates to ``c``: same pinyin and tone, same pinyin in another tone, similar shape,
  each with the log size of ``c``'s set (a character with many homophones is mistyped as any
  one of them less often); the number of candidates at the position (the best of many gains is
  high by chance more often);
- how common ``c`` and ``x`` are (the LM's unigram counts; pycorrector's common characters);
- a **word lexicon** (pycorrector's ``word_freq.txt``, 584k words with frequencies) and its
  person and place names: the best word of 2-4 characters over position ``i`` with ``c`` put in
  against with ``x`` left (a typo breaks a word, its correction mends one);
- whether the position starts or ends a clause (less context on one side).

The weights are fitted by logistic regression (scikit-learn) on every candidate of validation
pairs, with the LM gain as a feature, and divided by the gain's weight, so that ``LM gain +
prior`` is the fitted log-odds in nats up to a constant; the search's threshold is then fitted
as before. On the synthetic test set it lifts the classic method's sentence F1 under the 5 %
cap on changed clean sentences from 0.692 to 0.748 (docs/BENCHMARKS.md, "Spelling
correction: a noisy-channel prior"); with a spelling model beside it, 0.764.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmos.data.spelling import (
    CHAR_SET_FILE,
    LEXICON_FILES,
    PERSON_FILE,
    PLACE_FILE,
    WORD_FREQ_FILE,
    ConfusionSet,
    read_char_set,
    read_confusion,
    read_lexicon,
)
from llmos.errors import LlmosError
from llmos.models.ngram import CharNgramLM

FEATURES = (
    "same_tone",
    "same_tone_log_size",
    "other_tone",
    "other_tone_log_size",
    "shape",
    "shape_log_size",
    "log_candidates",
    "log_freq_suggestion",
    "log_freq_original",
    "word_gain",
    "word_after",
    "word_before",
    "name_gain",
    "name_before",
    "common_original",
    "common_suggestion",
    "starts_clause",
    "ends_clause",
)
WORD_LENGTHS = (2, 3, 4)
# The features that depend on the typed character and the candidates only (cached per pair);
# the others read the text around the position.
STATIC = tuple(FEATURES.index(f) for f in (*FEATURES[:9], "common_original", "common_suggestion"))


def word_score(lexicon: Mapping[str, float], text: str, i: int) -> float:
    """The best ``lexicon[w] + len(w)`` over the words ``w`` of 2-4 characters of ``text`` that
    cover position ``i``; 0 where none does (``lexicon``: word -> log(frequency + 1))."""
    best, n = 0.0, len(text)
    for ln in WORD_LENGTHS:
        for a in range(max(0, i - ln + 1), min(i, n - ln) + 1):
            w = lexicon.get(text[a : a + ln])
            if w is not None and w + ln > best:
                best = w + ln
    return best


def _affixes(lexicon: Mapping[str, float]) -> tuple[frozenset[str], frozenset[str]]:
    """The proper prefixes and suffixes of 2+ characters of the lexicon's words: a window whose
    left or right part is not one cannot hold a word whatever goes in its hole."""
    heads = {w[:k] for w in lexicon for k in range(2, len(w))}
    tails = {w[-k:] for w in lexicon for k in range(2, len(w))}
    return frozenset(heads), frozenset(tails)


def _with_hole(
    lexicon: Mapping[str, float],
    affixes: tuple[frozenset[str], frozenset[str]],
    text: str,
    i: int,
    chars: Sequence[str],
) -> np.ndarray:
    """:func:`word_score` of ``text`` with each of ``chars`` at position ``i``."""
    heads, tails = affixes
    n = len(text)
    spans = [
        (left, right, ln)
        for ln in WORD_LENGTHS
        for a in range(max(0, i - ln + 1), min(i, n - ln) + 1)
        if (len(left := text[a:i]) < 2 or left in heads)
        and (len(right := text[i + 1 : a + ln]) < 2 or right in tails)
    ]
    get = lexicon.get
    out = [0.0] * len(chars)
    for left, right, ln in spans:
        for k, c in enumerate(chars):
            w = get(left + c + right)
            if w is not None and w + ln > out[k]:
                out[k] = w + ln
    return np.array(out)


@dataclass
class ChannelFeatures:
    """The features of :data:`FEATURES` for a position's candidates.

    Args:
        confusion: the confusion sets the candidates come from.
        lm: the character LM whose unigram counts tell how common a character is.
        words: word -> log(frequency + 1) (:func:`llmos.data.spelling.read_lexicon`).
        names: person and place names, the same way.
        common: the common characters (``common_char_set.txt``).
    """

    confusion: ConfusionSet
    lm: CharNgramLM
    words: Mapping[str, float]
    names: Mapping[str, float]
    common: frozenset[str]
    _static: dict[tuple[str, tuple[str, ...]], np.ndarray] = field(
        default_factory=dict, init=False, repr=False
    )

    def __post_init__(self) -> None:
        self._word_affixes = _affixes(self.words)
        self._name_affixes = _affixes(self.names)

    def _log_freq(self, ch: str) -> float:
        return math.log((self.lm.char_count(ch) + 1) / self.lm.total_chars)

    def static(self, x: str, cands: Sequence[str]) -> np.ndarray:
        """(len(cands), len(STATIC)) features of :data:`STATIC` of typing ``x`` for each of
        ``cands`` (cached per pair)."""
        key = (x, tuple(cands))
        if key not in self._static:
            conf = self.confusion
            rows = []
            for c in key[1]:
                row = []
                for table in (conf.same_tone, conf.other_tone, conf.stroke):
                    group = table.get(c, ())
                    inside = x in group
                    row += [float(inside), inside * math.log(len(group) + 1)]
                row += [math.log(len(cands)), self._log_freq(c), self._log_freq(x)]
                row += [float(x in self.common), float(c in self.common)]
                rows.append(row)
            self._static[key] = np.array(rows).reshape(len(cands), len(STATIC))
        return self._static[key]

    def matrix(self, text: str, i: int, cands: Sequence[str]) -> np.ndarray:
        """(len(cands), len(FEATURES)) features of putting each of ``cands`` at ``i``."""
        x, cands = text[i], tuple(cands)
        k = len(cands)
        out = np.empty((k, len(FEATURES)))
        out[:, STATIC] = self.static(x, cands)
        before = word_score(self.words, text, i)
        after = _with_hole(self.words, self._word_affixes, text, i, cands)
        out[:, 9] = after - before
        out[:, 10] = after > 0
        out[:, 11] = before > 0
        name_before = word_score(self.names, text, i)
        out[:, 12] = _with_hole(self.names, self._name_affixes, text, i, cands) - name_before
        out[:, 13] = name_before > 0
        out[:, 16] = i == 0 or not text[i - 1].isalnum()
        out[:, 17] = i == len(text) - 1 or not text[i + 1].isalnum()
        return out


# The files the features read beside the confusion sets (``tasks/csc-zh/confusion/``).
CHANNEL_FILES = (*LEXICON_FILES, CHAR_SET_FILE)


def channel_features(confusion: Path, lm: CharNgramLM) -> ChannelFeatures:
    """The features over the pycorrector files in the directory ``confusion`` (confusion sets,
    :data:`CHANNEL_FILES`) and ``lm``'s character counts.

    Raises:
        DataError: a file is missing or malformed (named).
    """
    confusion = Path(confusion)
    names = read_lexicon(confusion / PERSON_FILE)
    for name, score in read_lexicon(confusion / PLACE_FILE).items():
        names[name] = max(score, names.get(name, score))
    return ChannelFeatures(
        read_confusion(confusion),
        lm,
        read_lexicon(confusion / WORD_FREQ_FILE),
        names,
        read_char_set(confusion / CHAR_SET_FILE),
    )


@dataclass(frozen=True)
class ChannelWeights:
    """Nats per unit of each feature of :data:`FEATURES`, and a constant: the prior of a
    substitution is ``constant + weights . features``."""

    weights: dict[str, float]
    constant: float

    def __post_init__(self) -> None:
        if set(self.weights) != set(FEATURES):
            missing = sorted(set(FEATURES) - set(self.weights))
            extra = sorted(set(self.weights) - set(FEATURES))
            raise ValueError(f"channel weights: missing {missing}, unknown {extra}")

    def vector(self) -> np.ndarray:
        return np.array([self.weights[f] for f in FEATURES])

    def to_json(self) -> dict:
        return {"weights": dict(self.weights), "constant": self.constant}


class ChannelPrior:
    """The prior of every candidate at a position, as the search adds it to the LM gain:
    ``prior(text, i, [x, *cands])`` is 0 for ``x`` itself and ``constant + w . features`` for
    each candidate; :meth:`upper` bounds it from the cheap features alone, so that the search
    computes the lexicon's features only where a candidate could reach the threshold."""

    def __init__(self, features: ChannelFeatures, weights: ChannelWeights) -> None:
        self.features, self.weights = features, weights
        self._w = weights.vector()
        # The lexicon and clause features' largest contribution, from their ranges.
        top_word = max(features.words.values(), default=0.0) + max(WORD_LENGTHS)
        top_name = max(features.names.values(), default=0.0) + max(WORD_LENGTHS)
        ranges = {
            "word_gain": (-top_word, top_word),
            "name_gain": (-top_name, top_name),
            **dict.fromkeys(
                ("word_after", "word_before", "name_before", "starts_clause", "ends_clause"),
                (0.0, 1.0),
            ),
        }
        w = weights.weights
        self._dynamic = sum(max(w[f] * lo, w[f] * hi) for f, (lo, hi) in ranges.items())
        self._w_static = self._w[list(STATIC)]
        self._uppers: dict[tuple[str, ...], float] = {}

    def __call__(self, text: str, i: int, options: Sequence[str]) -> np.ndarray:
        out = np.zeros(len(options))
        out[1:] = self.weights.constant + self.features.matrix(text, i, options[1:]) @ self._w
        return out

    def upper(self, text: str, i: int, options: Sequence[str]) -> float:
        """An upper bound of :meth:`__call__`'s values for the candidates ``options[1:]``
        (cached per typed character and candidates)."""
        key = (text[i], *options[1:])
        bound = self._uppers.get(key)
        if bound is None:
            static = self.features.static(text[i], options[1:]) @ self._w_static
            bound = self._uppers[key] = float(self.weights.constant + static.max() + self._dynamic)
        return bound


def fit_channel(
    lm: CharNgramLM,
    pairs: Sequence[tuple[str, str]],
    candidates: Callable[[str], Sequence[str]],
    features: ChannelFeatures,
    c: float = 1.0,
) -> ChannelWeights:
    """Fit the prior's weights by logistic regression over every candidate of every position
    of the (source, target) ``pairs``: the label is whether the candidate is the target's
    character there, the features the LM gain in the source and :data:`FEATURES`
    (standardised); the weights are then divided by the gain's, so that they are in nats, and
    the prior is centred on the fitting candidates.

    Args:
        candidates: a character's replacements (as the search uses them).
        c: the inverse L2 regularisation strength (scikit-learn's ``C``).

    Raises:
        ValueError: no pairs, or no candidate is ever right, or every one is.
        LlmosError: scikit-learn is not installed (serving with fitted weights does not need
            it).
    """
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise LlmosError(
            "fitting the channel prior needs scikit-learn: pip install 'llmos[fewshot]'"
        ) from None

    if not pairs:
        raise ValueError("fit_channel needs pairs")
    texts = [s for s, _ in pairs]
    options = [{i: [ch, *candidates(ch)] for i, ch in enumerate(s)} for s in texts]
    options = [{i: o for i, o in opts.items() if len(o) > 1} for opts in options]
    sums = lm.substitution_logprobs_many(texts, [list(o.items()) for o in options])
    rows, labels = [], []
    for (source, target), opts, found in zip(pairs, options, sums, strict=True):
        for (i, o), s in zip(opts.items(), found, strict=True):
            rows.append(np.c_[s[1:] - s[0], features.matrix(source, i, o[1:])])
            labels.extend(target[i] == ch for ch in o[1:])
    if not rows or not any(labels) or all(labels):
        raise ValueError("fit_channel needs pairs with both right and wrong candidates")
    X, y = np.concatenate(rows), np.array(labels)
    mean, scale = X[:, 1:].mean(0), X[:, 1:].std(0)
    scale[scale == 0] = 1.0
    clf = LogisticRegression(C=c, max_iter=2000)
    clf.fit(np.c_[X[:, :1], (X[:, 1:] - mean) / scale], y)
    w = clf.coef_[0]
    if w[0] <= 0:
        raise ValueError("fit_channel: the LM gain's weight came out non-positive")
    per_unit = w[1:] / scale / w[0]
    # Centred: the prior averages 0 over the fitting candidates, so thresholds stay gains in
    # nats (the regression's intercept is left to the threshold fitted after).
    constant = float(-(w[1:] * mean / scale).sum() / w[0])
    return ChannelWeights(dict(zip(FEATURES, map(float, per_unit), strict=True)), constant)
