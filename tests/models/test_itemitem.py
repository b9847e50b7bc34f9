"""EASE and popularity (llmos.models.itemitem) against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.linear_model import Ridge

from llmos.models.itemitem import EASE, ContentProfile, Popularity


def test_ease_equals_one_ridge_regression_per_item() -> None:
    """EASE's column j is the ridge regression (no intercept) of item j on the other items:
    its closed form must give the same coefficients as scikit-learn's solver."""
    rng = np.random.default_rng(0)
    x = (rng.random((40, 9)) < 0.3).astype(np.float64)
    reg = 2.5
    b = EASE.fit(sp.csr_matrix(x), reg=reg).weight.double().numpy()
    assert np.allclose(np.diag(b), 0.0)
    for j in range(x.shape[1]):
        others = [i for i in range(x.shape[1]) if i != j]
        ridge = Ridge(alpha=reg, fit_intercept=False, solver="cholesky").fit(x[:, others], x[:, j])
        assert np.allclose(b[others, j], ridge.coef_, atol=1e-5)


def test_ease_scores_are_rows_times_weights() -> None:
    x = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 1]], np.float32))
    model = EASE.fit(x, reg=1.0)
    rows = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    assert torch.allclose(model(rows), rows @ model.weight)


def test_ease_refuses_a_non_positive_reg() -> None:
    with pytest.raises(ValueError, match="reg must be positive"):
        EASE.fit(sp.csr_matrix(np.eye(3)), reg=0.0)


def test_popularity_scores_every_user_by_the_item_counts() -> None:
    x = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 0], [0, 1, 1]], np.float32))
    scores = Popularity.fit(x)(torch.zeros(2, 3))
    assert scores.tolist() == [[1.0, 3.0, 1.0], [1.0, 3.0, 1.0]]


def test_content_profile_is_the_cosine_to_the_mean_of_the_users_items() -> None:
    rng = np.random.default_rng(1)
    v = rng.normal(size=(5, 3))
    model = ContentProfile(torch.from_numpy(v))
    rows = torch.tensor([[1.0, 0.0, 1.0, 0.0, 0.0], [0.0] * 5])
    got = model(rows).double().numpy()
    unit = v / np.linalg.norm(v, axis=1, keepdims=True)
    profile = unit[0] + unit[2]
    assert np.allclose(got[0], unit @ (profile / np.linalg.norm(profile)), atol=1e-6)
    assert np.allclose(got[1], 0.0)  # no interactions, no profile
