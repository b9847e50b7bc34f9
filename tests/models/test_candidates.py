"""Candidate retrieval: exact search is the brute-force top k; the IVF index reaches the
recall it was calibrated for; the kind follows the catalog's size."""

from __future__ import annotations

import numpy as np
import pytest

from llmos.models.candidates import ItemIndex, choose_kind, timed_search


def clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, d), dtype=np.float32)
    return centres[rng.integers(0, 50, n)] + 0.5 * rng.standard_normal((n, d), dtype=np.float32)


def test_exact_search_is_the_brute_force_top_k() -> None:
    x = clustered(500, 16)
    q = np.random.default_rng(1).standard_normal((7, 16), dtype=np.float32)
    index = ItemIndex.build(x)
    assert index.kind == "exact" and index.num_items == 500
    scores, ids = index.search(q, 5)
    full = q @ x.T
    want = np.argsort(-full, axis=1, kind="stable")[:, :5]
    assert (ids == want).all()
    assert np.allclose(scores, np.take_along_axis(full, want, 1), atol=1e-4)
    alone, seconds = timed_search(index, q, 5)
    assert (alone == ids).all() and len(seconds) == 7
    with pytest.raises(ValueError, match="3 dimensions, the index 16"):
        index.search(np.zeros((1, 3)), 5)


def test_the_ivf_index_reaches_its_calibrated_recall_on_fresh_queries() -> None:
    x = clustered(20_000, 16)
    index = ItemIndex.build(x, kind="ivf", target_recall=0.95, k=10, seed=0)
    assert index.kind == "ivf" and index.calibration["recall"] >= 0.95
    assert 1 <= index.nprobe <= index.calibration["nlist"] == int(4 * np.sqrt(20_000))
    rng = np.random.default_rng(5)  # other queries than the calibration's
    q = x[rng.choice(len(x), 100)] + rng.normal(0, x.std(), (100, 16)).astype(np.float32)
    _, got = index.search(q, 10)
    truth = np.argsort(-(q @ x.T), axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth, strict=True)])
    assert recall >= 0.9  # calibrated to 0.95 on 200 other queries; a margin for sampling
    assert index.nbytes > x.nbytes


def test_calibration_raises_nprobe_until_the_target_is_met() -> None:
    x = np.random.default_rng(0).standard_normal((5_000, 16), dtype=np.float32)  # no structure
    loose = ItemIndex.build(x, kind="ivf", target_recall=0.5, k=10)
    strict = ItemIndex.build(x, kind="ivf", target_recall=0.99, k=10)
    assert strict.nprobe > loose.nprobe
    assert strict.calibration["recall"] >= 0.99 or strict.nprobe == strict.calibration["nlist"]


def test_the_kind_follows_the_catalogs_size() -> None:
    assert choose_kind(100_000) == "exact" and choose_kind(100_001) == "ivf"
    assert choose_kind(50, exact_max=10) == "ivf"
    with pytest.raises(ValueError, match="kind must be"):
        ItemIndex.build(clustered(10, 4), kind="hnsw")
