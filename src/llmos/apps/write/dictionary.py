"""A user's own dictionary for spelling correction: terms never to be "corrected" (names,
product words, jargon) and extra confusion pairs (a wrong form and its right one), matched in
one pass by an Aho-Corasick automaton (``pyahocorasick``).

pycorrector's users ask for exactly this, and for it to stay fast with a large dictionary
(pycorrector #494, #534): matching costs time linear in the text, whatever the number of
entries (docs/BENCHMARKS.md has the overhead at 10^4 and 10^5 entries).

How a dictionary changes a corrector's edits (:meth:`UserDictionary.apply`): the text is
scanned once for the leftmost-longest matches of every entry; a protected term's span takes
no edit; a wrong form becomes an edit of kind ``dictionary`` (score 1) to its right form,
replacing any edit the corrector made inside it.

File format (``read_dictionary``), UTF-8, one entry per line: ``term`` protects it,
``wrong<TAB>right`` adds a pair; empty lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import ahocorasick

from llmos.apps.write.edits import Edit
from llmos.errors import DataError

# Entries one dictionary may hold (a file or an API upload): bounds memory per user.
MAX_ENTRIES = 1_000_000


@dataclass
class UserDictionary:
    """Protected terms and (wrong, right) pairs, compiled into one automaton on first use."""

    protect: frozenset[str] = frozenset()
    pairs: dict[str, str] = field(default_factory=dict)
    _automaton: ahocorasick.Automaton | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        clash = sorted(self.protect & self.pairs.keys())[:3]
        if clash:
            raise DataError(f"dictionary: {clash} are both protected and a wrong form")
        bad = [t for t in (*self.protect, *self.pairs, *self.pairs.values()) if not t]
        if bad:
            raise DataError("dictionary: an entry is empty")

    def __len__(self) -> int:
        return len(self.protect) + len(self.pairs)

    @property
    def automaton(self) -> ahocorasick.Automaton:
        if self._automaton is None:
            auto = ahocorasick.Automaton()
            for term in self.protect:
                auto.add_word(term, (term, None))
            for wrong, right in self.pairs.items():
                auto.add_word(wrong, (wrong, right))
            auto.make_automaton()
            self._automaton = auto
        return self._automaton

    def matches(self, text: str) -> list[tuple[int, int, str | None]]:
        """``(start, end, right form or None for a protected term)`` of the leftmost-longest
        non-overlapping entries found in ``text``."""
        if not len(self):
            return []
        out = []
        for end, (term, right) in self.automaton.iter_long(text):
            out.append((end + 1 - len(term), end + 1, right))
        return out

    def apply(self, text: str, edits: Sequence[Edit]) -> list[Edit]:
        """A corrector's ``edits`` of ``text`` under this dictionary: none inside a protected
        term or a wrong form, plus one ``dictionary`` edit per wrong form found, by start."""
        found = self.matches(text)
        if not found:
            return list(edits)
        kept = [e for e in edits if not any(s < e.end and e.start < t for s, t, _ in found)]
        kept += [Edit(s, t, text[s:t], right, 1.0, "dictionary") for s, t, right in found if right]
        return sorted(kept, key=lambda e: e.start)


def dictionary_from_entries(
    protect: Iterable[str] = (), pairs: Iterable[tuple[str, str]] = (), source: str = "dictionary"
) -> UserDictionary:
    """A dictionary from entries given in memory (an API body), checked as a file's are."""
    terms = frozenset(protect)
    pair_map = dict(pairs)
    if len(terms) + len(pair_map) > MAX_ENTRIES:
        raise DataError(f"{source}: more than {MAX_ENTRIES} entries")
    return UserDictionary(terms, pair_map)


def read_dictionary(path: str | Path) -> UserDictionary:
    """Read a dictionary file (see the module docstring for the format).

    Raises:
        DataError: naming the file and line of an entry that is not ``term`` or
            ``wrong<TAB>right``, or a file that cannot be read as UTF-8.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the dictionary ({e})") from e
    protect: set[str] = set()
    pairs: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip("\r\n ")
        if not line or line.startswith("#"):
            continue
        cells = line.split("\t")
        if len(cells) > 2 or not all(c.strip() for c in cells):
            raise DataError(f"{path}:{n}: expected 'term' or 'wrong<TAB>right', got {line[:40]!r}")
        if len(cells) == 1:
            protect.add(cells[0].strip())
        else:
            pairs[cells[0].strip()] = cells[1].strip()
        if len(protect) + len(pairs) > MAX_ENTRIES:
            raise DataError(f"{path}:{n}: more than {MAX_ENTRIES} entries")
    try:
        return UserDictionary(frozenset(protect), pairs)
    except DataError as e:
        raise DataError(f"{path}: {e}") from e
