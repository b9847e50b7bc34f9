"""The GPT-2 decoder on its own (no Hugging Face): causality, left padding, the key/value cache
(growth and beam reordering), tied weights, the GPT-2 initialisation and the context window.
Parity with ``GPT2LMHeadModel`` lives in tests/parity/test_gpt_hf.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmos.checkpoint.io import load_state_dict_strict, read_weights, save_checkpoint
from llmos.config.model import GPTConfig
from llmos.models.gpt import GPT, KVCache

CFG = GPTConfig(
    vocab_size=53,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    intermediate_size=64,
    max_position=24,
    dropout=0.0,
    attention_dropout=0.0,
)
ATOL = 1e-5


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    m = GPT(CFG).eval()
    with torch.no_grad():  # LayerNorms and biases away from their init values
        for name, p in m.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return m


def ids_of(rows: int, length: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, CFG.vocab_size, (rows, length), generator=g)


def test_shapes_and_the_returned_cache(model: GPT) -> None:
    ids = ids_of(3, 7)
    with torch.no_grad():
        logits, cache = model(ids)
    assert logits.shape == (3, 7, CFG.vocab_size)
    assert len(cache) == 7
    assert len(cache.keys) == CFG.num_layers
    assert cache.keys[0].shape == (3, CFG.num_heads, 7, CFG.head_size)


def test_a_token_never_sees_the_future(model: GPT) -> None:
    ids = ids_of(1, 12)
    changed = ids.clone()
    changed[0, 8] = (changed[0, 8] + 1) % CFG.vocab_size
    with torch.no_grad():
        a, _ = model(ids)
        b, _ = model(changed)
    assert torch.allclose(a[:, :8], b[:, :8], atol=ATOL)  # positions before the change
    assert not torch.allclose(a[:, 8:], b[:, 8:], atol=1e-3)  # the change and after it


def test_left_padding_gives_the_unpadded_logits(model: GPT) -> None:
    short, pads = ids_of(1, 6, seed=2), 4
    padded = torch.cat([torch.zeros(1, pads, dtype=torch.long), short], dim=1)
    mask = torch.cat([torch.zeros(1, pads), torch.ones(1, 6)], dim=1).long()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        alone, _ = model(short)
        got, _ = model(padded, attention_mask=mask, position_ids=positions)
    assert torch.allclose(got[:, pads:], alone, atol=ATOL)
    assert torch.isfinite(got).all()  # pad rows attend to themselves, never to nothing


def test_token_by_token_decoding_equals_the_full_forward(model: GPT) -> None:
    ids = ids_of(2, 15, seed=3)
    with torch.no_grad():
        full, _ = model(ids)
        cache = KVCache(capacity=2)  # too small on purpose: the buffers must grow (doubling)
        logits, cache = model(ids[:, :5], past=cache)
        steps = [logits]
        for t in range(5, 15):
            logits, cache = model(ids[:, t : t + 1], past=cache)
            steps.append(logits)
    assert len(cache) == 15
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=ATOL)


def test_reordering_the_cache_follows_the_beams(model: GPT) -> None:
    ids = ids_of(3, 8, seed=4)
    order = torch.tensor([2, 2, 0])  # beam search: row i continues parent order[i]
    nxt = ids_of(3, 1, seed=5)
    with torch.no_grad():
        _, cache = model(ids, past=KVCache(capacity=16))
        cache.reorder(order)
        got, _ = model(nxt, past=cache)
        expected, _ = model(torch.cat([ids[order], nxt], dim=1))
    assert torch.allclose(got[:, -1], expected[:, -1], atol=ATOL)


def test_the_context_window_is_enforced(model: GPT) -> None:
    with torch.no_grad():
        _, cache = model(ids_of(1, CFG.max_position))
        with pytest.raises(ValueError, match="context window of 24"):
            model(ids_of(1, 1), past=cache)


def test_the_output_projection_is_the_token_embedding(model: GPT, tmp_path) -> None:
    assert model.lm_head.weight is model.transformer.wte.weight
    out = save_checkpoint(tmp_path / "ckpt", model, CFG)
    stored = read_weights(out)
    assert "lm_head.weight" not in stored  # stored once, under its source's name
    loaded = GPT(CFG).eval()
    load_state_dict_strict(loaded, stored)
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    ids = ids_of(2, 9, seed=6)
    with torch.no_grad():
        assert torch.equal(loaded(ids)[0], model(ids)[0])


def test_gpt2_initialisation_scales_the_residual_projections() -> None:
    cfg = GPTConfig(
        vocab_size=64, hidden_size=256, num_layers=8, num_heads=4, intermediate_size=1024
    )
    torch.manual_seed(0)
    m = GPT(cfg)
    scaled = cfg.initializer_range / math.sqrt(2 * cfg.num_layers)
    # 65k / 262k samples each: the sample std is within 2 % of the true one.
    for block in m.transformer.h:
        assert block.attn.c_proj.weight.std().item() == pytest.approx(scaled, rel=0.02)
        assert block.mlp.c_proj.weight.std().item() == pytest.approx(scaled, rel=0.02)
        assert block.attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.02)
        assert torch.equal(block.ln_1.weight, torch.ones(cfg.hidden_size))
        assert torch.equal(block.attn.c_attn.bias, torch.zeros(3 * cfg.hidden_size))


def test_the_inference_weight_copy_follows_updates(model: GPT) -> None:
    """Inference multiplies by a cached transposed copy of each weight; an in-place update of
    the weight must be seen by the next forward."""
    m = GPT(CFG).eval()
    m.load_state_dict(model.state_dict())
    ids = ids_of(1, 5, seed=7)
    with torch.no_grad():
        before, _ = m(ids)
        m.transformer.h[0].mlp.c_fc.weight.mul_(2.0)
        after, _ = m(ids)
        m.train()
        reference, _ = m(ids)  # training mode: plain nn.Linear, no cached copy
    assert not torch.allclose(before, after, atol=1e-3)
    assert torch.allclose(after, reference, atol=ATOL)


def test_a_few_steps_learn_a_repeated_sequence() -> None:
    torch.manual_seed(0)
    m = GPT(CFG)
    ids = torch.arange(16)[None].repeat(4, 1) % CFG.vocab_size
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)

    def loss() -> torch.Tensor:
        logits, _ = m(ids[:, :-1])
        return F.cross_entropy(logits.reshape(-1, CFG.vocab_size), ids[:, 1:].reshape(-1))

    first = loss().item()
    for _ in range(30):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert first > math.log(CFG.vocab_size) - 0.5  # starts near uniform
    assert loss().item() < 0.5 * first
