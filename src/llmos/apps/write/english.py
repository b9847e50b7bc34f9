"""English spelling correction: SymSpell candidates (``symspellpy``) from a word-frequency list
of the English corpora, ranked in context by n-gram LMs.

Words: letters with inner apostrophes or hyphens (``don't``, ``co-writer``), not touching a
digit, ``_`` or another word character (``mp3``, ``3rd`` hold none), outside URLs, e-mail
addresses and dotted names (``example.com``, ``e.g.``). The frequency list counts them lower-cased.

Detection (non-word errors only: ``form`` typed for ``from`` is not looked for): a word is checked
when its lower case is not in the dictionary (words seen ``min_count`` times or more), without a
possessive ``'s``; an unknown hyphenated word part by part. Words shorter than ``min_length`` and,
with ``skip_acronyms``, all-caps words of at most four letters (``NBC``) are never checked.

Candidates: the dictionary words within ``max_edit`` (Damerau, optimal string alignment) from
``SymSpell.lookup(word, Verbosity.ALL, max_edit)``. Without an LM the first in symspellpy's order
wins (least edits, then most frequent): the frequency-only baseline. With a character LM, each
candidate c (in the word's case pattern) scores

    char * lm(c) + word * wlm(c) + freq * ln count(c) - edit * edits(c) - keyboard * off_key(c)

lm(c): the character LM's log-probability of the sentence with c in place, on the characters
whose n-grams touch c (:meth:`CharNgramLM.window_logprobs`); wlm(c): the same for the optional
word LM (:meth:`EnglishSpeller.train_word_lm`: the same Kneser-Ney model over words, a dictionary
word coded as one character); off_key(c): 1 when the typo substitutes, or inserts, a key that is
not a QWERTY neighbour (:func:`off_keyboard`), a one-parameter channel model (Kernighan, Church &
Gale 1990). The word as typed scores char * lm + word * wlm + keep, so a name the LMs find likely
stays (``keep=None``: a word with a candidate always changes). Words are corrected left to right,
each in the context of the corrections before it; :meth:`EnglishSpeller.fit` sets the weights.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections import Counter
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np
from symspellpy import SymSpell, Verbosity

from llmos.apps.write.edits import Edit, apply_edits
from llmos.models.ngram import CharNgramLM

WORD = re.compile(r"(?<!\w)[^\W\d_]+(?:['’-][^\W\d_]+)*(?!\w)")
# Spans whose words are never checked: URLs, e-mail addresses, dotted names (example.com, e.g.).
SKIP = re.compile(r"(?:https?://|www\.)\S+|\S+@\S+|\w+(?:\.\w+)+\.?")
POSSESSIVE = ("'s", "’s")
# QWERTY neighbours of each letter: the keyboard channel and the synthetic typos.
KEYBOARD = {
    "q": "wa", "w": "qeas", "e": "wrsd", "r": "etdf", "t": "ryfg", "y": "tugh", "u": "yihj",
    "i": "uojk", "o": "ipkl", "p": "ol", "a": "qwsz", "s": "weadzx", "d": "erfsxc", "f": "rtdgcv",
    "g": "tyfhvb", "h": "yugjbn", "j": "uihknm", "k": "iojlm", "l": "opk", "z": "asx", "x": "zsdc",
    "c": "xdfv", "v": "cfgb", "b": "vghn", "n": "bhjm", "m": "njk",
}  # fmt: skip
TYPO_WORD = re.compile(r"[a-z]{3,}|[A-Z][a-z]{2,}|[A-Z]{3,}")  # words make_pairs may misspell
FIRST_CODE = 0x10000  # the word LM's code of dictionary word i is chr(FIRST_CODE + i)


def build_frequencies(sentences: Iterable[str]) -> dict[str, int]:
    """Lower-cased counts of the words (see the module docstring) of ``sentences``."""
    return dict(Counter(m.group() for s in sentences for m in WORD.finditer(s.lower())))


def match_case(word: str, like: str) -> str:
    """``word`` (lower case) in ``like``'s case pattern: ``THE`` for ``TEH``, ``The`` for ``Teh``"""
    if len(like) > 1 and like.isupper():
        return word.upper()
    return word[:1].upper() + word[1:] if like[:1].isupper() else word


def off_keyboard(typo: str, word: str) -> bool:
    """Whether lower-case ``typo``, one edit from ``word``, substitutes a key that is not a
    QWERTY neighbour of the right one, or inserts one that is neither a neighbour nor a copy of
    a letter next to it. Deletions, transpositions and other distances: False."""
    if len(typo) == len(word):
        diff = [i for i, (a, b) in enumerate(zip(typo, word, strict=True)) if a != b]
        return len(diff) == 1 and typo[diff[0]] not in KEYBOARD.get(word[diff[0]], "")
    if len(typo) != len(word) + 1:
        return False
    i = next((i for i in range(len(word)) if typo[i] != word[i]), len(word))
    near = {typo[j] for j in (i - 1, i + 1) if 0 <= j < len(typo)}
    return typo[i] not in near and not any(typo[i] in KEYBOARD.get(c, "") for c in near)


@dataclass(frozen=True)
class Ranking:
    """The context ranking's weights (see the module docstring). The defaults: :meth:`fit` on
    the English corpus's valid split (``bench/write_en_eval.py``, char LM order 6)."""

    char: float = 1.0
    word: float = 0.0
    freq: float = 0.5
    edit: float = 24.0
    keyboard: float = 12.0
    keep: float | None = -16.0


# fit()'s default grid, by Ranking field.
GRID: dict[str, Sequence] = {
    "char": (0.0, 0.5, 1.0), "word": (0.0, 0.5, 1.0, 2.0), "freq": (0.0, 0.5, 1.0),
    "edit": (4.0, 8.0, 12.0, 16.0, 24.0, 32.0), "keyboard": (0.0, 2.0, 4.0, 8.0, 12.0, 16.0),
    "keep": (None, -24.0, -16.0, -12.0, -8.0, -4.0, 0.0, 4.0),
}  # fmt: skip
# A word to check: its span, the index of its WORD match and of its hyphen part (-1: whole).
Unit = tuple[int, int, int, int]


class EnglishSpeller:
    """Non-word spelling correction of English text.

    Args:
        frequencies: lower-cased word counts (:func:`build_frequencies`).
        lm: the character LM that ranks candidates in context; None: frequency-only.
        max_edit: the most edits between a word and a candidate.
        min_count: the least count of a dictionary word (a valid word and a candidate); 2
            fixed fewer English test typos than 1 and had more false alarms (47 vs 27 / 1k).
        min_length: shorter words are never checked.
        skip_acronyms: never check all-caps words of at most four letters (off: on the
            English test typos it spared no correct word).
        ranking: the context ranking's weights (:meth:`fit` sets them).
    """

    def __init__(
        self,
        frequencies: Mapping[str, int],
        lm: CharNgramLM | None = None,
        max_edit: int = 2,
        min_count: int = 1,
        min_length: int = 2,
        skip_acronyms: bool = False,
        ranking: Ranking | None = None,
    ) -> None:
        if max_edit < 1 or min_count < 1:
            raise ValueError(f"max_edit and min_count must be >= 1, got {max_edit}, {min_count}")
        self.lm, self.max_edit, self.min_length = lm, max_edit, min_length
        self.skip_acronyms, self.ranking = skip_acronyms, ranking or Ranking()
        self.symspell = SymSpell(max_edit, prefix_length=max(7, max_edit + 1))
        for word, count in frequencies.items():
            if count >= min_count:
                self.symspell.create_dictionary_entry(word, count)
        self.words = self.symspell.words  # the dictionary: word -> count
        if not self.words:
            raise ValueError(f"no word seen {min_count} times or more: pass more text")
        self._codes = {w: chr(FIRST_CODE + i) for i, w in enumerate(sorted(self.words))}
        self._rare = chr(FIRST_CODE + len(self._codes))  # every other word
        self.word_lm: CharNgramLM | None = None
        self.candidates = lru_cache(maxsize=1 << 16)(self._candidates)

    def _candidates(self, word: str) -> tuple[tuple[str, int, int], ...]:
        """(term, edits, count) of the dictionary words near lower-case ``word``, in
        symspellpy's order (least edits, then most frequent); cached as :meth:`candidates`."""
        found = self.symspell.lookup(word, Verbosity.ALL, self.max_edit)
        return tuple((s.term, s.distance, s.count) for s in found if s.term != word)

    def word_codes(self, text: str) -> str:
        """``text``'s words as the word LM reads them: one character per word (a possessive
        ``'s`` dropped), the rare-word code for words outside the dictionary."""
        words = (m.group().lower() for m in WORD.finditer(text))
        words = (w[:-2] if w.endswith(POSSESSIVE) else w for w in words)
        return "".join(self._codes.get(w, self._rare) for w in words)

    def train_word_lm(self, sentences: Iterable[str], order: int = 3) -> CharNgramLM:
        """Train, set and return the word LM on ``sentences`` (the dictionary's corpus)."""
        codes = (self.word_codes(s) for s in sentences)
        self.word_lm = CharNgramLM.train(codes, order=order, progress=False)
        return self.word_lm

    def _checkable(self, word: str) -> bool:
        """Whether ``word`` (a whole word, a part or a stem) is checked."""
        acronym = self.skip_acronyms and word.isupper() and len(word) <= 4
        return len(word) >= self.min_length and word.lower() not in self.words and not acronym

    def units(self, text: str) -> list[Unit]:
        """The words of ``text`` to check, by position."""
        skip = [m.span() for m in SKIP.finditer(text)]
        out = []
        for k, m in enumerate(WORD.finditer(text)):
            (start, end), word = m.span(), m.group()
            if word.lower() in self.words or any(a <= start < b for a, b in skip):
                continue
            if word.endswith(POSSESSIVE):
                end, word = end - 2, word[:-2]
            if "-" not in word:
                out += [(start, end, k, -1)] if self._checkable(word) else []
                continue
            for j, part in enumerate(word.split("-")):
                out += [(start, start + len(part), k, j)] if self._checkable(part) else []
                start += len(part) + 1
        return out

    def _options(self, text: str, unit: Unit) -> tuple[list[str], np.ndarray]:
        """The word at ``unit`` of ``text`` and its candidates (in its case pattern), and their
        features (R, 5): char LM, word LM, ln count, edits, off-keyboard; row 0 is the word as
        typed (ln count, edits and off-keyboard 0)."""
        start, end, k, j = unit
        word = text[start:end]
        found = self.candidates(word.lower())
        forms = [word, *(match_case(t, word) for t, _, _ in found)]
        feats = np.zeros((len(forms), 5))
        feats[1:, 2] = [math.log(c) for _, _, c in found]
        feats[1:, 3] = [d for _, d, _ in found]
        feats[1:, 4] = [off_keyboard(word.lower(), t) for t, _, _ in found]
        if self.lm is None or not found:
            return forms, feats
        for n in {len(form) for form in forms}:  # window_logprobs: one length per call
            rows = [i for i, form in enumerate(forms) if len(form) == n]
            filled = text[:start] + forms[rows[0]] + text[end:]
            reps = [forms[i] for i in rows]
            feats[rows, 0] = self.lm.window_logprobs(filled, start, start + n, reps)
        if self.word_lm is not None and j < 0:
            reps = [self._codes.get(w.lower(), self._rare) for w in forms]
            feats[:, 1] = self.word_lm.window_logprobs(self.word_codes(text), k, k + 1, reps)
        return forms, feats

    @staticmethod
    def _scores(feats: np.ndarray, r: Ranking, typed: np.ndarray | int = 0) -> np.ndarray:
        """Each option's score under ``r``; ``typed``: the rows of words as typed (-inf when
        ``r.keep`` is None)."""
        lms = r.char * feats[:, 0] + r.word * feats[:, 1]
        s = lms + r.freq * feats[:, 2] - r.edit * feats[:, 3] - r.keyboard * feats[:, 4]
        s[typed] = -np.inf if r.keep is None else lms[typed] + r.keep
        return s

    def _choose(self, feats: np.ndarray) -> tuple[int, float]:
        """The index of the chosen option (0: keep the word) and the confidence in it."""
        if self.lm is None:  # symspellpy's order; confidence: count share at the least edits
            counts = np.exp(feats[1:, 2][feats[1:, 3] == feats[1, 3]])
            return 1, float(counts[0] / counts.sum())
        s = self._scores(feats, self.ranking)
        i = int(np.argmax(s))
        p = np.exp(s - s[i])
        return i, float(p[i] / p.sum())

    def correct(self, text: str) -> list[Edit]:
        """The spelling edits of ``text`` (offsets into it), by position; ``score`` is the
        confidence in the suggestion (the softmax of the options' scores, the word as typed
        included; without an LM, its count's share among the candidates as near)."""
        edits, current, shift = [], text, 0
        for start, end, k, j in self.units(text):
            forms, feats = self._options(current, (start + shift, end + shift, k, j))
            i, confidence = self._choose(feats) if len(forms) > 1 else (0, 0.0)
            if i == 0:
                continue  # kept, or no candidate
            current = current[: start + shift] + forms[i] + current[end + shift :]
            shift += len(forms[i]) - (end - start)
            edits.append(Edit(start, end, text[start:end], forms[i], round(confidence, 4)))
        return edits

    def correct_text(self, text: str) -> str:
        """``text`` with :meth:`correct`'s edits applied."""
        return apply_edits(text, self.correct(text))

    def fit(self, pairs: Sequence[tuple], grid: Mapping[str, Sequence] | None = None) -> Ranking:
        """Set and return the weights of the grid (:data:`GRID`, updated with ``grid``) that
        leave the most checked words right on (noisy, clean, ...) ``pairs`` (:func:`make_pairs`'
        triples will do): the word as typed where it was right, the clean word where not. Each
        word is scored in its noisy sentence; pairs whose words do not line up are skipped."""
        if self.lm is None:
            raise ValueError("fit ranks with an LM: pass lm= to EnglishSpeller")
        feats, right, groups, rows = [], [], [], 0
        for noisy, clean, *_ in pairs:
            truth = [m.group() for m in WORD.finditer(clean)]
            if len(truth) != len(WORD.findall(noisy)):
                continue
            for unit in self.units(noisy):
                k, j = unit[2:]
                want = truth[k] if j < 0 else truth[k].split("-")[j]
                want = want[:-2] if j < 0 and want.endswith(POSSESSIVE) else want  # the stem
                forms, f = self._options(noisy, unit)
                hit = [0] if want == forms[0] else [i for i, w in enumerate(forms) if w == want]
                feats.append(f)
                groups.append(rows)
                right.append(rows + hit[0] if hit else -1)
                rows += len(f)
        if not feats:
            raise ValueError("fit found no word to check in pairs: pass noisy, clean pairs")
        flat, starts, right_at = np.concatenate(feats), np.array(groups), np.array(right)
        solvable = right_at >= 0
        # Ties go to the first option, as np.argmax does at inference.
        tie_break = 1e-9 * (np.arange(len(flat)) - np.repeat(starts, np.diff([*starts, len(flat)])))

        def correct_count(r: Ranking) -> int:
            s = self._scores(flat, r, starts) - tie_break
            return int((s[right_at[solvable]] >= np.maximum.reduceat(s, starts)[solvable]).sum())

        axes = GRID | dict(grid or {})
        points = itertools.product(*(axes[f.name] for f in fields(Ranking)))
        self.ranking = max((Ranking(*p) for p in points), key=correct_count)
        return self.ranking


# A synthetic typo: its span in the noisy sentence, the typo and the word it replaced.
Typo = tuple[int, int, str, str]


def misspell(word: str, rng: random.Random) -> str:
    """``word`` (3+ ASCII letters) with one typo of the kinds Damerau (1964) found behind most
    misspellings, drawn uniformly: a deletion, an insertion (a QWERTY neighbour of a letter next
    to it, or that letter doubled), a substitution by a neighbour, a transposition of adjacent
    different letters; in ``word``'s case pattern (:func:`match_case`): one edit, case aside."""
    if not (len(word) >= 3 and word.isascii() and word.isalpha()):
        raise ValueError(f"misspell needs an ASCII word of 3 letters or more, got {word!r}")
    w, n = word.lower(), len(word)
    swaps = [i for i in range(n - 1) if w[i] != w[i + 1]]
    kind = rng.choice(["delete", "insert", "substitute"] + ["transpose"] * bool(swaps))
    i = rng.choice(swaps) if kind == "transpose" else rng.randrange(n + (kind == "insert"))
    if kind == "delete":
        return match_case(w[:i] + w[i + 1 :], word)
    if kind == "substitute":
        return match_case(w[:i] + rng.choice(KEYBOARD[w[i]]) + w[i + 1 :], word)
    if kind == "transpose":
        return match_case(w[:i] + w[i + 1] + w[i] + w[i + 2 :], word)
    c = rng.choice([w[j] for j in (i - 1, i) if 0 <= j < n])  # insert next to c
    return match_case(w[:i] + rng.choice(KEYBOARD[c] + c) + w[i:], word)


def make_pairs(
    sentences: Iterable[str],
    rng: random.Random,
    rate: float = 1.0,
    known: Container[str] | None = None,
) -> list[tuple[str, str, list[Typo]]]:
    """(noisy, clean, typos) per sentence, typo offsets into the noisy one: each word that may
    be misspelled (3+ letters, lower case, capitalised or all caps, outside URLs) gets a
    :func:`misspell` typo with probability ``rate`` / their number (``rate`` typos per sentence
    on average, some sentences clean); a typo in ``known`` (a real word, lower case) is drawn
    again, up to ten times, then the word is left right."""
    out = []
    for clean in sentences:
        skip = [m.span() for m in SKIP.finditer(clean)]
        words = [m for m in WORD.finditer(clean) if TYPO_WORD.fullmatch(m.group())]
        words = [m for m in words if not any(a <= m.start() < b for a, b in skip)]
        p = min(1.0, rate / len(words)) if words else 0.0
        pieces, typos, at, shift = [], [], 0, 0
        for m in words:
            if rng.random() >= p:
                continue
            draws = (misspell(m.group(), rng) for _ in range(10))
            wrong = next((w for w in draws if known is None or w.lower() not in known), None)
            if wrong is None:
                continue
            start = m.start() + shift
            typos.append((start, start + len(wrong), wrong, m.group()))
            pieces += [clean[at : m.start()], wrong]
            at, shift = m.end(), shift + len(wrong) - len(m.group())
        out.append(("".join(pieces) + clean[at:], clean, typos))
    return out
