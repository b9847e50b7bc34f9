"""The learned ranker: listwise training recovers the scorer that drew the held-out items,
padding masked out changes nothing, and bad shapes are refused."""

from __future__ import annotations

import pytest
import torch

from llmos.models.ranker import Ranker, RankerConfig, fit_ranker

FEATURES = ("a", "b", "c")


def draw(lists: int, candidates: int, w: torch.Tensor, seed: int) -> tuple[torch.Tensor, ...]:
    """Lists of standard-normal features whose held-out item is drawn from softmax(x @ w)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(lists, candidates, len(w), generator=g)
    target = torch.multinomial(torch.softmax(x @ w, dim=1), 1, generator=g).squeeze(1)
    return x, target


def test_listwise_training_recovers_the_weights_that_drew_the_targets() -> None:
    true = torch.tensor([2.0, -1.0, 0.5])
    x, target = draw(6000, 20, true, seed=0)
    ranker, _ = fit_ranker(x, target, RankerConfig(FEATURES), steps=600, weight_decay=0.0)
    w = ranker.weights()
    assert w is not None and list(w) == list(FEATURES)
    # the softmax likelihood is the model that drew them: the maximum is near the truth
    assert torch.allclose(torch.tensor(list(w.values())), true, atol=0.15)


def test_masked_padding_changes_nothing_and_the_seed_fixes_the_result() -> None:
    x, target = draw(200, 6, torch.tensor([1.0, 0.0, -1.0]), seed=1)
    padded = torch.cat([x, torch.randn(200, 4, 3) * 50], dim=1)  # junk in the padding
    mask = torch.zeros(200, 10, dtype=torch.bool)
    mask[:, :6] = True
    config = RankerConfig(FEATURES, hidden=4)
    plain, loss = fit_ranker(x, target, config, steps=50, seed=3)
    masked, loss_masked = fit_ranker(padded, target, config, mask=mask, steps=50, seed=3)
    assert loss == pytest.approx(loss_masked, rel=1e-5)
    for p, q in zip(plain.parameters(), masked.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5)
    assert plain.weights() is None  # a hidden layer: no weight per feature


def test_bad_shapes_are_refused() -> None:
    config = RankerConfig(FEATURES)
    with pytest.raises(ValueError, match="features must be"):
        fit_ranker(torch.zeros(4, 3), torch.zeros(4), config)
    with pytest.raises(ValueError, match="no list to learn from"):
        fit_ranker(torch.zeros(0, 5, 3), torch.zeros(0), config)
    with pytest.raises(ValueError, match="mask must be"):
        fit_ranker(torch.zeros(2, 5, 3), torch.zeros(2), config, mask=torch.ones(2, 4).bool())
    with pytest.raises(ValueError, match="expected 3 features"):
        Ranker(config)(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="at least one feature"):
        RankerConfig(())
    assert RankerConfig.from_dict(RankerConfig(FEATURES, 2).to_dict()) == RankerConfig(FEATURES, 2)
