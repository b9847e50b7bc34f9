"""BPR (Bayesian Personalized Ranking, Rendle et al., UAI 2009) for the shared training loop:
matrix factorisation learned from (user, positive item, negative item) triples.

Each step takes ``batch_size`` (user, positive) pairs from an epoch over the training pairs
in a seeded shuffled order, and draws for each one negative item uniformly among the items the
user has no training interaction with (rejection sampling). The loss is
``-log sigmoid(score(u, pos) - score(u, neg))``, averaged over the step's pairs. As RecBole's
``TrainDataLoader``, an epoch is every pair once, its last batch the remainder (smaller).

Exact resume: the permutation of epoch ``e`` is drawn from ``(seed, e)`` and the negatives of
global step ``s`` from ``(seed, s)``, so the position (epoch, batch) is the whole data state and
a resumed run sees the very triples an uninterrupted one would.

The task is model-agnostic: it needs ``model(users, items)`` ((B,) users, (B,) or (B, K) items
-> scores) and ``model.score_all(users)``; a model with a ``regularization(users, pos, neg)``
method has that term (divided by the step's pairs) added to the loss. :func:`train_bpr` trains
a :class:`BPRMF` or a given model, :func:`train_lightgcn` a
:class:`~llmos.models.lightgcn.LightGCN`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmos.data.batching import EpochPosition
from llmos.data.interactions import Interactions
from llmos.errors import DataError
from llmos.models.lightgcn import LightGCN, LightGCNConfig
from llmos.models.mf import BPRMF, MFConfig
from llmos.train.dist import DistInfo
from llmos.train.loop import FitResult
from llmos.train.ranking import full_ranking
from llmos.train.tasks.recfit import fit_recommender

# Stream tags of the two seeded generators, so the permutation of epoch e and the negatives
# of step e never come from the same stream.
_ORDER, _NEGATIVES = 0, 1


class BPRTask(EpochPosition):
    """BPR triples from ``train`` and full-ranking validation on ``valid`` (seen = train).

    The training pairs are the distinct (user, item) pairs of ``train`` (a pair seen twice is
    one positive, as in :meth:`Interactions.matrix`), in user-then-item order before shuffling.
    """

    def __init__(
        self,
        train: Interactions,
        valid: Interactions,
        batch_size: int,
        seed: int,
        k: int = 10,
    ) -> None:
        if (train.num_users, train.num_items) != (valid.num_users, valid.num_items):
            raise ValueError(
                f"train ({train.num_users} users, {train.num_items} items) and valid "
                f"({valid.num_users}, {valid.num_items}) must share vocabularies: split one "
                "Interactions with split_by_ratio"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.seen = train.matrix()
        self.seen.sort_indices()
        self.held = valid.matrix()
        self.num_items = train.num_items
        per_user = np.diff(self.seen.indptr)
        # CSR row-major with sorted columns: the pairs, and their keys u * items + i ascending.
        self.pair_user = np.repeat(np.arange(train.num_users, dtype=np.int64), per_user)
        self.pair_item = self.seen.indices.astype(np.int64)
        self.keys = self.pair_user * self.num_items + self.pair_item
        if not len(self.keys):
            raise DataError("no training interactions: BPR needs at least one (user, item) pair")
        full = np.flatnonzero(per_user >= self.num_items)
        if len(full):
            raise DataError(
                f"{len(full)} users (e.g. {train.users[full[0]]!r}) interacted with every item: "
                "no negative item can be drawn for them; remove them from the training data"
            )
        self.batch_size, self.seed, self.k = batch_size, seed, k
        self.batches_per_epoch = math.ceil(len(self.keys) / batch_size)
        self.position = {"epoch": 0, "batch": 0}

    def seen_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(N,) bool: whether each (user, item) is a training pair."""
        keys = users * self.num_items + items
        at = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return self.keys[at] == keys

    def negatives(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One item per user drawn uniformly among the items without a training pair with
        that user: draw from all items, redraw the rejected ones until none is left."""
        items = rng.integers(0, self.num_items, size=len(users))
        bad = np.flatnonzero(self.seen_pairs(users, items))
        while len(bad):
            items[bad] = rng.integers(0, self.num_items, size=len(bad))
            bad = bad[self.seen_pairs(users[bad], items[bad])]
        return items

    def steps(self, info: DistInfo, micro_batch: int) -> Iterator[list[dict[str, Any]]]:
        """Per optimizer step, this rank's share of the step's triples in micro-batches.

        The whole step's negatives are drawn on every rank and then cut, so that a step trains
        on the same triples whatever the number of ranks."""
        while True:
            epoch = self.position["epoch"]
            order = np.random.default_rng([self.seed, _ORDER, epoch]).permutation(len(self.keys))
            while self.position["batch"] < self.batches_per_epoch:
                b = self.position["batch"]
                idx = order[b * self.batch_size : (b + 1) * self.batch_size]
                users, pos = self.pair_user[idx], self.pair_item[idx]
                step = epoch * self.batches_per_epoch + b
                neg = self.negatives(users, np.random.default_rng([self.seed, _NEGATIVES, step]))
                self.position["batch"] += 1
                share = np.array_split(np.arange(len(idx)), info.world)[info.rank]
                # At least one (maybe empty) micro-batch, so every rank reports its counts.
                starts = range(0, max(len(share), 1), micro_batch)
                chunks = [share[j : j + micro_batch] for j in starts]
                yield [
                    {
                        "users": torch.from_numpy(users[c]),
                        "pos": torch.from_numpy(pos[c]),
                        "neg": torch.from_numpy(neg[c]),
                    }
                    for c in chunks
                ]
            self.position = {"epoch": epoch + 1, "batch": 0}

    def counts(self, batch: dict[str, Any]) -> list[float]:
        return [float(len(batch["users"]))]

    def loss(
        self, model: nn.Module, batch: dict[str, Any], totals: list[float]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        # One forward for both items (B, 2): a DDP-wrapped model must run forward once.
        scores = model(batch["users"], torch.stack([batch["pos"], batch["neg"]], 1)).float()
        loss = -F.logsigmoid(scores[:, 0] - scores[:, 1]).sum() / totals[0]
        # A model may add a penalty on the batch's parameters (LightGCN's L2 on its ego
        # embeddings); DDP wraps the model, so the hook is looked up on the module inside.
        regularization = getattr(getattr(model, "module", model), "regularization", None)
        if regularization is None:
            # "loss" is what the loop's plot and progress bar read; "bpr_loss" names the term.
            return loss, {"loss": loss.item(), "bpr_loss": loss.item()}
        reg = regularization(batch["users"], batch["pos"], batch["neg"]).float() / totals[0]
        total = loss + reg
        return total, {"loss": total.item(), "bpr_loss": loss.item(), "reg_loss": reg.item()}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """recall, ndcg, mrr, hit and precision at ``k`` on the validation split, ranking
        every item but the user's training ones (plus ``users``: how many were ranked)."""
        device = next(model.parameters()).device

        def score(users: np.ndarray) -> torch.Tensor:
            return model.score_all(torch.as_tensor(users, device=device)).float().cpu()

        return full_ranking(score, self.seen, self.held, k=self.k)


def train_bpr(
    train: Interactions,
    valid: Interactions,
    run_dir: str | Path,
    *,
    steps: int,
    model: nn.Module | None = None,
    dim: int = 64,
    batch_size: int = 2048,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 2020,
    eval_every: int = 200,
    resume: bool = False,
    select: str | None = "ndcg@10",
    patience: int | None = None,
    device: str = "auto",
    num_threads: int | None = None,
    progress: bool = False,
) -> tuple[nn.Module, FitResult]:
    """Train ``model`` (by default a :class:`BPRMF` of ``dim``) for ``steps`` optimizer steps
    through :func:`fit`. A given model is saved with its ``config`` attribute as
    ``config.json``; ``dim`` is then unused.

    The defaults are RecBole's BPR (embedding size 64, batch 2048, Adam at lr 1e-3, no weight
    decay, no gradient clipping, a constant rate): AdamW with ``weight_decay`` 0 and eps 1e-8
    is torch's Adam. A ``weight_decay`` above 0 is AdamW's decoupled decay, not RecBole's L2
    term. Validation (every ``eval_every`` steps) ranks all items on ``valid``; with
    ``select`` the best validated model becomes ``run_dir/checkpoint`` and is what is
    returned. Checkpoints for resume are written at each validation.

    Returns:
        The model (the selected one, else the last step's) and :func:`fit`'s result.
    """
    task = BPRTask(train, valid, batch_size, seed)
    title = type(model).__name__ if model is not None else "BPR-MF"
    if model is None:
        config = MFConfig(train.num_users, train.num_items, dim)
        model = BPRMF(config, generator=torch.Generator().manual_seed(seed))
    result = fit_recommender(
        model,
        task,
        run_dir,
        title=title,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
        eval_every=eval_every,
        resume=resume,
        select=select,
        patience=patience,
        device=device,
        num_threads=num_threads,
        progress=progress,
    )
    return model, result


def train_lightgcn(
    train: Interactions,
    valid: Interactions,
    run_dir: str | Path,
    *,
    steps: int,
    dim: int = 64,
    layers: int = 2,
    reg_weight: float = 1e-5,
    seed: int = 2020,
    **kwargs: Any,
) -> tuple[LightGCN, FitResult]:
    """Train a :class:`~llmos.models.lightgcn.LightGCN` on the graph of ``train`` with
    :func:`train_bpr` (``kwargs``: its other arguments).

    The defaults are RecBole 1.2.1's LightGCN (``properties/model/LightGCN.yaml``: embedding
    size 64, 2 layers, reg_weight 1e-5) with its BPR training (batch 2048, Adam at lr 1e-3).
    """
    config = LightGCNConfig(train.num_users, train.num_items, dim, layers, reg_weight)
    model = LightGCN(config, train.matrix(), generator=torch.Generator().manual_seed(seed))
    _, result = train_bpr(train, valid, run_dir, steps=steps, model=model, seed=seed, **kwargs)
    return model, result
