"""Diversity by maximal marginal relevance over the items' tags: the recommender's last step
when a request asks for ``diversity`` (``bench/recommend_live.py``, "Diversity", measures what
it costs in accuracy)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def mmr(
    pool: list[int],
    scores: torch.Tensor,
    tags: Sequence[frozenset[str]],
    k: int,
    diversity: float,
) -> list[int]:
    """Maximal marginal relevance (Carbonell & Goldstein, 1998) over ``pool`` (best first):
    each pick maximises ``(1 - diversity) * relevance - diversity * (the largest tag overlap,
    Jaccard, with an item already picked)``, relevance being the score min-max scaled over the
    pool. ``diversity`` 0 keeps the order of the scores."""
    if not 0.0 <= diversity <= 1.0:
        raise ValueError(f"diversity must be in [0, 1], got {diversity}")
    if diversity == 0 or len(pool) <= 1:
        return pool[:k]
    s = scores[pool]
    rel = (s - s.min()) / (s.max() - s.min()) if float(s.max() - s.min()) > 0 else s * 0 + 1
    relevance = dict(zip(pool, rel.tolist(), strict=True))
    chosen: list[int] = []
    left = list(pool)
    while left and len(chosen) < k:

        def gain(i: int) -> float:
            overlap = max((_jaccard(tags[i], tags[j]) for j in chosen), default=0.0)
            return (1 - diversity) * relevance[i] - diversity * overlap

        best = max(left, key=gain)
        chosen.append(best)
        left.remove(best)
    return chosen


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    union = len(a | b)
    return len(a & b) / union if union else 0.0
