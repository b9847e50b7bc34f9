"""Full-ranking metrics (llmos.train.ranking) against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from llmos.train.ranking import beyond_accuracy, full_ranking, top_items, user_metrics


def csr(rows: list[list[int]], items: int) -> sp.csr_matrix:
    m = np.zeros((len(rows), items), np.float32)
    for u, row in enumerate(rows):
        m[u, row] = 1
    return sp.csr_matrix(m)


# 3 users, 6 items; fixed scores: item j scores SCORES[u][j].
SCORES = np.array(
    [
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        [0.5, 0.9, 0.1, 0.8, 0.2, 0.3],
    ],
    np.float32,
)


def scorer(users: np.ndarray) -> np.ndarray:
    return SCORES[users]


def test_metrics_at_3_by_hand() -> None:
    # user 0 saw item 0 -> ranking 1, 2, 3; held out {2, 5}: one hit at rank 2
    # user 1 saw nothing -> ranking 5, 4, 3; held out {5, 4}: hits at ranks 1 and 2
    # user 2 saw items 1, 3 -> ranking 0, 5, 4; held out {2}: no hit
    seen = csr([[0], [], [1, 3]], 6)
    held = csr([[2, 5], [5, 4], [2]], 6)
    got = full_ranking(scorer, seen, held, k=3)
    d = [1 / math.log2(r + 1) for r in (1, 2, 3)]
    ndcg = [d[1] / (d[0] + d[1]), 1.0, 0.0]
    assert got["users"] == 3
    assert got["hit@3"] == pytest.approx(2 / 3)
    assert got["recall@3"] == pytest.approx((1 / 2 + 2 / 2 + 0) / 3)
    assert got["precision@3"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert got["mrr@3"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert got["ndcg@3"] == pytest.approx(sum(ndcg) / 3)


def test_users_without_held_out_items_are_not_counted_and_batches_agree() -> None:
    seen = csr([[0], [], [1, 3]], 6)
    held = csr([[2, 5], [], [2]], 6)
    per = user_metrics(scorer, seen, held, k=3, batch_size=1)
    assert per["user"].tolist() == [0, 2]
    whole = full_ranking(scorer, seen, held, k=3, batch_size=64)
    assert whole["users"] == 2
    assert whole["recall@3"] == pytest.approx(per["recall"].mean())
    assert full_ranking(lambda u: torch.from_numpy(SCORES[u]), seen, held, k=3) == whole


def test_ideal_dcg_is_cut_at_k() -> None:
    # 4 held-out items, k = 2, both top-2 are hits: NDCG is 1, recall 2/4
    held = csr([[0, 1, 2, 3]], 6)
    got = full_ranking(lambda u: SCORES[:1], csr([[]], 6), held, k=2)
    assert got["ndcg@2"] == pytest.approx(1.0) and got["recall@2"] == pytest.approx(0.5)


def test_a_seen_item_that_is_held_out_again_stays_a_candidate() -> None:
    """As RecBole's full-sort evaluation: the mask is the history less the positives."""
    seen = csr([[0, 1, 2]], 6)
    got = full_ranking(lambda u: SCORES[:1], seen, csr([[1]], 6), k=1)
    assert got["hit@1"] == 1.0  # item 0 is masked, item 1 (seen, held out) ranks first
    assert full_ranking(lambda u: SCORES[:1], seen, csr([[4]], 6), k=1)["hit@1"] == 0.0


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        full_ranking(scorer, csr([[0]], 6), csr([[0]], 5))


def test_top_items_skip_what_each_user_saw() -> None:
    seen = csr([[0], [], [1, 3]], 6)
    top = top_items(scorer, seen, np.array([0, 1, 2]), k=3, batch_size=2)
    assert top.tolist() == [[1, 2, 3], [5, 4, 3], [0, 5, 4]]


def test_beyond_accuracy_by_hand() -> None:
    top = np.array([[0, 1], [0, 2]])
    counts = np.array([4, 2, 1, 0])  # 4 users
    tags = [frozenset("ab"), frozenset("a"), frozenset("c"), frozenset()]
    got = beyond_accuracy(top, counts, num_users=4, tags=tags)
    assert got["coverage"] == pytest.approx(3 / 4)
    # -log2 of 4/4, 2/4, 4/4, 1/4 -> 0, 1, 0, 2
    assert got["novelty"] == pytest.approx((0 + 1 + 0 + 2) / 4)
    # {a,b} vs {a}: 1 - 1/2; {a,b} vs {c}: 1
    assert got["diversity"] == pytest.approx((0.5 + 1.0) / 2)


def test_stored_zeros_are_no_interactions() -> None:
    """A matrix that keeps explicit zeros (scipy's multiply by a 0/1 mask does) must count as
    its non-zero entries only: users whose row holds zeros only are not evaluated."""
    held = csr([[2, 5], [5, 4], [2]], 6).multiply(np.array([[1.0], [0.0], [1.0]])).tocsr()
    assert held.nnz == 5  # the zeros are stored
    got = full_ranking(scorer, csr([[0], [], [1, 3]], 6), held, k=3)
    assert got["users"] == 2
    assert got["recall@3"] == pytest.approx((1 / 2 + 0) / 2)
