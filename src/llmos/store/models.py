"""The tables of the llmos store (SQLAlchemy 2 declarative models).

Every row that belongs to a user carries ``user_id``; the store's methods always filter on it,
so one user's events, profile and memory are never read or written through another's key.
API keys are kept as a SHA-256 hash and a short lookup prefix, never in clear.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def now() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL's ``timestamptz`` returns datetimes in the session's time zone, SQLite returns
    naive ones (it stores the text without an offset); both come back as UTC-aware here, and
    only aware datetimes go in. The column type is still ``DateTime(timezone=True)``, so the
    schema (and the migration) is unchanged.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # which zone it means is a guess: refuse it
            raise ValueError(f"the store takes timezone-aware datetimes only, got {value}")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite: written as UTC by process_bind_param
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Event(Base):
    """A user's interaction with an item or a text (a click, a rating, a query)."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_user_catalog", "user_id", "catalog"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(50))
    item: Mapped[str | None] = mapped_column(String(200), nullable=True)
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The recommendation app's catalog the item belongs to (None for other events).
    catalog: Mapped[str | None] = mapped_column(String(100), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)


class Profile(Base):
    """One JSON document per user (preferences, derived interests)."""

    __tablename__ = "profiles"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)


class Memory(Base):
    """Conversation memory: one message per row, in order."""

    __tablename__ = "memory"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(20))
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)


class KnowledgeBase(Base):
    """A user's FAQ knowledge base (the customer-service app). ``revision`` grows by one with
    every change to its entries, in the same transaction: a search index records the revision
    it reflects, so staleness is a number compared, never a file time."""

    __tablename__ = "kbs"
    __table_args__ = (UniqueConstraint("owner_id", "name", name="uq_kbs_owner_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    revision: Mapped[int] = mapped_column(Integer, default=0)
    # Whether other users may ask it questions (as customers); only its owner and its agents
    # ever see its entries, conversations and tickets.
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    # The served embedding model its index searches with (a registry name, e.g. an encoder
    # fine-tuned on this knowledge base's own wordings); None: the desk's default encoder.
    encoder: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)


class KbEntry(Base):
    """One FAQ pair of a knowledge base: a question (and other ways to ask it), its answer."""

    __tablename__ = "kb_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kb_id: Mapped[int] = mapped_column(ForeignKey("kbs.id", ondelete="CASCADE"), index=True)
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    alternatives: Mapped[list[str]] = mapped_column(JSON, default=list)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)


class KbAgent(Base):
    """A user who serves a knowledge base's human queue (besides its owner)."""

    __tablename__ = "kb_agents"

    kb_id: Mapped[int] = mapped_column(ForeignKey("kbs.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )


class Conversation(Base):
    """A customer's conversation with a knowledge base's support desk. ``status``: ``bot``
    (the policy answers), ``human`` (escalated: agents answer), ``closed``. ``state`` is the
    policy's memory across turns (pending clarification, failed turns in a row)."""

    __tablename__ = "support_conversations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kb_id: Mapped[int] = mapped_column(ForeignKey("kbs.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(20), default="bot")
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)


class Turn(Base):
    """One message of a conversation: the customer's, the bot's (with its ``action`` and the
    ``trace`` of why: language, sentiment, sources) or an agent's."""

    __tablename__ = "support_turns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("support_conversations.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(20))
    text: Mapped[str] = mapped_column(Text)
    action: Mapped[str | None] = mapped_column(String(20), nullable=True)
    trace: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)


class Ticket(Base):
    """An escalated conversation waiting in its knowledge base's human queue."""

    __tablename__ = "support_tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("support_conversations.id", ondelete="CASCADE"), index=True
    )
    kb_id: Mapped[int] = mapped_column(ForeignKey("kbs.id", ondelete="CASCADE"), index=True)
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="open")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WriteTerm(Base):
    """An entry of a user's spelling dictionary (the writing assistant): a term never to be
    corrected (``right`` None), or a wrong form and its ``right`` one."""

    __tablename__ = "write_terms"
    __table_args__ = (UniqueConstraint("user_id", "term", name="uq_write_terms_user_term"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    term: Mapped[str] = mapped_column(String(200))
    right: Mapped[str | None] = mapped_column(String(200), nullable=True)


class WriteDocument(Base):
    """A document a user uploaded to the writing assistant: searched for material
    (``/v1/apps/write/suggest``) and trained on for the user's continuation adapter."""

    __tablename__ = "write_documents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)


class WriteAdapter(Base):
    """A user's LoRA adapter over a served GPT (the writing assistant's continuation): its
    files live under the server's adapters directory, ``path`` relative to it."""

    __tablename__ = "write_adapters"
    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_write_adapters_user_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    base: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="training")
    path: Mapped[str] = mapped_column(String(500))
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)


class Job(Base):
    """A background job (``llmos.jobs``): what was asked (``kind``, ``params``), where it stands
    (``status``, ``progress``, ``message``, the last lines of its ``log``) and how it ended
    (``result`` or ``error``). ``target`` is the function a worker runs, fixed when the job is
    submitted (a worker imports it by this dotted path). ``attempts`` counts the runs a worker
    began; ``heartbeat_at``, renewed by the worker while the job runs, tells a crashed worker's
    job from a running one."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(100))
    target: Mapped[str] = mapped_column(String(200))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str | None] = mapped_column(String(500), nullable=True)
    log: Mapped[list[str]] = mapped_column(JSON, default=list)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
