"""Knowledge bases in the store, on SQLite and PostgreSQL: per-owner isolation, uploads stored
whole or not at all, a revision that counts every change, and a schema that is exactly what
the migrations build."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect as sa_inspect

from llmos.errors import LlmosError
from llmos.store.db import Store
from llmos.store.kb import FaqPair, KnowledgeBases, UnknownKnowledgeBase
from llmos.store.models import Base

PAIRS = [
    FaqPair("怎么退货", "七天内可以申请退货。", ("如何退货",), ("售后",)),
    FaqPair("运费多少", "满99元包邮。"),
]


def _not_huey(obj, name, type_, reflected, compare_to) -> bool:
    """huey's own tables (created by migration 0008 for the job queue, read and written by
    huey, not by the store's models) are left out of the comparison."""
    table = obj if type_ == "table" else getattr(obj, "table", None)
    return not (table is not None and table.name.startswith("huey_"))


def test_the_migrations_build_exactly_the_models_schema(database_url: str) -> None:
    store = Store(database_url)
    with store.engine.connect() as c:
        context = MigrationContext.configure(c, opts={"include_object": _not_huey})
        diff = compare_metadata(context, Base.metadata)
        tables = set(sa_inspect(c).get_table_names())
    store.close()
    assert diff == []
    assert {"huey_task", "huey_schedule", "huey_kv"} <= tables


def test_entries_belong_to_their_owners_knowledge_base(database_url: str) -> None:
    store = Store(database_url)
    alice, _ = store.create_user("alice")
    bob, _ = store.create_user("bob")
    kbs = KnowledgeBases(store)
    kbs.create(alice.id, "faq")
    kbs.create(bob.id, "faq")  # the same name, another owner: another knowledge base
    with pytest.raises(LlmosError, match="exists already"):
        kbs.create(alice.id, "faq")
    ids = kbs.add(alice.id, "faq", PAIRS)
    assert [e.question for e in kbs.snapshot(alice.id, "faq").entries] == ["怎么退货", "运费多少"]
    assert kbs.snapshot(bob.id, "faq").entries == []
    # bob cannot remove alice's entries through his own knowledge base
    assert kbs.remove(bob.id, "faq", ids) == 0
    assert len(kbs.snapshot(alice.id, "faq").entries) == 2
    with pytest.raises(UnknownKnowledgeBase, match="no knowledge base named 'shop'"):
        kbs.add(bob.id, "shop", PAIRS)
    assert [(k.name, k.entries) for k in kbs.list(alice.id)] == [("faq", 2)]
    assert [(k.name, k.entries) for k in kbs.list(bob.id)] == [("faq", 0)]
    entry = kbs.snapshot(alice.id, "faq").entries[0]
    assert (entry.alternatives, entry.tags) == (["如何退货"], ["售后"])
    kbs.delete(alice.id, "faq")
    assert kbs.list(alice.id) == []
    assert [k.entries for k in kbs.list(bob.id)] == [0]
    store.close()


def test_an_upload_is_stored_whole_or_not_at_all(database_url: str) -> None:
    store = Store(database_url)
    owner, _ = store.create_user("shop")
    kbs = KnowledgeBases(store)
    kbs.create(owner.id, "faq")
    bad = [*PAIRS, FaqPair("q", "an answer with a NUL \0 PostgreSQL cannot hold")]
    with pytest.raises(LlmosError, match="NUL"):
        kbs.add(owner.id, "faq", bad)
    with pytest.raises(LlmosError, match="entry 1: answer is empty"):
        kbs.add(owner.id, "faq", [PAIRS[0], FaqPair("q", "  ")])
    assert kbs.info(owner.id, "faq").entries == 0
    assert kbs.revision(owner.id, "faq")[1] == 0
    store.close()


def test_the_revision_counts_every_change(database_url: str) -> None:
    store = Store(database_url)
    owner, _ = store.create_user("shop")
    kbs = KnowledgeBases(store)
    kbs.create(owner.id, "faq")
    ids = kbs.add(owner.id, "faq", PAIRS)
    assert kbs.revision(owner.id, "faq")[1] == 1
    kbs.add(owner.id, "faq", PAIRS[:1])
    assert kbs.remove(owner.id, "faq", [ids[0], 999_999]) == 1
    assert kbs.remove(owner.id, "faq", [999_999]) == 0  # nothing removed: no new revision
    assert kbs.remove(owner.id, "faq", [2**40, -1]) == 0  # ids no column holds: none such
    snap = kbs.snapshot(owner.id, "faq")
    assert snap.revision == 3
    assert [e.question for e in snap.entries] == ["运费多少", "怎么退货"]
    store.close()
    reopened = Store(database_url)  # the data and the revision survive reopening
    assert KnowledgeBases(reopened).info(owner.id, "faq").revision == 3
    reopened.close()
