"""Task heads: output shapes, and the task losses against a direct computation."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from llmos.config.model import BertConfig
from llmos.models.bert import BertForSequenceClassification, BertForTokenClassification
from llmos.train.tasks.classify import ClassifyTask, Encoded
from llmos.train.tasks.tag import IGNORE, TagTask


def tiny_config() -> BertConfig:
    return BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        intermediate_size=32,
        max_position=32,
        dropout=0.0,
        attention_dropout=0.0,
    )


def test_head_shapes() -> None:
    ids = torch.randint(5, 50, (3, 7))
    assert BertForSequenceClassification(tiny_config(), 4)(ids).shape == (3, 4)
    assert BertForTokenClassification(tiny_config(), 5)(ids).shape == (3, 7, 5)
    keys = BertForTokenClassification(tiny_config(), 5).state_dict()
    assert not any(k.startswith("bert.pooler") for k in keys)


def test_tagging_loss_ignores_specials_and_padding_and_sums_over_tokens() -> None:
    torch.manual_seed(0)
    model = BertForTokenClassification(tiny_config(), 3).eval()
    ids = [np.array([2, 7, 8, 9, 3]), np.array([2, 10, 3])]
    labels = [np.array([IGNORE, 0, 1, 2, IGNORE]), np.array([IGNORE, 1, IGNORE])]
    task = TagTask(ids, labels, None, None, {"pad": 0, "cls": 2, "sep": 3}, 32, 2, 0)
    batch = task.collate(np.array([0, 1]))
    padded = [IGNORE, 1, IGNORE, IGNORE, IGNORE]
    assert batch["labels"].tolist() == [[IGNORE, 0, 1, 2, IGNORE], padded]
    (count,) = task.counts(batch)
    assert count == 4
    loss, _ = task.loss(model, batch, [8.0])  # totals across micro-batches / ranks
    logits = model(batch["input_ids"], None, batch["attention_mask"])
    picked = [logits[0, 1], logits[0, 2], logits[0, 3], logits[1, 1]]
    expected = F.cross_entropy(torch.stack(picked), torch.tensor([0, 1, 2, 1]), reduction="sum") / 8
    assert torch.allclose(loss, expected, atol=1e-6)


def test_classification_loss_with_class_weights() -> None:
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_config(), 2).eval()
    data = Encoded(
        [np.array([2, 7, 3]), np.array([2, 8, 9, 3])],
        [np.zeros(3, dtype=np.int64), np.zeros(4, dtype=np.int64)],
        np.array([0, 1]),
    )
    weights = torch.tensor([1.0, 3.0])
    task = ClassifyTask(data, data, ["a", "b"], 2, 0, 0, weights)
    batch = task.collate(np.array([0, 1]))
    loss, _ = task.loss(model, batch, [2.0])
    logits = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    expected = F.cross_entropy(logits, torch.tensor([0, 1]), weight=weights, reduction="sum") / 2
    assert torch.allclose(loss, expected, atol=1e-6)
