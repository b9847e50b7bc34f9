"""Inference on padded batches runs projections and feed-forward layers on real tokens only;
the results equal the plain padded forward (fp32, <= 1e-5) wherever they are read."""

from __future__ import annotations

import torch

from llmos.config.model import BertConfig
from llmos.models.bert import (
    ATTENTION_GROUP,
    BertForPreTraining,
    BertForSequenceClassification,
    Packing,
)

CFG = BertConfig(
    vocab_size=120,
    hidden_size=32,
    num_layers=3,
    num_heads=4,
    intermediate_size=64,
    max_position=64,
    dropout=0.0,
    attention_dropout=0.0,
)


def padded_batch(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(sum(lengths))
    T = max(lengths)
    ids = torch.zeros(len(lengths), T, dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(5, CFG.vocab_size, (n,), generator=g)
        types[i, n // 2 : n] = 1
        mask[i, :n] = 1
    return ids, types, mask


def test_packed_inference_equals_the_padded_forward() -> None:
    torch.manual_seed(0)
    model = BertForPreTraining(CFG).eval()
    # mixed lengths; a batch of one; "empty strings" (only [CLS] [SEP]); no padding at all
    # more rows than one attention group, with equal-length groups and mixed ones
    many = [2 + (7 * i) % 29 for i in range(2 * ATTENTION_GROUP + 3)] + [31] * ATTENTION_GROUP
    for lengths in ([17, 3, 9, 2, 17, 11], [5], [2, 2, 30], [8, 8, 8], many):
        ids, types, mask = padded_batch(lengths)
        reference = model.bert(ids, types, mask)  # grad enabled: the plain padded path
        with torch.inference_mode():
            packed = model.bert(ids, types, mask)
        real = mask.bool()
        assert torch.allclose(packed[real], reference[real], atol=1e-5), lengths
        if not real.all():
            assert packed[~real].abs().max() == 0  # padded positions are zeros, never read


def test_packed_classification_equals_the_padded_forward() -> None:
    torch.manual_seed(1)
    model = BertForSequenceClassification(CFG, 3).eval()
    ids, types, mask = padded_batch([20, 4, 13, 2])
    reference = model(ids, types, mask)
    with torch.no_grad():
        packed = model(ids, types, mask)
    assert torch.allclose(packed, reference, atol=1e-5)


def test_packing_groups_rows_by_length_and_covers_every_token() -> None:
    lengths = [9, 2, 30, 5, 5, 5, 5, 5, 5, 5, 5, 17]
    _, _, mask = padded_batch(lengths)
    packing = Packing.from_mask(mask)
    assert packing is not None
    # rows sorted by length, ATTENTION_GROUP per group, each padded to its own longest row
    sorted_lengths = sorted(lengths)
    expected = [
        (len(chunk), max(chunk), min(chunk) < max(chunk))
        for chunk in (
            sorted_lengths[i : i + ATTENTION_GROUP] for i in range(0, len(lengths), ATTENTION_GROUP)
        )
    ]
    assert [(g, t, m is not None) for g, t, m in packing.groups] == expected
    # back() picks every packed token exactly where gather() put it
    N = sum(lengths)
    assert packing.gather.index_select(0, packing.back).tolist() == list(range(N))
    assert Packing.from_mask(torch.ones(3, 7, dtype=torch.long)) is None


def test_packed_inference_with_left_padding() -> None:
    torch.manual_seed(2)
    model = BertForSequenceClassification(CFG, 2).eval()
    ids, types, mask = padded_batch([12, 3, 7, 12, 2])
    ids, types, mask = ids.flip(1), types.flip(1), mask.flip(1)  # real tokens at the end
    reference = model.bert(ids, types, mask)
    with torch.inference_mode():
        packed = model.bert(ids, types, mask)
    real = mask.bool()
    assert torch.allclose(packed[real], reference[real], atol=1e-5)
