"""Full-ranking evaluation of a recommender, on RecBole's protocol.

Every user with at least one held-out interaction gets a score for every item; the items the
user already interacted with in the earlier splits (train for validation, train and valid for
test) are removed from the ranking, except those that are also held out (a pair seen again,
as RecBole 1.2.1's full-sort evaluation keeps them); the top ``k`` of the rest are compared
with the user's held-out items. Per user (``hits`` = held-out items in the top ``k``,
``n`` = the user's held-out items):

    hit@k        1 if hits > 0
    recall@k     hits / n
    precision@k  hits / k
    mrr@k        1 / the rank of the first hit (0 without one)
    ndcg@k       DCG / IDCG, DCG = sum over hits at rank r of 1 / log2(r + 1), IDCG the same
                 for min(n, k) hits at ranks 1.. (binary relevance)

each averaged over the users. Equal scores are ordered by ``torch.topk`` (as RecBole does);
models with real-valued scores rarely tie.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch

METRICS = ("recall", "ndcg", "mrr", "hit", "precision")

Scorer = Callable[[np.ndarray], np.ndarray | torch.Tensor]


def full_ranking(
    score: Scorer,
    seen: sp.csr_matrix,
    held_out: sp.csr_matrix,
    k: int = 10,
    batch_size: int = 256,
) -> dict[str, float]:
    """The metrics at ``k`` of ``score`` over every user with a held-out interaction.

    Args:
        score: user indexes (B,) -> (B, items) scores, higher is better.
        seen: (users, items) what each user already interacted with (removed from the
            ranking unless held out too).
        held_out: (users, items) what each user is expected to pick.
        k: the cut-off.
        batch_size: users scored at once.

    Returns:
        ``{"recall@10": ..., "ndcg@10": ..., "mrr@10": ..., "hit@10": ..., "precision@10":
        ..., "users": n}``.
    """
    per_user = user_metrics(score, seen, held_out, k, batch_size)
    out = {f"{m}@{k}": float(per_user[m].mean()) for m in METRICS}
    out["users"] = float(len(per_user["recall"]))
    return out


def user_metrics(
    score: Scorer,
    seen: sp.csr_matrix,
    held_out: sp.csr_matrix,
    k: int = 10,
    batch_size: int = 256,
) -> dict[str, np.ndarray]:
    """Per-user metrics (each (U,) over the users with a held-out interaction, in index
    order) and ``"user"``: those users' indexes."""
    seen, held_out = _positive(seen), _positive(held_out)
    if seen.shape != held_out.shape:
        raise ValueError(f"seen {seen.shape} and held-out {held_out.shape} differ in shape")
    users = np.flatnonzero(np.diff(held_out.indptr))
    discount = 1.0 / np.log2(np.arange(2, k + 2))  # rank 1.. -> 1/log2(rank + 1)
    ideal = np.cumsum(discount)
    out: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        truth = held_out[batch]
        top = _top_k(score, batch, seen[batch] - seen[batch].multiply(truth > 0), k)  # (B, k)
        hits = np.take_along_axis(truth.toarray() > 0, top, axis=1)  # (B, k)
        n = np.diff(truth.indptr)
        found = hits.sum(1)
        first = np.where(hits.any(1), hits.argmax(1) + 1, 0)
        out["hit"].append((found > 0).astype(np.float64))
        out["recall"].append(found / n)
        out["precision"].append(found / k)
        out["mrr"].append(np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0))
        dcg = (hits * discount[: hits.shape[1]]).sum(1)
        out["ndcg"].append(dcg / ideal[np.minimum(n, k) - 1])
    result = {m: np.concatenate(v) if v else np.zeros(0) for m, v in out.items()}
    result["user"] = users
    return result


def _top_k(score: Scorer, users: np.ndarray, masked: sp.csr_matrix, k: int) -> np.ndarray:
    """(B, k) the best-scored items of ``users``, the ``masked`` ones (B, items) left out."""
    raw = score(users)
    s = (raw if torch.is_tensor(raw) else torch.from_numpy(np.asarray(raw))).float().clone()
    rows, cols = masked.nonzero()
    s[torch.as_tensor(rows), torch.as_tensor(cols)] = -torch.inf
    return torch.topk(s, min(k, s.shape[1]), dim=1).indices.numpy()


def _positive(m: sp.spmatrix) -> sp.csr_matrix:
    """``m`` as CSR with only its non-zero entries stored: a stored 0 (what ``multiply`` or
    arithmetic can leave) is no interaction."""
    m = sp.csr_matrix(m, copy=True)
    m.eliminate_zeros()
    return m


def top_items(
    score: Scorer, seen: sp.csr_matrix, users: np.ndarray, k: int = 10, batch_size: int = 256
) -> np.ndarray:
    """(len(users), k) the best ``k`` items of each user that they have not seen, best first."""
    seen = _positive(seen)
    out = []
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        out.append(_top_k(score, batch, seen[batch], k))
    return np.concatenate(out) if out else np.zeros((0, k), np.int64)


def beyond_accuracy(
    top: np.ndarray, counts: np.ndarray, num_users: int, tags: list[frozenset[str]] | None = None
) -> dict[str, float]:
    """What accuracy does not show, over the recommended lists ``top`` (U, k):

    coverage     the share of the catalog recommended to anyone
    novelty      the mean self-information of a recommended item, -log2(its interactions /
                 the number of users) in the training data (higher: less obvious items)
    diversity    intra-list diversity: the mean Jaccard distance between the tag sets of two
                 items of one list (only with ``tags``, per item index)
    """
    num_items = len(counts)
    pop = np.maximum(counts, 1) / num_users
    out = {
        "coverage": len(np.unique(top)) / num_items,
        "novelty": float(np.mean(-np.log2(pop[top]))),
    }
    if tags is not None:
        k = top.shape[1]
        dist = []
        for row in top:
            sets = [tags[i] for i in row]
            for a in range(k):
                for b in range(a + 1, k):
                    union = len(sets[a] | sets[b])
                    dist.append(1 - len(sets[a] & sets[b]) / union if union else 0.0)
        out["diversity"] = float(np.mean(dist)) if dist else 0.0
    return out
