"""XLNet against Hugging Face ``XLNetModel``, ``XLNetLMHeadModel`` (perm_mask, target_mapping,
mems) and ``XLNetForSequenceClassification`` / ``XLNetForTokenClassification`` on identical
random weights, fp32, to 1e-5."""

from __future__ import annotations

import pytest
import torch

from llmos.checkpoint.hf import hf_xlnet_config
from llmos.checkpoint.hf_xlnet import xlnet_config_from_hf, xlnet_from_hf, xlnet_to_hf
from llmos.checkpoint.io import load_state_dict_strict
from llmos.config.model import XLNetConfig
from llmos.errors import CheckpointError
from llmos.models.xlnet import (
    XLNetForSequenceClassification,
    XLNetForTokenClassification,
    XLNetLMHeadModel,
)

transformers = pytest.importorskip("transformers")

CFG = XLNetConfig(
    vocab_size=97,
    hidden_size=32,
    num_layers=3,
    num_heads=4,
    intermediate_size=64,
    dropout=0.0,
    mem_len=12,
)
ATOL = 1e-5


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial LayerNorms and biases, not just their init values."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def pair(hf_class: type, ours_class: type, *args: object) -> tuple:
    torch.manual_seed(0)
    labels = [f"l{i}" for i in range(5)] if args else None
    hf = perturbed(hf_class(hf_xlnet_config(CFG, labels)))
    ours = ours_class(CFG, *args).eval()
    load_state_dict_strict(ours, xlnet_from_hf(hf.state_dict()))
    return ours, hf


@pytest.fixture(scope="module")
def lm() -> tuple[XLNetLMHeadModel, torch.nn.Module]:
    ours, hf = pair(transformers.XLNetLMHeadModel, XLNetLMHeadModel)
    assert ours.lm_loss.weight is ours.transformer.word_embedding.weight
    return ours, hf


def close(got: torch.Tensor, expected: torch.Tensor) -> None:
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=ATOL), (got - expected).abs().max()


def test_encoder_equals_hf_with_padding_and_segments(lm) -> None:
    ours, hf = lm
    torch.manual_seed(1)
    ids = torch.randint(0, CFG.vocab_size, (3, 11))
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, 7:] = 0  # right padding
    mask[2, :4] = 0  # left padding
    types = torch.zeros(3, 11, dtype=torch.long)
    types[:, 6:] = 1
    with torch.no_grad():
        expected = hf.transformer(ids, attention_mask=mask, token_type_ids=types)[0]
        got, _ = ours.transformer(ids, mask, types)
        logits = ours(ids, mask, types).logits
        hf_logits = hf(ids, attention_mask=mask, token_type_ids=types).logits
    real = mask.bool()
    close(got[real], expected[real])
    close(logits[real], hf_logits[real])


def test_memory_equals_hf(lm) -> None:
    ours, hf = lm
    torch.manual_seed(2)
    first = torch.randint(0, CFG.vocab_size, (2, 9))
    second = torch.randint(0, CFG.vocab_size, (2, 7))
    third = torch.randint(0, CFG.vocab_size, (2, 8))
    types = torch.randint(0, 2, (2, 7))
    with torch.no_grad():
        out = hf.transformer(first, use_mems=True)
        mems_hf = out.mems
        _, mems = ours.transformer(first, use_mems=True)
        for m, m_hf in zip(mems, mems_hf, strict=True):
            close(m, m_hf.transpose(0, 1))
        out = hf.transformer(second, mems=mems_hf, token_type_ids=types, use_mems=True)
        got, mems = ours.transformer(second, token_type_ids=types, mems=mems, use_mems=True)
        close(got, out[0])
        # mem_len 12 < 9 + 7: the memory keeps the last 12 positions, as HF's.
        assert mems[0].shape == (2, 12, CFG.hidden_size)
        for m, m_hf in zip(mems, out.mems, strict=True):
            close(m, m_hf.transpose(0, 1))
        expected = hf.transformer(third, mems=out.mems)[0]
        got, _ = ours.transformer(third, mems=mems)
        close(got, expected)


def plm_inputs(B: int, T: int, M: int) -> tuple[torch.Tensor, ...]:
    """A permutation LM batch: random factorisation orders, M targets per row (fewer in the
    last row, whose extra target_mapping rows are zero)."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, CFG.vocab_size, (B, T), generator=g)
    perm = torch.zeros(B, T, T)
    mapping = torch.zeros(B, M, T)
    for b in range(B):
        n = M if b < B - 1 else M - 2
        targets = torch.randperm(T, generator=g)[:n].sort().values
        rank = torch.full((T,), -1)
        rank[targets] = torch.randperm(n, generator=g)
        is_target = rank >= 0
        perm[b] = ((rank[:, None] <= rank[None, :]) & is_target[None, :]).float()
        mapping[b, torch.arange(n), targets] = 1.0
    return ids, perm, mapping


def test_query_stream_equals_hf(lm) -> None:
    ours, hf = lm
    ids, perm, mapping = plm_inputs(3, 13, 5)
    mask = torch.ones(3, 13, dtype=torch.long)
    mask[0, 11:] = 0
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask, perm_mask=perm, target_mapping=mapping).logits
        got = ours(ids, mask, perm_mask=perm, target_mapping=mapping).logits
    close(got, expected)  # (B, M, V), the zero rows included


def test_query_stream_with_memory_and_segments_equals_hf(lm) -> None:
    ours, hf = lm
    torch.manual_seed(4)
    previous = torch.randint(0, CFG.vocab_size, (3, 10))
    ids, perm, mapping = plm_inputs(3, 13, 4)
    types = torch.zeros(3, 13, dtype=torch.long)
    types[:, 5:] = 1
    with torch.no_grad():
        mems_hf = hf.transformer(previous, use_mems=True).mems
        expected = hf(
            ids, mems=mems_hf, perm_mask=perm, target_mapping=mapping, token_type_ids=types
        ).logits
        _, mems = ours.transformer(previous, use_mems=True)
        got = ours(ids, mems=mems, perm_mask=perm, target_mapping=mapping, token_type_ids=types)
    close(got.logits, expected)


def test_training_gradients_equal_hf(lm) -> None:
    """The loss of a permutation LM batch and its gradients (HF's full query stream against
    the M-row one, and the skipped last content stream) agree."""
    ours, hf = lm
    ids, perm, mapping = plm_inputs(2, 9, 3)
    labels = ids.gather(1, mapping.argmax(-1))
    labels[mapping.sum(-1) == 0] = -100
    loss_hf = hf(ids, perm_mask=perm, target_mapping=mapping, labels=labels).loss
    logits = ours(ids, perm_mask=perm, target_mapping=mapping).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, CFG.vocab_size), labels.reshape(-1))
    close(loss, loss_hf)
    loss.backward()
    loss_hf.backward()
    grads = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        g_hf = grads[name].grad
        if g_hf is None:  # the last layer's content-stream FF: nothing reads it
            assert p.grad is None or not p.grad.any(), name
            continue
        assert torch.allclose(p.grad, g_hf, atol=1e-5), (name, (p.grad - g_hf).abs().max())
    ours.zero_grad()
    hf.zero_grad()


def test_sequence_classifier_equals_hf() -> None:
    ours, hf = pair(transformers.XLNetForSequenceClassification, XLNetForSequenceClassification, 5)
    torch.manual_seed(5)
    ids = torch.randint(0, CFG.vocab_size, (3, 10))
    left = torch.ones(3, 10, dtype=torch.long)
    left[1, :3] = 0
    left[2, :6] = 0
    with torch.no_grad():
        expected = hf(ids, attention_mask=left).logits
        close(ours(ids, attention_mask=left), expected)
        # The same texts padded on the right, as llmos's collators pad: the same logits.
        right_ids = torch.stack(
            [torch.cat([row[m.bool()], row[~m.bool()]]) for row, m in zip(ids, left, strict=True)]
        )
        close(ours(right_ids, attention_mask=left.flip(1)), expected)


def test_token_classifier_equals_hf() -> None:
    ours, hf = pair(transformers.XLNetForTokenClassification, XLNetForTokenClassification, 5)
    ids = torch.randint(0, CFG.vocab_size, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 5:] = 0
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask).logits
        got = ours(ids, attention_mask=mask)
    close(got[mask.bool()], expected[mask.bool()])


def test_weights_map_both_ways(lm) -> None:
    ours, hf = lm
    back = xlnet_to_hf(ours.state_dict())
    theirs = hf.state_dict()
    assert back.keys() == theirs.keys()
    for k, v in theirs.items():
        assert torch.equal(back[k], v), k
    # A bare XLNetModel's keys have no prefix; they gain it.
    bare = transformers.XLNetModel(hf_xlnet_config(CFG)).state_dict()
    assert all(k.startswith("transformer.") for k in xlnet_from_hf(bare))


def test_config_round_trip_and_refusals() -> None:
    hcfg = hf_xlnet_config(CFG).to_dict()
    assert xlnet_config_from_hf(hcfg, "config.json") == CFG
    for key, value in (("attn_type", "uni"), ("bi_data", True), ("same_length", True)):
        with pytest.raises(CheckpointError, match=key):
            xlnet_config_from_hf(hcfg | {key: value}, "x/config.json")
