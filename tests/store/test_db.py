"""The store on real databases, each test once on a SQLite file and once on PostgreSQL (see
``database_url`` in tests/conftest.py): migrations, users and hashed API keys, per-user
isolation, UTC timestamps, and data that survives reopening."""

from __future__ import annotations

import io
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    Engine,
    MetaData,
    NullPool,
    create_engine,
    event,
    inspect,
    make_url,
    select,
    text,
)

from llmos.cli import main
from llmos.errors import LlmosError
from llmos.store.db import Store, hash_key
from llmos.store.models import ApiKey

HEAD = "0008"  # the newest migration

TABLES = {
    "users",
    "api_keys",
    "events",
    "profiles",
    "memory",
    "kbs",
    "kb_entries",
    "write_terms",
    "alembic_version",
}


def stored_values(engine: Engine) -> Iterator[str]:
    """Every non-NULL value of every column of every table, as text."""
    metadata = MetaData()
    metadata.reflect(engine)
    with engine.connect() as c:
        for table in metadata.sorted_tables:
            for row in c.execute(select(table)):
                yield from (str(v) for v in row if v is not None)


def test_migrations_create_every_table(database_url: str) -> None:
    store = Store(database_url)
    assert set(inspect(store.engine).get_table_names()) >= TABLES
    with store.engine.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD
    store.close()
    Store(database_url).close()  # opening again is a no-op migration


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    Store(f"sqlite:///{tmp_path / 'store.db'}").close()
    with sqlite3.connect(tmp_path / "store.db") as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_keys_authenticate_their_user_and_are_never_stored(database_url: str) -> None:
    store = Store(database_url)
    # Everything the store sends to the database: the keys must never be part of it.
    sent: list[str] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def record(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append(f"{statement} {parameters!r}")

    alice, key = store.create_user("alice", admin=True)
    bob, bob_key = store.create_user("bob")
    assert key != bob_key and key.startswith("llmos_")
    assert store.authenticate(key).name == "alice" and store.authenticate(key).is_admin
    assert store.authenticate(bob_key).id == bob.id
    for wrong in ("", "llmos_", key[:-1] + ("A" if key[-1] != "A" else "B"), "Bearer " + key):
        assert store.authenticate(wrong) is None
    second = store.create_key(alice.id)
    assert store.revoke_key(key) and not store.revoke_key(key)
    assert store.authenticate(key) is None and store.authenticate(second).id == alice.id
    with pytest.raises(LlmosError, match="already exists"):
        store.create_user("alice")
    with pytest.raises(LlmosError, match="1-100"):
        store.create_user("  ")
    assert sent and not any(k in s for k in (key, bob_key, second) for s in sent)

    values = list(stored_values(store.engine))  # every column, whatever the backend
    for k in (key, bob_key, second):
        assert not any(k in v for v in values)  # only hashes are kept
    assert hash_key(bob_key) in values
    store.close()

    if make_url(database_url).get_backend_name() == "sqlite":
        # The raw file and its WAL too: no key in a page, free or not.
        path = Path(make_url(database_url).database)
        dump = "\n".join(path.read_bytes().decode("latin-1").split("\0"))
        wal = path.with_name(path.name + "-wal")
        if wal.exists():
            dump += wal.read_bytes().decode("latin-1")
        for k in (key, bob_key, second):
            assert k not in dump
        assert hash_key(bob_key) in dump


def test_each_user_sees_only_their_own_data(database_url: str) -> None:
    store = Store(database_url)
    a, _ = store.create_user("a")
    b, _ = store.create_user("b")
    store.add_event(a.id, "click", item="movie:1")
    store.add_event(a.id, "rate", item="movie:2", value=4.0)
    store.add_event(b.id, "click", item="movie:3")
    assert [e.item for e in store.events(a.id)] == ["movie:2", "movie:1"]
    assert [e.item for e in store.events(a.id, kind="click")] == ["movie:1"]
    assert [e.item for e in store.events(b.id)] == ["movie:3"]
    assert store.events(a.id)[0].value == 4.0
    store.update_profile(a.id, {"language": "zh", "likes": ["科幻"]})
    assert store.update_profile(a.id, {"language": None, "city": "北京"}) == {
        "likes": ["科幻"],
        "city": "北京",
    }
    assert store.profile(a.id) == {"likes": ["科幻"], "city": "北京"}
    assert store.profile(b.id) == {}
    for i in range(5):
        store.remember(a.id, "user", f"消息{i}")
    store.remember(b.id, "user", "bob's secret")
    assert [m.content for m in store.memory(a.id, limit=3)] == ["消息2", "消息3", "消息4"]
    assert [m.content for m in store.memory(b.id)] == ["bob's secret"]
    store.close()


def test_text_a_server_would_refuse_is_refused_on_every_backend(database_url: str) -> None:
    # PostgreSQL enforces VARCHAR lengths and has no NUL in text; SQLite would store both.
    store = Store(database_url)
    user, _ = store.create_user("dana")
    store.add_event(user.id, "click", item="x" * 200)
    with pytest.raises(LlmosError, match="item must be at most 200 characters, got 201"):
        store.add_event(user.id, "click", item="x" * 201)
    with pytest.raises(LlmosError, match="text must not contain a NUL"):
        store.add_event(user.id, "query", text="a\0b")
    with pytest.raises(LlmosError, match="role must be at most 20"):
        store.remember(user.id, "r" * 21, "hello")
    with pytest.raises(LlmosError, match="name must not contain a NUL"):
        store.create_user("e\0ve")
    assert [e.item for e in store.events(user.id)] == ["x" * 200]
    assert store.memory(user.id) == []
    store.close()


def test_timestamps_are_utc_aware_on_every_backend(database_url: str) -> None:
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        # A session time zone other than UTC: timestamptz comes back in it unless converted.
        url = url.update_query_dict({"options": "-c timezone=Asia/Shanghai"})
    store = Store(url.render_as_string(hide_password=False))
    before = datetime.now(UTC)
    user, key = store.create_user("erin")
    store.revoke_key(key)
    store.add_event(user.id, "click", item="movie:1")
    store.remember(user.id, "user", "hi")
    after = datetime.now(UTC)
    with store.session() as s:
        revoked = s.scalar(select(ApiKey.revoked_at).where(ApiKey.user_id == user.id))
    stamps = [
        store.users()[0].created_at,
        store.events(user.id)[0].created_at,
        store.memory(user.id)[0].created_at,
        revoked,
    ]
    for stamp in stamps:
        assert stamp.tzinfo == UTC
        assert before - timedelta(seconds=1) <= stamp <= after + timedelta(seconds=1)
    store.close()


def test_data_survives_reopening(database_url: str) -> None:
    store = Store(database_url)
    user, key = store.create_user("carol")
    store.add_event(user.id, "query", text="退货政策")
    store.update_profile(user.id, {"tier": "gold"})
    store.close()
    again = Store(database_url)
    assert again.authenticate(key).name == "carol"
    assert [e.text for e in again.events(user.id)] == ["退货政策"]
    assert again.profile(user.id) == {"tier": "gold"}
    again.close()


def test_cli_creates_users_and_prints_the_key_once(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LLMOS_DATABASE_URL", database_url)
    assert main(["users", "create", "demo", "--admin"]) == 0
    out = capsys.readouterr().out
    key = out.split("store it now): ")[1].strip()
    password = make_url(database_url).password
    assert password is None or f":{password}@" not in out  # the database password is masked
    assert Store().authenticate(key).name == "demo"
    assert main(["users", "list"]) == 0
    listed = capsys.readouterr().out
    assert "demo" in listed and "admin" in listed and key not in listed
    assert main(["users", "create", "demo"]) == 2

    # Another key for the same user; revoking one leaves the other working.
    assert main(["users", "key", "demo"]) == 0
    second = capsys.readouterr().out.split("store it now): ")[1].strip()
    assert second != key and Store().authenticate(second).name == "demo"
    monkeypatch.setattr(sys, "stdin", io.StringIO(key + "\n"))
    assert main(["users", "revoke", "-"]) == 0
    assert key not in capsys.readouterr().out  # only its public prefix is echoed
    assert Store().authenticate(key) is None
    assert Store().authenticate(second).name == "demo"
    assert main(["users", "revoke", key]) == 2  # already revoked
    assert "revoked already" in capsys.readouterr().err
    assert main(["users", "key", "nobody"]) == 2


def run_together(script: str, argvs: list[list[str]], timeout: float = 120) -> None:
    """Start one Python process per argv running ``script``; each prints "ready" once set up
    and waits for a line on stdin. All are released at once; each must exit 0."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    for p in procs:
        assert p.stdout.readline() == "ready\n"
    for p in procs:  # all set up and waiting: release them together
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err


# Each process merges its own keys into one user's profile, one key per call, from the moment
# the test says "go": a merge that read the row before another's write lands would drop keys.
MERGE_ON_GO = """
import sys
from llmos.store.db import Store
store = Store(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
for j in range(int(sys.argv[4])):
    store.update_profile(int(sys.argv[2]), {f"{sys.argv[3]}-{j}": j})
store.close()
"""


def test_profile_merges_from_several_processes_lose_no_key(database_url: str) -> None:
    store = Store(database_url)
    user, _ = store.create_user("busy")
    store.update_profile(user.id, {"kept": True})
    run_together(MERGE_ON_GO, [[database_url, str(user.id), f"p{i}", "25"] for i in range(4)])
    want = {"kept": True} | {f"p{i}-{j}": j for i in range(4) for j in range(25)}
    assert store.profile(user.id) == want
    store.close()


# --- PostgreSQL only: what several server processes sharing one database need ---------------


# Each process imports the store, says so, and opens the database when the test says "go".
OPEN_ON_GO = """
import sys
from llmos.store.db import Store
print("ready", flush=True)
sys.stdin.readline()
Store(sys.argv[1]).close()
"""


def test_processes_opening_a_new_database_at_once_migrate_it_once(postgres_url: str) -> None:
    run_together(OPEN_ON_GO, [[postgres_url]] * 4, timeout=60)
    store = Store(postgres_url)
    with store.engine.connect() as c:
        versions = c.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    assert versions == [HEAD]
    store.close()


def test_a_dropped_server_connection_is_replaced(postgres_url: str) -> None:
    store = Store(postgres_url)
    user, key = store.create_user("frank")
    # The server ends every other session on this database (as a restart would).
    with create_engine(postgres_url, poolclass=NullPool).connect() as c:
        ended = c.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar()
    assert ended >= 1  # the store's pooled connection
    assert store.authenticate(key).id == user.id  # the pool pings and reconnects
    store.close()
