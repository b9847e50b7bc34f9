"""BPR matrix factorisation (llmos.train.tasks.bpr, llmos.models.mf) through the shared loop:
it learns a planted structure, its negatives and epochs are what BPR prescribes, and a resumed
run ends with the weights of an uninterrupted one."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from llmos.checkpoint.io import read_weights
from llmos.data.interactions import Interactions, split_by_ratio
from llmos.errors import DataError
from llmos.models.itemitem import Popularity
from llmos.models.mf import BPRMF, MFConfig
from llmos.train.dist import DistInfo
from llmos.train.ranking import full_ranking
from llmos.train.tasks.bpr import BPRTask, train_bpr

ONE = DistInfo(rank=0, world=1, local_rank=0, device=torch.device("cpu"))
USERS, ITEMS, GROUP_ITEMS, PER_USER = 30, 20, 10, 7


def planted(seed: int = 0) -> Interactions:
    """30 users x 20 items in two groups: users 0-14 pick 7 of items 0-9, users 15-29 pick 7
    of items 10-19. Popularity is about flat, so only a personal model ranks well."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(USERS):
        base = 0 if u < USERS // 2 else GROUP_ITEMS
        for i in rng.choice(GROUP_ITEMS, PER_USER, replace=False):
            users.append(u)
            items.append(base + int(i))
    n = len(users)
    return Interactions(
        tuple(f"u{u}" for u in range(USERS)),
        tuple(f"i{i}" for i in range(ITEMS)),
        np.asarray(users, np.int64),
        np.asarray(items, np.int64),
        np.ones(n, np.float32),
        np.zeros(n, np.float64),
    )


@pytest.fixture(scope="module")
def splits() -> tuple[Interactions, Interactions, Interactions]:
    train, valid, test = split_by_ratio(planted(), seed=2020)  # 5 / 1 / 1 per user
    return train, valid, test


def run(splits, run_dir: Path, steps: int, **kw: object):
    train, valid, _ = splits
    args = {"dim": 16, "batch_size": 32, "lr": 0.05, "seed": 7, "num_threads": 1, **kw}
    return train_bpr(train, valid, run_dir, steps=steps, **args)


def test_model_shapes() -> None:
    model = BPRMF(MFConfig(4, 6, dim=3), generator=torch.Generator().manual_seed(0))
    users = torch.tensor([0, 3])
    assert model(users, torch.tensor([1, 5])).shape == (2,)
    pair = model(users, torch.tensor([[1, 2], [5, 0]]))
    assert pair.shape == (2, 2)
    all_items = model.score_all(users)
    assert all_items.shape == (2, 6)
    assert torch.allclose(pair, all_items[[[0], [1]], [[1, 2], [5, 0]]])
    # xavier_normal_ as RecBole's BPR: std = sqrt(2 / (rows + dim)); same seed, same weights.
    again = BPRMF(MFConfig(4, 6, dim=3), generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.item.weight, again.item.weight)
    big = BPRMF(MFConfig(2000, 10, dim=64))
    assert big.user.weight.std().item() == pytest.approx((2 / 2064) ** 0.5, rel=0.05)


def test_learns_the_planted_groups(splits, tmp_path: Path) -> None:
    train, valid, test = splits
    model, result = run(splits, tmp_path / "bpr", steps=150, eval_every=150)
    rows = [json.loads(x) for x in (tmp_path / "bpr" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["bpr_loss"] for r in rows if r["split"] == "train"]
    assert losses[0] > 0.5 and losses[-1] < 0.5 * losses[0]
    assert result.best is not None and result.best["metrics"]["ndcg@10"] > 0
    assert set(result.last_valid) >= {"recall@10", "ndcg@10", "mrr@10", "hit@10", "precision@10"}

    seen = train.matrix() + valid.matrix()
    model.eval()
    with torch.no_grad():
        bpr = full_ranking(lambda u: model.score_all(torch.as_tensor(u)), seen, test.matrix(), 5)
    pop_model = Popularity.fit(seen)
    pop = full_ranking(lambda u: pop_model(torch.zeros(len(u), ITEMS)), seen, test.matrix(), k=5)
    # A perfect group model finds the held-out item among the 4 unseen items of its group
    # (recall 1); chance is 5 of 14 unseen items (0.36). BPR falls short of 1 because the
    # held-out items are among the negatives it is trained on (as in any BPR run).
    assert bpr["recall@5"] > 0.7
    assert bpr["recall@5"] > pop["recall@5"] + 0.3, (bpr, pop)
    # The returned model is the checkpoint's.
    weights = read_weights(result.checkpoint)
    assert torch.equal(weights["user.weight"], model.user.weight)
    assert json.loads((result.checkpoint / "config.json").read_text())["model_type"] == "mf"


def test_negatives_are_uniform_over_the_items_a_user_did_not_train_on(splits) -> None:
    train, valid, _ = splits
    task = BPRTask(train, valid, batch_size=32, seed=3)
    x = train.matrix().toarray() > 0
    counts = np.zeros((USERS, ITEMS), np.int64)
    stream = task.steps(ONE, micro_batch=32)
    for _ in range(400):  # 80 epochs: 400 negatives per user
        for b in next(stream):
            np.add.at(counts, (b["users"].numpy(), b["neg"].numpy()), 1)
    assert counts[x].sum() == 0  # never a training item of the user
    allowed = counts[~x].reshape(USERS, -1)  # each user: 15 allowed items, ~27 draws each
    assert allowed.min() >= 10 and allowed.max() <= 50
    assert allowed.sum() == 80 * len(train)  # one negative per pair and epoch


def test_every_pair_is_drawn_once_per_epoch_in_a_new_order(splits) -> None:
    train, valid, _ = splits
    task = BPRTask(train, valid, batch_size=32, seed=3)
    assert task.batches_per_epoch == 5  # 150 pairs: 4 x 32 + 22
    stream = task.steps(ONE, micro_batch=16)
    expected = sorted(zip(train.user.tolist(), train.item.tolist(), strict=True))
    orders = []
    for _ in range(2):
        pairs = []
        for _ in range(task.batches_per_epoch):
            for b in next(stream):
                assert len(b["users"]) <= 16
                pairs += zip(b["users"].tolist(), b["pos"].tolist(), strict=True)
        assert sorted(pairs) == expected
        orders.append(pairs)
    assert orders[0] != orders[1]


def test_ranks_share_out_the_same_triples(splits) -> None:
    """Two DDP ranks together see exactly the triples of one process."""
    train, valid, _ = splits
    one = BPRTask(train, valid, batch_size=32, seed=3).steps(ONE, micro_batch=32)
    ranks = [
        BPRTask(train, valid, batch_size=32, seed=3).steps(
            DistInfo(rank=r, world=2, local_rank=r, device=torch.device("cpu")), micro_batch=8
        )
        for r in (0, 1)
    ]
    for _ in range(7):
        whole = next(one)[0]
        parts = [b for stream in ranks for b in next(stream)]
        for key in ("users", "pos", "neg"):
            assert torch.equal(whole[key], torch.cat([b[key] for b in parts]))


def test_state_round_trip_continues_with_the_same_triples(splits) -> None:
    train, valid, _ = splits
    a = BPRTask(train, valid, batch_size=32, seed=3)
    stream = a.steps(ONE, micro_batch=32)
    for _ in range(7):  # into the second epoch
        next(stream)
    state = json.loads(json.dumps(a.state()))
    assert state == {"epoch": 1, "batch": 2}
    b = BPRTask(train, valid, batch_size=32, seed=3)
    b.load_state(state)
    resumed = b.steps(ONE, micro_batch=32)
    for _ in range(6):  # across the next epoch boundary
        x, y = next(stream)[0], next(resumed)[0]
        assert all(torch.equal(x[k], y[k]) for k in ("users", "pos", "neg"))


def test_resume_gives_identical_weights(splits, tmp_path: Path, caplog) -> None:
    """11 steps then resume to 22 (mid-epoch: 5 steps an epoch) == 22 steps straight."""
    _, full = run(splits, tmp_path / "full", steps=22, eval_every=11)
    run(splits, tmp_path / "cut", steps=11, eval_every=11)
    with caplog.at_level(logging.INFO, logger="llmos.train"):
        _, resumed = run(splits, tmp_path / "cut", steps=22, eval_every=11, resume=True)
    assert "resumed from" in caplog.text and "step-0000011" in caplog.text
    assert resumed.step == 22
    for name in ("checkpoints/step-0000022", "checkpoint"):
        a, b = read_weights(full.run_dir / name), read_weights(resumed.run_dir / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert resumed.best == full.best

    def valid_rows(run_dir: Path) -> list[dict]:
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [r for r in rows if r["split"] == "valid"]

    # Validation rows alike (the train rows differ: the cut run logs its last step, 11).
    assert valid_rows(full.run_dir) == valid_rows(resumed.run_dir)


def test_rejects_users_with_every_item(splits) -> None:
    train, valid, _ = splits
    everything = Interactions(
        train.users,
        train.items,
        np.concatenate([train.user, np.zeros(ITEMS, np.int64)]),
        np.concatenate([train.item, np.arange(ITEMS)]),
        np.ones(len(train) + ITEMS, np.float32),
        np.zeros(len(train) + ITEMS, np.float64),
    )
    with pytest.raises(DataError, match="interacted with every item"):
        BPRTask(everything, valid, batch_size=8, seed=0)


def test_fold_in_is_the_ridge_solution_and_recovers_a_user_the_items_determine() -> None:
    from llmos.models.mf import fold_in

    g = torch.Generator().manual_seed(0)
    items = torch.randn(12, 4, generator=g)
    weights = torch.tensor([1.0] * 10 + [-1.0, 1.0])
    v, x = items.double().numpy(), weights.double().numpy()
    expected = np.linalg.solve(v.T @ v + 3.0 * np.eye(4), v.T @ x)
    assert np.allclose(fold_in(items, weights, 3.0).numpy(), expected, atol=1e-5)
    # a user whose weights are exactly their items' scores is found again as reg -> 0
    user = torch.randn(4, generator=g)
    assert torch.allclose(fold_in(items, items @ user, 1e-6), user, atol=1e-4)
    assert torch.equal(fold_in(items[:0], weights[:0], 1.0), torch.zeros(4))
    with pytest.raises(ValueError, match="reg must be > 0"):
        fold_in(items, weights, 0.0)
