"""The recommender a user talks to: events folded into a taste, EASE folded in live, the wish,
the filters, MMR and the reasons, each against an independent computation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from llmos.apps.recommend.diversity import mmr
from llmos.apps.recommend.engine import WISH_WEIGHT, WISH_WEIGHT_WITH_HISTORY, Recommender
from llmos.apps.recommend.events import Act, Taste, fold
from llmos.checkpoint.recommender import RecommenderCheckpoint
from llmos.data.interactions import Item
from llmos.models.itemitem import EASE

TAGS = ["Comedy", "Comedy", "Comedy", "Horror", "Horror", "Horror", "Drama", "Drama"]


def model(content: bool = True, seed: int = 0) -> tuple[Recommender, np.ndarray]:
    """A recommender over 8 items fitted on 40 random users who prefer one genre each."""
    rng = np.random.default_rng(seed)
    x = np.zeros((40, 8), np.float32)
    for u in range(40):
        genre = u % 3
        for i in range(8):
            same = (i // 3) == genre
            x[u, i] = rng.random() < (0.8 if same else 0.15)
    ease = EASE.fit(sp.csr_matrix(x), reg=5.0)
    items = tuple(Item(f"i{i}", f"Title {i}", "", (TAGS[i],)) for i in range(8))
    weights = {"ease.weight": ease.weight, "popularity.counts": torch.from_numpy(x.sum(0))}
    if content:
        v = torch.zeros(8, 3)
        for i in range(8):
            v[i, min(i // 3, 2)] = 1.0
            v[i] += 0.1 * torch.from_numpy(rng.standard_normal(3)).float()
        weights["content.vectors"] = v
    ckpt = RecommenderCheckpoint(None, items, weights, {"catalog": "t"})  # type: ignore[arg-type]
    return Recommender(ckpt), x


def test_fold_keeps_the_latest_explicit_event_and_never_lets_a_view_override_it() -> None:
    taste = fold(
        [
            Act("view", "a"),
            Act("like", "b"),
            Act("view", "b"),  # a view after a like: still a like
            Act("click", "c"),
            Act("rate", "d", 2.0),  # below 3: a negative
            Act("rate", "e", 4.0),
            Act("like", "f"),
            Act("dislike", "f"),  # the latest explicit event wins
            Act("hide", "g"),
            Act("purchase", "h"),  # another app's kind: ignored
        ]
    )
    assert taste.weights == {"a": 1.0, "b": 1.0, "c": 0.5, "d": -1.0, "e": 1.0, "f": -1.0, "g": 0.0}
    assert taste.seen == set("abcdefg") and taste.hidden == {"g"}
    assert taste.recent == ["e", "c", "b", "a"]  # positives, newest (last touched) first
    assert fold([Act("hide", "a"), Act("like", "a")]).hidden == set()


def test_a_folded_in_user_gets_the_batch_models_ranking() -> None:
    rec, x = model(content=False)
    ease = EASE(8)
    ease.weight.copy_(rec.ease)
    for u in range(5):
        taste = fold(Act("like", f"i{i}") for i in np.flatnonzero(x[u]))
        got = [r.item.id for r in rec.recommend(taste, 8)]
        scores = ease(torch.from_numpy(x[u : u + 1]))[0].numpy()
        unseen = [i for i in np.argsort(-scores, kind="stable") if x[u, i] == 0]
        assert got == [f"i{i}" for i in unseen]
        for r in rec.recommend(taste, 3):
            assert (r.source == "personal") == r.reason.startswith("because you liked ")


def test_a_new_event_changes_the_next_list_and_a_dislike_sinks_similar_items() -> None:
    rec, _ = model()
    before = [r.item.id for r in rec.recommend(Taste(), 8)]
    liked = fold([Act("like", "i0")])
    after = [r.item.id for r in rec.recommend(liked, 3)]
    assert after != before[:3] and "i0" not in after
    assert {rec.items[rec.index[i]].tags[0] for i in after[:2]} == {"Comedy"}
    both = fold([Act("like", "i0"), Act("dislike", "i1")])
    s_like = rec.recommend(liked, 8)
    s_both = rec.recommend(both, 8)
    like_rank = {r.item.id: k for k, r in enumerate(s_like)}
    both_rank = {r.item.id: k for k, r in enumerate(s_both)}
    assert both_rank["i2"] >= like_rank["i2"]  # a comedy like the disliked one drops


def test_filters_exclude_seen_hidden_excluded_and_blocked_and_tags_restrict() -> None:
    rec, _ = model()
    taste = fold([Act("like", "i0"), Act("hide", "i3"), Act("view", "i6")])
    ids = {r.item.id for r in rec.recommend(taste, 8, exclude=["i1"], blocked_tags=["Drama"])}
    assert ids == {"i2", "i4", "i5"}
    only = rec.recommend(taste, 8, tags=["Horror"])
    assert {r.item.id for r in only} == {"i4", "i5"}
    assert rec.recommend(fold(Act("like", f"i{i}") for i in range(8)), 5) == []


def test_without_history_a_wish_ranks_by_text_then_popularity_is_the_floor() -> None:
    rec, x = model()
    horror = rec.content[4] + rec.content[5]
    recs = rec.recommend(Taste(), 3, wish=horror / horror.norm(), wish_text="scary")
    assert recs[0].item.tags[0] == "Horror"  # popularity counts beside the wish
    assert recs[0].reason == "matches “scary”" and recs[0].source == "wish"
    plain = rec.recommend(Taste(), 8)
    counts = x.sum(0)
    assert [r.item.id for r in plain] == [f"i{i}" for i in np.argsort(-counts, kind="stable")]
    assert plain[0].source == "popular" and plain[0].reason.startswith("popular in ")


def scaled(x: np.ndarray) -> np.ndarray:
    """Standardised, then divided by the largest (the engine's scale, computed here)."""
    z = (x - x.mean()) / x.std(ddof=1)
    return z / z.max()


def test_beside_a_history_a_wish_reorders_with_its_smaller_weight() -> None:
    rec, _ = model()
    horror = rec.content[4] + rec.content[5]
    wish = horror / horror.norm()
    taste = fold([Act("like", "i0"), Act("like", "i6")])
    recs = rec.recommend(taste, 6, wish=wish, wish_text="scary")
    personal = (rec.row(taste) @ rec.ease).numpy()
    cosine = (rec.content @ wish).numpy()
    total = scaled(personal) + WISH_WEIGHT_WITH_HISTORY * scaled(cosine)
    order = [f"i{i}" for i in np.argsort(-total, kind="stable") if i not in (0, 6)]
    assert [r.item.id for r in recs] == order
    assert WISH_WEIGHT_WITH_HISTORY < WISH_WEIGHT
    # the wish moves horror up against the list without it, and no popularity is added
    plain = [r.item.id for r in rec.recommend(taste, 6)]
    first_horror = min(plain.index(i) for i in ("i3", "i4", "i5"))
    assert min(order.index(i) for i in ("i3", "i4", "i5")) < first_horror
    new = rec.recommend(Taste(), 8, wish=wish)  # no history: the full weight + popularity
    cold = WISH_WEIGHT * scaled(cosine) + rec.popular.numpy()
    assert [r.item.id for r in new] == [f"i{i}" for i in np.argsort(-cold, kind="stable")]


def test_interests_raise_their_tags_for_a_new_user() -> None:
    rec, _ = model()
    recs = rec.recommend(Taste(), 2, interests=["Drama"])
    assert [r.item.tags[0] for r in recs] == ["Drama", "Drama"]
    assert recs[0].reason == "in your interests: Drama"


def test_the_reason_names_the_liked_item_that_contributes_most() -> None:
    rec, _ = model()
    taste = fold([Act("like", "i0"), Act("like", "i4")])
    personal = rec.row(taste) @ rec.ease
    above_mean = personal > personal.mean()
    recs = rec.recommend(taste, 6)
    for r in recs:
        i = rec.index[r.item.id]
        best = max((0, 4), key=lambda j: float(rec.ease[j, i]))
        if above_mean[i] and float(rec.ease[best, i]) > 0:
            assert (r.reason, r.source) == (f"because you liked Title {best}", "personal")
        else:  # nothing the user liked speaks for it: no false "because"
            assert (r.reason, r.source) == (f"popular in {r.item.tags[0]}", "popular")
    assert recs[0].source == "personal"


def test_mmr_is_the_greedy_maximum_and_zero_diversity_keeps_the_order() -> None:
    scores = torch.tensor([1.0, 0.95, 0.9, 0.5, 0.2])
    tags = [
        frozenset({"a"}),
        frozenset({"a"}),
        frozenset({"a", "b"}),
        frozenset({"c"}),
        frozenset(),
    ]
    pool = [0, 1, 2, 3, 4]
    assert mmr(pool, scores, tags, 3, 0.0) == [0, 1, 2]

    def brute(lam: float) -> list[int]:  # the same greedy rule, written out independently
        rel = (scores - scores.min()) / (scores.max() - scores.min())
        out: list[int] = []
        for _ in range(3):
            best, val = None, -np.inf
            for i in pool:
                if i in out:
                    continue
                sims = [len(tags[i] & tags[j]) / max(len(tags[i] | tags[j]), 1) for j in out]
                v = (1 - lam) * float(rel[i]) - lam * max(sims, default=0.0)
                if v > val:
                    best, val = i, v
            out.append(best)
        return out

    for lam in (0.2, 0.5, 0.9):
        assert mmr(pool, scores, tags, 3, lam) == brute(lam)
    assert mmr(pool, scores, tags, 3, 0.6) == [0, 3, 2]  # by hand: 0.15 > 0.05 > 0, then 0.05
    with pytest.raises(ValueError, match="diversity"):
        mmr(pool, scores, tags, 3, 1.5)


def test_diversity_raises_the_tag_variety_of_a_list() -> None:
    rec, _ = model()
    taste = fold([Act("like", "i0")])

    def variety(recs: list) -> float:
        pairs = list(itertools.combinations([set(r.item.tags) for r in recs], 2))
        return sum(1 - len(a & b) / len(a | b) for a, b in pairs) / len(pairs)

    plain, mixed = rec.recommend(taste, 3), rec.recommend(taste, 3, diversity=0.7)
    assert variety(mixed) > variety(plain)


def test_similar_is_the_items_ease_column_and_search_matches_every_word() -> None:
    rec, _ = model()
    got = rec.similar("i0", 7)
    row = rec.ease[0].numpy()
    people = [j for j in np.argsort(-row, kind="stable") if j != 0 and row[j] > 0]
    cos = (rec.content @ rec.content[0]).numpy()
    rest = [j for j in np.argsort(-cos, kind="stable") if j != 0 and j not in people]
    assert [r.item.id for r in got] == [f"i{j}" for j in people + rest]
    assert {r.reason for r in got[: len(people)]} == {"people who liked Title 0 liked it"}
    assert {r.reason for r in got[len(people) :]} == {"like Title 0 in its description"}
    assert [i.id for i in rec.search("title 3")] == ["i3"]
    assert {i.id for i in rec.search("horror")} == {"i3", "i4", "i5"}
    assert rec.search("nothing like it") == []


def test_the_profile_sums_liked_tags_and_lists_dislikes() -> None:
    rec, _ = model()
    view = rec.profile(
        fold([Act("like", "i0"), Act("like", "i1"), Act("click", "i3"), Act("dislike", "i6")])
    )
    assert view["top_tags"] == [["Comedy", 2.0], ["Horror", 0.5]]
    assert [i.id for i in view["recent"]] == ["i3", "i1", "i0"]
    assert [i.id for i in view["disliked"]] == ["i6"]


def standard(v: torch.Tensor) -> torch.Tensor:
    z = (v - v.mean()) / v.std()
    return z / z.max()


def test_the_rankers_features_against_an_independent_computation() -> None:
    from llmos.apps.recommend.engine import FEATURES

    rec, x = model()
    taste = fold([Act("like", "i0"), Act("like", "i1"), Act("dislike", "i4")])
    f = rec.features(taste, torch.arange(8))
    assert f.shape == (8, len(FEATURES))
    col = {name: f[:, j] for j, name in enumerate(FEATURES)}
    row = torch.zeros(8)
    row[[0, 1]], row[4] = 1.0, -1.0
    assert torch.allclose(col["personal"], standard(row[[0, 1, 4]] @ rec.ease[[0, 1, 4]]))
    assert torch.equal(col["sequence"], torch.zeros(8))  # no sequential model
    assert torch.allclose(col["popular"], standard(torch.log1p(torch.from_numpy(x.sum(0)))))
    profile = torch.nn.functional.normalize(rec.content[0] + rec.content[1], dim=0)
    assert torch.allclose(col["content"], standard(rec.content @ profile), atol=1e-6)
    # both likes are comedies (the dislike adds no taste): comedies 1, the rest 0
    comedy = torch.tensor([1.0 if t == "Comedy" else 0.0 for t in TAGS])
    assert torch.allclose(col["genre"], standard(comedy))
    assert torch.allclose(col["history"], torch.full((8,), float(np.log1p(2))))
    assert torch.equal(col["mf"], torch.zeros(8))  # no MF model
    pool = torch.tensor([5, 2])
    assert torch.allclose(rec.features(taste, pool), f[pool])  # a pool reads the same rows


def test_a_learned_ranker_reorders_a_users_candidates_by_its_features() -> None:
    from llmos.apps.recommend.engine import FEATURES
    from llmos.checkpoint.recommender import RANKER
    from llmos.errors import CheckpointError
    from llmos.models.ranker import Ranker, RankerConfig

    rec, x = model()
    base = RecommenderCheckpoint(None, rec.items, {}, {"catalog": "t"})  # type: ignore[arg-type]
    weights = {
        "ease.weight": rec.ease,
        "popularity.counts": rec.counts,
        "content.vectors": rec.content,
    }
    ranker = Ranker(RankerConfig(FEATURES))
    with torch.no_grad():  # a ranker that reads popularity only
        ranker.out.weight.zero_()
        ranker.out.weight[0, FEATURES.index("popular")] = 1.0
    state = {RANKER + k: v for k, v in ranker.state_dict().items()}
    ranked = Recommender(
        RecommenderCheckpoint(
            base.path, base.items, {**weights, **state}, base.meta, None, ranker.config.to_dict()
        )
    )
    taste = fold([Act("like", "i0")])
    plain = [r.item.id for r in rec.recommend(taste, 7)]
    listed = [r.item.id for r in ranked.recommend(taste, 7)]
    counts = x.sum(0)
    assert sorted(listed) == sorted(plain) and "i0" not in listed
    assert [counts[int(i[1:])] for i in listed] == sorted(counts[1:], reverse=True)
    assert listed != plain  # the sum puts the liked comedy's neighbours first
    # a new user's list (no history) is the sum's: the ranker learned from histories
    new = [r.item.id for r in ranked.recommend(Taste(), 5, interests=["Horror"])]
    assert new == [r.item.id for r in rec.recommend(Taste(), 5, interests=["Horror"])]
    bad = RankerConfig(("personal", "other"))
    bad_state = {RANKER + k: v for k, v in Ranker(bad).state_dict().items()}
    with pytest.raises(CheckpointError, match="train it again"):
        Recommender(
            RecommenderCheckpoint(
                base.path, base.items, {**weights, **bad_state}, base.meta, None, bad.to_dict()
            )
        )


def test_mf_folds_the_user_in_and_its_faiss_index_adds_candidates() -> None:
    from llmos.apps.recommend.engine import FEATURES
    from llmos.models.mf import fold_in

    rec, _ = model()
    g = torch.Generator().manual_seed(1)
    vectors = torch.randn(8, 3, generator=g)
    weights = {"ease.weight": rec.ease, "popularity.counts": rec.counts, "mf.items": vectors}
    meta = {"catalog": "t", "mf": {"fold_in_reg": 2.0}}
    mf = Recommender(RecommenderCheckpoint(None, rec.items, weights, meta))  # type: ignore[arg-type]
    assert mf.mf_index is not None and mf.mf_index.kind == "exact"
    taste = fold([Act("like", "i0"), Act("dislike", "i4")])
    user = fold_in(vectors[[0, 4]], torch.tensor([1.0, -1.0]), 2.0)
    assert torch.allclose(mf.user_vector(mf.row(taste)), user)
    pool, f = mf.candidates(taste, n=2)
    total = torch.stack(list(mf._signals(taste, None, ()).values())).sum(0)
    total = total.masked_fill(~mf.allowed(taste), -torch.inf)
    head = torch.topk(total, 2).indices
    assert torch.equal(pool[:2], head)  # the sum's best first
    # then every other allowed item (MF_POOL > 8), by the folded-in user's score
    rest = [i for i in range(8) if i not in (0, 4) and i not in head.tolist()]
    rest.sort(key=lambda i: -float(vectors[i] @ user))
    assert pool[2:].tolist() == rest
    assert torch.allclose(f[:, FEATURES.index("mf")], standard(vectors[pool] @ user), atol=1e-6)
    assert torch.equal(rec.candidates(taste, n=2)[0], head)  # no MF model: the sum's only
