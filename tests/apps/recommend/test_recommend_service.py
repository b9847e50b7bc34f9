"""The recommendation service over a real store (SQLite and PostgreSQL): events change the next
list at once and only the user's own, choices persist, the model follows its checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmos.apps.recommend.engine import POP_PRIOR
from llmos.apps.recommend.service import (
    NoRecommender,
    Preferences,
    RecommendService,
    UnknownItem,
)
from llmos.apps.recommend.train import train_recommender
from llmos.apps.support.local import PipelineEmbedder
from llmos.checkpoint.recommender import read_revision
from llmos.data.interactions import Interactions, Item
from llmos.errors import LlmosError
from llmos.store.db import Store

ITEMS = [Item(f"c{i}", f"Comedy {i}", "", ("Comedy",)) for i in range(4)] + [
    Item(f"h{i}", f"Horror {i}", "", ("Horror",)) for i in range(4)
]


def fit(out: Path, embed: PipelineEmbedder | None = None, catalog: str = "films") -> Path:
    """Users who take either the comedies or the horror films; the comedies less often."""
    users, cols = [], []
    for u in range(16):
        group = range(0, 4) if u % 2 == 0 else range(4, 8)
        for i in list(group)[: 2 + u % 3]:
            users.append(u)
            cols.append(i)
        if u % 4 == 1:  # popularity: horror ahead
            users.append(u)
            cols.append(7)
    inter = Interactions(
        tuple(map(str, range(16))),
        tuple(i.id for i in ITEMS),
        np.asarray(users),
        np.asarray(cols),
        np.ones(len(cols), np.float32),
        np.zeros(len(cols)),
    )
    return train_recommender(
        ITEMS,
        out,
        inter=inter,
        catalog=catalog,
        reg=1.0,
        embed=embed,
        encoder_digest=embed.name if embed else None,
    )


@pytest.fixture()
def setup(database_url: str, tmp_path: Path) -> tuple[RecommendService, int, int]:
    store = Store(database_url)
    alice, _ = store.create_user("alice")
    bob, _ = store.create_user("bob")
    path = fit(tmp_path / "rec")
    yield RecommendService(store, lambda: path, check_s=0), alice.id, bob.id
    store.close()


def ids(recs: list) -> list[str]:
    return [r.item.id for r in recs]


def test_an_event_changes_the_next_list_of_that_user_only(setup: tuple) -> None:
    svc, alice, bob = setup
    before = ids(svc.recommend(alice, 4))
    assert before == ids(svc.recommend(bob, 4))
    svc.add_events(alice, [("like", "c0", None)])
    after = svc.recommend(alice, 3)
    assert ids(after)[0].startswith("c") and "c0" not in ids(after)
    assert after[0].reason == "because you liked Comedy 0"
    assert ids(svc.recommend(bob, 4)) == before
    svc.add_events(alice, [("hide", "c1", None), ("rate", "c2", 1.0)])
    assert not {"c0", "c1", "c2"} & set(ids(svc.recommend(alice, 8)))
    view = svc.profile(alice)
    assert [i.id for i in view["hidden"]] == ["c1"] and [i.id for i in view["disliked"]] == ["c2"]
    assert view["top_tags"] == [["Comedy", 1.0]]
    assert svc.profile(bob)["top_tags"] == []


def test_events_are_checked_and_stored_all_or_none(setup: tuple) -> None:
    svc, alice, _ = setup
    with pytest.raises(UnknownItem, match="no item 'zz'"):
        svc.add_events(alice, [("like", "c0", None), ("like", "zz", None)])
    with pytest.raises(LlmosError, match="event kind 'buy' is not one of"):
        svc.add_events(alice, [("buy", "c0", None)])
    with pytest.raises(LlmosError, match="'rate' event needs a value"):
        svc.add_events(alice, [("rate", "c0", None)])
    assert svc.acts(alice) == []
    with pytest.raises(LlmosError, match="diversity must be between 0 and 1"):
        svc.recommend(alice, 3, diversity=2.0)


def test_onboarding_choices_persist_beside_the_rest_of_the_profile(setup: tuple) -> None:
    svc, alice, _ = setup
    svc.store.update_profile(alice, {"city": "杭州"})
    svc.set_preferences(alice, Preferences(("Comedy",), "", ("Horror",)))
    assert svc.store.profile(alice)["city"] == "杭州"
    assert svc.preferences(alice) == Preferences(("Comedy",), "", ("Horror",))
    recs = svc.recommend(alice, 8)
    assert {r.item.tags[0] for r in recs} == {"Comedy"}  # Horror blocked
    assert recs[0].reason == "in your interests: Comedy"


def test_a_rewritten_checkpoint_is_read_again_by_its_revision(setup: tuple, tmp_path: Path) -> None:
    svc, alice, _ = setup  # looks at the checkpoint at every call (check_s=0)
    rec = tmp_path / "rec"
    lazy = RecommendService(svc.store, lambda: rec, check_s=3600)
    assert svc.catalog == lazy.catalog == "films"
    before = read_revision(rec)
    fit(rec, catalog="shows")  # another writer: a new revision, whatever the file times
    assert read_revision(rec) not in (None, before)
    assert svc.catalog == "shows"
    assert lazy.catalog == "films"  # not looked at again within check_s
    lazy.forget()
    assert lazy.catalog == "shows"
    gone = RecommendService(svc.store, lambda: tmp_path / "missing")
    with pytest.raises(NoRecommender, match="no recommender checkpoint"):
        gone.recommend(alice)
    rec.rename(tmp_path / "aside")  # mid-swap: the model read keeps answering
    assert svc.catalog == "shows"
    (tmp_path / "aside").rename(rec)
    (rec / "items.jsonl").write_text("{broken\n")
    task = json.loads((rec / "task.json").read_text())
    (rec / "task.json").write_text(json.dumps(task | {"revision": "broken"}))
    with pytest.raises(NoRecommender, match=r"items\.jsonl:1"):
        svc.recommend(alice)


def test_a_wish_is_used_only_with_the_encoder_that_embedded_the_catalog(
    tmp_path: Path, tiny_encoder: Path
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db'}")
    user, _ = store.create_user("u")
    embed = PipelineEmbedder(tiny_encoder)
    path = fit(tmp_path / "rec", embed)
    same = RecommendService(store, lambda: path, embed, lambda: embed.name)
    other = RecommendService(store, lambda: path, embed, lambda: "sha256:another")
    wish = "Horror 2"
    got = same.recommend(user.id, 8, wish=wish)
    vec = embed([wish], "query")[0]
    passages = embed([f"{i.title}: {i.tags[0]}" for i in ITEMS], "passage")
    passages /= np.linalg.norm(passages, axis=1, keepdims=True)
    cos = passages @ vec

    def scaled(x: np.ndarray) -> np.ndarray:  # standardised (ddof 1, as torch), best = 1
        z = (x - x.mean()) / x.std(ddof=1)
        return z / z.max()

    counts = same.model().counts.numpy()
    wish_part, pop_part = scaled(cos), POP_PRIOR * scaled(np.log1p(counts))
    want = wish_part + pop_part
    score = {r.item.id: r.score for r in got}
    assert np.allclose([score[i.id] for i in ITEMS], want, atol=1e-5)
    assert [r.score for r in got] == sorted(score.values(), reverse=True)
    for r in got:  # each item's reason is its larger signal, when that is positive
        i = [x.id for x in ITEMS].index(r.item.id)
        if wish_part[i] >= pop_part[i] and wish_part[i] > 0:
            assert (r.source, r.reason) == ("wish", f"matches “{wish}”")
        else:
            assert (r.source, r.reason) == ("popular", f"popular in {r.item.tags[0]}")
    plain = other.recommend(user.id, 8, wish=wish)
    assert all(r.source == "popular" for r in plain)
    store.close()
