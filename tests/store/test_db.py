"""The store on a real SQLite file: migrations, users and hashed API keys, per-user isolation,
and data that survives reopening."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import inspect

from llmos.cli import main
from llmos.errors import LlmosError
from llmos.store.db import Store, hash_key


@pytest.fixture()
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


def test_migrations_create_every_table_in_wal_mode(url: str, tmp_path: Path) -> None:
    store = Store(url)
    tables = set(inspect(store.engine).get_table_names())
    assert {"users", "api_keys", "events", "profiles", "memory", "alembic_version"} <= tables
    store.close()
    with sqlite3.connect(tmp_path / "store.db") as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] == "0001"
    Store(url).close()  # opening again is a no-op migration


def test_keys_authenticate_their_user_and_are_never_stored(url: str, tmp_path: Path) -> None:
    store = Store(url)
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
    store.close()
    dump = "\n".join((tmp_path / "store.db").read_bytes().decode("latin-1").split("\0"))
    wal = tmp_path / "store.db-wal"
    if wal.exists():
        dump += wal.read_bytes().decode("latin-1")
    for k in (key, bob_key, second):
        assert k not in dump  # only hashes are kept
    assert hash_key(bob_key) in dump


def test_each_user_sees_only_their_own_data(url: str) -> None:
    store = Store(url)
    a, _ = store.create_user("a")
    b, _ = store.create_user("b")
    store.add_event(a.id, "click", item="movie:1")
    store.add_event(a.id, "rate", item="movie:2", value=4.0)
    store.add_event(b.id, "click", item="movie:3")
    assert [e.item for e in store.events(a.id)] == ["movie:2", "movie:1"]
    assert [e.item for e in store.events(a.id, kind="click")] == ["movie:1"]
    assert [e.item for e in store.events(b.id)] == ["movie:3"]
    store.update_profile(a.id, {"language": "zh", "likes": ["科幻"]})
    assert store.update_profile(a.id, {"language": None, "city": "北京"}) == {
        "likes": ["科幻"],
        "city": "北京",
    }
    assert store.profile(b.id) == {}
    for i in range(5):
        store.remember(a.id, "user", f"消息{i}")
    store.remember(b.id, "user", "bob's secret")
    assert [m.content for m in store.memory(a.id, limit=3)] == ["消息2", "消息3", "消息4"]
    assert [m.content for m in store.memory(b.id)] == ["bob's secret"]
    store.close()


def test_data_survives_reopening(url: str) -> None:
    store = Store(url)
    user, key = store.create_user("carol")
    store.add_event(user.id, "query", text="退货政策")
    store.update_profile(user.id, {"tier": "gold"})
    store.close()
    again = Store(url)
    assert again.authenticate(key).name == "carol"
    assert [e.text for e in again.events(user.id)] == ["退货政策"]
    assert again.profile(user.id) == {"tier": "gold"}
    again.close()


def test_cli_creates_users_and_prints_the_key_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LLMOS_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    assert main(["users", "create", "demo", "--admin"]) == 0
    out = capsys.readouterr().out
    key = out.split("store it now): ")[1].strip()
    assert Store().authenticate(key).name == "demo"
    assert main(["users", "list"]) == 0
    listed = capsys.readouterr().out
    assert "demo" in listed and "admin" in listed and key not in listed
    assert main(["users", "create", "demo"]) == 2
