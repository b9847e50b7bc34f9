"""Users' documents and continuation adapters in the store (the writing assistant).

Every method takes the caller's user id and reads or writes that user's rows only: one user's
documents are never searched, trained on or listed for another.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select

from llmos.errors import LlmosError
from llmos.store.db import Store, check_text
from llmos.store.models import WriteAdapter, WriteDocument, now

MAX_DOCUMENTS = 1_000  # documents one user may keep
MAX_DOCUMENT_CHARS = 200_000  # characters of one document (a long novel chapter is ~10k)
MAX_ADAPTERS = 20  # adapters one user may keep
ADAPTER_NAME = re.compile(r"[\w-]{1,64}")  # also a directory name: no dots, no slashes


class DocumentsError(LlmosError):
    """A document change the store refuses (too many, too long, empty, unknown id)."""


@dataclass(frozen=True)
class Document:
    id: int
    title: str
    text: str
    created_at: datetime
    updated_at: datetime

    def summary(self) -> dict[str, Any]:
        """What a listing shows: everything but the text, and the text's length."""
        return {
            "id": self.id,
            "title": self.title,
            "chars": len(self.text),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def _document(row: WriteDocument) -> Document:
    return Document(row.id, row.title, row.text, row.created_at, row.updated_at)


def _check(title: str, text: str) -> None:
    if not title.strip():
        raise DocumentsError("a document needs a title (1-200 characters)")
    check_text(WriteDocument.title.expression, title)  # type: ignore[arg-type]
    if not text.strip():
        raise DocumentsError(f"document {title[:40]!r} is empty")
    if len(text) > MAX_DOCUMENT_CHARS:
        raise DocumentsError(
            f"document {title[:40]!r} has {len(text):,} characters; at most "
            f"{MAX_DOCUMENT_CHARS:,} are kept per document (split it)"
        )
    check_text(WriteDocument.text.expression, text)  # type: ignore[arg-type]


class WriteDocuments:
    """The ``write_documents`` table of a :class:`~llmos.store.db.Store`."""

    def __init__(self, store: Store) -> None:
        self.session = store.session

    def add(self, user: int, title: str, text: str) -> Document:
        _check(title, text)
        with self.session.begin() as s:
            count = s.scalar(select(func.count()).where(WriteDocument.user_id == user)) or 0
            if count >= MAX_DOCUMENTS:
                raise DocumentsError(f"a user keeps at most {MAX_DOCUMENTS} documents")
            row = WriteDocument(user_id=user, title=title.strip(), text=text)
            s.add(row)
            s.flush()
            return _document(row)

    def update(self, user: int, doc_id: int, title: str | None, text: str | None) -> Document:
        with self.session.begin() as s:
            row = s.get(WriteDocument, doc_id)
            if row is None or row.user_id != user:
                raise DocumentsError(f"no document {doc_id}")
            title = row.title if title is None else title.strip()
            text = row.text if text is None else text
            _check(title, text)
            row.title, row.text, row.updated_at = title, text, now()
            s.flush()
            return _document(row)

    def get(self, user: int, doc_id: int) -> Document | None:
        with self.session() as s:
            row = s.get(WriteDocument, doc_id)
            return _document(row) if row is not None and row.user_id == user else None

    def list(self, user: int) -> list[Document]:
        """The user's documents, oldest first."""
        with self.session() as s:
            rows = s.scalars(
                select(WriteDocument)
                .where(WriteDocument.user_id == user)
                .order_by(WriteDocument.id)
            )
            return [_document(r) for r in rows]

    def revision(self, user: int) -> tuple[int, int, str]:
        """(count, largest id, newest update) of the user's documents: changes whenever a
        document is added, edited or deleted, so an index built from them knows it is stale."""
        with self.session() as s:
            n, top, newest = s.execute(
                select(
                    func.count(), func.max(WriteDocument.id), func.max(WriteDocument.updated_at)
                ).where(WriteDocument.user_id == user)
            ).one()
        return int(n or 0), int(top or 0), str(newest or "")

    def remove(self, user: int, doc_id: int) -> bool:
        with self.session.begin() as s:
            result = s.execute(
                delete(WriteDocument).where(
                    WriteDocument.user_id == user, WriteDocument.id == doc_id
                )
            )
            return bool(result.rowcount)


@dataclass(frozen=True)
class Adapter:
    id: int
    name: str
    base: str
    status: str
    path: str
    info: dict[str, Any]
    created_at: datetime

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "base": self.base,
            "status": self.status,
            "info": self.info,
            "created_at": self.created_at.isoformat(),
        }


def _adapter(row: WriteAdapter) -> Adapter:
    return Adapter(
        row.id, row.name, row.base, row.status, row.path, dict(row.info or {}), row.created_at
    )


class WriteAdapters:
    """The ``write_adapters`` table: which LoRA adapters a user has, over which base model, and
    where their files are (relative to the server's adapters directory)."""

    STATUSES = ("training", "ready", "failed")

    def __init__(self, store: Store) -> None:
        self.session = store.session

    def create(
        self, user: int, name: str, base: str, path: str, info: dict[str, Any] | None = None
    ) -> Adapter:
        name = name.strip()
        if not ADAPTER_NAME.fullmatch(name):
            raise DocumentsError(
                f"adapter name {name[:40]!r}: expected 1-64 letters, digits, '_' or '-'"
            )
        with self.session.begin() as s:
            count = s.scalar(select(func.count()).where(WriteAdapter.user_id == user)) or 0
            taken = s.scalar(
                select(WriteAdapter.id).where(
                    WriteAdapter.user_id == user, WriteAdapter.name == name
                )
            )
            if taken is not None:
                raise DocumentsError(f"you already have an adapter named {name!r}")
            if count >= MAX_ADAPTERS:
                raise DocumentsError(f"a user keeps at most {MAX_ADAPTERS} adapters")
            row = WriteAdapter(user_id=user, name=name, base=base, path=path, info=info or {})
            s.add(row)
            s.flush()
            return _adapter(row)

    def set_status(
        self, user: int, name: str, status: str, info: dict[str, Any] | None = None
    ) -> None:
        if status not in self.STATUSES:
            raise ValueError(f"adapter status {status!r} is not one of {self.STATUSES}")
        with self.session.begin() as s:
            row = s.scalar(
                select(WriteAdapter).where(WriteAdapter.user_id == user, WriteAdapter.name == name)
            )
            if row is None:
                raise DocumentsError(f"no adapter {name!r}")
            row.status = status
            if info is not None:
                row.info = {**(row.info or {}), **info}

    def add_info(self, user: int, name: str, info: dict[str, Any]) -> None:
        """Merge ``info`` into the adapter's, whatever its status (a job may have finished)."""
        with self.session.begin() as s:
            row = s.scalar(
                select(WriteAdapter).where(WriteAdapter.user_id == user, WriteAdapter.name == name)
            )
            if row is not None:
                row.info = {**(row.info or {}), **info}

    def get(self, user: int, name: str) -> Adapter | None:
        with self.session() as s:
            row = s.scalar(
                select(WriteAdapter).where(WriteAdapter.user_id == user, WriteAdapter.name == name)
            )
            return _adapter(row) if row is not None else None

    def list(self, user: int) -> list[Adapter]:
        with self.session() as s:
            rows = s.scalars(
                select(WriteAdapter).where(WriteAdapter.user_id == user).order_by(WriteAdapter.id)
            )
            return [_adapter(r) for r in rows]

    def remove(self, user: int, name: str) -> Adapter | None:
        """Forget the adapter; returns its row (the caller deletes its files) or None."""
        with self.session.begin() as s:
            row = s.scalar(
                select(WriteAdapter).where(WriteAdapter.user_id == user, WriteAdapter.name == name)
            )
            if row is None:
                return None
            found = _adapter(row)
            s.delete(row)
            return found
