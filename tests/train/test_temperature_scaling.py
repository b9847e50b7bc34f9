"""Temperature scaling (llmos.train.calibration): known temperatures recovered from labels
drawn at them, the fit against a brute-force grid, and a hand-computed ECE."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax, softmax

from llmos.errors import DataError
from llmos.train.calibration import expected_calibration_error, fit_temperature, nll


def drawn(t: float, n: int = 20_000, k: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits, and labels drawn from softmax(logits / t): t is the true temperature."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 3.0, (n, k))
    p = softmax(z / t, axis=1)
    y = (rng.random((n, 1)) > p.cumsum(1)).sum(1)
    return z, np.minimum(y, k - 1)


@pytest.mark.parametrize("t", [0.5, 1.0, 2.5])
def test_recovers_the_temperature_the_labels_were_drawn_at(t: float) -> None:
    z, y = drawn(t)
    # 20,000 draws: the fit's standard error is a few thousandths of t
    assert fit_temperature(z, y) == pytest.approx(t, rel=0.05)


def test_log_probabilities_fit_as_the_logits_do_and_the_fit_beats_every_grid_point() -> None:
    z, y = drawn(1.7, n=3000, seed=1)
    t = fit_temperature(z, y)
    assert fit_temperature(log_softmax(z, axis=1), y) == pytest.approx(t, rel=1e-5)
    best = nll(z, y, t)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 400))
    assert all(best <= nll(z, y, g) + 1e-9 for g in grid)
    assert best < nll(z, y, 1.0)


def test_expected_calibration_error_by_hand() -> None:
    # top probabilities 0.9 (right), 0.6 (wrong), 0.8 (right): three bins of one row each
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    ece, bins = expected_calibration_error(probs, np.array([0, 1, 1]))
    assert ece == pytest.approx((0.1 + 0.6 + 0.2) / 3)
    assert [b["count"] for b in bins] == [1, 1, 1]
    assert [b["accuracy"] for b in bins] == [0.0, 1.0, 1.0]
    # a calibrated model: every row 0.7 sure, right 7 times in 10
    probs = np.tile([0.7, 0.3], (10, 1))
    assert expected_calibration_error(probs, np.array([0] * 7 + [1] * 3))[0] == pytest.approx(0)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(DataError, match=r"\(N, K\)"):
        fit_temperature(np.zeros(4), np.zeros(4))
    with pytest.raises(DataError, match="labels must be in"):
        fit_temperature(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(DataError, match="finite"):
        fit_temperature(np.array([[0.0, -np.inf]]), np.array([0]))
