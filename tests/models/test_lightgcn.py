"""LightGCN (llmos.models.lightgcn) against a dense numpy reference of its propagation, its
checkpoints (the graph travels with the weights), its L2 term in the BPR loss, and exact
resume through the shared loop (llmos.train.tasks.bpr.train_lightgcn)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from llmos.checkpoint.io import load_state_dict_strict, read_weights, save_checkpoint
from llmos.data.interactions import Interactions, split_by_ratio
from llmos.models.lightgcn import LightGCN, LightGCNConfig
from llmos.models.mf import BPRMF, MFConfig
from llmos.train.tasks.bpr import BPRTask, train_lightgcn

# 4 users x 5 items; user 3 and item 4 have no interaction (empty rows of the graph), and
# (0, 1) is counted twice (still one edge).
PAIRS = [(0, 0), (0, 1), (0, 1), (1, 1), (1, 2), (2, 0), (2, 2), (2, 3)]
USERS, ITEMS = 4, 5


def tiny_graph() -> sp.csr_matrix:
    u, i = zip(*PAIRS, strict=True)
    return sp.csr_matrix((np.ones(len(PAIRS), np.float32), (u, i)), shape=(USERS, ITEMS))


def tiny_model(layers: int = 2, train: sp.spmatrix | None = None, seed: int = 0) -> LightGCN:
    config = LightGCNConfig(USERS, ITEMS, dim=3, layers=layers)
    graph = tiny_graph() if train is None else train
    return LightGCN(config, graph, generator=torch.Generator().manual_seed(seed))


def dense_reference(model: LightGCN) -> tuple[np.ndarray, np.ndarray]:
    """The paper's propagation written out densely in float64: A = [[0, R], [R^T, 0]],
    Â = D^-1/2 A D^-1/2 (RecBole's + 1e-7 on the degrees), E = mean_l Â^l E0."""
    r = np.zeros((USERS, ITEMS))
    for u, i in PAIRS:
        r[u, i] = 1.0
    a = np.block([[np.zeros((USERS, USERS)), r], [r.T, np.zeros((ITEMS, ITEMS))]])
    d = np.diag((a.sum(1) + 1e-7) ** -0.5)
    norm = d @ a @ d
    e0 = torch.cat([model.user.weight, model.item.weight]).detach().double().numpy()
    layers = [np.linalg.matrix_power(norm, k) @ e0 for k in range(model.config.layers + 1)]
    final = np.mean(layers, axis=0)
    return final[:USERS], final[USERS:]


@pytest.mark.parametrize("layers", [0, 1, 3])
def test_propagation_matches_a_dense_reference(layers: int) -> None:
    model = tiny_model(layers)
    users, items = model.propagate()
    ref_users, ref_items = dense_reference(model)
    assert np.allclose(users.detach().numpy(), ref_users, atol=1e-6)
    assert np.allclose(items.detach().numpy(), ref_items, atol=1e-6)
    assert model.edge_user.tolist() == [0, 0, 1, 1, 2, 2, 2]  # (0, 1) once
    # A node without edges keeps its ego embedding, averaged with L zero layers.
    ego = model.user.weight[3].detach() / (layers + 1)
    assert torch.allclose(users[3], ego)


def test_scores_agree_with_score_all_and_the_reference() -> None:
    model = tiny_model()
    users = torch.tensor([0, 3, 2])
    with torch.no_grad():
        all_items = model.score_all(users)
        one = model(users, torch.tensor([1, 4, 0]))
        pair = model(users, torch.tensor([[1, 2], [4, 0], [0, 3]]))
    assert all_items.shape == (3, ITEMS) and one.shape == (3,) and pair.shape == (3, 2)
    assert torch.allclose(one, all_items[[0, 1, 2], [1, 4, 0]])
    assert torch.allclose(pair, all_items[[[0], [1], [2]], [[1, 2], [4, 0], [0, 3]]])
    ref_users, ref_items = dense_reference(model)
    assert np.allclose(all_items.numpy(), ref_users[[0, 3, 2]] @ ref_items.T, atol=1e-6)


def test_init_is_recboles_xavier_uniform_and_a_function_of_the_seed() -> None:
    a, b = tiny_model(seed=5), tiny_model(seed=5)
    assert torch.equal(a.user.weight, b.user.weight) and torch.equal(a.item.weight, b.item.weight)
    big = LightGCN(LightGCNConfig(2000, 10, dim=64))
    bound = (6 / 2064) ** 0.5
    assert big.user.weight.abs().max().item() <= bound
    assert big.user.weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.05)


def test_rejects_a_graph_of_other_sizes() -> None:
    with pytest.raises(ValueError, match="train matrix is"):
        LightGCN(LightGCNConfig(USERS + 1, ITEMS), tiny_graph())
    with pytest.raises(ValueError, match="layers"):
        LightGCNConfig(USERS, ITEMS, layers=-1)


def test_checkpoint_round_trip_keeps_the_graph(tmp_path: Path) -> None:
    model = tiny_model()
    save_checkpoint(tmp_path / "ckpt", model, model.config)
    weights = read_weights(tmp_path / "ckpt")
    assert sorted(weights) == ["edge_item", "edge_user", "item.weight", "user.weight"]
    meta = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert meta["model_type"] == "lightgcn" and meta["layers"] == 2

    users = torch.arange(USERS)
    with torch.no_grad():
        expected = model.score_all(users)
        # Rebuilt from the weights alone (no training matrix at hand).
        loaded = LightGCN.from_weights(LightGCNConfig(**_config_fields(meta)), weights)
        assert torch.equal(loaded.score_all(users), expected)
        # Loaded into a model of another graph with as many edges (other seed, other
        # embeddings): the graph comes from the weights too, so Â is rebuilt.
        edges = [(0, 0), (1, 1), (2, 2), (3, 3), (3, 4), (1, 0), (2, 4)]
        u, i = zip(*edges, strict=True)
        other = sp.csr_matrix((np.ones(len(edges), np.float32), (u, i)), shape=(USERS, ITEMS))
        stranger = tiny_model(train=other, seed=9)
        assert not torch.equal(stranger.score_all(users), expected)
        load_state_dict_strict(stranger, weights)
        assert torch.equal(stranger.score_all(users), expected)


def _config_fields(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k != "llmos_version"}


def test_regularization_is_recboles_emb_loss_added_to_the_bpr_loss() -> None:
    model = tiny_model()
    users, pos, neg = torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]), torch.tensor([4, 4, 1])
    u, p, n = model.user.weight[users], model.item.weight[pos], model.item.weight[neg]
    # EmbLoss(require_pow=False): (||u|| + ||p|| + ||n||) / B, times reg_weight.
    expected = 1e-5 * (u.norm() + p.norm() + n.norm()) / 3
    train = _interactions(tiny_graph())
    task = BPRTask(train, train, batch_size=3, seed=0)
    batch = {"users": users, "pos": pos, "neg": neg}
    loss, logs = task.loss(model, batch, [3.0])
    assert logs["reg_loss"] == pytest.approx(expected.item(), rel=1e-6)
    assert loss.item() == pytest.approx(logs["bpr_loss"] + logs["reg_loss"], rel=1e-6)
    # A model without the hook (BPR-MF) keeps its loss and logs.
    mf = BPRMF(MFConfig(USERS, ITEMS, dim=3))
    assert set(task.loss(mf, batch, [3.0])[1]) == {"loss", "bpr_loss"}


def _interactions(matrix: sp.csr_matrix) -> Interactions:
    coo = matrix.tocoo()
    n = coo.nnz
    return Interactions(
        tuple(f"u{u}" for u in range(matrix.shape[0])),
        tuple(f"i{i}" for i in range(matrix.shape[1])),
        coo.row.astype(np.int64),
        coo.col.astype(np.int64),
        np.ones(n, np.float32),
        np.zeros(n, np.float64),
    )


def planted(seed: int = 0) -> Interactions:
    """30 users x 20 items: users 0-14 pick 7 of items 0-9, users 15-29 7 of items 10-19
    (as tests/train/test_bpr.py)."""
    rng = np.random.default_rng(seed)
    m = sp.lil_matrix((30, 20), dtype=np.float32)
    for u in range(30):
        base = 0 if u < 15 else 10
        for i in rng.choice(10, 7, replace=False):
            m[u, base + int(i)] = 1.0
    return _interactions(m.tocsr())


def test_resume_gives_identical_weights(tmp_path: Path, caplog) -> None:
    """11 steps then resume to 22 (mid-epoch: 5 steps an epoch) == 22 steps straight."""
    train, valid, _ = split_by_ratio(planted(), seed=2020)

    def run(run_dir: Path, steps: int, **kw: object):
        args = {"dim": 8, "batch_size": 32, "lr": 0.05, "seed": 7, "num_threads": 1}
        return train_lightgcn(train, valid, run_dir, steps=steps, eval_every=11, **args, **kw)

    _, full = run(tmp_path / "full", 22)
    run(tmp_path / "cut", 11)
    with caplog.at_level(logging.INFO, logger="llmos.train"):
        model, resumed = run(tmp_path / "cut", 22, resume=True)
    assert "resumed from" in caplog.text and "step-0000011" in caplog.text
    assert resumed.step == 22
    for name in ("checkpoints/step-0000022", "checkpoint"):
        a, b = read_weights(full.run_dir / name), read_weights(resumed.run_dir / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert resumed.best == full.best
    rows = [json.loads(x) for x in (full.run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert train_rows and all(r["reg_loss"] > 0 for r in train_rows)
    assert full.best is not None and full.best["metrics"]["ndcg@10"] > 0
    # The returned model is the selected checkpoint's, its graph that of train.
    assert torch.equal(model.user.weight, read_weights(resumed.checkpoint)["user.weight"])
    assert model.edge_user.numel() == len(train)
