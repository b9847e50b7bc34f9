"""Time-decayed popularity on a temporal split of MovieLens-100K: does weighting recent
interactions more pick what users watch next better than plain counts?

    python bench/recommend_popularity.py                 # a few seconds

RecBole's protocol (``bench/recommend_eval.py``) splits each user's interactions at random, so
"recent" means nothing there. This split is by time, as the app meets it: every interaction
ordered by its timestamp (ties by row), the oldest 80 % train, the next 10 % valid, the
newest 10 % test. Popularity (``llmos.apps.recommend.generators.popularity``: each interaction
weighs ``0.5 ** (age / half-life)``, its age counted from the newest training interaction)
ranks the whole catalog for every user with a held-out interaction, their earlier
interactions removed from the ranking; full-ranking recall@10 / NDCG@10 / hit@10 as in
``bench/recommend_eval.py``. The half-life is chosen on valid NDCG@10 (popularity fitted on
train); the test row fits it on train + valid.

The half-life chosen here is what ``llmos setup`` (``make run``) trains the demo recommender
with (``llmos.apps.recommend.demo.HALF_LIFE_DAYS``): the floor of a user with no events, and
the prior beside an onboarding wish or interests.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).parent))
from recommend_eval import cpu_name

from llmos.apps.recommend.generators import popularity
from llmos.data.interactions import Interactions, part_sizes, read_inter
from llmos.paths import data_dir
from llmos.train.ranking import full_ranking

GRID = (None, 3.0, 7.0, 14.0, 30.0, 60.0, 120.0, 240.0)
SHOWN = ("recall@10", "ndcg@10", "hit@10")


def temporal_split(inter: Interactions) -> tuple[Interactions, Interactions, Interactions]:
    """The oldest 80 % / next 10 % / newest 10 % of all interactions by timestamp."""
    order = np.argsort(inter.timestamp, kind="stable")
    n_train, n_valid, _ = part_sizes(len(order), [0.8, 0.1, 0.1])
    return (
        inter.subset(order[:n_train]),
        inter.subset(order[n_train : n_train + n_valid]),
        inter.subset(order[n_train + n_valid :]),
    )


def scores_of(
    fit: Interactions, half_life: float | None, seen: sp.csr_matrix, held: sp.csr_matrix
) -> dict[str, float]:
    counts = popularity(fit.num_items, fit.item, fit.timestamp, half_life)

    def score(users: np.ndarray) -> torch.Tensor:
        return counts.expand(len(users), -1)

    return full_ranking(score, seen, held)


def name(half_life: float | None) -> str:
    return "counts (no decay)" if half_life is None else f"half-life {half_life:g} days"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.parse_args()
    inter = read_inter(data_dir() / "tasks" / "movielens" / "ml-100k.inter")
    train, valid, test = temporal_split(inter)
    days = lambda part: (part.timestamp.max() - part.timestamp.min()) / 86400  # noqa: E731
    print(f"# {cpu_name()}; Python {platform.python_version()}\n")
    print(
        f"ML-100K by time: train {len(train)} ({days(train):.0f} days), valid {len(valid)} "
        f"({days(valid):.0f} days), test {len(test)} ({days(test):.0f} days)\n"
    )
    x_tr, x_va, x_te = train.matrix(), valid.matrix(), test.matrix()
    both = Interactions(
        inter.users,
        inter.items,
        np.concatenate([train.user, valid.user]),
        np.concatenate([train.item, valid.item]),
        np.concatenate([train.rating, valid.rating]),
        np.concatenate([train.timestamp, valid.timestamp]),
    )
    print("| popularity | valid NDCG@10 | test recall@10 | test NDCG@10 | test hit@10 |")
    print("|---|---:|---:|---:|---:|")
    on_valid = {h: scores_of(train, h, x_tr, x_va)["ndcg@10"] for h in GRID}
    best = max(GRID, key=lambda h: on_valid[h])
    for h in GRID:
        t = scores_of(both, h, x_tr + x_va, x_te)
        mark = " (chosen on valid)" if h == best else ""
        print(
            f"| {name(h)}{mark} | {on_valid[h]:.4f} | "
            + " | ".join(f"{t[m]:.4f}" for m in SHOWN)
            + " |"
        )
    plain = scores_of(both, None, x_tr + x_va, x_te)
    chosen = scores_of(both, best, x_tr + x_va, x_te)
    lift = chosen["recall@10"] / plain["recall@10"] - 1 if plain["recall@10"] else float("nan")
    print(f"\n{name(best)} vs counts: test recall@10 {100 * lift:+.1f} %")


if __name__ == "__main__":
    main()
