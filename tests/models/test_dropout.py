"""The CPU dropout: its rate in every 16-bit lane, the scaling, the gradient, and nn.Dropout's
behaviour where it defers to it."""

from __future__ import annotations

import torch

from llmos.models.dropout import Dropout, cpu_dropout


def test_rate_and_scale_in_every_lane() -> None:
    torch.manual_seed(0)
    x = torch.ones(4_000_000)
    out = cpu_dropout(x, 0.1)
    kept = out != 0
    assert torch.allclose(out[kept], torch.tensor(1 / 0.9))
    # Each 64-bit draw feeds 4 consecutive elements: every lane must drop at the same rate.
    for lane in range(4):
        rate = 1 - kept[lane::4].float().mean().item()
        assert abs(rate - 0.1) < 0.001, (lane, rate)  # 5 sigma is 0.00075 at 1M draws
    # The mean is preserved in expectation.
    assert abs(out.mean().item() - 1.0) < 0.003


def test_rates_other_than_a_tenth() -> None:
    torch.manual_seed(1)
    for p in (0.02, 0.5, 0.9):
        kept = (cpu_dropout(torch.ones(1_000_000), p) != 0).float().mean().item()
        assert abs((1 - kept) - p) < 0.003, (p, kept)


def test_gradient_is_the_mask_times_the_scale() -> None:
    torch.manual_seed(2)
    x = torch.randn(64, 33, requires_grad=True)
    out = cpu_dropout(x, 0.25)
    out.sum().backward()
    expected = (out != 0).float() / 0.75
    assert torch.allclose(x.grad, expected)


def test_module_defers_to_nn_dropout_when_evaluating_or_p_zero() -> None:
    d = Dropout(0.3)
    x = torch.randn(8, 8)
    d.eval()
    assert torch.equal(d(x), x)
    d0 = Dropout(0.0).train()
    assert torch.equal(d0(x), x)
    assert d.state_dict() == {} and isinstance(d, torch.nn.Dropout)


def test_same_seed_same_mask() -> None:
    d = Dropout(0.1).train()
    x = torch.randn(100, 100)
    torch.manual_seed(3)
    a = d(x)
    torch.manual_seed(3)
    assert torch.equal(a, d(x))
