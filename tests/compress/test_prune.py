"""Head and neuron pruning on tiny random encoders: the pruned model equals the original with
those units gated to zero, on the padded (grad) and the padding-free (no-grad) paths; parameter
counts; importance against finite differences; the choice of units; configs; checkpoints."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import llmos
from llmos.checkpoint.io import read_config, save_checkpoint
from llmos.compress.prune import (
    count_parameters,
    count_to_remove,
    importance,
    lowest,
    normalize_by_layer,
    prune_heads,
    prune_neurons,
)
from llmos.config.model import BertConfig
from llmos.errors import ConfigError
from llmos.models.bert import BertForSequenceClassification, BertForTokenClassification
from llmos.text.tokenizer import load_tokenizer

BASE = dict(
    vocab_size=60,
    hidden_size=24,
    num_layers=3,
    num_heads=4,
    intermediate_size=20,
    max_position=32,
    dropout=0.0,
    attention_dropout=0.0,
)
HEADS = {0: [1, 3], 1: [0, 1, 2, 3], 2: [2]}  # layer 1 loses every head
NEURONS = {0: [0, 5, 19], 2: list(range(20))}  # layer 2 loses every neuron


def batch(seed: int = 0, B: int = 5, T: int = 11) -> dict[str, torch.Tensor]:
    """Mixed lengths: every row but one is padded, one row is a single token."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (B, T), generator=g)
    lengths = torch.tensor([T, 1, 4, 7, T - 1][:B])
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    types = (torch.arange(T)[None, :] >= 3).long() * mask
    return {
        "input_ids": ids * mask,
        "token_type_ids": types,
        "attention_mask": mask,
        "labels": torch.randint(0, 3, (B,), generator=g),
    }


def model(seed: int = 0, **overrides) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    m = BertForSequenceClassification(BertConfig(**BASE, **overrides), 3).eval()
    for p in m.parameters():  # larger than BERT's N(0, 0.02) so that heads matter
        p.data.normal_(0, 0.3)
    return m


def gate_by_weights(m, heads=None, neurons=None):
    """The original with units zeroed by scaling their output weights (no masks involved)."""
    m = copy.deepcopy(m)
    hs = m.cfg.head_size
    with torch.no_grad():
        for layer, hh in (heads or {}).items():
            for h in hh:
                m.bert.layers[layer].attn.proj.weight[:, h * hs : (h + 1) * hs] = 0
        for layer, nn_ in (neurons or {}).items():
            m.bert.layers[layer].ffn.down.weight[:, nn_] = 0
    return m


def logits(m, b, grad: bool) -> torch.Tensor:
    with torch.set_grad_enabled(grad):
        return m(b["input_ids"], b["token_type_ids"], b["attention_mask"]).detach()


@pytest.mark.parametrize("grad", [True, False], ids=["padded-grad", "packed-no-grad"])
def test_pruned_model_equals_the_gated_original(grad: bool) -> None:
    original = model()
    b = batch()
    pruned, cfg = prune_heads(copy.deepcopy(original), original.cfg, HEADS)
    pruned, cfg = prune_neurons(pruned, cfg, NEURONS)
    assert cfg.layer_heads == [2, 0, 3] and cfg.layer_intermediate == [17, 20, 0]
    assert pruned.cfg is cfg and pruned.bert.cfg is cfg
    reference = logits(gate_by_weights(original, HEADS, NEURONS), b, grad)
    got = logits(pruned, b, grad)
    assert (got - reference).abs().max() <= 1e-5
    # ... and the gates of the model do the same as the zeroed weights
    for layer, hh in HEADS.items():
        mask = torch.ones(4)
        mask[hh] = 0
        original.bert.layers[layer].attn.head_mask = mask
    for layer, nn_ in NEURONS.items():
        mask = torch.ones(20)
        mask[nn_] = 0
        original.bert.layers[layer].ffn.neuron_mask = mask
    assert (logits(original, b, grad) - reference).abs().max() <= 1e-5
    # and pruning changed the result (the test can fail)
    assert (logits(model(), b, grad) - reference).abs().max() > 1e-2


def test_packed_and_padded_paths_agree_after_pruning() -> None:
    pruned, _ = prune_heads(model(1), model(1).cfg, HEADS)
    b = batch(3)
    assert (logits(pruned, b, True) - logits(pruned, b, False)).abs().max() <= 1e-5


def test_parameter_counts_shrink_by_the_removed_rows_and_columns() -> None:
    m = model()
    C, hs = 24, 6
    assert prune_heads(m, m.cfg, {}) == (m, m.cfg) and prune_neurons(m, m.cfg, {})[1] is m.cfg
    before = count_parameters(m)
    m, cfg = prune_heads(m, m.cfg, HEADS)
    removed_heads = sum(map(len, HEADS.values()))  # 7
    # per head: 3*hs qkv rows of C weights + 3*hs biases, and hs proj columns of C weights
    assert before - count_parameters(m) == removed_heads * (3 * hs * (C + 1) + hs * C)
    mid = count_parameters(m)
    m, cfg = prune_neurons(m, cfg, NEURONS)
    removed_neurons = sum(map(len, NEURONS.values()))  # 23
    # per neuron: one up row (C weights + bias) and one down column (C weights)
    assert mid - count_parameters(m) == removed_neurons * (2 * C + 1)
    assert m.bert.layers[1].attn.qkv.weight.shape == (0, C)
    assert m.bert.layers[0].attn.qkv.weight.shape == (3 * 2 * hs, C)
    assert m.bert.layers[0].attn.proj.weight.shape == (C, 2 * hs)


def per_example_loss(m, b) -> torch.Tensor:
    out = m(b["input_ids"], b["token_type_ids"], b["attention_mask"])
    return F.cross_entropy(out, b["labels"], reduction="none")


def test_importance_equals_finite_differences_of_the_loss() -> None:
    """E_x |dL(x)/dxi_h| against central differences of each example's loss, gating heads and
    neurons by scaling their output weights (independent of the model's gates), in float64."""
    m = model(2).double()
    batches = [batch(4), batch(5, B=3)]
    scores = importance(m, batches, per_example_loss, neurons=True)
    assert scores.examples == 8
    eps, hs = 1e-5, m.cfg.head_size

    def loss_at(b, i, scale_cols) -> torch.Tensor:
        with torch.no_grad():
            out = []
            for s in (1 + eps, 1 - eps):
                g = copy.deepcopy(m)
                scale_cols(g, s)
                out.append(per_example_loss(g, b)[i])
            return (out[0] - out[1]) / (2 * eps)

    for layer in range(3):
        for h in range(4):

            def head(g, s, layer=layer, h=h):
                g.bert.layers[layer].attn.proj.weight[:, h * hs : (h + 1) * hs] *= s

            fd = [abs(loss_at(b, i, head)) for b in batches for i in range(len(b["labels"]))]
            expected = sum(fd) / len(fd)
            assert float(scores.heads[layer][h]) == pytest.approx(float(expected), rel=1e-4)
        for n in (0, 7, 19):

            def neuron(g, s, layer=layer, n=n):
                g.bert.layers[layer].ffn.down.weight[:, n] *= s

            fd = [abs(loss_at(b, i, neuron)) for b in batches for i in range(len(b["labels"]))]
            expected = sum(fd) / len(fd)
            assert float(scores.neurons[layer][n]) == pytest.approx(float(expected), rel=1e-4)
    assert all(layer.attn.head_mask is None for layer in m.bert.layers)  # gates removed


def test_importance_of_a_pruned_model_and_a_layer_without_heads() -> None:
    m, _ = prune_heads(model(), model().cfg, HEADS)
    scores = importance(m, [batch()], per_example_loss)
    assert [len(s) for s in scores.heads] == [2, 0, 3]
    assert all(bool((s > 0).all()) for s in scores.heads)
    assert normalize_by_layer(scores.heads)[1].numel() == 0


def test_tagging_models_prune_exactly_too() -> None:
    torch.manual_seed(0)
    m = BertForTokenClassification(BertConfig(**BASE), 5).eval()
    b = batch(6)
    reference = logits(gate_by_weights(m, HEADS, NEURONS), b, False)
    pruned, cfg = prune_heads(copy.deepcopy(m), m.cfg, HEADS)
    pruned, cfg = prune_neurons(pruned, cfg, NEURONS)
    mask = b["attention_mask"].bool()
    assert (logits(pruned, b, False) - reference)[mask].abs().max() <= 1e-5


def test_the_lowest_scoring_units_are_chosen_globally() -> None:
    scores = [torch.tensor([0.5, 0.1, 0.9]), torch.tensor([0.2, 0.05]), torch.tensor([0.3, 0.1])]
    assert lowest(scores, 0) == {}
    assert lowest(scores, 2) == {0: [1], 1: [1]}  # 0.05, then the tie 0.1 goes to layer 0
    assert lowest(scores, 3) == {0: [1], 1: [1], 2: [1]}
    assert lowest(scores, 5) == {0: [1], 1: [0, 1], 2: [0, 1]}  # layer 1 loses all
    picked = lowest(scores, 4)
    chosen = [float(scores[layer][i]) for layer, ii in picked.items() for i in ii]
    others = [
        float(s)
        for layer, row in enumerate(scores)
        for i, s in enumerate(row)
        if i not in picked.get(layer, [])
    ]
    assert len(chosen) == 4 and max(chosen) <= min(others)


def test_fraction_rounding_keeps_one_unit() -> None:
    assert count_to_remove(16, 0.4) == 6  # 6.4
    assert count_to_remove(16, 0.0) == 0
    assert count_to_remove(8, 0.5625) == 5  # 4.5 rounds up
    assert count_to_remove(16, 0.99) == 15  # never all
    with pytest.raises(ConfigError, match=r"in \[0, 1\)"):
        count_to_remove(16, 1.0)


def test_normalization_divides_by_the_layer_l2_norm() -> None:
    out = normalize_by_layer([torch.tensor([3.0, 4.0]), torch.tensor([1.0, 0.0])])
    assert torch.allclose(out[0], torch.tensor([0.6, 0.8]))
    assert torch.allclose(out[1], torch.tensor([1.0, 0.0]))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(layer_heads=[4, 4]), r"layer_heads needs one entry per layer \(3\), got 2"),
        (dict(layer_heads=[4, 5, 1]), r"layer_heads entries must be in \[0, 4\]"),
        (dict(layer_heads=[4, -1, 1]), r"layer_heads entries must be in \[0, 4\]"),
        (dict(layer_intermediate=[10, 10, 21]), r"layer_intermediate entries must be in \[0, 20\]"),
        (dict(layer_heads=[1, 2, 3], share_layers=True), "cannot be combined with share_layers"),
    ],
)
def test_config_validation(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BertConfig(**BASE, **overrides)


def test_checkpoint_round_trip_and_old_configs(tiny_tokenizer: Path, tmp_path: Path) -> None:
    tok = load_tokenizer(tiny_tokenizer)
    base = {**BASE, "vocab_size": tok.get_vocab_size()}
    torch.manual_seed(0)
    m = BertForSequenceClassification(BertConfig(**base), 2).eval()
    pruned, cfg = prune_heads(m, m.cfg, {0: [0, 2], 2: [1, 2, 3]})
    pruned, cfg = prune_neurons(pruned, cfg, {1: [3, 4]})
    task = {"task": "classification", "labels": ["neg", "pos"], "max_length": 32}
    ckpt = save_checkpoint(tmp_path / "pruned", pruned, cfg, tok, task)
    saved = json.loads((ckpt / "config.json").read_text())
    assert saved["layer_heads"] == [2, 4, 1] and saved["layer_intermediate"] == [20, 18, 20]
    pipe = llmos.load(ckpt)
    assert pipe.config == cfg
    texts = ["今天老师学习经济", "记者参观城市。", "我们"]
    enc = [tok.encode(t).ids for t in texts]
    ids = torch.zeros(3, max(map(len, enc)), dtype=torch.long)
    for i, e in enumerate(enc):
        ids[i, : len(e)] = torch.tensor(e)
    with torch.no_grad():
        expected = pruned(ids, None, (ids != 0).long()).softmax(-1)
    got = [r["scores"]["pos"] for r in pipe.classify(texts)]
    assert got == pytest.approx(expected[:, 1].tolist(), abs=1e-5)
    # An unpruned checkpoint's config.json has no pruning keys, and old ones (without the
    # newer keys at all, as written before ALBERT options existed) still load.
    plain = save_checkpoint(
        tmp_path / "plain",
        BertForSequenceClassification(BertConfig(**base), 2),
        BertConfig(**base),
        tok,
        task,
    )
    raw = json.loads((plain / "config.json").read_text())
    assert "layer_heads" not in raw and "layer_intermediate" not in raw
    for key in ("heads", "pooler", "embedding_size", "share_layers"):
        raw.pop(key)
    (plain / "config.json").write_text(json.dumps(raw))
    old = read_config(plain)
    assert old.layer_heads is None and not old.pruned and old.heads_of(2) == 4
    assert llmos.load(plain).classify(["我们"])[0]["label"] in ("neg", "pos")
