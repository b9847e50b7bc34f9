"""The recommendation app's learned ranker, trained and measured on held-out next items.

:func:`fit_app_ranker` fits EASE and popularity on the train part of a leave-one-out cut and
hands the recommender they make, with the other generators, to :func:`learn_ranker`. Each
user's train items, as likes in time order, give their candidates (``Recommender.candidates``:
the best ``RANK_POOL`` items of the signals' sum, and MF's from its index) and the
candidates' features; a user whose valid item is among them gives one list, and the ranker
(:mod:`llmos.models.ranker`) is fitted on those lists. Each user's test item is then ranked
after their train and valid items, by the sum and by the ranker, through
``Recommender.recommend`` itself: the measured lists are the ones the app serves.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmos.apps.recommend.engine import FEATURES, Recommender
from llmos.apps.recommend.events import Act, Taste, fold
from llmos.apps.recommend.generators import popularity
from llmos.checkpoint.recommender import RANKER, RecommenderCheckpoint
from llmos.data.interactions import Interactions, Item, split_leave_one_out
from llmos.errors import DataError
from llmos.models.itemitem import EASE
from llmos.models.ranker import RankerConfig, fit_ranker
from llmos.train.tasks.sasrec import user_sequences

log = logging.getLogger("llmos.apps.recommend")
RANKER_USERS = 5000  # the most users whose held-out items train (and test) the ranker


def fit_app_ranker(
    items: list[Item],
    inter: Interactions,
    *,
    reg: float,
    half_life_days: float | None = None,
    content: torch.Tensor | None = None,
    sasrec: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None,
    mf: tuple[torch.Tensor, dict[str, Any]] | None = None,
    hidden: int = 0,
    max_users: int = RANKER_USERS,
    seed: int = 2020,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Train the app's learned ranker (:mod:`llmos.models.ranker`) on held-out next items.

    ``inter`` (in the catalog's order) is cut by RecBole's leave-one-out
    (``split_leave_one_out``: each user's last item by time to test, the one before to
    valid), the cut the generators of :mod:`llmos.apps.recommend.generators` train on, so
    ``sasrec`` (SASRec's weights and config) and ``mf`` (BPR-MF's item vectors and report)
    have seen the train part only. EASE and popularity fitted on the train part make, with
    ``content``, ``sasrec`` and ``mf``, the recommender that :func:`learn_ranker` trains and
    measures the ranker with; its weights, config and report are returned (see there).
    """
    train, valid, test = split_leave_one_out(inter)
    weights: dict[str, torch.Tensor] = {
        "ease.weight": EASE.fit(train.matrix(), reg=reg).weight,
        "popularity.counts": popularity(len(items), train.item, train.timestamp, half_life_days),
    }
    if content is not None:
        weights["content.vectors"] = content
    if sasrec is not None:
        weights.update(sasrec[0])
    if mf is not None:
        weights["mf.items"] = mf[0]
    part = RecommenderCheckpoint(
        Path("(the ranker's train part)"),
        tuple(items),
        weights,
        {"mf": mf[1] if mf else None},
        sasrec[1] if sasrec else None,
    )
    return learn_ranker(
        Recommender(part), train, valid, test, hidden=hidden, max_users=max_users, seed=seed
    )


def learn_ranker(
    rec: Recommender,
    train: Interactions,
    valid: Interactions,
    test: Interactions,
    *,
    hidden: int = 0,
    max_users: int = RANKER_USERS,
    seed: int = 2020,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Fit the ranker on ``valid``'s items and measure it on ``test``'s (module docstring);
    ``rec`` is fitted on ``train`` and its catalog is the parts' item vocabulary, in order.
    At most ``max_users`` users (a seeded sample) take part.

    Returns its weights (under ``ranker.``), its config and a report: the lists it learned
    from, the share of valid items inside the pool, the test hit@10 / NDCG@10 of both
    rankings, the mean per-user NDCG@10 gain with its standard error, and a linear ranker's
    weight per feature.

    Raises:
        DataError: no user has an item to learn from, one to validate on and one to test on.
    """
    ids = [item.id for item in rec.items]

    def taste(seq: np.ndarray) -> Taste:
        return fold(Act("like", ids[i]) for i in seq)

    users = np.unique(valid.user)
    if len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    before_valid = user_sequences(train)
    before_test = user_sequences(train, valid)
    valid_item = dict(zip(valid.user.tolist(), valid.item.tolist(), strict=True))
    test_item = dict(zip(test.user.tolist(), test.item.tolist(), strict=True))
    lists, targets = [], []
    for u in users.tolist():
        if not len(before_valid[u]):
            continue
        pool, features = rec.candidates(taste(before_valid[u]))
        at = torch.nonzero(pool == valid_item[u]).flatten()
        if len(at):
            lists.append(features)
            targets.append(int(at[0]))
    log.info("ranker: %d of %d valid items in their pool", len(lists), len(users))
    if not lists:
        raise DataError(
            "no user to train the ranker on: it needs users with at least 3 interactions "
            "(one to learn from, one to validate on, one to test on)"
        )
    features, mask = _padded(lists, len(FEATURES))
    ranker, loss = fit_ranker(
        features, torch.tensor(targets), RankerConfig(FEATURES, hidden), mask=mask, seed=seed
    )
    scores: dict[str, list[tuple[float, float]]] = {"sum": [], "ranker": []}
    given = rec.ranker  # put back below: both rankings are measured on the same recommender
    for u in users.tolist():
        if u not in test_item or not len(before_test[u]):
            continue
        t = taste(before_test[u])
        for name, model in (("sum", None), ("ranker", ranker)):
            rec.ranker = model
            top = [r.item.id for r in rec.recommend(t, 10)]
            rank = top.index(ids[test_item[u]]) + 1 if ids[test_item[u]] in top else 0
            scores[name].append((float(rank > 0), 1.0 / np.log2(rank + 1) if rank else 0.0))
    rec.ranker = given
    test_metrics = {
        name: {
            "hit@10": round(float(np.mean([h for h, _ in v])), 4) if v else None,
            "ndcg@10": round(float(np.mean([d for _, d in v])), 4) if v else None,
        }
        for name, v in scores.items()
    }
    gain = np.array([r[1] - f[1] for f, r in zip(scores["sum"], scores["ranker"], strict=True)])
    report = {
        "features": list(FEATURES),
        "hidden": hidden,
        "lists": len(lists),
        "valid_users": len(users),
        "pool_recall": round(len(lists) / max(len(users), 1), 4),
        "loss": round(loss, 4),
        "test_users": len(scores["sum"]),
        "test": test_metrics,
        # the per-user NDCG@10 gain of the ranker over the sum, and its standard error
        "ndcg_gain": round(float(gain.mean()), 4) if len(gain) else None,
        "ndcg_gain_se": round(float(gain.std(ddof=1) / np.sqrt(len(gain))), 4)
        if len(gain) > 1
        else None,
        "weights": ranker.weights(),
    }
    log.info("ranker on test (leave-one-out): %s", test_metrics)
    state = {RANKER + k: v.detach().clone() for k, v in ranker.state_dict().items()}
    return state, ranker.config.to_dict(), report


def _padded(lists: list[torch.Tensor], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate lists of unequal lengths (a user with fewer allowed items than the pool) as
    one (L, C, F) tensor of ``width`` features, zero-padded, and the (L, C) mask of the real
    candidates."""
    longest = max((len(f) for f in lists), default=0)
    out = torch.zeros(len(lists), longest, width)
    mask = torch.zeros(len(lists), longest, dtype=torch.bool)
    for row, f in enumerate(lists):
        out[row, : len(f)] = f
        mask[row, : len(f)] = True
    return out, mask
