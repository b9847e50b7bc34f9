"""The recommender's generators that learn from interactions beside EASE: popularity (time
-decayed), the sequential model (SASRec) and a collaborative model's item vectors (BPR-MF or
LightGCN), each fitted on interactions in the
catalog's order (``llmos.apps.recommend.train.in_catalog_order``). SASRec and MF train on
RecBole's leave-one-out cut, the one the learned ranker (:mod:`llmos.apps.recommend.ranking`)
learns and is tested on, so neither has seen its held-out items.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmos.checkpoint.recommender import SASREC
from llmos.data.interactions import Interactions, split_leave_one_out
from llmos.models.mf import fold_in
from llmos.train.ranking import full_ranking
from llmos.train.tasks.bpr import train_bpr, train_lightgcn
from llmos.train.tasks.sasrec import train_sasrec

log = logging.getLogger("llmos.apps.recommend")
DAY = 86400.0
MF_REGS = (1.0, 3.0, 10.0, 30.0, 100.0)  # fit_mf's fold-in L2 weights, chosen on valid
MF_MODELS = ("bpr", "lightgcn")


def popularity(
    num_items: int, item: np.ndarray, timestamp: np.ndarray, half_life_days: float | None
) -> torch.Tensor:
    """Interaction counts per item; with ``half_life_days``, each interaction weighs
    ``0.5 ** (age / half-life)``, its age counted from the newest timestamp (an interaction
    without a timestamp, NaN, counts as the newest)."""
    w = np.ones(len(item))
    if half_life_days is not None:
        if half_life_days <= 0:
            raise ValueError(f"half_life_days must be positive, got {half_life_days}")
        t = np.where(np.isnan(timestamp), np.nanmax(timestamp, initial=0.0), timestamp)
        w = 0.5 ** ((t.max(initial=0.0) - t) / (half_life_days * DAY))
    return torch.from_numpy(np.bincount(item, weights=w, minlength=num_items)).float()


def fit_sequential(
    inter: Interactions,
    steps: int,
    seed: int = 2020,
    *,
    run_dir: str | Path | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Train a SASRec (:mod:`llmos.train.tasks.sasrec`, RecBole's defaults) on ``inter`` (in
    the catalog's order): each user's history but the last two items by time as training, the
    second-last as validation (RecBole's leave-one-out), the best validated step kept. Returns
    its weights (under ``sasrec.``, the tied output projection left out), its config fields
    and its validation metrics.

    The run (its resume checkpoints, written at each of its ten validations) goes to a temp
    directory, or to ``run_dir``, where a run cut off earlier is resumed (a background job's
    next attempt: :mod:`llmos.apps.recommend.sequential`). ``on_step(step, steps)`` is called
    after every step; what it raises stops training there."""
    train, valid, _ = split_leave_one_out(inter)
    resume = run_dir is not None
    with contextlib.ExitStack() as stack:
        if run_dir is None:
            run_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="sasrec-"))
        model, result = train_sasrec(
            train,
            valid,
            run_dir,
            steps=steps,
            seed=seed,
            eval_every=max(steps // 10, 1),
            resume=resume,
            on_step=on_step,
        )
    tied = set(model.tied_weights)
    weights = {
        SASREC + k: v.detach().clone() for k, v in model.state_dict().items() if k not in tied
    }
    best = result.best or {}
    return weights, dataclasses.asdict(model.config), dict(best.get("metrics", {}))


def fit_mf(
    inter: Interactions, steps: int, seed: int = 2020, model: str = "bpr"
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Train a BPR-MF (:func:`~llmos.train.tasks.bpr.train_bpr`) or, with ``model``
    ``lightgcn``, a LightGCN (:func:`~llmos.train.tasks.bpr.train_lightgcn`), RecBole's
    defaults, on ``inter`` (in the catalog's order), cut as :func:`fit_sequential` cuts them
    (each user's last two items by time held out, the second-last validating), the best
    validated step kept. The app serves its *item* vectors only (LightGCN's: the final,
    propagated ones, which its scores are dot products with): a user, known or new, is folded
    in from their events (:func:`~llmos.models.mf.fold_in`), at the L2 weight of
    :data:`MF_REGS` that gives the validation users, folded in from their train items, the
    best NDCG@10. (LightGCN's own user vector is the propagation of the user's items; the
    fold-in is a least-squares stand-in that needs no graph at serving time.)

    Returns the (items, dim) item vectors and a report: model, steps, dim, ``fold_in_reg``,
    and the validation metrics of the trained user vectors and of the folded-in ones."""
    if model not in MF_MODELS:
        raise ValueError(f"model must be one of {MF_MODELS}, got {model!r}")
    train, valid, _ = split_leave_one_out(inter)
    trainer = train_bpr if model == "bpr" else train_lightgcn
    with tempfile.TemporaryDirectory(prefix=f"{model}-") as run:
        trained, result = trainer(
            train, valid, run, steps=steps, seed=seed, eval_every=max(steps // 10, 1)
        )
    if model == "bpr":
        vectors = trained.item.weight.detach().clone()
    else:
        with torch.no_grad():
            vectors = trained.propagate()[1].detach().clone()
    seen = train.matrix()
    rows = [seen.indices[seen.indptr[u] : seen.indptr[u + 1]] for u in range(seen.shape[0])]

    def folded(reg: float) -> Callable[[np.ndarray], torch.Tensor]:
        def score(users: np.ndarray) -> torch.Tensor:
            dim = vectors.shape[1]
            out = torch.zeros(len(users), dim)
            for j, u in enumerate(users.tolist()):
                if len(rows[u]):
                    items_u = vectors[torch.from_numpy(rows[u].astype(np.int64))]
                    out[j] = fold_in(items_u, torch.ones(len(items_u)), reg)
            return out @ vectors.T

        return score

    by_reg = {r: full_ranking(folded(r), seen, valid.matrix()) for r in MF_REGS}
    best = max(MF_REGS, key=lambda r: by_reg[r]["ndcg@10"])
    report = {
        "model": model,
        "steps": steps,
        "dim": int(vectors.shape[1]),
        "fold_in_reg": best,
        "valid_trained": dict((result.best or {}).get("metrics", {})),
        "valid_folded": by_reg[best],
    }
    log.info("MF fold-in reg %g: valid NDCG@10 %.4f", best, by_reg[best]["ndcg@10"])
    return vectors, report
