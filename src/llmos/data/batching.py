"""Batches of similar length, so that little compute is spent on padding: length-bucketed
training batches (fairseq-style), and the sort -> pad -> run -> restore-order loop of
inference (:func:`run_length_sorted`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence, Sized
from typing import Any, TypeVar

import numpy as np
import torch

from llmos.errors import DataError

# How many batches are sorted by length together.
BUCKET_BATCHES = 50


def bucketed_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Index batches: shuffle, sort by length within buckets of BUCKET_BATCHES batches, cut into
    batches of ``batch_size`` (dropping an incomplete last one), and shuffle the batch order."""
    order = rng.permutation(len(lengths))
    lengths = np.asarray(lengths)[order]
    span = batch_size * BUCKET_BATCHES
    for s in range(0, len(order), span):
        chunk = slice(s, s + span)
        order[chunk] = order[chunk][np.argsort(-lengths[chunk], kind="stable")]
    n = len(order) // batch_size
    batches = [order[k * batch_size : (k + 1) * batch_size] for k in range(n)]
    return [batches[k] for k in rng.permutation(n)]


B = TypeVar("B")
R = TypeVar("R")


def length_sorted_batches(lengths: Sequence[int] | np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Indices sorted by length (stable: equal lengths keep their order), cut into batches of
    ``batch_size`` (the last one may be smaller)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def run_length_sorted(
    sequences: Sequence[Sized],
    batch_size: int,
    pad: Callable[[np.ndarray], B],
    forward: Callable[[B], Sequence[R]],
) -> list[R]:
    """Run ``forward`` over ``sequences`` in batches of similar length; results in input order.

    Args:
        sequences: the inputs (token id arrays); only their lengths are read here.
        batch_size: rows per batch.
        pad: the indices of one batch (into ``sequences``, shortest first) -> the padded batch.
        forward: the padded batch -> one result per row, in the batch's row order.

    Returns:
        ``forward``'s results, one per sequence, in the order of ``sequences`` (each row once).
    """
    out: list[Any] = [None] * len(sequences)
    for idx in length_sorted_batches([len(x) for x in sequences], batch_size):
        results = forward(pad(idx))
        assert len(results) == len(idx), f"forward gave {len(results)} rows for {len(idx)}"
        for row, i in enumerate(idx):
            out[i] = results[row]
    return out


def pad_batch(
    ids: list[np.ndarray], types: list[np.ndarray] | None, pad_id: int
) -> dict[str, torch.Tensor | None]:
    """Right-pad token id arrays into ``input_ids`` / ``token_type_ids`` (B, T) and an
    ``attention_mask`` (None when no row is padded), plus ``num_tokens``."""
    lengths = np.array([len(x) for x in ids])
    B, T = len(ids), int(lengths.max())
    input_ids = np.full((B, T), pad_id, dtype=np.int64)
    token_types = np.zeros((B, T), dtype=np.int64)
    for row, x in enumerate(ids):
        input_ids[row, : len(x)] = x
        if types is not None:
            token_types[row, : len(x)] = types[row]
    padded = bool((lengths < T).any())
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64) if padded else None
    return {
        "input_ids": torch.from_numpy(input_ids),
        "token_type_ids": torch.from_numpy(token_types) if types is not None else None,
        "attention_mask": torch.from_numpy(mask) if mask is not None else None,
        "num_tokens": torch.tensor(int(lengths.sum())),
    }


class EpochPosition:
    """Where an endless stream of epochs is: ``position`` (epoch, batch) is a task's whole
    data state, saved with a checkpoint and loaded on resume (the shared loop's ``state`` /
    ``load_state``)."""

    position: dict[str, int]

    def state(self) -> dict[str, int]:
        return dict(self.position)

    def load_state(self, state: dict[str, Any]) -> None:
        self.position = {"epoch": int(state["epoch"]), "batch": int(state["batch"])}


class EpochBatches(EpochPosition, ABC):
    """Endless, resumable epochs of length-bucketed batches over a fine-tuning set.

    Subclasses set ``lengths`` (one per example), ``batch_size`` and ``seed`` and implement
    ``collate(indices) -> batch``. The position (epoch, batch) is the whole data state, so a
    resumed run continues with exactly the batches an uninterrupted one would have seen.
    """

    lengths: np.ndarray
    batch_size: int
    seed: int

    @abstractmethod
    def collate(self, idx: np.ndarray) -> dict[str, Any]:
        """The batch (model inputs and targets) of the examples at ``idx``."""

    def steps(self, info: Any, micro_batch: int) -> Iterator[list[dict[str, Any]]]:
        """Yield, per optimizer step, this rank's micro-batches (``info``: a DistInfo)."""
        per_rank = self.batch_size // info.world
        while True:
            epoch = self.position["epoch"]
            batches = bucketed_batches(
                self.lengths, self.batch_size, np.random.default_rng([self.seed, epoch])
            )
            if not batches:
                raise DataError(
                    f"fewer training examples ({len(self.lengths)}) than one batch "
                    f"({self.batch_size})"
                )
            while self.position["batch"] < len(batches):
                idx = batches[self.position["batch"]][
                    info.rank * per_rank : (info.rank + 1) * per_rank
                ]
                self.position["batch"] += 1
                yield [
                    self.collate(idx[j : j + micro_batch]) for j in range(0, per_rank, micro_batch)
                ]
            self.position = {"epoch": epoch + 1, "batch": 0}
