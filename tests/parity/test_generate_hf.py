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
# Hugging Face's decoding defaults: no repetition penalty, no n-gram ban (llmos's own defaults
# have both, for small models); a test that wants one passes it.
HF_DEFAULTS = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0}


def hf_config(**options: object) -> GenerationConfig:
    """A GenerationConfig with Hugging Face's defaults unless ``options`` say otherwise."""
    return GenerationConfig(**{**HF_DEFAULTS, **options})


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
    got = generate_ids(ours, prompts, hf_config(max_new_tokens=12), eos_id=None, pad_id=PAD)
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
    free = generate_ids(ours, prompt, hf_config(max_new_tokens=10), eos_id=None)[0]
    eos = free[3]
    stopped = generate_ids(ours, prompt, hf_config(max_new_tokens=10), eos_id=eos)[0]
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
    cfg = hf_config(max_new_tokens=20, no_repeat_ngram_size=2)
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
    plain = generate_ids(ours, [prompt], hf_config(max_new_tokens=20), eos_id=None)[0]
    assert plain != got  # the ban changed the output: greedy alone repeats a bigram


def test_seeded_sampling_is_reproducible_and_respects_top_k(pair) -> None:
    ours, _ = pair
    cfg = hf_config(max_new_tokens=15, strategy="sample", top_k=1, seed=3)
    greedy = generate_ids(ours, [[5, 9]], hf_config(max_new_tokens=15), eos_id=None)
    assert generate_ids(ours, [[5, 9]], cfg, eos_id=None) == greedy  # top-1 sampling = greedy
    # a temperature so small the scaled scores overflow samples the greedy path, not NaN
    # (the server's fuzzer found torch.multinomial refusing NaN probabilities at 1e-45)
    for t in (1e-3, 1e-45):
        cfg = hf_config(max_new_tokens=15, strategy="sample", temperature=t, seed=3)
        assert generate_ids(ours, [[5, 9]], cfg, eos_id=None) == greedy
    cfg = hf_config(max_new_tokens=15, strategy="sample", temperature=1.5, seed=7)
    a = generate_ids(ours, [[5, 9], [3]], cfg, eos_id=None)
    assert a == generate_ids(ours, [[5, 9], [3]], cfg, eos_id=None)


def hf_beams(hf, prompts: list[list[int]], eos: int | None, **kw) -> list[list[int]]:
    """HF beam search on a left-padded batch; rows trimmed after their first eos."""
    longest = max(len(p) for p in prompts)
    ids = torch.tensor([[PAD] * (longest - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts])
    out = hf.generate(
        ids, attention_mask=mask, do_sample=False, pad_token_id=PAD, eos_token_id=eos, **kw
    )
    rows = []
    for row in out[:, longest:].tolist():
        if eos is not None and eos in row:
            row = row[: row.index(eos) + 1]
        rows.append(row)
    return rows


@pytest.mark.parametrize(
    "kw",
    [
        {"num_beams": 3},
        {"num_beams": 4, "num_return_sequences": 3, "length_penalty": 0.5},
        {"num_beams": 3, "early_stopping": True, "length_penalty": 2.0},
        {"num_beams": 2, "early_stopping": "never", "no_repeat_ngram_size": 2},
        {"num_beams": 3, "repetition_penalty": 1.5, "num_return_sequences": 2},
    ],
)
def test_beam_search_equals_hf_generate(pair, kw: dict) -> None:
    ours, hf = pair
    prompts = [[5, 9, 13, 2, 7, 40], [11, 3], [20, 21, 22, 23]]
    # An eos that greedy decoding produces early for some prompts, so hypotheses finish at
    # different steps and the finished-list bookkeeping and stopping rules are exercised.
    eos = generate_ids(ours, prompts, hf_config(max_new_tokens=4), eos_id=None)[0][2]
    cfg = hf_config(max_new_tokens=14, **kw)
    got = generate_ids(ours, prompts, cfg, eos_id=eos, pad_id=PAD)
    assert got == hf_beams(hf, prompts, eos, max_new_tokens=14, **kw)
    assert any(r and r[-1] == eos for r in got)  # some hypothesis finished on eos
    assert len(got) == len(prompts) * kw.get("num_return_sequences", 1)


def test_beam_search_without_eos_equals_hf(pair) -> None:
    ours, hf = pair
    prompts = [[5, 9, 13], [11, 3, 4, 4, 30]]
    cfg = hf_config(max_new_tokens=10, num_beams=4, num_return_sequences=4)
    got = generate_ids(ours, prompts, cfg, eos_id=None, pad_id=PAD)
    assert got == hf_beams(
        hf, prompts, None, max_new_tokens=10, num_beams=4, num_return_sequences=4
    )
    assert len({tuple(r) for r in got[:4]}) == 4  # distinct hypotheses, best first


def test_sampling_returns_several_sequences_per_prompt(pair) -> None:
    ours, _ = pair
    cfg = hf_config(
        max_new_tokens=8, strategy="sample", temperature=20.0, num_return_sequences=3, seed=1
    )
    got = generate_ids(ours, [[5, 9], [3]], cfg, eos_id=None)
    assert len(got) == 6 and len({tuple(r) for r in got[:3]}) > 1


def test_stop_hook_ends_a_row(pair) -> None:
    ours, _ = pair
    free = generate_ids(ours, [[5, 9, 13], [11, 3]], hf_config(max_new_tokens=10), eos_id=None)
    stopped = generate_ids(
        ours,
        [[5, 9, 13], [11, 3]],
        hf_config(max_new_tokens=10),
        eos_id=None,
        stop=lambda row, toks: row == 0 and len(toks) == 4,
    )
    assert stopped == [free[0][:4], free[1]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_beams": 0}, "num_beams must be >= 1"),
        ({"num_beams": 2, "strategy": "sample"}, "beam search"),
        ({"num_beams": 2, "num_return_sequences": 3}, "must be <= num_beams"),
        ({"early_stopping": "sometimes"}, "early_stopping must be"),
        ({"stop": ("",)}, "stop strings must be non-empty"),
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
        hf_config(**kwargs)


def test_bad_prompts(pair) -> None:
    ours, _ = pair
    with pytest.raises(LlmosError, match="at least one token"):
        generate_ids(ours, [[]], hf_config(), eos_id=None)
    with pytest.raises(LlmosError, match="exceeds the context window of 48"):
        generate_ids(ours, [[1] * 40], hf_config(max_new_tokens=9), eos_id=None)
