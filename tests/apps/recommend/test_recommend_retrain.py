"""Retraining a recommender from its own checkpoint: the file's interactions ride in it, the
same data gives exactly the same weights, the store's events and a changed catalog change them,
text vectors are reused only from the same encoder, a sequential model is dropped."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from llmos.apps.recommend.events import Act
from llmos.apps.recommend.train import (
    SASREC_DROPPED,
    catalog_matrix,
    in_catalog_order,
    item_text,
    kept_interactions,
    retrain_recommender,
    train_recommender,
)
from llmos.checkpoint.recommender import RecommenderCheckpoint, read_recommender
from llmos.data.interactions import Interactions, Item, read_inter
from llmos.errors import DataError
from llmos.models.itemitem import EASE

ITEMS = [Item(f"i{i}", f"Film {i}", "", ("A" if i < 3 else "B",)) for i in range(6)]
DAY = 86400.0


def file_interactions(tmp_path: Path) -> Interactions:
    """Two tastes (i0-i2, i3-i5) over a month, one pair rated twice, and u9, who only took i0.
    Written as a RecBole file in another item order than the catalog's."""
    rows = []
    for u in range(8):
        taste = [0, 1, 2] if u % 2 else [5, 4, 3]
        rows += [(f"u{u}", f"i{i}", 4, 1.7e9 + (u * 3 + n) * DAY) for n, i in enumerate(taste)]
    rows += [("u1", "i1", 5, 1.7e9 + 30 * DAY), ("u9", "i0", 3, 1.7e9)]
    f = tmp_path / "x.inter"
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    f.write_text("\n".join(lines + ["\t".join(map(str, r)) for r in rows]) + "\n", "utf-8")
    return read_inter(f)


def trained(tmp_path: Path, **kw: object) -> RecommenderCheckpoint:
    inter = file_interactions(tmp_path)
    out = train_recommender(
        ITEMS, tmp_path / "r", inter=inter, catalog="films", reg=2.0, half_life_days=10, **kw
    )
    return read_recommender(out)


def test_the_file_interactions_ride_in_the_checkpoint(tmp_path: Path) -> None:
    ck = trained(tmp_path)
    ordered = in_catalog_order(ITEMS, file_interactions(tmp_path))
    user, item, time = (t.numpy() for t in ck.interactions)
    assert np.array_equal(user, ordered.user) and np.array_equal(item, ordered.item)
    assert np.array_equal(time, ordered.timestamp)  # float64: the seconds are exact
    assert ck.meta["trained_on"] == {
        "users": 9,
        "interactions": 25,  # 26 rows, one pair twice
        "file_interactions": 26,
        "store_users": 0,
        "items": 6,
    }
    kept = kept_interactions(ck)
    assert kept is not None and len(kept) == 26 and kept.items == tuple(i.id for i in ITEMS)
    # trained on store events only: nothing to keep, and a checkpoint without them reads
    only_store = train_recommender(ITEMS, tmp_path / "s", store_events={1: [Act("like", "i0")]})
    assert read_recommender(only_store).interactions is None
    assert kept_interactions(read_recommender(only_store)) is None


def test_retraining_with_no_store_events_gives_the_same_weights(tmp_path: Path) -> None:
    ck = trained(tmp_path)
    again = read_recommender(retrain_recommender(ck, tmp_path / "again"))
    for name in ("ease.weight", "popularity.counts", "train.user", "train.item"):
        assert torch.equal(again.weights[name], ck.weights[name]), name
    assert torch.equal(again.weights["train.time"], ck.weights["train.time"])
    assert (again.catalog, again.meta["ease_reg"], again.meta["half_life_days"]) == (
        "films",
        2.0,
        10,
    )
    assert again.meta["retrained"]["kept_interactions"] == 26
    assert again.meta["evaluation"] is None and again.meta["retrained"]["sasrec"] is None
    # in place, over the checkpoint it reads (atomic), and with another reg
    in_place = read_recommender(retrain_recommender(ck, ck.path, reg=50.0))
    m, _, _ = catalog_matrix(ITEMS, file_interactions(tmp_path))
    assert torch.equal(in_place.weights["ease.weight"], EASE.fit(m, reg=50.0).weight)
    assert in_place.meta["ease_reg"] == 50.0


def test_store_events_change_the_weights(tmp_path: Path) -> None:
    ck = trained(tmp_path)
    # store users who take i0 and i5 together, across the two tastes
    events = {u: [Act("like", "i0"), Act("view", "i5"), Act("dislike", "i3")] for u in range(4)}
    out = read_recommender(retrain_recommender(ck, tmp_path / "s", store_events=events))
    m, _, _ = catalog_matrix(ITEMS, kept_interactions(ck), events)
    assert torch.equal(out.weights["ease.weight"], EASE.fit(m, reg=2.0).weight)
    before, after = ck.weights["ease.weight"], out.weights["ease.weight"]
    assert after[0, 5] > before[0, 5] + 0.1  # took i0: i5 now goes with it
    assert out.meta["trained_on"]["store_users"] == 4 and out.meta["trained_on"]["users"] == 13
    # the store's events stay in the store: the checkpoint keeps the file's only
    assert torch.equal(out.weights["train.item"], ck.weights["train.item"])


def test_a_new_item_list_drops_the_vanished_items_interactions(tmp_path: Path) -> None:
    ck = trained(tmp_path)
    new = [Item("z", "Brand New"), *ITEMS[5:0:-1]]  # i0 gone, a new item, another order
    out = read_recommender(retrain_recommender(ck, tmp_path / "n", items=new))
    assert out.items == tuple(new)
    old_ids = [ITEMS[i].id for i in ck.weights["train.item"].tolist()]
    new_ids = [new[i].id for i in out.weights["train.item"].tolist()]
    assert new_ids == [x for x in old_ids if x != "i0"]
    assert out.meta["retrained"] == {
        "kept_interactions": 21,
        "dropped_interactions": 5,  # u1, u3, u5, u7 and u9 took i0; u9 nothing else
        "dropped_items": 1,
        "content": None,
        "sasrec": None,
        "mf": None,
        "ranker": None,
    }
    assert out.meta["trained_on"]["users"] == 8  # u9 is gone with i0
    m, _, _ = catalog_matrix(new, kept_interactions(ck, new))
    assert torch.equal(out.weights["ease.weight"], EASE.fit(m, reg=2.0).weight)
    assert out.weights["popularity.counts"][0] == 0  # nobody took z yet
    assert out.weights["ease.weight"][0].abs().sum() == 0


def vector(text: str) -> np.ndarray:
    """A fixed unit vector per text (what a deterministic encoder gives)."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
    v = np.random.default_rng(seed).standard_normal(8).astype(np.float32)
    return v / np.linalg.norm(v)


class Encoder:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str], kind: str) -> np.ndarray:
        assert kind == "passage"
        self.calls.append(list(texts))
        return np.stack([vector(t) for t in texts])


def test_text_vectors_are_reused_from_the_same_encoder_only(tmp_path: Path) -> None:
    ck = trained(tmp_path, embed=Encoder(), encoder="e5", encoder_digest="d1")
    new = [dataclasses.replace(ITEMS[0], title="Film Zero"), *ITEMS[1:], Item("z", "Brand New")]
    enc = Encoder()
    out = read_recommender(
        retrain_recommender(ck, tmp_path / "a", items=new, embed=enc, encoder_digest="d1")
    )
    assert enc.calls == [sorted([item_text(new[0]), item_text(new[-1])])]  # only what changed
    assert out.meta["retrained"]["content"] == {"reused": 5, "embedded": 2}
    want = np.stack([vector(item_text(i)) for i in new])
    assert np.allclose(out.weights["content.vectors"].numpy(), want)
    assert out.meta["encoder_digest"] == "d1"
    # another encoder: everything embedded again
    enc = Encoder()
    out = read_recommender(
        retrain_recommender(ck, tmp_path / "b", embed=enc, encoder="e5b", encoder_digest="d2")
    )
    assert sorted(enc.calls[0]) == sorted(item_text(i) for i in ITEMS)
    assert (out.meta["encoder"], out.meta["encoder_digest"]) == ("e5b", "d2")
    # no encoder at hand: the same items keep their vectors and the encoder that made them
    out = read_recommender(retrain_recommender(ck, tmp_path / "c"))
    assert torch.equal(out.weights["content.vectors"], ck.weights["content.vectors"])
    assert (out.meta["encoder"], out.meta["encoder_digest"]) == ("e5", "d1")
    # ... but a text it never embedded leaves the model without any
    out = read_recommender(retrain_recommender(ck, tmp_path / "d", items=new))
    assert "content.vectors" not in out.weights and out.meta["encoder_digest"] is None


def test_a_sequential_model_is_dropped_and_task_json_says_so(tmp_path: Path) -> None:
    ck = dataclasses.replace(trained(tmp_path), sasrec={"num_items": 6})  # as if it had one
    out = read_recommender(retrain_recommender(ck, tmp_path / "q"))
    assert out.sasrec is None and not any(k.startswith("sasrec.") for k in out.weights)
    assert out.meta["sasrec"] is None and out.meta["retrained"]["sasrec"] == SASREC_DROPPED
    assert "--sasrec-steps" in SASREC_DROPPED


def test_with_nothing_to_learn_from_only_an_import_may_go_on(tmp_path: Path) -> None:
    ck = read_recommender(
        train_recommender(ITEMS, tmp_path / "s", store_events={1: [Act("like", "i0")]})
    )
    with pytest.raises(DataError, match="no interactions to learn from"):
        retrain_recommender(ck, tmp_path / "t")
    empty = read_recommender(retrain_recommender(ck, tmp_path / "t", allow_empty=True))
    assert empty.weights["ease.weight"].abs().sum() == 0
    assert empty.weights["popularity.counts"].sum() == 0
    assert empty.meta["trained_on"]["users"] == 0
