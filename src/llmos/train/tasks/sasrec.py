"""SASRec next-item training for the shared training loop (:mod:`llmos.models.sasrec`).

Each user's training interactions, ordered by time, are one item sequence. A sequence of up to
``max_len + 1`` items is one training example; a longer one is cut into windows of ``max_len +
1`` items from its end backwards, consecutive windows sharing one item (the last input of the
earlier window is the first input of the later), so that every item but the user's first is a
target exactly once per epoch (the earliest window may be shorter). An item early in a window
sees fewer than ``max_len`` items before it, where RecBole's prefix augmentation would give it
its full ``max_len`` history; the original SASRec keeps only the last ``max_len + 1`` items.

The loss is the cross-entropy of the next item at every real position over all items (a full
softmax, RecBole's ``loss_type: CE``), summed over the step's targets and divided by their
count (:meth:`SequenceTask.counts`), so gradient accumulation and DDP ranks give the gradient
of one batch. The padding token is no candidate here; RecBole's softmax includes its padding
item 0 in training and only sets its score to -inf when evaluating.

Exact resume: the window order of epoch ``e`` is a permutation drawn from ``(seed, e)``, so the
position (epoch, batch) is the whole data state, as in :mod:`llmos.train.tasks.bpr`.

Validation ranks every item for each user with a valid interaction, the model reading the
user's training sequence. RecBole 1.2.1 removes no history item from a sequential model's
full ranking (``FullSortEvalDataLoader`` gives no history index when ``MODEL_TYPE`` is
sequential; the trainer only sets the padding item's score to -inf), which is
``mask_history=False``, the default; ``mask_history=True`` removes the user's training items
as the general models' protocol (and :class:`~llmos.train.tasks.bpr.BPRTask`) does.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from llmos.data.batching import EpochPosition
from llmos.data.interactions import Interactions
from llmos.errors import DataError
from llmos.models.sasrec import PAD, SASRec, SASRecConfig
from llmos.train.dist import DistInfo
from llmos.train.loop import FitResult
from llmos.train.ranking import full_ranking
from llmos.train.tasks.recfit import fit_recommender

_ORDER = 0  # stream tag of the epoch permutations


def user_sequences(*parts: Interactions) -> list[np.ndarray]:
    """Each user's items (indexes, int64) in time order, over the interactions of ``parts``.

    Equal timestamps keep the order of the parts, then the order of the rows: pass the splits
    oldest first (``train, valid``) to get a user's history before the test item."""
    if not parts:
        raise ValueError("user_sequences needs at least one Interactions")
    num_users = parts[0].num_users
    if any((p.num_users, p.num_items) != (num_users, parts[0].num_items) for p in parts):
        raise ValueError("the parts must share vocabularies: split one Interactions")
    user = np.concatenate([p.user for p in parts])
    item = np.concatenate([p.item for p in parts])
    time = np.concatenate([p.timestamp for p in parts])
    part = np.concatenate([np.full(len(p), k) for k, p in enumerate(parts)])
    # lexsort: the last key first; the row index last breaks every tie, so the order is total.
    order = np.lexsort((np.arange(len(user)), part, time, user))
    bounds = np.searchsorted(user[order], np.arange(num_users + 1))
    return [item[order[a:b]] for a, b in itertools.pairwise(bounds)]


def padded(seqs: list[np.ndarray], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Item sequences -> ((N, max_len) right-padded tokens of each one's last ``max_len``
    items (item index + 1, 0 = padding), (N,) their lengths)."""
    tokens = np.zeros((len(seqs), max_len), np.int64)
    lengths = np.zeros(len(seqs), np.int64)
    for row, s in enumerate(seqs):
        s = s[-max_len:]
        tokens[row, : len(s)] = s + 1
        lengths[row] = len(s)
    return torch.from_numpy(tokens), torch.from_numpy(lengths)


def sequence_scorer(
    model: SASRec, *history: Interactions, batch_size: int = 256
) -> Callable[[np.ndarray], torch.Tensor]:
    """Users -> (B, num_items) next-item scores, the model reading each user's history: the
    interactions of ``history`` in time order (oldest split first: ``train, valid`` for test),
    its last ``max_len`` items. A user without history is scored from the padding token alone.
    For :func:`~llmos.train.ranking.full_ranking`; the model is put in eval mode."""
    tokens, lengths = padded(user_sequences(*history), model.config.max_len)
    device = next(model.parameters()).device
    model.eval()

    @torch.inference_mode()
    def score(users: np.ndarray) -> torch.Tensor:
        rows = torch.as_tensor(users)
        out = []
        for start in range(0, len(rows), batch_size):
            r = rows[start : start + batch_size]
            s = model.score_all(tokens[r].to(device), lengths[r].to(device))
            out.append(s.float().cpu())
        return torch.cat(out) if out else torch.zeros(0, model.config.num_items)

    return score


class SequenceTask(EpochPosition):
    """Next-item windows of ``train`` (module docstring) and full-ranking validation on
    ``valid``, the model reading each user's training sequence."""

    def __init__(
        self,
        train: Interactions,
        valid: Interactions,
        batch_size: int,
        seed: int,
        max_len: int,
        k: int = 10,
        mask_history: bool = False,
    ) -> None:
        if (train.num_users, train.num_items) != (valid.num_users, valid.num_items):
            raise ValueError(
                f"train ({train.num_users} users, {train.num_items} items) and valid "
                f"({valid.num_users}, {valid.num_items}) must share vocabularies: split one "
                "Interactions with split_leave_one_out"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        self.train, self.valid = train, valid
        windows: list[np.ndarray] = []
        for s in user_sequences(train):
            # From the end backwards: [end - max_len - 1, end), the next one ending just
            # before this one's first target, so each target is in exactly one window.
            windows += [s[max(0, end - max_len - 1) : end] for end in range(len(s), 1, -max_len)]
        if not windows:
            raise DataError(
                "no training sequences: SASRec needs a user with two or more training interactions"
            )
        self.tokens, self.lengths = padded(windows, max_len + 1)  # (W, max_len + 1), (W,)
        self.batch_size, self.seed, self.k = batch_size, seed, k
        self.mask_history = mask_history
        self.batches_per_epoch = math.ceil(len(windows) / batch_size)
        self.position = {"epoch": 0, "batch": 0}

    @property
    def num_windows(self) -> int:
        return len(self.lengths)

    def steps(self, info: DistInfo, micro_batch: int) -> Iterator[list[dict[str, Any]]]:
        """Per optimizer step, this rank's share of the step's windows in micro-batches, each
        cut to its longest window (inputs: a window but its last item; targets: but its
        first, 0 at padding)."""
        while True:
            epoch = self.position["epoch"]
            rng = np.random.default_rng([self.seed, _ORDER, epoch])
            order = rng.permutation(self.num_windows)
            while self.position["batch"] < self.batches_per_epoch:
                b = self.position["batch"]
                idx = order[b * self.batch_size : (b + 1) * self.batch_size]
                self.position["batch"] += 1
                share = np.array_split(idx, info.world)[info.rank]
                # At least one (maybe empty) micro-batch, so every rank reports its counts.
                starts = range(0, max(len(share), 1), micro_batch)
                yield [self._batch(share[j : j + micro_batch]) for j in starts]
            self.position = {"epoch": epoch + 1, "batch": 0}

    def _batch(self, rows: np.ndarray) -> dict[str, Any]:
        rows_t = torch.from_numpy(rows)
        T = max(int(self.lengths[rows_t].max()) - 1, 1) if len(rows) else 1
        window = self.tokens[rows_t, : T + 1]  # (b, T + 1)
        targets = window[:, 1:]  # (b, T)
        return {
            "inputs": window[:, :-1].contiguous(),
            "targets": targets.contiguous(),
            "num_tokens": int((targets != PAD).sum()),
        }

    def counts(self, batch: dict[str, Any]) -> list[float]:
        return [float(batch["num_tokens"])]

    def loss(
        self, model: nn.Module, batch: dict[str, Any], totals: list[float]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(batch["inputs"])  # (b, T, V)
        real = batch["targets"] != PAD  # (b, T)
        # Items only: column 0 (padding) is no candidate, so token t is class t - 1.
        scores = logits[real][:, 1:].float()  # (targets, items)
        loss = F.cross_entropy(scores, batch["targets"][real] - 1, reduction="sum") / totals[0]
        return loss, {"loss": loss.item()}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """recall, ndcg, mrr, hit and precision at ``k`` on the validation split, ranking
        every item (all but the user's training items with ``mask_history``) after the
        user's training sequence (plus ``users``: how many were ranked)."""
        held = self.valid.matrix()
        seen = self.train.matrix() if self.mask_history else sp.csr_matrix(held.shape)
        return full_ranking(sequence_scorer(model, self.train), seen, held, k=self.k)


def train_sasrec(
    train: Interactions,
    valid: Interactions,
    run_dir: str | Path,
    *,
    steps: int,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 2,
    intermediate_size: int = 256,
    max_len: int = 50,
    dropout: float = 0.5,
    attention_dropout: float = 0.5,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 2020,
    eval_every: int = 100,
    resume: bool = False,
    select: str | None = "ndcg@10",
    patience: int | None = None,
    mask_history: bool = False,
    device: str = "auto",
    num_threads: int | None = None,
    progress: bool = False,
    on_step: Callable[[int, int], None] | None = None,
) -> tuple[SASRec, FitResult]:
    """Train a :class:`~llmos.models.sasrec.SASRec` on the sequences of ``train`` for
    ``steps`` optimizer steps through :func:`fit`.

    The model defaults are RecBole 1.2.1's SASRec (:class:`SASRecConfig`); training is
    RecBole's (Adam at lr 1e-3, no weight decay, no gradient clipping, a constant rate: AdamW
    with ``weight_decay`` 0 and eps 1e-8 is torch's Adam) but for the batch: RecBole's 2048
    is (prefix, next item) examples, one target each; here a batch is ``batch_size`` windows
    of up to ``max_len`` targets each, so the default 128 holds about 5,000 targets on
    ML-100K. Validation (every ``eval_every`` steps) ranks all items on ``valid`` (see
    :class:`SequenceTask` for ``mask_history``); with ``select`` the best validated model
    becomes ``run_dir/checkpoint`` and is what is returned. Checkpoints for resume are written
    at each validation (``resume`` continues from the newest); ``on_step(step, steps)`` is
    called after every step (:func:`~llmos.train.loop.fit`'s).

    Returns:
        The model (the selected one, else the last step's) and :func:`fit`'s result.
    """
    task = SequenceTask(train, valid, batch_size, seed, max_len, mask_history=mask_history)
    config = SASRecConfig(
        num_items=train.num_items,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        intermediate_size=intermediate_size,
        max_len=max_len,
        dropout=dropout,
        attention_dropout=attention_dropout,
    )
    model = SASRec(config, generator=torch.Generator().manual_seed(seed))
    result = fit_recommender(
        model,
        task,
        run_dir,
        title="SASRec",
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
        on_step=on_step,
    )
    return model, result
