"""Knowledge bases of FAQ pairs in the store (the customer-service app's tables).

A knowledge base belongs to one user, its owner, and is named per owner. Every method takes
the owner's id and filters on it: there is no method that reads or changes another owner's
knowledge base. A change to a knowledge base's entries (an upload, a deletion) is one
transaction that also raises its ``revision`` by one, so an upload is stored whole or not at
all, and a search index that records the revision it reflects knows when it is stale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from llmos.errors import LlmosError
from llmos.store.db import Store, check_text, valid_id
from llmos.store.models import KbEntry, KnowledgeBase


class UnknownKnowledgeBase(LlmosError):
    """The owner has no knowledge base of that name."""


@dataclass(frozen=True)
class FaqPair:
    """One FAQ pair as uploaded: a question, its answer, other ways to ask it, tags."""

    question: str
    answer: str
    alternatives: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class KbInfo:
    """A knowledge base as listed: its name, revision, number of entries, whether others may
    ask it, and the served model its index embeds with (None: the desk's default)."""

    id: int
    name: str
    revision: int
    entries: int
    public: bool = False
    encoder: str | None = None


@dataclass(frozen=True)
class KbSnapshot:
    """A knowledge base's entries as of one revision (read in one transaction)."""

    id: int
    name: str
    revision: int
    entries: list[KbEntry] = field(default_factory=list)


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 100 or "/" in name:
        raise LlmosError(f"knowledge base name must be 1-100 characters without '/', got {name!r}")
    check_text(KnowledgeBase.name.expression, name)
    return name


def _check_encoder(encoder: str | None) -> str | None:
    if encoder is None:
        return None
    if not encoder.strip() or len(encoder) > 200:
        raise LlmosError(
            f"an encoder is a served model's name of 1-200 characters, got {encoder!r}"
        )
    return encoder


class KnowledgeBases:
    """The knowledge bases of every owner, in a :class:`~llmos.store.db.Store`'s database."""

    def __init__(self, store: Store) -> None:
        self.session = store.session

    def _find(self, s: Session, owner_id: int, name: str) -> KnowledgeBase:
        kb = s.scalar(
            select(KnowledgeBase).where(
                KnowledgeBase.owner_id == owner_id, KnowledgeBase.name == name
            )
        )
        if kb is None:
            raise UnknownKnowledgeBase(
                f"no knowledge base named {name!r} (create it with "
                "`llmos support kb create NAME` or POST /v1/apps/support/kbs)"
            )
        return kb

    def create(self, owner_id: int, name: str, encoder: str | None = None) -> KbInfo:
        """A new, empty knowledge base (an error if the owner has one of that name)."""
        name = _check_name(name)
        encoder = _check_encoder(encoder)
        with self.session.begin() as s:
            kb = KnowledgeBase(owner_id=owner_id, name=name, revision=0, encoder=encoder)
            s.add(kb)
            try:
                s.flush()
            except IntegrityError:
                raise LlmosError(f"a knowledge base named {name!r} exists already") from None
            return KbInfo(kb.id, kb.name, 0, 0, False, encoder)

    def list(self, owner_id: int) -> list[KbInfo]:
        """The owner's knowledge bases, by name, with their entry counts."""
        count = (
            select(func.count(KbEntry.id))
            .where(KbEntry.kb_id == KnowledgeBase.id)
            .scalar_subquery()
        )
        q = (
            select(KnowledgeBase, count)
            .where(KnowledgeBase.owner_id == owner_id)
            .order_by(KnowledgeBase.name)
        )
        with self.session() as s:
            return [
                KbInfo(kb.id, kb.name, kb.revision, n, kb.public, kb.encoder)
                for kb, n in s.execute(q)
            ]

    def info(self, owner_id: int, name: str) -> KbInfo:
        with self.session() as s:
            kb = self._find(s, owner_id, name)
            n = s.scalar(select(func.count(KbEntry.id)).where(KbEntry.kb_id == kb.id)) or 0
            return KbInfo(kb.id, kb.name, kb.revision, n, kb.public, kb.encoder)

    def set_encoder(self, owner_id: int, name: str, encoder: str | None) -> KbInfo:
        """Name the served model the knowledge base's index embeds with (None: the default).
        Its entries and revision stay: the index notices the new encoder and rebuilds."""
        encoder = _check_encoder(encoder)
        with self.session.begin() as s:
            self._find(s, owner_id, name).encoder = encoder
        return self.info(owner_id, name)

    def set_public(self, owner_id: int, name: str, public: bool) -> KbInfo:
        """Let other users ask the knowledge base questions (or stop them)."""
        with self.session.begin() as s:
            self._find(s, owner_id, name).public = public
        return self.info(owner_id, name)

    def delete(self, owner_id: int, name: str) -> None:
        """Remove a knowledge base and all its entries."""
        with self.session.begin() as s:
            s.delete(self._find(s, owner_id, name))

    def add(self, owner_id: int, name: str, pairs: list[FaqPair]) -> list[int]:
        """Store ``pairs`` in one transaction (all or none) and return their new ids."""
        for i, p in enumerate(pairs):
            for column, value in (("question", p.question), ("answer", p.answer)):
                if not value.strip():
                    raise LlmosError(f"entry {i}: {column} is empty")
                check_text(getattr(KbEntry, column).expression, value)
            for value in (*p.alternatives, *p.tags):
                check_text(KbEntry.question.expression, value)
        with self.session.begin() as s:
            kb = self._find(s, owner_id, name)
            rows = [
                KbEntry(
                    kb_id=kb.id,
                    question=p.question,
                    answer=p.answer,
                    alternatives=list(p.alternatives),
                    tags=list(p.tags),
                )
                for p in pairs
            ]
            s.add_all(rows)
            s.flush()
            if rows:
                self._bump(s, kb.id)
            return [r.id for r in rows]

    def remove(self, owner_id: int, name: str, entry_ids: list[int]) -> int:
        """Delete the entries of ``entry_ids`` that are in this knowledge base; how many were."""
        with self.session.begin() as s:
            kb = self._find(s, owner_id, name)
            ids = [i for i in entry_ids if valid_id(i)]
            rows = s.scalars(
                select(KbEntry).where(KbEntry.kb_id == kb.id, KbEntry.id.in_(ids))
            ).all()
            for row in rows:
                s.delete(row)
            if rows:
                s.flush()
                self._bump(s, kb.id)
            return len(rows)

    def snapshot(self, owner_id: int, name: str) -> KbSnapshot:
        """Every entry (in id order) and the revision they make up, read together."""
        with self.session.begin() as s:
            kb = self._find(s, owner_id, name)
            entries = list(
                s.scalars(select(KbEntry).where(KbEntry.kb_id == kb.id).order_by(KbEntry.id))
            )
            return KbSnapshot(kb.id, kb.name, kb.revision, entries)

    def revision(self, owner_id: int, name: str) -> tuple[int, int, str | None]:
        """The knowledge base's id, revision and encoder (one row read, no entry count: asked
        before every search)."""
        with self.session() as s:
            kb = self._find(s, owner_id, name)
            return kb.id, kb.revision, kb.encoder

    @staticmethod
    def _bump(s: Session, kb_id: int) -> None:
        # An UPDATE ... SET revision = revision + 1: concurrent writers never lose a bump.
        s.execute(
            update(KnowledgeBase)
            .where(KnowledgeBase.id == kb_id)
            .values(revision=KnowledgeBase.revision + 1)
        )
