"""Permutation-LM data: span targets, factorisation masks, segment memory, resumable batches."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import numpy as np
import pytest
import torch

from llmos.data.clm import IGNORE
from llmos.data.corpus import TokenizedCorpus
from llmos.data.plm import (
    PLMBatches,
    factorization_mask,
    pack_segments,
    plm_collate,
    plm_valid_batches,
    sample_targets,
)
from llmos.errors import DataError
from llmos.train.dist import DistInfo

SEP, PAD = 1, 0
SPECIAL = (SEP, PAD)
ONE = DistInfo(rank=0, world=1, local_rank=0, device=torch.device("cpu"))


def run_lengths(targets: np.ndarray) -> np.ndarray:
    edges = np.diff(np.concatenate([[0], targets.astype(np.int64), [0]]))
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def mapped_positions(batch: dict, row: int) -> np.ndarray:
    """Target positions of a row, in target_mapping order (padding rows left out)."""
    real = batch["labels"][row] != IGNORE
    return batch["target_mapping"][row][real].argmax(dim=1).numpy()


def random_blocks(n: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(5, 100, size=(n, width))
    blocks[rng.random((n, width)) < 0.05] = SEP
    return blocks


def test_targets_are_a_sixth_of_the_tokens_in_spans_of_one_to_max_span() -> None:
    rng = np.random.default_rng(0)
    none = np.zeros(128, dtype=bool)
    targets = np.stack([sample_targets(128, none, rng, max_span=5) for _ in range(2000)])
    assert abs(targets.mean() - 1 / 6) < 0.01
    runs = Counter(np.concatenate([run_lengths(t) for t in targets]).tolist())
    total = sum(runs.values())
    # Two spans meet only when one ends its context and the next starts its own; a span never
    # fills its context, so no three meet.
    assert max(runs) <= 10
    assert sum(v for k, v in runs.items() if k > 5) / total < 0.01
    assert all(runs[k] / total > 0.15 for k in range(1, 6))  # L uniform in 1..5


def test_specials_are_never_targets() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        special = rng.random(64) < 0.3
        targets = sample_targets(64, special, rng)
        assert not (targets & special).any()
    assert not sample_targets(64, np.ones(64, dtype=bool), rng).any()
    with pytest.raises(ValueError, match="predict_ratio"):
        sample_targets(8, np.zeros(8, dtype=bool), rng, predict_ratio=1.0)


def test_factorisation_order_is_context_then_a_strict_total_order_of_targets() -> None:
    rng = np.random.default_rng(2)
    for _ in range(50):
        targets = rng.random(40) < 0.3
        sees = factorization_mask(targets, rng) == 0
        t, c = np.flatnonzero(targets), np.flatnonzero(~targets)
        assert not sees[t, t].any()  # no target sees itself
        among = sees[np.ix_(t, t)]
        assert (among ^ among.T)[~np.eye(t.size, dtype=bool)].all()  # exactly one sees the other
        # a tournament is acyclic (transitive) iff its out-degrees are 0, 1, ..., k-1
        assert sorted(among.sum(axis=1).tolist()) == list(range(t.size))
        assert sees[np.ix_(c, c)].all() and not sees[np.ix_(c, t)].any()
        assert sees[np.ix_(t, c)].all()


def test_every_order_of_the_targets_is_equally_likely() -> None:
    rng = np.random.default_rng(3)
    targets = np.array([False, True, True, False, True])
    orders = Counter()
    for _ in range(3000):
        sees = factorization_mask(targets, rng) == 0
        orders[tuple(np.argsort(sees[[1, 2, 4]][:, [1, 2, 4]].sum(axis=1)))] += 1
    assert len(orders) == 6 and all(400 < v < 600 for v in orders.values())


def test_collate_shapes_mapping_labels_and_masks() -> None:
    blocks = random_blocks(6, 8 + 48)
    uids = np.array([10, 3, 7, 0, 22, 5])
    b = plm_collate(blocks, uids, SPECIAL, seed=4, epoch=2, mem_len=8)
    M = b["labels"].shape[1]
    assert b["mem_ids"].tolist() == blocks[:, :8].tolist()
    assert b["input_ids"].tolist() == blocks[:, 8:].tolist()
    assert b["perm_mask"].shape == (6, 48, 48) and b["perm_mask"].dtype == torch.float32
    assert b["target_mapping"].shape == (6, M, 48) and b["labels"].dtype == torch.int64
    assert M == max(len(mapped_positions(b, r)) for r in range(6)) > 0
    for r in range(6):
        real = b["labels"][r] != IGNORE
        assert (b["target_mapping"][r][real].sum(dim=1) == 1).all()  # one-hot
        assert (b["target_mapping"][r][~real] == 0).all()
        assert real.tolist() == sorted(real.tolist(), reverse=True)  # padding at the end
        pos = mapped_positions(b, r)
        assert (np.diff(pos) > 0).all()  # position order
        assert b["labels"][r][real].tolist() == blocks[r, 8 + pos].tolist()
        assert not np.isin(blocks[r, 8 + pos], SPECIAL).any()
        # the masks follow from the targets: recomputed from the row's own generator
        rng = np.random.default_rng([4, 2, int(uids[r])])
        special = np.isin(blocks[r, 8:], SPECIAL)
        targets = sample_targets(48, special, rng)
        assert np.flatnonzero(targets).tolist() == pos.tolist()
        assert np.array_equal(b["perm_mask"][r].numpy(), factorization_mask(targets, rng))
        masked_columns = np.flatnonzero(b["perm_mask"][r].numpy().any(axis=0))
        assert masked_columns.tolist() == pos.tolist()
        assert np.flatnonzero(np.diag(b["perm_mask"][r].numpy())).tolist() == pos.tolist()
    assert int(b["num_tokens"]) == blocks.size


def test_collate_is_a_function_of_seed_epoch_and_uid() -> None:
    blocks, uids = random_blocks(5, 40), np.arange(5)
    a = plm_collate(blocks, uids, SPECIAL, seed=1, epoch=0, mem_len=8)
    again = plm_collate(blocks, uids, SPECIAL, seed=1, epoch=0, mem_len=8)
    assert all(torch.equal(a[k], again[k]) for k in a)
    flipped = plm_collate(blocks[::-1], uids[::-1], SPECIAL, seed=1, epoch=0, mem_len=8)
    for r in range(5):  # a row's targets follow its uid, not its place in the batch
        assert torch.equal(a["perm_mask"][r], flipped["perm_mask"][4 - r])
        assert mapped_positions(a, r).tolist() == mapped_positions(flipped, 4 - r).tolist()
    later = plm_collate(blocks, uids, SPECIAL, seed=1, epoch=1, mem_len=8)
    assert any(
        mapped_positions(a, r).tolist() != mapped_positions(later, r).tolist() for r in range(5)
    )
    bare = plm_collate(blocks, uids, SPECIAL, seed=1, epoch=0, mem_len=0)
    assert "mem_ids" not in bare and bare["input_ids"].shape == (5, 40)
    with pytest.raises(ValueError, match="mem_len"):
        plm_collate(blocks, uids, SPECIAL, seed=1, epoch=0, mem_len=40)


def test_num_predict_keeps_the_first_targets_and_the_rest_become_context() -> None:
    blocks, uids = random_blocks(4, 72), np.arange(4)
    full = plm_collate(blocks, uids, SPECIAL, seed=2, epoch=0, mem_len=8)
    capped = plm_collate(blocks, uids, SPECIAL, seed=2, epoch=0, mem_len=8, num_predict=3)
    assert capped["labels"].shape == (4, 3) and capped["target_mapping"].shape == (4, 3, 64)
    for r in range(4):
        kept = mapped_positions(full, r)[:3]
        assert len(mapped_positions(full, r)) > 3  # the cap bites in every row
        assert mapped_positions(capped, r).tolist() == kept.tolist()
        masked = np.flatnonzero(capped["perm_mask"][r].numpy().any(axis=0))
        assert masked.tolist() == kept.tolist()
    roomy = plm_collate(blocks, uids, SPECIAL, seed=2, epoch=0, mem_len=8, num_predict=40)
    assert roomy["labels"].shape == (4, 40) and (roomy["labels"][:, -1] == IGNORE).all()


def corpus_of(docs: list[list[int]]) -> TokenizedCorpus:
    ids = np.array([t for d in docs for t in d], dtype=np.int32)
    sent_bounds = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
    return TokenizedCorpus(ids, sent_bounds, np.arange(len(docs) + 1, dtype=np.int64))


def test_segments_are_consecutive_windows_whose_memory_is_the_previous_segment() -> None:
    rng = np.random.default_rng(5)
    docs = [rng.integers(5, 100, rng.integers(1, 30)).tolist() for _ in range(20)]
    stream = [t for d in docs for t in [SEP, *d]][1:]  # a separator between documents
    rows = pack_segments(corpus_of(docs), SEP, seg_len=12, mem_len=4)
    assert rows.dtype == np.int64 and rows.shape == ((len(stream) - 4) // 12, 16)
    for k, row in enumerate(rows):
        assert row.tolist() == stream[12 * k : 12 * k + 16]
    assert (rows[1:, :4] == rows[:-1, -4:]).all()
    assert rows[:, 4:].ravel().tolist() == stream[4 : 4 + rows[:, 4:].size]  # each token once
    assert pack_segments(corpus_of([[5, 6], [7]]), SEP, 8, 4).shape == (0, 12)


def batches(**kw) -> PLMBatches:
    return PLMBatches(random_blocks(20, 24), 4, 7, SPECIAL, mem_len=8, **kw)


def test_state_round_trip_continues_with_the_same_batches() -> None:
    a = batches(num_predict=6)
    stream = a.steps(ONE, micro_batch=4)
    for _ in range(7):  # 5 batches an epoch
        next(stream)
    state = json.loads(json.dumps(a.state()))
    assert state == {"epoch": 1, "batch": 2}
    b = batches(num_predict=6)
    b.load_state(state)
    resumed = b.steps(ONE, micro_batch=4)
    for _ in range(5):  # across the next epoch boundary
        x, y = next(stream)[0], next(resumed)[0]
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def rows(steps: list[dict]) -> dict[tuple, tuple]:
    """Each row's input ids -> its target positions."""
    return {
        tuple(b["input_ids"][r].tolist()): tuple(mapped_positions(b, r).tolist())
        for b in steps
        for r in range(len(b["input_ids"]))
    }


def test_each_epoch_draws_new_targets_for_every_row() -> None:
    stream = batches().steps(ONE, micro_batch=4)
    first, second = (rows([b for _ in range(5) for b in next(stream)]) for _ in range(2))
    assert first.keys() == second.keys() and len(first) == 20  # every row once an epoch
    assert sum(first[k] != second[k] for k in first) > 10


def test_ranks_and_micro_batches_see_the_targets_one_process_sees() -> None:
    one = batches().steps(ONE, micro_batch=4)
    ranks = [
        batches().steps(DistInfo(rank=r, world=2, local_rank=r, device=torch.device("cpu")), 1)
        for r in (0, 1)
    ]
    for _ in range(8):
        assert rows(next(one)) == rows([b for s in ranks for b in next(s)])
    with pytest.raises(DataError, match="fewer than one batch"):
        PLMBatches(random_blocks(3, 24), 4, 7, SPECIAL, mem_len=8)


def test_valid_batches_are_fixed_and_keyed_by_row_index() -> None:
    blocks = random_blocks(10, 24)
    valid = plm_valid_batches(blocks, 4, SPECIAL, seed=3, mem_len=8)
    again = plm_valid_batches(blocks, 4, SPECIAL, seed=3, mem_len=8)
    assert [len(b["input_ids"]) for b in valid] == [4, 4, 2]
    for x, y in itertools.zip_longest(valid, again):
        assert all(torch.equal(x[k], y[k]) for k in x)
    alone = plm_collate(blocks[5:6], np.array([5]), SPECIAL, seed=3, epoch=0, mem_len=8)
    assert torch.equal(alone["perm_mask"][0], valid[1]["perm_mask"][1])


def test_token_types_number_the_documents_of_each_segment() -> None:
    sep = 3
    # memory [10 11], segment [12 3 13 14 3 15 16]: documents end at each separator.
    blocks = np.array([[10, 11, 12, sep, 13, 14, sep, 15, 16]])
    batch = plm_collate(blocks, np.array([0]), [sep], seed=0, epoch=0, mem_len=2, sep_id=sep)
    assert batch["token_type_ids"].tolist() == [[0, 0, 1, 1, 1, 0, 0]]
    assert "token_type_ids" not in plm_collate(blocks, np.array([0]), [sep], 0, 0, 2)
