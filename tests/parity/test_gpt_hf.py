"""GPT-2 decoder against Hugging Face ``GPT2LMHeadModel`` on identical random weights, and the
key/value cache against the full forward."""

from __future__ import annotations

import pytest
import torch

from llmos.checkpoint.hf import gpt2_from_hf, hf_gpt2_config
from llmos.config.model import GPTConfig
from llmos.errors import CheckpointError
from llmos.models.gpt import GPT

transformers = pytest.importorskip("transformers")

CFG = GPTConfig(
    vocab_size=97,
    hidden_size=32,
    num_layers=3,
    num_heads=4,
    intermediate_size=64,
    max_position=40,
    dropout=0.0,
    attention_dropout=0.0,
)


@pytest.fixture(scope="module")
def pair() -> tuple[GPT, torch.nn.Module]:
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(hf_gpt2_config(CFG)).eval()
    with torch.no_grad():  # non-trivial LayerNorms and biases, not just the init values
        for name, p in hf.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    ours = GPT(CFG).eval()
    ours.load_state_dict(gpt2_from_hf(hf.state_dict(), CFG), strict=False)
    assert ours.lm_head.weight is ours.transformer.wte.weight
    return ours, hf


def test_logits_equal_hf(pair) -> None:
    ours, hf = pair
    ids = torch.randint(0, CFG.vocab_size, (3, 17))
    with torch.no_grad():
        expected = hf(ids).logits
        got, _ = ours(ids)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_logits_equal_hf_with_left_padding(pair) -> None:
    ours, hf = pair
    ids = torch.randint(0, CFG.vocab_size, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :3] = 0  # the second prompt is 3 tokens shorter, padded on the left
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask, position_ids=positions).logits
        got, _ = ours(ids, attention_mask=mask, position_ids=positions)
    real = mask.bool()
    assert torch.allclose(got[real], expected[real], atol=1e-5)


def test_cached_decoding_equals_full_forward_at_every_step(pair) -> None:
    ours, _ = pair
    ids = torch.randint(0, CFG.vocab_size, (2, 20))
    with torch.no_grad():
        full, _ = ours(ids)
        logits, cache = ours(ids[:, :5])  # a 5-token prompt, then one token at a time
        assert torch.allclose(logits, full[:, :5], atol=1e-5)
        for t in range(5, 20):
            step, cache = ours(ids[:, t : t + 1], past=cache)
            assert torch.allclose(step[:, 0], full[:, t], atol=1e-5), t
        # Several new tokens at once against a cache use the offset causal mask.
        _, cache = ours(ids[:, :8])
        assert len(cache) == 8 and cache.keys[0].shape == (2, CFG.num_heads, 8, CFG.head_size)
        chunk, _ = ours(ids[:, 8:14], past=cache)  # the buffers grow (they held 8)
        assert torch.allclose(chunk, full[:, 8:14], atol=1e-5)
        assert len(cache) == 14
        # A cache sized ahead is written in place and never reallocated.
        from llmos.models.gpt import KVCache

        ahead = KVCache(20)
        _, ahead = ours(ids[:, :5], past=ahead)
        buffer = ahead.keys[0]
        for t in range(5, 20):
            step, ahead = ours(ids[:, t : t + 1], past=ahead)
            assert torch.allclose(step[:, 0], full[:, t], atol=1e-5), t
        assert ahead.keys[0] is buffer


def test_context_window_and_strict_weight_map(pair) -> None:
    ours, hf = pair
    with pytest.raises(ValueError, match="exceed the model's context window of 40"):
        ours(torch.zeros(1, 41, dtype=torch.long))
    state = dict(hf.state_dict())
    state["transformer.h.0.attn.extra"] = torch.zeros(1)
    unknown = r"unknown GPT-2 weight 'transformer\.h\.0\.attn\.extra'"
    with pytest.raises(CheckpointError, match=unknown):
        gpt2_from_hf(state, CFG)
    state = dict(hf.state_dict())
    del state["transformer.ln_f.bias"]
    with pytest.raises(CheckpointError, match=r"missing: \['transformer.ln_f.bias'\]"):
        gpt2_from_hf(state, CFG)


def test_export_to_hf_round_trips(pair) -> None:
    from llmos.checkpoint.hf import gpt2_to_hf

    ours, hf = pair
    exported = gpt2_to_hf(ours.state_dict())
    fresh = transformers.GPT2LMHeadModel(hf_gpt2_config(CFG)).eval()
    missing, unexpected = fresh.load_state_dict(exported, strict=False)
    assert not unexpected and all(k.endswith("attn.bias") for k in missing)
    ids = torch.randint(0, CFG.vocab_size, (2, 11))
    with torch.no_grad():
        assert torch.allclose(fresh(ids).logits, hf(ids).logits, atol=1e-6)
