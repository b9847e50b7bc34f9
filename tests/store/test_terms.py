"""Users' spelling dictionaries in the store: per-user rows, add vs replace, all-or-none
changes, and more terms than one SQL statement's parameters (on SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from llmos.store.db import Store
from llmos.store.terms import MAX_TERMS, TermsError, WriteTerms


def test_each_user_has_their_own_dictionary(database_url: str) -> None:
    store = Store(database_url)
    ann = store.create_user("ann")[0].id
    bob = store.create_user("bob")[0].id
    terms = WriteTerms(store)
    assert terms.put(ann, {"林黛玉": None, "配森": "Python"}) == 2
    assert terms.put(bob, {"配森": "派森"}) == 1
    assert terms.entries(ann) == {"林黛玉": None, "配森": "Python"}
    assert terms.entries(bob) == {"配森": "派森"}
    # Add: an existing term takes the new form; replace: only the new entries remain.
    assert terms.put(ann, {"配森": None, "贾宝玉": None}) == 3
    assert terms.entries(ann) == {"林黛玉": None, "配森": None, "贾宝玉": None}
    assert terms.put(ann, {"薛宝钗": None}, replace=True) == 1
    assert terms.entries(ann) == {"薛宝钗": None}
    assert terms.remove(bob, ["薛宝钗"]) == 0  # ann's term: bob removes nothing
    assert terms.remove(ann, ["薛宝钗", "nothing"]) == 1
    assert terms.entries(bob) == {"配森": "派森"} and terms.count(ann) == 0
    store.close()


def test_large_changes_and_refusals(database_url: str) -> None:
    store = Store(database_url)
    ann = store.create_user("ann")[0].id
    terms = WriteTerms(store)
    many = {f"词{i:05d}": None for i in range(1200)}  # more than one IN (...) chunk
    assert terms.put(ann, many) == 1200
    assert terms.put(ann, dict.fromkeys(list(many)[:700], "对")) == 1200
    assert sum(r == "对" for r in terms.entries(ann).values()) == 700
    assert terms.remove(ann, list(many)[:1100]) == 1100
    with pytest.raises(TermsError, match="expected 1-200 characters"):
        terms.put(ann, {"ok": None, " padded": None})
    with pytest.raises(TermsError, match="equals the wrong one"):
        terms.put(ann, {"同": "同"})
    assert terms.count(ann) == 100  # nothing of a refused change was written
    store.close()


def test_the_size_limit_is_enforced_all_or_none(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import llmos.store.terms as t

    monkeypatch.setattr(t, "MAX_TERMS", 3)
    store = Store(database_url)
    ann = store.create_user("ann")[0].id
    terms = WriteTerms(store)
    terms.put(ann, {"a": None, "b": None})
    with pytest.raises(TermsError, match="at most 3 entries"):
        terms.put(ann, {"c": None, "d": None})
    assert terms.entries(ann) == {"a": None, "b": None}
    assert MAX_TERMS == 100_000
    store.close()
