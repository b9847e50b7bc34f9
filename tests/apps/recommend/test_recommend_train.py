"""Training a catalog's recommender: catalog files, the interaction matrix, decayed popularity,
the saved model against EASE fitted directly, and RecBole's protocol on a known case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from llmos.apps.recommend.events import Act
from llmos.apps.recommend.generators import popularity
from llmos.apps.recommend.train import (
    catalog_matrix,
    evaluate,
    item_text,
    read_catalog,
    train_recommender,
)
from llmos.checkpoint.recommender import read_recommender
from llmos.data.interactions import Item, read_inter
from llmos.errors import DataError, LlmosError
from llmos.models.itemitem import EASE


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def test_read_catalog_jsonl_and_recbole_items(tmp_path: Path) -> None:
    f = write_jsonl(
        tmp_path / "c.jsonl",
        [{"id": 7, "title": "甲", "tags": ["喜剧"]}, {"id": "b", "title": "B", "text": "x y"}],
    )
    assert read_catalog(f) == [Item("7", "甲", "", ("喜剧",)), Item("b", "B", "x y", ())]
    item = tmp_path / "m.item"
    item.write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation Comedy\n",
        encoding="utf-8",
    )
    (toy,) = read_catalog(item)
    assert toy == Item("1", "Toy Story", "1995", ("Animation", "Comedy"))
    assert item_text(toy) == "Toy Story (1995): Animation, Comedy"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"id": "a", "title": "A"}, {"id": "a", "title": "B"}], ":2: item id 'a' appears twice"),
        ([{"id": "a"}], ":1: 'title' must be a non-empty string"),
        ([{"id": "", "title": "A"}], ":1: 'id' must be"),
        ([{"id": "a", "title": "A", "tags": "x"}], ":1: 'tags' must be a list of strings"),
        ([{"id": "a", "title": "A", "genre": "x"}], ":1: unknown field 'genre'"),
        (["not an object"], ":1: expected a JSON object"),
    ],
)
def test_read_catalog_names_the_bad_line(tmp_path: Path, rows: list, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_catalog(write_jsonl(tmp_path / "c.jsonl", rows))


def inter_file(tmp_path: Path, rows: list[tuple]) -> Path:
    f = tmp_path / "x.inter"
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    lines += ["\t".join(str(v) for v in r) for r in rows]
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return f


def test_catalog_matrix_uses_the_catalog_order_and_adds_store_users(tmp_path: Path) -> None:
    items = [Item("a", "A"), Item("b", "B"), Item("c", "C")]
    inter = read_inter(inter_file(tmp_path, [("u1", "c", 5, 10), ("u1", "a", 3, 20)]))
    events = {9: [Act("like", "b"), Act("dislike", "a"), Act("view", "zzz")]}
    m, item, t = catalog_matrix(items, inter, events)
    assert m.toarray().tolist() == [[1, 0, 1], [0, 1, 0]]  # the dislike and unknown item left out
    assert item.tolist() == [2, 0, 1] and t[:2].tolist() == [10, 20] and np.isnan(t[2])
    bad = read_inter(inter_file(tmp_path, [("u1", "q", 5, 10)]))
    with pytest.raises(DataError, match=r"1 interactions name items the catalog lacks .*'q'"):
        catalog_matrix(items, bad)


def test_popularity_halves_per_half_life() -> None:
    day = 86400.0
    counts = popularity(3, np.array([0, 0, 1, 2]), np.array([10 * day, 0, 10 * day, np.nan]), 10)
    assert torch.allclose(counts, torch.tensor([1.5, 1.0, 1.0], dtype=torch.float32))
    plain = popularity(3, np.array([0, 0, 1]), np.array([0.0, 5.0, 1.0]), None)
    assert plain.tolist() == [2.0, 1.0, 0.0]


def test_the_saved_model_is_ease_fitted_on_every_interaction(tmp_path: Path) -> None:
    items = [Item(str(i), f"T{i}", "", ("g",)) for i in range(5)]
    rows = [(f"u{u}", str(i), 4, u) for u in range(6) for i in range(5) if (u + i) % 3]
    inter = read_inter(inter_file(tmp_path, rows))
    vec = torch.nn.functional.normalize(torch.randn(5, 4), dim=-1).numpy()
    calls = []

    def embed(texts: list[str], kind: str) -> np.ndarray:
        calls.append((texts, kind))
        return vec

    out = train_recommender(items, tmp_path / "r", inter=inter, catalog="c", reg=2.0, embed=embed)
    ck = read_recommender(out)
    m, _, _ = catalog_matrix(items, inter)
    assert torch.allclose(ck.weights["ease.weight"], EASE.fit(m, reg=2.0).weight)
    assert ck.weights["popularity.counts"].tolist() == m.toarray().sum(0).tolist()
    assert np.allclose(ck.weights["content.vectors"].numpy(), vec)
    assert calls == [([f"T{i}: g" for i in range(5)], "passage")]
    assert ck.meta["catalog"] == "c" and ck.meta["trained_on"]["interactions"] == m.nnz
    with pytest.raises(DataError, match="no interactions"):
        train_recommender(items, tmp_path / "s", store_events={})


def test_evaluate_on_two_taste_clusters_beats_popularity(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for u in range(60):
        group = range(0, 10) if u % 2 else range(10, 20)
        picks = rng.choice(list(group), 8, replace=False)
        rows += [(f"u{u}", f"i{i}", 1, 0) for i in picks]
    inter = read_inter(inter_file(tmp_path, rows))
    result = evaluate(inter, regs=(1.0,), k=5)
    assert set(result) == {"popularity", "ease reg 1"}
    assert result["ease reg 1"]["users"] == 60
    # each user's held-out item lies in their own cluster of ten, which EASE recovers
    assert result["ease reg 1"]["hit@5"] == 1.0
    assert result["ease reg 1"]["recall@5"] > result["popularity"]["recall@5"] + 0.3


def test_a_sequential_model_rides_in_the_checkpoint_and_reads_the_order(tmp_path: Path) -> None:
    from llmos.apps.recommend.engine import Recommender
    from llmos.apps.recommend.events import fold
    from llmos.checkpoint.recommender import read_recommender

    items = [Item(f"i{i}", f"Film {i}", "", ("g",)) for i in range(8)]
    # every user walks the catalog in order from i0 or i1: i is followed by i + 1 (the last
    # two of each walk are held out of training: leave-one-out's valid and test)
    rows = []
    for u in range(60):
        start = u % 2
        rows += [(f"u{u}", f"i{i}", 4, t) for t, i in enumerate(range(start, start + 6))]
    inter = read_inter(inter_file(tmp_path, rows))
    out = train_recommender(items, tmp_path / "r", inter=inter, reg=1.0, sasrec_steps=150)
    ck = read_recommender(out)
    assert ck.sasrec is not None and ck.sasrec["num_items"] == 8
    assert ck.meta["sasrec"]["steps"] == 150 and "hit@10" in ck.meta["sasrec"]["valid"]
    rec = Recommender(ck)
    for last in (1, 2, 3):
        taste = fold([Act("like", f"i{i}") for i in range(max(last - 2, 0), last + 1)])
        assert int(rec.next_items(taste).argmax()) == last + 1
        signals = rec._signals(taste, None, ())
        assert set(signals) == {"personal", "sequence"}
    with pytest.raises(DataError, match="give --inter"):
        train_recommender(
            items, tmp_path / "s", store_events={1: [Act("like", "i0")]}, sasrec_steps=5
        )


def test_mf_and_a_learned_ranker_are_trained_on_held_out_next_items_and_saved(
    tmp_path: Path,
) -> None:
    from llmos.apps.recommend.engine import FEATURES, Recommender
    from llmos.apps.recommend.generators import MF_REGS
    from llmos.apps.recommend.train import MF_DROPPED, RANKER_DROPPED, retrain_recommender

    rng = np.random.default_rng(0)
    items = [Item(f"i{i}", f"Film {i}", "", ("A" if i < 6 else "B",)) for i in range(12)]
    rows = []
    for u in range(80):  # two taste clusters of six films; each user takes five of theirs
        group = range(0, 6) if u % 2 else range(6, 12)
        for t, i in enumerate(rng.choice(list(group), 5, replace=False)):
            rows.append((f"u{u}", f"i{i}", 4, t))
    inter = read_inter(inter_file(tmp_path, rows))
    out = train_recommender(items, tmp_path / "r", inter=inter, reg=1.0, mf_steps=40, ranker=True)
    ck = read_recommender(out)
    assert ck.ranker == {"features": list(FEATURES), "hidden": 0}
    assert ck.weights["mf.items"].shape == (12, 64) and ck.meta["mf"]["fold_in_reg"] in MF_REGS
    assert set(ck.meta["mf"]["valid_folded"]) >= {"ndcg@10", "hit@10"}
    report = ck.meta["ranker"]
    assert report["valid_users"] == 80 and report["test_users"] == 80
    assert report["lists"] == 80 and report["pool_recall"] == 1.0  # 12 items: all in the pool
    # the held-out film is one of the two of the user's cluster left: rank 1 or 2 for both
    for name in ("sum", "ranker"):
        assert report["test"][name]["hit@10"] == 1.0
        assert report["test"][name]["ndcg@10"] >= 1 / np.log2(3)
    assert report["weights"]["personal"] > 0
    assert Recommender(ck).ranker is not None
    again = read_recommender(retrain_recommender(ck, tmp_path / "again"))
    assert again.ranker is None and again.meta["retrained"]["ranker"] == RANKER_DROPPED
    assert "mf.items" not in again.weights and again.meta["retrained"]["mf"] == MF_DROPPED
    events = {1: [Act("like", "i0")]}
    with pytest.raises(DataError, match="the learned ranker learns from an interactions file"):
        train_recommender(items, tmp_path / "s", store_events=events, ranker=True)
    with pytest.raises(DataError, match="the MF model learns from an interactions file"):
        train_recommender(items, tmp_path / "s", store_events=events, mf_steps=5, ranker=True)
    with pytest.raises(LlmosError, match="serves through the learned ranker: add --ranker"):
        train_recommender(items, tmp_path / "s", inter=inter, mf_steps=5)


def test_lightgcn_serves_its_propagated_item_vectors(tmp_path: Path) -> None:
    """``mf_model="lightgcn"``: the item vectors saved are the final (propagated) embeddings of
    the LightGCN that train_lightgcn trains on the same cut with the same seed, and they rank
    a user's cluster first once folded in."""
    from llmos.apps.recommend.generators import fit_mf
    from llmos.apps.recommend.train import in_catalog_order
    from llmos.data.interactions import split_leave_one_out
    from llmos.models.mf import fold_in
    from llmos.train.tasks.bpr import train_lightgcn

    rng = np.random.default_rng(1)
    items = [Item(f"i{i}", f"Film {i}", "", ("A" if i < 6 else "B",)) for i in range(12)]
    rows = []
    for u in range(80):
        group = range(0, 6) if u % 2 else range(6, 12)
        for t, i in enumerate(rng.choice(list(group), 5, replace=False)):
            rows.append((f"u{u}", f"i{i}", 4, t))
    inter = read_inter(inter_file(tmp_path, rows))
    out = train_recommender(
        items, tmp_path / "r", inter=inter, reg=1.0, mf_steps=60, mf_model="lightgcn", ranker=True
    )
    ck = read_recommender(out)
    assert ck.meta["mf"]["model"] == "lightgcn" and ck.weights["mf.items"].shape == (12, 64)
    ordered = in_catalog_order(items, inter)
    train, valid, _ = split_leave_one_out(ordered)
    model, _ = train_lightgcn(train, valid, tmp_path / "lg", steps=60, seed=2020, eval_every=6)
    with torch.no_grad():
        want = model.propagate()[1]
    torch.testing.assert_close(ck.weights["mf.items"], want)
    vectors, report = fit_mf(ordered, 60, model="lightgcn")
    torch.testing.assert_close(vectors, want)
    liked = vectors[torch.tensor([0, 1, 2])]  # three films of cluster A
    scores = vectors @ fold_in(liked, torch.ones(3), report["fold_in_reg"])
    assert set(scores.argsort(descending=True)[:6].tolist()) == set(range(6))
    with pytest.raises(ValueError, match="model must be one of"):
        fit_mf(ordered, 5, model="als")
