"""run_length_sorted: batches of similar length, results back in input order."""

from __future__ import annotations

import numpy as np
import pytest

from llmos.data.batching import length_sorted_batches, pad_batch, run_length_sorted


def test_results_come_back_in_input_order_each_row_once() -> None:
    rng = np.random.default_rng(0)
    seqs = [np.arange(n) + 100 * i for i, n in enumerate(rng.integers(1, 20, size=37))]
    batches: list[np.ndarray] = []

    def pad(idx: np.ndarray) -> dict:
        batches.append(idx)
        return pad_batch([seqs[i] for i in idx], None, pad_id=-1)

    def forward(b: dict) -> list[int]:
        ids = b["input_ids"]
        return [int(row[0]) for row in ids]  # the first id says which sequence it was

    out = run_length_sorted(seqs, 8, pad, forward)
    assert out == [int(s[0]) for s in seqs]
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(len(seqs)))  # every row once
    assert [len(b) for b in batches] == [8, 8, 8, 8, 5]
    lengths = [len(seqs[i]) for i in seen]
    assert lengths == sorted(lengths)  # shortest first: little padding per batch


def test_equal_lengths_keep_their_order_and_empty_input() -> None:
    assert [b.tolist() for b in length_sorted_batches([3, 1, 3, 1], 2)] == [[1, 3], [0, 2]]
    assert run_length_sorted([], 4, lambda idx: idx, lambda b: list(b)) == []
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        length_sorted_batches([1], 0)
