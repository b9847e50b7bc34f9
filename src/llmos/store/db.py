"""The llmos store: users, API keys, events, profiles and conversation memory in a database.

A SQLite file under the llmos home directory by default (WAL journal, foreign keys on);
PostgreSQL (``postgresql+psycopg://user:password@host:port/db``) when ``LLMOS_DATABASE_URL`` is
set. Both are tested. Opening a store brings its schema to the newest Alembic migration, so an
older database is upgraded in place.

Every per-user method takes the user's id and filters on it: there is no method that reads
another user's rows.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Engine, create_engine, event, func, make_url, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from llmos.errors import LlmosError
from llmos.paths import llmos_home
from llmos.store.models import ApiKey, Event, Memory, Profile, User, now

KEY_PREFIX = "llmos_"
PREFIX_LENGTH = 14  # "llmos_" + 8 characters of the secret: a lookup index, not a secret
# Any constant: the key of the PostgreSQL advisory lock that serialises migrations.
MIGRATION_LOCK = 0x6C6C6D6F73  # "llmos"


def database_url() -> str:
    """``$LLMOS_DATABASE_URL``, else a SQLite file ``$LLMOS_HOME/llmos.db``."""
    return os.environ.get("LLMOS_DATABASE_URL") or f"sqlite:///{llmos_home() / 'llmos.db'}"


def hash_key(key: str) -> str:
    """SHA-256 of an API key: random 256-bit secrets need no slow password hash."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def migrate(engine: Engine) -> None:
    """Upgrade the database to the newest migration (creates it from empty).

    On PostgreSQL the upgrade holds a transaction-scoped advisory lock, so server processes
    that open the same new database at once migrate it one after the other (the second finds
    it up to date) instead of racing to create the same tables. DDL is transactional there, so
    a failed migration leaves nothing behind.
    """
    logging.getLogger("alembic").setLevel(logging.WARNING)  # no per-plugin INFO lines at start
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")


# The largest id an INTEGER column holds on every backend (PostgreSQL's is 32-bit).
MAX_ID = 2**31 - 1


def valid_id(value: int) -> bool:
    """Whether ``value`` can be a row id: a larger one cannot exist, and asking the database
    for it fails (an overflow) rather than finding nothing."""
    return 1 <= value <= MAX_ID


def check_text(column: Column[Any], value: str | None) -> None:
    """Reject what PostgreSQL refuses and SQLite would store silently, alike on both.

    PostgreSQL enforces ``VARCHAR(n)`` lengths and cannot hold a NUL character in text.
    """
    if value is None:
        return
    length = getattr(column.type, "length", None)
    if length is not None and len(value) > length:
        raise LlmosError(f"{column.name} must be at most {length} characters, got {len(value)}")
    if "\0" in value:
        raise LlmosError(f"{column.name} must not contain a NUL character")


class Store:
    """Users and their data. ``Store(url)`` opens (and migrates) the database."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or database_url()
        parsed = make_url(self.url)
        sqlite = parsed.get_backend_name() == "sqlite"
        if sqlite and parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # A server connection can die under the pool (a restart, an idle timeout): test each
        # one before use. SQLite files have no such failure.
        self.engine = create_engine(self.url, pool_pre_ping=not sqlite)
        if sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        migrate(self.engine)
        self.session = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    # --- users and keys ------------------------------------------------------------------

    def create_user(self, name: str, admin: bool = False) -> tuple[User, str]:
        """Create a user and a first API key; the key is returned once and never stored."""
        name = name.strip()
        if not name or len(name) > 100:
            raise LlmosError(f"user name must be 1-100 characters, got {name!r}")
        check_text(User.name.expression, name)
        with self.session.begin() as s:
            user = User(name=name, is_admin=admin)
            s.add(user)
            try:
                s.flush()
            except IntegrityError:
                raise LlmosError(f"a user named {name!r} already exists") from None
            key = self._new_key(s, user.id)
        return user, key

    def _new_key(self, s: Session, user_id: int) -> str:
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        s.add(ApiKey(user_id=user_id, prefix=key[:PREFIX_LENGTH], key_hash=hash_key(key)))
        return key

    def create_key(self, user_id: int) -> str:
        """Another API key for a user (returned once)."""
        with self.session.begin() as s:
            if s.get(User, user_id) is None:
                raise LlmosError(f"no user with id {user_id}")
            return self._new_key(s, user_id)

    def revoke_key(self, key: str) -> bool:
        """Revoke a key; False when it is unknown or already revoked."""
        with self.session.begin() as s:
            found = self._find_key(s, key)
            if found is None:
                return False
            found[0].revoked_at = now()
            return True

    def _find_key(self, s: Session, key: str) -> tuple[ApiKey, User] | None:
        """The live key row matching ``key`` and its user (one query), or None."""
        if not key.startswith(KEY_PREFIX):
            return None
        digest = hash_key(key)
        q = (
            select(ApiKey, User)
            .join(User, ApiKey.user_id == User.id)
            .where(ApiKey.prefix == key[:PREFIX_LENGTH], ApiKey.revoked_at.is_(None))
        )
        for row, user in s.execute(q):
            if hmac.compare_digest(row.key_hash, digest):
                return row, user
        return None

    def authenticate(self, key: str) -> User | None:
        """The user an API key belongs to, or None for an unknown or revoked key."""
        with self.session() as s:
            found = self._find_key(s, key)
            return found[1] if found is not None else None

    def user(self, name: str) -> User | None:
        with self.session() as s:
            return s.scalar(select(User).where(User.name == name))

    def users(self) -> list[User]:
        with self.session() as s:
            return list(s.scalars(select(User).order_by(User.id)))

    # --- a user's own data ---------------------------------------------------------------

    def add_event(
        self,
        user_id: int,
        kind: str,
        item: str | None = None,
        text: str | None = None,
        value: float | None = None,
    ) -> int:
        for column, field in ((Event.kind, kind), (Event.item, item), (Event.text, text)):
            check_text(column.expression, field)
        with self.session.begin() as s:
            row = Event(user_id=user_id, kind=kind, item=item, text=text, value=value)
            s.add(row)
            s.flush()
            return row.id

    def add_catalog_events(
        self, user_id: int, catalog: str, events: list[tuple[str, str, float | None]]
    ) -> list[int]:
        """Record a user's ``(kind, item, value)`` events on a recommendation catalog's items,
        all in one transaction; their ids in order."""
        check_text(Event.catalog.expression, catalog)
        for kind, item, _ in events:
            check_text(Event.kind.expression, kind)
            check_text(Event.item.expression, item)
        with self.session.begin() as s:
            rows = [
                Event(user_id=user_id, kind=k, item=i, value=v, catalog=catalog)
                for k, i, v in events
            ]
            s.add_all(rows)
            s.flush()
            return [r.id for r in rows]

    def catalog_events(
        self, user_id: int, catalog: str, limit: int = 10_000
    ) -> list[tuple[str, str | None, float | None]]:
        """A user's last ``limit`` events on a catalog's items as ``(kind, item, value)``,
        oldest first (plain rows, no ORM objects: the recommendation app reads them on every
        request)."""
        q = (
            select(Event.kind, Event.item, Event.value)
            .where(Event.user_id == user_id, Event.catalog == catalog)
            .order_by(Event.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as c:
            rows = c.execute(q).all()
        return [(kind, item, value) for kind, item, value in reversed(rows)]

    def all_catalog_events(self, catalog: str) -> dict[int, list[Event]]:
        """Every user's events on a catalog, oldest first, by user id: what ``llmos recommend
        train --from-store`` and the server's recommender jobs learn from. No request reads it
        (it reads every user's rows): only those jobs, on their own thread."""
        q = select(Event).where(Event.catalog == catalog).order_by(Event.user_id, Event.id)
        out: dict[int, list[Event]] = {}
        with self.session() as s:
            for e in s.scalars(q):
                out.setdefault(e.user_id, []).append(e)
        return out

    def events(self, user_id: int, kind: str | None = None, limit: int = 100) -> list[Event]:
        """A user's newest events first."""
        q = select(Event).where(Event.user_id == user_id)
        if kind is not None:
            q = q.where(Event.kind == kind)
        with self.session() as s:
            return list(s.scalars(q.order_by(Event.id.desc()).limit(limit)))

    def profile(self, user_id: int) -> dict[str, Any]:
        with self.session() as s:
            row = s.get(Profile, user_id)
            return dict(row.data) if row is not None else {}

    def update_profile(self, user_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        """Merge ``changes`` into the user's profile (a key set to None is removed).

        Safe against concurrent merges from any number of threads and processes: the row is
        first made to exist (an insert that does nothing when it does), then read under a row
        lock (``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite that first write already holds
        the database's write lock), so no merge reads a row another is about to replace."""
        insert = sqlite_insert if self.engine.dialect.name == "sqlite" else pg_insert
        with self.session.begin() as s:
            s.execute(
                insert(Profile)
                .values(user_id=user_id, data={}, updated_at=now())
                .on_conflict_do_nothing(index_elements=[Profile.user_id])
            )
            row = s.scalars(
                select(Profile)
                .where(Profile.user_id == user_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            ).one()
            data = dict(row.data)
            data.update(changes)
            data = {k: v for k, v in data.items() if v is not None}
            row.data, row.updated_at = data, now()
            return data

    def remember(self, user_id: int, role: str, content: str) -> None:
        check_text(Memory.role.expression, role)
        check_text(Memory.content.expression, content)
        with self.session.begin() as s:
            s.add(Memory(user_id=user_id, role=role, content=content))

    def memory(self, user_id: int, limit: int = 20) -> list[Memory]:
        """The user's last ``limit`` messages, oldest first."""
        q = select(Memory).where(Memory.user_id == user_id).order_by(Memory.id.desc())
        with self.session() as s:
            return list(reversed(list(s.scalars(q.limit(limit)))))
