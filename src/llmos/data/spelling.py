"""Chinese spelling correction (CSC) data: confusion sets, synthetic errors, correction files.

MacBERT4CSC-style training pairs are made from clean sentences by substituting a few
characters with ones that sound or look alike, drawn from pycorrector's confusion sets
(``shared/DATA.md``):

- ``same_pinyin.txt``: a ``#汉字<TAB>同音同调<TAB>同音异调`` header, then one line per character:
  the character, the characters read with the same pinyin and tone, and (optionally) those with
  the same pinyin in another tone. A polyphone (了 liǎo/le) may have several lines; they are
  merged.
- ``same_stroke.txt``: one group of similar-looking characters per line, tab-separated.
- ``common_char_set.txt``: the 3,502 common characters, one per line; errors are only made
  from and to these, so that a model never learns to "correct" a rare character.
- ``word_freq.txt`` (``word frequency pos`` per line, 584k words), ``person_name.txt`` and
  ``place_name.txt`` (``name<TAB>frequency``): the lexicon of the spelling search's
  noisy-channel prior (:func:`read_lexicon`).

The task is substitution-only: a source and its target have the same length, which is what a
per-character tagger (MacBERT4CSC) predicts.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from llmos.errors import DataError

__all__ = [
    "CHAR_SET_FILE",
    "ERROR_COUNTS",
    "LEXICON_FILES",
    "PINYIN_FILE",
    "PINYIN_SHARE",
    "SAME_TONE_SHARE",
    "STROKE_FILE",
    "ConfusionSet",
    "corrupt",
    "parse_char_set",
    "parse_confusion",
    "parse_lexicon",
    "read_char_set",
    "read_confusion",
    "read_corrections",
    "read_lexicon",
    "seeded_rng",
    "usable_sentence",
]

PINYIN_FILE = "same_pinyin.txt"
STROKE_FILE = "same_stroke.txt"
CHAR_SET_FILE = "common_char_set.txt"
WORD_FREQ_FILE, PERSON_FILE, PLACE_FILE = "word_freq.txt", "person_name.txt", "place_name.txt"
LEXICON_FILES = (WORD_FREQ_FILE, PERSON_FILE, PLACE_FILE)

# Probability of 0, 1, 2, 3 errors in a sentence. A fifth of the sentences stay clean, so that
# a model learns to leave correct text alone (the over-correction that CSC models are prone to);
# most noisy ones have one or two errors, as real typos do (SIGHAN sentences average ~1-2).
ERROR_COUNTS = (0.2, 0.5, 0.25, 0.05)
# Share of substitutions taken from the same-pinyin set; the rest come from the similar-shape
# set. Phonetic errors dominate pinyin-input typing (MacBERT4CSC / SoftMasked-BERT use ~70/30).
PINYIN_SHARE = 0.7
# Within the pinyin substitutions: the share taken from the same-tone characters when a
# character has both kinds (a same-tone homophone is the likelier slip of a pinyin IME).
SAME_TONE_SHARE = 0.6

# Sentences used as CSC training data: long enough to give context, short enough for a
# 128-position encoder with [CLS]/[SEP], and mostly Chinese.
MIN_CHARS, MAX_CHARS, MIN_CJK = 8, 128, 4


def _is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" or "\uf900" <= ch <= "\ufaff"


def _dedupe(chars: Iterable[str], exclude: Iterable[str] = ()) -> tuple[str, ...]:
    """``chars`` in first-seen order without repeats and without any of ``exclude``."""
    seen = set(exclude)
    out = []
    for ch in chars:
        if ch not in seen:
            seen.add(ch)
            out.append(ch)
    return tuple(out)


@dataclass(frozen=True)
class ConfusionSet:
    """Which characters a character may be a typo of, i.e. its correction candidates.

    The pinyin candidates are kept in two tuples, same tone and other tone, so that
    :func:`corrupt` can prefer same-tone homophones; :attr:`pinyin` is their concatenation.
    No tuple holds its own key, and no character is in both pinyin tuples of a key. The
    packaged relations are symmetric (a stroke group) or nearly so (homophony: 99.6 % of
    pycorrector's pinyin pairs are listed both ways), so :func:`corrupt` also reads them as
    "a clean character may be mistyped as its candidates". User pairs are one-way and kept
    apart in :attr:`pairs` for that reason (see :meth:`with_pairs`).

    Attributes:
        same_tone: character -> characters with the same pinyin and tone, in file order.
        other_tone: character -> characters with the same pinyin in another tone.
        stroke: character -> similar-looking characters (every other member of each
            ``same_stroke.txt`` group that holds it, merged over groups).
        pairs: user-given confusions, wrong character -> the characters it is a typo of.
    """

    same_tone: dict[str, tuple[str, ...]]
    other_tone: dict[str, tuple[str, ...]]
    stroke: dict[str, tuple[str, ...]] = field(default_factory=dict)
    pairs: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @cached_property
    def pinyin(self) -> dict[str, tuple[str, ...]]:
        """Character -> same-pinyin characters, same tone first, then other tones."""
        keys = _dedupe([*self.same_tone, *self.other_tone])
        return {k: self.same_tone.get(k, ()) + self.other_tone.get(k, ()) for k in keys}

    @cached_property
    def typos(self) -> dict[str, tuple[str, ...]]:
        """:attr:`pairs` inverted: a right character -> the user-given typos of it."""
        inverse: dict[str, list[str]] = {}
        for wrong, rights in self.pairs.items():
            for right in rights:
                inverse.setdefault(right, []).append(wrong)
        return {right: tuple(wrongs) for right, wrongs in inverse.items()}

    def candidates(self, ch: str) -> tuple[str, ...]:
        """The characters ``ch`` may be a typo of: user pairs, then pinyin, then stroke."""
        cands = [*self.pairs.get(ch, ()), *self.pinyin.get(ch, ()), *self.stroke.get(ch, ())]
        return _dedupe(cands, exclude=ch)

    def with_pairs(self, pairs: Iterable[tuple[str, str]]) -> ConfusionSet:
        """A copy with extra confusions, e.g. from a user dictionary.

        A pair ``(wrong, right)`` means "``wrong`` may be a typo of ``right``", one way only:
        ``right`` becomes the first of ``candidates(wrong)``, ahead of the packaged ones (a
        user's pair is the most specific knowledge there is), while ``candidates(right)`` is
        unchanged. :func:`corrupt` reads the pair the other way round, turning a clean
        ``right`` into ``wrong`` (drawn as a same-tone slip). Pairs keep their given order.

        Raises:
            ValueError: a pair is not two different single characters.
        """
        extra = {wrong: list(rights) for wrong, rights in self.pairs.items()}
        for pair in pairs:
            wrong, right = pair
            if not (isinstance(wrong, str) and isinstance(right, str)):
                raise ValueError(f"confusion pair {pair!r}: expected two strings")
            if len(wrong) != 1 or len(right) != 1 or wrong == right:
                raise ValueError(
                    f"confusion pair {pair!r}: expected two different single characters "
                    "(wrong, right)"
                )
            extra.setdefault(wrong, []).append(right)
        merged = {wrong: _dedupe(rights) for wrong, rights in extra.items()}
        return ConfusionSet(self.same_tone, self.other_tone, self.stroke, pairs=merged)


# --- reading the confusion files ---------------------------------------------------------------


def _lines(text: str) -> Iterable[tuple[int, str]]:
    """Numbered lines that are neither blank nor ``#`` comments (a header)."""
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if line.strip() and not line.startswith("#"):
            yield lineno, line


def _check_chars(cell: str, where: str, what: str) -> None:
    if any(ch.isspace() for ch in cell):
        raise DataError(f"{where}: expected {what} without spaces, got {cell!r}")


def parse_confusion(
    pinyin_text: str,
    stroke_text: str,
    pinyin_source: str = PINYIN_FILE,
    stroke_source: str = STROKE_FILE,
) -> ConfusionSet:
    """A :class:`ConfusionSet` from the text of ``same_pinyin.txt`` and ``same_stroke.txt``.

    Args:
        pinyin_text: ``char<TAB>same-tone chars[<TAB>other-tone chars]`` lines (either list may
            be empty); ``#`` lines and blank lines are skipped.
        stroke_text: tab-separated groups of two or more single characters.
        pinyin_source: how error messages name the pinyin file.
        stroke_source: how error messages name the stroke file.

    Raises:
        DataError: a malformed line; the message names the file, the line and what was expected.
    """
    same: dict[str, list[str]] = {}
    other: dict[str, list[str]] = {}
    for lineno, line in _lines(pinyin_text):
        where = f"{pinyin_source}:{lineno}"
        cells = line.split("\t")
        if not 2 <= len(cells) <= 3 or len(cells[0]) != 1:
            raise DataError(
                f"{where}: expected 'char<TAB>same-tone chars<TAB>other-tone chars' with a "
                f"single character first, got {line!r}"
            )
        for cell in cells[1:]:
            _check_chars(cell, where, "a run of characters")
        same.setdefault(cells[0], []).extend(cells[1])
        other.setdefault(cells[0], []).extend(cells[2] if len(cells) == 3 else "")
    stroke: dict[str, list[str]] = {}
    for lineno, line in _lines(stroke_text):
        group = line.split("\t")
        if len(group) < 2 or any(len(ch) != 1 or ch.isspace() for ch in group):
            raise DataError(
                f"{stroke_source}:{lineno}: expected two or more single characters separated "
                f"by tabs, got {line!r}"
            )
        for ch in group:
            stroke.setdefault(ch, []).extend(group)
    same_tone = {ch: _dedupe(cands, exclude=ch) for ch, cands in same.items()}
    other_tone = {ch: _dedupe(cands, exclude=(ch, *same_tone[ch])) for ch, cands in other.items()}
    return ConfusionSet(
        same_tone={ch: c for ch, c in same_tone.items() if c},
        other_tone={ch: c for ch, c in other_tone.items() if c},
        stroke={ch: _dedupe(cands, exclude=ch) for ch, cands in stroke.items()},
    )


def parse_char_set(text: str, source: str = CHAR_SET_FILE) -> frozenset[str]:
    """The characters of a one-character-per-line file (``common_char_set.txt``).

    Raises:
        DataError: a line that is not a single character (names the file and line).
    """
    chars = set()
    for lineno, line in _lines(text):
        if len(line.strip()) != 1:
            raise DataError(f"{source}:{lineno}: expected a single character, got {line!r}")
        chars.add(line.strip())
    return frozenset(chars)


def parse_lexicon(text: str, source: str, lengths: tuple[int, int] = (2, 4)) -> dict[str, float]:
    """Word -> log(frequency + 1) from ``word frequency [pos]`` lines (whitespace-separated),
    for the words of ``lengths`` characters (inclusive); a word listed twice keeps its higher
    frequency.

    Raises:
        DataError: a line without a non-negative integer frequency (names the file and line).
    """
    out: dict[str, float] = {}
    low, high = lengths
    for lineno, line in _lines(text):
        cells = line.split()
        if len(cells) < 2 or not (cells[1].isascii() and cells[1].isdigit()):
            raise DataError(
                f"{source}:{lineno}: expected 'word frequency [pos]' with an integer frequency, "
                f"got {line!r}"
            )
        if low <= len(cells[0]) <= high:
            score = math.log(int(cells[1]) + 1)
            if score > out.get(cells[0], -1.0):
                out[cells[0]] = score
    return out


def read_lexicon(path: Path) -> dict[str, float]:
    """:func:`parse_lexicon` of a file (``tasks/csc-zh/confusion/word_freq.txt`` and the two
    name lists after ``llmos data prepare``).

    Raises:
        DataError: the file is missing, not UTF-8, or has a malformed line.
    """
    return parse_lexicon(_read_text(Path(path)), str(path))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def read_confusion(directory: Path) -> ConfusionSet:
    """The confusion set of ``same_pinyin.txt`` and ``same_stroke.txt`` in ``directory``
    (``tasks/csc-zh/confusion/`` after ``llmos data prepare``).

    Raises:
        DataError: a file is missing, not UTF-8, or has a malformed line (file:line named).
    """
    directory = Path(directory)
    pinyin, stroke = directory / PINYIN_FILE, directory / STROKE_FILE
    return parse_confusion(_read_text(pinyin), _read_text(stroke), str(pinyin), str(stroke))


def read_char_set(path: Path) -> frozenset[str]:
    """The characters of ``common_char_set.txt`` (one per line).

    Raises:
        DataError: the file is missing, not UTF-8, or a line is not one character.
    """
    return parse_char_set(_read_text(Path(path)), str(path))


# --- synthetic errors --------------------------------------------------------------------------


def seeded_rng(key: str) -> random.Random:
    """A generator seeded from the sha256 of ``key``: the same key, the same draws."""
    return random.Random(int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big"))


def usable_sentence(text: str) -> bool:
    """Whether a clean sentence makes CSC data: 8-128 characters, at least 4 of them CJK."""
    if not MIN_CHARS <= len(text) <= MAX_CHARS:
        return False
    return sum(map(_is_cjk, text)) >= MIN_CJK


# Only ``rng.random()`` is used below, never ``choice``/``sample``: its output for a seed is
# the same on every Python version, so a rebuild of the data is byte-identical everywhere.
def _index(rng: random.Random, n: int) -> int:
    return min(int(rng.random() * n), n - 1)


def _error_count(rng: random.Random) -> int:
    point, bound = rng.random(), 0.0
    for count, p in enumerate(ERROR_COUNTS):
        bound += p
        if point < bound:
            return count
    return len(ERROR_COUNTS) - 1


def _has_allowed(cands: tuple[str, ...], allowed: frozenset[str]) -> bool:
    return any(c in allowed for c in cands)


def _substitute(
    ch: str, confusion: ConfusionSet, rng: random.Random, allowed: frozenset[str]
) -> str:
    """One replacement for ``ch``: pinyin (same tone preferred) or stroke, within ``allowed``."""
    same_tone = _dedupe([*confusion.typos.get(ch, ()), *confusion.same_tone.get(ch, ())])
    same = [c for c in same_tone if c in allowed]
    other = [c for c in confusion.other_tone.get(ch, ()) if c in allowed]
    stroke = [c for c in confusion.stroke.get(ch, ()) if c in allowed]
    if (same or other) and (not stroke or rng.random() < PINYIN_SHARE):
        pool = same if same and (not other or rng.random() < SAME_TONE_SHARE) else other
    else:
        pool = stroke
    return pool[_index(rng, len(pool))]


def corrupt(text: str, confusion: ConfusionSet, rng: random.Random, allowed: frozenset[str]) -> str:
    """``text`` with 0-3 characters replaced by confusable ones (a synthetic CSC source).

    The number of errors is drawn from :data:`ERROR_COUNTS`; each goes to a distinct position
    whose character is in ``allowed`` and has a candidate in ``allowed`` (a sentence with fewer
    such positions gets fewer errors). A replacement comes from the pinyin set with probability
    :data:`PINYIN_SHARE` (from the same-tone characters with :data:`SAME_TONE_SHARE` when there
    are both kinds), else from the stroke set; when a character has only one kind, that one.
    User pairs ``(wrong, right)`` turn a clean ``right`` into ``wrong``, as same-tone slips.

    Args:
        text: a clean sentence.
        confusion: the confusion set.
        rng: the source of randomness (see :func:`seeded_rng` for reproducible data).
        allowed: the characters errors are made from and to (the common character set).

    Returns:
        A string of the same length that differs from ``text`` exactly at the substituted
        positions.
    """
    count = _error_count(rng)
    if count == 0:
        return text
    eligible = [
        i
        for i, ch in enumerate(text)
        if ch in allowed
        and (
            _has_allowed(confusion.typos.get(ch, ()), allowed)
            or _has_allowed(confusion.same_tone.get(ch, ()), allowed)
            or _has_allowed(confusion.other_tone.get(ch, ()), allowed)
            or _has_allowed(confusion.stroke.get(ch, ()), allowed)
        )
    ]
    chars = list(text)
    for k in range(min(count, len(eligible))):
        # a partial Fisher-Yates shuffle: distinct positions
        j = k + _index(rng, len(eligible) - k)
        eligible[k], eligible[j] = eligible[j], eligible[k]
        i = eligible[k]
        chars[i] = _substitute(text[i], confusion, rng, allowed)
    return "".join(chars)


# --- correction files --------------------------------------------------------------------------


def read_corrections(path: Path) -> list[tuple[str, str]]:
    """``(source, target)`` pairs from a JSONL file of ``{"source": ..., "target": ...}`` rows.

    The files ``llmos data prepare`` writes (``tasks/csc-zh/*.jsonl``) and user-provided ones
    have this shape. Substitution-only: source and target must have the same length. Blank
    lines are skipped; other keys are ignored.

    Raises:
        DataError: the file is missing or not UTF-8, or a line is not a JSON object with
            non-empty string ``source`` and ``target`` of equal length (names file, line, field).
    """
    path = Path(path)
    pairs = []
    for lineno, line in enumerate(_read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected an object with 'source' and 'target'")
        for key in ("source", "target"):
            if not isinstance(row.get(key), str) or not row[key]:
                got = "missing" if key not in row else repr(row[key])
                raise DataError(f"{where}: field {key!r}: expected a non-empty string, got {got}")
        source, target = row["source"], row["target"]
        if len(source) != len(target):
            raise DataError(
                f"{where}: field 'target': expected the length of 'source' ({len(source)} "
                f"characters; spelling correction here only substitutes), got {len(target)}"
            )
        pairs.append((source, target))
    return pairs
