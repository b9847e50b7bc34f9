"""Decoding against Hugging Face ``generate`` and logits processors on identical weights."""

from __future__ import annotations

import itertools

import pytest
import torch

from llmos.checkpoint.hf import gpt2_from_hf, hf_gpt2_config
from llmos.config.model import GPTConfig
from llmos.errors import LlmosError
from llmos.inference.generate import (
    GenerationConfig,
    apply_repetition_penalty,
    ban_repeated_ngrams,
    generate_ids,
    top_k_filter,
    top_p_filter,
)
from llmos.models.gpt import GPT

transformers = pytest.importorskip("transformers")

CFG = GPTConfig(
    vocab_size=64,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    intermediate_size=64,
    max_position=48,
    dropout=0.0,
    attention_dropout=0.0,
)
PAD = 0


@pytest.fixture(scope="module")
def pair() -> tuple[GPT, torch.nn.Module]:
    torch.manual_seed(1)
    hf = transformers.GPT2LMHeadModel(hf_gpt2_config(CFG)).eval()
    with torch.no_grad():  # sharper distributions than the 0.02-std init: varied greedy paths
        hf.transformer.wte.weight.mul_(40)
    ours = GPT(CFG).eval()
    ours.load_state_dict(gpt2_from_hf(hf.state_dict(), CFG), strict=False)
    return ours, hf


def test_greedy_equals_hf_generate_with_left_padded_batch(pair) -> None:
    ours, hf = pair
    prompts = [[5, 9, 13, 2, 7, 40], [11, 3], [20, 21, 22, 23]]
    got = generate_ids(ours, prompts, GenerationConfig(max_new_tokens=12), eos_id=None, pad_id=PAD)
    for prompt, ours_row in zip(prompts, got, strict=True):
        # HF one prompt at a time (no padding): the batched, left-padded run must match it.
        out = hf.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=12,
            do_sample=False,
            pad_token_id=PAD,
            eos_token_id=None,
        )
        assert ours_row == out[0, len(prompt) :].tolist()
    assert len({tuple(r) for r in got}) > 1


def test_eos_stops_a_row_and_is_kept(pair) -> None:
    ours, _ = pair
    prompt = [[5, 9, 13]]
    free = generate_ids(ours, prompt, GenerationConfig(max_new_tokens=10), eos_id=None)[0]
    eos = free[3]
    stopped = generate_ids(ours, prompt, GenerationConfig(max_new_tokens=10), eos_id=eos)[0]
    assert stopped == free[: free.index(eos) + 1]


def test_filters_match_hf_logits_processors() -> None:
    from transformers.generation.logits_process import (
        NoRepeatNGramLogitsProcessor,
        RepetitionPenaltyLogitsProcessor,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    torch.manual_seed(0)
    logits = torch.randn(4, 50) * 3
    ids = torch.randint(0, 50, (4, 7))
    for k in (1, 5, 20):
        assert torch.equal(top_k_filter(logits, k), TopKLogitsWarper(k)(ids, logits.clone()))
    for p in (0.1, 0.5, 0.9, 0.99):
        ours = torch.isinf(top_p_filter(logits, p))
        theirs = torch.isinf(TopPLogitsWarper(p)(ids, logits.clone()))
        assert torch.equal(ours, theirs), p
    expected = RepetitionPenaltyLogitsProcessor(1.3)(ids, logits.clone())
    assert torch.allclose(apply_repetition_penalty(logits, ids, 1.3), expected)
    ids = torch.randint(0, 4, (4, 30))  # a small alphabet: many repeated n-grams
    for n in (1, 2, 3):
        expected = NoRepeatNGramLogitsProcessor(n)(ids, logits.clone())
        assert torch.equal(ban_repeated_ngrams(logits, ids.tolist(), n), expected), n


def test_no_repeat_ngram_in_generation_equals_hf(pair) -> None:
    ours, hf = pair
    prompt = [5, 9, 13, 7]
    cfg = GenerationConfig(max_new_tokens=20, no_repeat_ngram_size=2)
    got = generate_ids(ours, [prompt], cfg, eos_id=None)[0]
    out = hf.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        max_new_tokens=20,
        do_sample=False,
        no_repeat_ngram_size=2,
        pad_token_id=PAD,
        eos_token_id=None,
    )
    assert got == out[0, len(prompt) :].tolist()
    seq = prompt + got
    bigrams = list(itertools.pairwise(seq))
    assert len(bigrams) == len(set(bigrams))
    plain = generate_ids(ours, [prompt], GenerationConfig(max_new_tokens=20), eos_id=None)[0]
    assert plain != got  # the ban changed the output: greedy alone repeats a bigram


def test_seeded_sampling_is_reproducible_and_respects_top_k(pair) -> None:
    ours, _ = pair
    cfg = GenerationConfig(max_new_tokens=15, strategy="sample", top_k=1, seed=3)
    greedy = generate_ids(ours, [[5, 9]], GenerationConfig(max_new_tokens=15), eos_id=None)
    assert generate_ids(ours, [[5, 9]], cfg, eos_id=None) == greedy  # top-1 sampling = greedy
    cfg = GenerationConfig(max_new_tokens=15, strategy="sample", temperature=1.5, seed=7)
    a = generate_ids(ours, [[5, 9], [3]], cfg, eos_id=None)
    assert a == generate_ids(ours, [[5, 9], [3]], cfg, eos_id=None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_p": 0.0}, "top_p must be in"),
        ({"top_p": 1.5}, "top_p must be in"),
        ({"strategy": "sample", "temperature": 0.0}, "temperature must be > 0"),
        ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
        ({"top_k": -1}, "top_k must be >= 0"),
        ({"no_repeat_ngram_size": -2}, "no_repeat_ngram_size must be >= 0"),
    ],
)
def test_invalid_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(LlmosError, match=message):
        GenerationConfig(**kwargs)


def test_bad_prompts(pair) -> None:
    ours, _ = pair
    with pytest.raises(LlmosError, match="at least one token"):
        generate_ids(ours, [[]], GenerationConfig(), eos_id=None)
    with pytest.raises(LlmosError, match="exceeds the context window of 48"):
        generate_ids(ours, [[1] * 40], GenerationConfig(max_new_tokens=9), eos_id=None)
