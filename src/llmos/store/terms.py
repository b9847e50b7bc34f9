"""Users' spelling dictionaries in the store (the writing assistant): per user, terms never to
be corrected and (wrong form, right form) pairs. Every method takes the caller's user id and
reads or writes that user's rows only."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, func, select

from llmos.errors import LlmosError
from llmos.store.db import Store
from llmos.store.models import WriteTerm

MAX_TERMS = 100_000  # entries one user's dictionary may hold
MAX_TERM_CHARS = 200  # the column's width
CHUNK = 500  # terms per IN (...) clause: SQLite bounds a statement's parameters


class TermsError(LlmosError):
    """A dictionary change the store refuses (too many entries, an entry too long or empty)."""


def _check(entries: dict[str, str | None]) -> None:
    for term, right in entries.items():
        for value in (term, right) if right is not None else (term,):
            if not value or len(value) > MAX_TERM_CHARS or value != value.strip():
                raise TermsError(
                    f"dictionary entry {value[:40]!r}: expected 1-{MAX_TERM_CHARS} characters "
                    "without leading or trailing spaces"
                )
        if right == term:
            raise TermsError(f"dictionary entry {term!r}: the right form equals the wrong one")


class WriteTerms:
    """The ``write_terms`` table of a :class:`~llmos.store.db.Store`."""

    def __init__(self, store: Store) -> None:
        self.session = store.session

    def entries(self, user: int) -> dict[str, str | None]:
        """The user's dictionary: term -> its right form, or None for a protected term."""
        with self.session() as s:
            rows = s.execute(
                select(WriteTerm.term, WriteTerm.right)
                .where(WriteTerm.user_id == user)
                .order_by(WriteTerm.id)
            )
            return {term: right for term, right in rows}

    def count(self, user: int) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).where(WriteTerm.user_id == user)) or 0

    def put(self, user: int, entries: dict[str, str | None], replace: bool = False) -> int:
        """Add ``entries`` (an existing term takes the new right form), or with ``replace``
        make them the whole dictionary; all or none. Returns the dictionary's size."""
        _check(entries)
        with self.session.begin() as s:
            if replace:
                s.execute(delete(WriteTerm).where(WriteTerm.user_id == user))
                existing: dict[str, WriteTerm] = {}
            else:
                terms, existing = list(entries), {}
                for i in range(0, len(terms), CHUNK):  # bound the query's parameters
                    rows = s.scalars(
                        select(WriteTerm).where(
                            WriteTerm.user_id == user, WriteTerm.term.in_(terms[i : i + CHUNK])
                        )
                    )
                    existing |= {r.term: r for r in rows}
            for term, right in entries.items():
                if term in existing:
                    existing[term].right = right
                else:
                    s.add(WriteTerm(user_id=user, term=term, right=right))
            s.flush()
            size = s.scalar(select(func.count()).where(WriteTerm.user_id == user)) or 0
            if size > MAX_TERMS:
                raise TermsError(f"a dictionary holds at most {MAX_TERMS} entries, got {size}")
        return size

    def remove(self, user: int, terms: Iterable[str]) -> int:
        """Delete these terms of the user's dictionary; returns how many there were."""
        terms, n = list(terms), 0
        with self.session.begin() as s:
            for i in range(0, len(terms), CHUNK):
                result = s.execute(
                    delete(WriteTerm).where(
                        WriteTerm.user_id == user, WriteTerm.term.in_(terms[i : i + CHUNK])
                    )
                )
                n += int(result.rowcount or 0)
        return n
