"""SASRec through the shared loop (llmos.train.tasks.sasrec): its windows cover every target
once an epoch, it learns a deterministic successor rule, a resumed run ends with the weights of
an uninterrupted one, and the run directory holds a loadable model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from llmos.checkpoint.io import load_state_dict_strict, read_weights
from llmos.config.loader import from_dict
from llmos.data.interactions import Interactions, split_leave_one_out
from llmos.errors import DataError
from llmos.models.sasrec import SASRec, SASRecConfig
from llmos.train.dist import DistInfo
from llmos.train.ranking import full_ranking
from llmos.train.tasks.sasrec import SequenceTask, sequence_scorer, train_sasrec, user_sequences

ONE = DistInfo(rank=0, world=1, local_rank=0, device=torch.device("cpu"))
USERS, ITEMS, MAX_LEN = 60, 20, 8
TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}


def successors(seed: int = 0) -> Interactions:
    """Each user a run of consecutive items (item i always followed by item i + 1, the last
    item by the first), 6 to 12 long from a random start, listed in the file in a shuffled
    order."""
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for u in range(USERS):
        n = int(rng.integers(6, 13))
        start = int(rng.integers(0, ITEMS))
        for k in range(n):
            users.append(u)
            items.append((start + k) % ITEMS)
            times.append(1000.0 + 10 * k)
    order = rng.permutation(len(users))
    return Interactions(
        tuple(f"u{u}" for u in range(USERS)),
        tuple(f"i{i}" for i in range(ITEMS)),
        np.asarray(users, np.int64)[order],
        np.asarray(items, np.int64)[order],
        np.ones(len(users), np.float32),
        np.asarray(times, np.float64)[order],
    )


@pytest.fixture(scope="module")
def splits() -> tuple[Interactions, Interactions, Interactions]:
    return split_leave_one_out(successors())


def run(splits, run_dir: Path, steps: int, **kw: object):
    train, valid, _ = splits
    args = {
        **TINY,
        "max_len": MAX_LEN,
        "dropout": 0.1,
        "attention_dropout": 0.1,
        "batch_size": 16,
        "lr": 1e-2,
        "seed": 7,
        "num_threads": 1,
        **kw,
    }
    return train_sasrec(train, valid, run_dir, steps=steps, **args)


def test_user_sequences_order_by_time_then_part_then_row() -> None:
    inter = Interactions(
        ("a", "b"),
        ("x", "y", "z", "w"),
        np.array([0, 1, 0, 0]),
        np.array([0, 1, 2, 3]),
        np.ones(4, np.float32),
        np.array([5.0, 1.0, 2.0, 5.0]),  # a: z (2), then x and w tied at 5 in file order
    )
    later = inter.subset(np.array([1]))  # b's y again, at time 1, from a later part
    seqs = user_sequences(inter, later)
    assert [s.tolist() for s in seqs] == [[2, 0, 3], [1, 1]]
    # An earlier part's tie wins over a later part's, whatever the row order.
    assert [s.tolist() for s in user_sequences(later, inter)] == [[2, 0, 3], [1, 1]]


def test_windows_cover_every_target_once_an_epoch() -> None:
    """A 20-item user with max_len 4: windows of 5 from the end, sharing one item."""
    seq = np.arange(20)
    inter = Interactions(
        ("u", "v"),
        tuple(f"i{i}" for i in range(20)),
        np.r_[np.zeros(20, np.int64), 1],
        np.r_[seq, 3],  # v has a single item: no window
        np.ones(21, np.float32),
        np.r_[seq.astype(np.float64), 0.0],
    )
    task = SequenceTask(inter, inter, batch_size=2, seed=0, max_len=4)
    windows = sorted(
        task.tokens[w, : task.lengths[w]].tolist() for w in range(task.num_windows)
    )  # tokens are items + 1
    assert windows == [
        [1, 2, 3, 4],  # the earliest window is the short one
        [4, 5, 6, 7, 8],
        [8, 9, 10, 11, 12],
        [12, 13, 14, 15, 16],
        [16, 17, 18, 19, 20],
    ]
    assert task.batches_per_epoch == 3
    stream = task.steps(ONE, micro_batch=2)
    for _ in range(2):  # two epochs, each every target exactly once
        targets = []
        for _ in range(task.batches_per_epoch):
            for b in next(stream):
                assert b["inputs"].shape == b["targets"].shape
                assert torch.equal(b["targets"][:, :-1], b["inputs"][:, 1:])  # shifted by one
                real = b["targets"][b["targets"] > 0]
                assert task.counts(b) == [float(len(real))]
                targets += real.tolist()
        assert sorted(targets) == list(range(2, 21))  # every item but the first


def test_ranks_and_micro_batches_share_out_the_same_windows(splits) -> None:
    train, valid, _ = splits
    one = SequenceTask(train, valid, batch_size=16, seed=3, max_len=MAX_LEN).steps(ONE, 16)
    ranks = [
        SequenceTask(train, valid, batch_size=16, seed=3, max_len=MAX_LEN).steps(
            DistInfo(rank=r, world=2, local_rank=r, device=torch.device("cpu")), micro_batch=4
        )
        for r in (0, 1)
    ]
    for _ in range(6):
        whole = next(one)[0]
        parts = [b for stream in ranks for b in next(stream)]
        assert sum(b["num_tokens"] for b in parts) == whole["num_tokens"]
        got = sorted(t for b in parts for t in map(tuple, b["targets"].tolist()) if any(t))
        width = whole["targets"].shape[1]
        padded = sorted(t + (0,) * (width - len(t)) for t in got)
        assert padded == sorted(map(tuple, whole["targets"].tolist()))


def test_state_round_trip_continues_with_the_same_batches(splits) -> None:
    train, valid, _ = splits
    a = SequenceTask(train, valid, batch_size=16, seed=3, max_len=MAX_LEN)
    assert a.batches_per_epoch == 5  # 65 windows: 5 users have two
    stream = a.steps(ONE, micro_batch=16)
    for _ in range(7):
        next(stream)
    state = json.loads(json.dumps(a.state()))
    assert state == {"epoch": 1, "batch": 2}
    b = SequenceTask(train, valid, batch_size=16, seed=3, max_len=MAX_LEN)
    b.load_state(state)
    resumed = b.steps(ONE, micro_batch=16)
    for _ in range(5):  # across the next epoch boundary
        x, y = next(stream)[0], next(resumed)[0]
        assert torch.equal(x["inputs"], y["inputs"]) and torch.equal(x["targets"], y["targets"])


def test_learns_the_successor_rule(splits, tmp_path: Path) -> None:
    train, valid, test = splits
    model, result = run(splits, tmp_path / "seq", steps=150, eval_every=75)
    rows = [json.loads(x) for x in (tmp_path / "seq" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["split"] == "train"]
    assert losses[0] > 2.0 and losses[-1] < 0.5  # ln(20) = 3.0 at the start
    nothing = sp.csr_matrix((USERS, ITEMS))
    on_valid = full_ranking(sequence_scorer(model, train), nothing, valid.matrix(), k=1)
    assert on_valid["hit@1"] > 0.9, on_valid
    # On test, the history is train + valid in time order: the next item follows valid's.
    on_test = full_ranking(sequence_scorer(model, train, valid), nothing, test.matrix(), k=1)
    assert on_test["hit@1"] > 0.9, on_test
    # Validation ranked every item (RecBole's sequential protocol); masking the history can
    # only lift a held-out item that is not in it.
    best = result.best
    assert best is not None and set(best["metrics"]) >= {"hit@10", "ndcg@10", "mrr@10"}
    masked = SequenceTask(train, valid, 16, 7, MAX_LEN, mask_history=True).evaluate(model)
    plain = SequenceTask(train, valid, 16, 7, MAX_LEN).evaluate(model)
    assert plain == full_ranking(sequence_scorer(model, train), nothing, valid.matrix())
    assert masked["mrr@10"] >= plain["mrr@10"]


def test_the_run_directory_holds_the_returned_model(splits, tmp_path: Path) -> None:
    train, valid, _ = splits
    model, result = run(splits, tmp_path / "seq", steps=8, eval_every=4)
    raw = json.loads((result.checkpoint / "config.json").read_text())
    assert raw.pop("model_type") == "sasrec"
    raw.pop("llmos_version")
    config = from_dict(SASRecConfig, raw)
    assert config == model.config and config.num_items == ITEMS and config.max_len == MAX_LEN
    again = SASRec(config)
    load_state_dict_strict(again, read_weights(result.checkpoint))
    nothing = sp.csr_matrix((USERS, ITEMS))
    users = np.arange(USERS)
    torch.testing.assert_close(
        sequence_scorer(again, train, valid)(users), sequence_scorer(model, train, valid)(users)
    )
    assert full_ranking(sequence_scorer(again, train), nothing, valid.matrix()) == (
        result.best["metrics"] if result.best else None
    )


def test_resume_gives_identical_weights(splits, tmp_path: Path, caplog) -> None:
    """7 steps then resume to 14 (mid-epoch: 5 steps an epoch; dropout on, so the RNG state
    is resumed too) == 14 steps straight."""
    _, full = run(splits, tmp_path / "full", steps=14, eval_every=7)
    run(splits, tmp_path / "cut", steps=7, eval_every=7)
    with caplog.at_level(logging.INFO, logger="llmos.train"):
        _, resumed = run(splits, tmp_path / "cut", steps=14, eval_every=7, resume=True)
    assert "resumed from" in caplog.text and "step-0000007" in caplog.text
    assert resumed.step == 14
    for name in ("checkpoints/step-0000014", "checkpoint"):
        a, b = read_weights(full.run_dir / name), read_weights(resumed.run_dir / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert resumed.best == full.best

    def valid_rows(run_dir: Path) -> list[dict]:
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [r for r in rows if r["split"] == "valid"]

    assert valid_rows(full.run_dir) == valid_rows(resumed.run_dir)


def test_rejects_data_without_a_sequence() -> None:
    one_each = Interactions(
        ("a", "b"),
        ("x",),
        np.array([0, 1]),
        np.array([0, 0]),
        np.ones(2, np.float32),
        np.zeros(2),
    )
    with pytest.raises(DataError, match="two or more"):
        SequenceTask(one_each, one_each, batch_size=4, seed=0, max_len=4)
    other = Interactions(("a",), ("x", "y"), *(np.zeros(0, t) for t in (int, int, float, float)))
    with pytest.raises(ValueError, match="share vocabularies"):
        SequenceTask(one_each, other, batch_size=4, seed=0, max_len=4)
