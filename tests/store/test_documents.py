"""Users' documents and adapters in the store: per-user rows, revisions that change with every
edit, and refusals (on SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from llmos.store.db import Store
from llmos.store.documents import (
    MAX_DOCUMENT_CHARS,
    DocumentsError,
    WriteAdapters,
    WriteDocuments,
)


def test_documents_are_per_user_and_revisions_follow_changes(database_url: str) -> None:
    store = Store(database_url)
    ann = store.create_user("ann")[0].id
    bob = store.create_user("bob")[0].id
    docs = WriteDocuments(store)
    empty = docs.revision(ann)
    a1 = docs.add(ann, "第一回", "宴桃园豪杰三结义。")
    r1 = docs.revision(ann)
    assert r1 != empty and r1[0] == 1
    b1 = docs.add(bob, "社论", "今天的新闻。")
    assert docs.revision(ann) == r1  # bob's upload is not ann's change
    assert [d.title for d in docs.list(ann)] == ["第一回"]
    assert docs.get(bob, a1.id) is None and docs.get(ann, a1.id).text == "宴桃园豪杰三结义。"
    with pytest.raises(DocumentsError, match="no document"):
        docs.update(bob, a1.id, None, "改写")
    edited = docs.update(ann, a1.id, None, "斩黄巾英雄首立功。")
    assert edited.title == "第一回" and docs.revision(ann) != r1
    assert not docs.remove(bob, a1.id) and docs.remove(ann, a1.id)
    assert docs.list(ann) == [] and [d.id for d in docs.list(bob)] == [b1.id]
    store.close()


def test_documents_refuse_bad_input(database_url: str) -> None:
    store = Store(database_url)
    ann = store.create_user("ann")[0].id
    docs = WriteDocuments(store)
    with pytest.raises(DocumentsError, match="needs a title"):
        docs.add(ann, " ", "正文")
    with pytest.raises(DocumentsError, match="is empty"):
        docs.add(ann, "空", "  \n")
    with pytest.raises(DocumentsError, match="at most"):
        docs.add(ann, "长", "字" * (MAX_DOCUMENT_CHARS + 1))
    with pytest.raises(Exception, match="NUL"):
        docs.add(ann, "nul", "a\0b")
    assert docs.list(ann) == []
    store.close()


def test_adapters_are_per_user(database_url: str) -> None:
    store = Store(database_url)
    ann = store.create_user("ann")[0].id
    bob = store.create_user("bob")[0].id
    adapters = WriteAdapters(store)
    adapters.create(ann, "style", "gpt-zh", "1/style")
    adapters.create(bob, "style", "gpt-zh", "2/style")  # names are per user
    with pytest.raises(DocumentsError, match="already have"):
        adapters.create(ann, "style", "gpt-zh", "1/style")
    for bad in ("a/b", "..", "", "x" * 65):
        with pytest.raises(DocumentsError, match="expected 1-64 letters"):
            adapters.create(ann, bad, "gpt-zh", "x")
    adapters.create(ann, "我的-style_2", "gpt-zh", "1/我的-style_2")
    adapters.set_status(ann, "style", "ready", {"perplexity": 12.5})
    assert adapters.get(ann, "style").status == "ready"
    assert adapters.get(ann, "style").info == {"perplexity": 12.5}
    adapters.add_info(ann, "style", {"job": "7"})  # the status stays
    assert adapters.get(ann, "style").status == "ready"
    assert adapters.get(ann, "style").info == {"perplexity": 12.5, "job": "7"}
    assert adapters.get(bob, "style").status == "training"
    assert adapters.remove(bob, "nothing") is None
    assert adapters.remove(bob, "style").path == "2/style"
    assert [a.name for a in adapters.list(ann)] == ["style", "我的-style_2"]
    assert adapters.list(bob) == []
    store.close()
