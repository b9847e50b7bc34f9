"""SASRec (llmos.models.sasrec): a GPT over item tokens that is causal, unaffected by right
padding, scores the next item from the last real position, and saves and loads strictly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llmos.checkpoint.io import load_state_dict_strict, read_weights, save_checkpoint
from llmos.config.loader import from_dict
from llmos.models.sasrec import SASRec, SASRecConfig, last_items

ITEMS, MAX_LEN = 30, 8


@pytest.fixture(scope="module")
def model() -> SASRec:
    cfg = SASRecConfig(ITEMS, hidden_size=16, num_heads=2, intermediate_size=32, max_len=MAX_LEN)
    return SASRec(cfg, generator=torch.Generator().manual_seed(0)).eval()


def tokens(*rows: list[int]) -> torch.Tensor:
    """Right-padded (B, T) tokens of item-token lists."""
    width = max(len(r) for r in rows)
    return torch.tensor([r + [0] * (width - len(r)) for r in rows])


def test_shapes_and_tied_output(model: SASRec) -> None:
    seqs = tokens([1, 2, 3, 4], [5, 6])
    assert model(seqs).shape == (2, 4, ITEMS + 1)
    assert model.score_all(seqs, torch.tensor([4, 2])).shape == (2, ITEMS)
    gpt = model.gpt
    assert gpt.lm_head.weight is gpt.transformer.wte.weight
    assert gpt.transformer.wte.weight.shape == (ITEMS + 1, 16)
    assert gpt.transformer.wpe.weight.shape == (MAX_LEN, 16)


def test_causal_a_later_item_changes_no_earlier_position(model: SASRec) -> None:
    g = torch.Generator().manual_seed(1)
    seqs = torch.randint(1, ITEMS + 1, (4, MAX_LEN), generator=g)
    base = model(seqs)
    for t in range(MAX_LEN - 1):
        changed = seqs.clone()
        changed[:, t + 1 :] = torch.randint(1, ITEMS + 1, (4, MAX_LEN - t - 1), generator=g)
        out = model(changed)
        torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], rtol=0, atol=1e-5)
        assert not torch.allclose(out[:, t + 1 :], base[:, t + 1 :])  # the change is seen


def test_right_padding_changes_no_real_position(model: SASRec) -> None:
    real = [3, 17, 9, 30, 1]
    alone = model(tokens(real))  # (1, 5, V)
    for width in (6, MAX_LEN):
        padded = torch.tensor([real + [0] * (width - len(real))])
        torch.testing.assert_close(model(padded)[:, : len(real)], alone, rtol=0, atol=1e-5)
    # Next to a longer sequence in one batch, as in training and scoring.
    batch = model(tokens([4, 4, 8, 2, 11, 12, 13, 14], real))
    torch.testing.assert_close(batch[1:, : len(real)], alone, rtol=0, atol=1e-5)


def test_score_all_is_the_last_real_positions_item_logits(model: SASRec) -> None:
    seqs = tokens([2, 4, 6], [7, 8, 9, 10, 11, 12], [5])
    lengths = torch.tensor([3, 6, 1])
    logits = model(seqs)
    scores = model.score_all(seqs, lengths)
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(scores[b], logits[b, n - 1, 1:], rtol=0, atol=0)


def test_a_longer_history_is_cut_to_its_last_max_len_items(model: SASRec) -> None:
    long = list(range(1, 14))  # 13 items > MAX_LEN
    short = [5, 6]
    seqs, lengths = tokens(long, short), torch.tensor([13, 2])
    cut = last_items(seqs, lengths, MAX_LEN)
    assert cut.tolist() == [long[-MAX_LEN:], short + [0] * (MAX_LEN - 2)]
    torch.testing.assert_close(
        model.score_all(seqs, lengths),
        model.score_all(tokens(long[-MAX_LEN:], short), torch.tensor([MAX_LEN, 2])),
        rtol=0,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="context window"):
        model(seqs)  # forward itself reads at most max_len positions


def test_seeded_init_is_reproducible_and_leaves_the_global_rng_alone() -> None:
    cfg = SASRecConfig(ITEMS, hidden_size=8, num_heads=2, max_len=4)
    state = torch.get_rng_state()
    a = SASRec(cfg, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), state)
    b = SASRec(cfg, generator=torch.Generator().manual_seed(5))
    c = SASRec(cfg, generator=torch.Generator().manual_seed(6))
    wa, wb, wc = (m.gpt.transformer.wte.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert wa.std().item() == pytest.approx(0.02, rel=0.2)  # GPT's initializer_range


def test_config_checks_and_checkpoint_round_trip(model: SASRec, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="divisible"):
        SASRecConfig(10, hidden_size=10, num_heads=3)
    with pytest.raises(ValueError, match="num_items"):
        SASRecConfig(0)
    with pytest.raises(ValueError, match="dropout"):
        SASRecConfig(10, dropout=1.0)
    path = save_checkpoint(tmp_path / "ckpt", model, model.config)
    raw = json.loads((path / "config.json").read_text())
    assert raw["model_type"] == "sasrec" and raw["num_items"] == ITEMS
    raw.pop("llmos_version")
    config = from_dict(SASRecConfig, raw)
    assert config == model.config
    weights = read_weights(path)
    assert "gpt.lm_head.weight" not in weights  # tied: stored once, as the item embeddings
    again = SASRec(config).eval()
    load_state_dict_strict(again, weights)
    assert again.gpt.lm_head.weight is again.gpt.transformer.wte.weight
    seqs = tokens([1, 2, 3], [4])
    lengths = torch.tensor([3, 1])
    torch.testing.assert_close(again.score_all(seqs, lengths), model.score_all(seqs, lengths))
