"""The writing assistant's service: each user's spelling dictionary (in the store) applied to
a spelling model's corrections, their documents, and their continuation adapters. Testable
without HTTP: the server's route asks the model through its micro-batcher and hands the
corrections here."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from llmos.apps.write.adapters import UserAdapters
from llmos.apps.write.dictionary import UserDictionary
from llmos.apps.write.edits import Edit
from llmos.store.db import Store
from llmos.store.documents import WriteDocuments
from llmos.store.terms import TermsError, WriteTerms

CACHED_USERS = 64  # compiled dictionaries kept in memory (least recently used out)


class WriteService:
    """Users' dictionaries (read from the store once, compiled into an automaton, cached until
    the user changes them) and the edits a model's corrections become under them."""

    def __init__(
        self,
        store: Store,
        root: Path | None = None,
        materials: Callable[[], Any] | None = None,
        english: Callable[[], Any] | None = None,
        chinese: Callable[[], Any] | None = None,
    ) -> None:
        self.terms = WriteTerms(store)
        self.documents = WriteDocuments(store)
        # Made on first use: material suggestions (llmos.apps.write.suggestions.Materials: the
        # shared corpus's index is large and many servers never suggest), the English speller
        # (llmos.apps.write.english.EnglishSpeller) and the classic Chinese corrector
        # (llmos.apps.write.classic.ClassicCorrector, for a server without a spelling model).
        self._makers = {"materials": materials, "english": english, "chinese": chinese}
        self._made: dict[str, Any] = {}
        # one lock each: building one (seconds) holds up neither the others nor dictionaries
        self._making = {what: threading.Lock() for what in self._makers}
        # Users' adapters live under root/adapters (the server's apps directory + /write).
        self.adapters = UserAdapters(store, Path(root or "write") / "adapters")
        self._cache: collections.OrderedDict[int, UserDictionary] = collections.OrderedDict()
        self._lock = threading.Lock()

    def dictionary(self, user: int) -> UserDictionary:
        """The user's dictionary, compiled."""
        with self._lock:
            if user in self._cache:
                self._cache.move_to_end(user)
                return self._cache[user]
        entries = self.terms.entries(user)
        d = UserDictionary(
            frozenset(t for t, r in entries.items() if r is None),
            {t: r for t, r in entries.items() if r is not None},
        )
        with self._lock:
            self._cache[user] = d
            while len(self._cache) > CACHED_USERS:
                self._cache.popitem(last=False)
        return d

    def _forget(self, user: int) -> None:
        with self._lock:
            self._cache.pop(user, None)

    def entries(self, user: int) -> dict[str, Any]:
        """``{"protect": [...], "pairs": {wrong: right}}`` of the user's dictionary."""
        entries = self.terms.entries(user)
        return {
            "protect": [t for t, r in entries.items() if r is None],
            "pairs": {t: r for t, r in entries.items() if r is not None},
        }

    def put(
        self,
        user: int,
        protect: Iterable[str],
        pairs: dict[str, str],
        replace: bool = False,
    ) -> int:
        """Add entries to the user's dictionary (or replace it with them); returns its size."""
        entries: dict[str, str | None] = dict.fromkeys(protect)
        clash = sorted(entries.keys() & pairs.keys())[:3]
        if clash:
            raise TermsError(f"{clash} are both protected and a wrong form")
        entries |= pairs
        size = self.terms.put(user, entries, replace=replace)
        self._forget(user)
        return size

    def remove(self, user: int, terms: Iterable[str]) -> int:
        n = self.terms.remove(user, terms)
        self._forget(user)
        return n

    def edits(self, user: int, text: str, corrections: Sequence[dict[str, Any]]) -> list[Edit]:
        """A model's corrections of ``text`` (as ``/v1/correct`` answers them) as edits, under
        the user's dictionary."""
        found = [
            Edit(c["start"], c["end"], c["original"], c["suggestion"], round(c["score"], 4))
            for c in corrections
        ]
        return self.dictionary(user).apply(text, found)

    def _built(self, what: str, missing: str) -> Any:
        with self._making[what]:
            if what not in self._made:
                make = self._makers[what]
                if make is None:
                    raise TermsError(missing)
                self._made[what] = make()
            return self._made[what]

    def materials(self) -> Any:
        """The material suggestions (:class:`~llmos.apps.write.suggestions.Materials`)."""
        return self._built("materials", "this server makes no material suggestions")

    def english(self) -> Any:
        """The English speller (built on first use: seconds)."""
        return self._built("english", "this server has no English speller")

    def chinese(self) -> Any:
        """The classic Chinese corrector (built on first use: seconds), for a server that
        serves no spelling model."""
        return self._built("chinese", "this server has no classic Chinese corrector")

    def local_edits(self, user: int, corrector: Any, texts: Sequence[str]) -> list[list[Edit]]:
        """A corrector's edits of each text (one of this service's: :meth:`english`,
        :meth:`chinese`), under the user's dictionary."""
        dictionary = self.dictionary(user)
        return [dictionary.apply(t, corrector.correct(t)) for t in texts]
