"""Causal-LM data: packing with end-of-text, instruction encoding and reading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmos.data.clm import IGNORE, encode_instructions, format_prompt, pack_blocks, pad_pairs
from llmos.data.corpus import TokenizedCorpus
from llmos.data.readers import Instruction, read_instructions
from llmos.errors import DataError

EOS = 0


def corpus_of(docs: list[list[list[int]]]) -> TokenizedCorpus:
    sents = [s for d in docs for s in d]
    ids = np.array([t for s in sents for t in s], dtype=np.int32)
    sent_bounds = np.concatenate([[0], np.cumsum([len(s) for s in sents])]).astype(np.int64)
    doc_bounds = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
    return TokenizedCorpus(ids, sent_bounds, doc_bounds)


def test_blocks_cover_the_stream_once_with_eos_after_every_document() -> None:
    rng = np.random.default_rng(0)
    docs = [
        [list(rng.integers(1, 50, rng.integers(1, 9))) for _ in range(rng.integers(1, 4))]
        for _ in range(30)
    ]
    stream = [t for d in docs for t in [x for s in d for x in s] + [EOS]]
    blocks = pack_blocks(corpus_of(docs), EOS, block_size=8)
    assert blocks.shape == ((len(stream) - 1) // 8, 9)
    # Inputs are consecutive 8-token slices; each target is the next token of the stream.
    inputs = blocks[:, :-1].ravel().tolist()
    targets = blocks[:, 1:].ravel().tolist()
    assert inputs == stream[: len(inputs)]
    assert targets == stream[1 : len(inputs) + 1]
    assert blocks[:, 1:].size == len(set(range(1, len(inputs) + 1)))  # each target once
    assert stream.count(EOS) == len(docs)


def test_too_little_text_gives_no_block() -> None:
    assert pack_blocks(corpus_of([[[1, 2, 3]]]), EOS, 8).shape == (0, 9)


class CharTokenizer:
    """One id per character (ord), enough to check where targets are masked."""

    class Enc:
        def __init__(self, ids: list[int]) -> None:
            self.ids = ids

    def encode_batch(self, texts: list[str], add_special_tokens: bool = False) -> list:
        return [self.Enc([ord(c) for c in t]) for t in texts]


def test_instruction_targets_cover_only_the_response_and_eos() -> None:
    ex = [Instruction("说一个词", "", "好"), Instruction("Translate", "猫", "cat")]
    ids, targets, dropped = encode_instructions(ex, CharTokenizer(), eos_id=EOS, max_length=200)
    assert dropped == 0
    for e, x, y in zip(ex, ids, targets, strict=True):
        prompt = format_prompt(e.instruction, e.input)
        full = [ord(c) for c in prompt + e.output] + [EOS]
        assert x.tolist() == full[:-1]
        learned = [t for t in y.tolist() if t != IGNORE]
        assert learned == [ord(c) for c in e.output] + [EOS]
        assert (y[: len(prompt) - 1] == IGNORE).all()  # no loss on any prompt token
    assert "### Input:\n猫" in format_prompt("Translate", "猫")
    assert "### Input" not in format_prompt("说一个词")


def test_long_examples_lose_the_end_of_their_output_or_are_dropped() -> None:
    prompt_len = len(format_prompt("q"))
    ex = [Instruction("q", "", "abcdefghij"), Instruction("q" * 300, "", "x")]
    ids, targets, dropped = encode_instructions(
        ex, CharTokenizer(), eos_id=EOS, max_length=prompt_len + 4
    )
    assert dropped == 1 and len(ids) == 1
    assert len(ids[0]) == prompt_len + 4
    # prompt_len + 4 inputs predict 5 output tokens (the last prompt token predicts the first)
    assert [t for t in targets[0].tolist() if t != IGNORE] == [ord(c) for c in "abcde"]


def test_pad_pairs_masks_padding_out_of_attention_and_loss() -> None:
    b = pad_pairs([np.array([5, 6, 7]), np.array([8])], [np.array([6, 7, 1]), np.array([2])], 9)
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 9, 9]]
    assert b["labels"].tolist() == [[6, 7, 1], [2, IGNORE, IGNORE]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert int(b["num_tokens"]) == 4


def test_read_instructions_and_bad_rows(tmp_path: Path) -> None:
    f = tmp_path / "train.jsonl"
    rows = [
        {"instruction": "你好", "output": "你好!"},
        {"instruction": "Sentiment?", "input": "great", "output": "positive", "source": "s"},
    ]
    f.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    got = read_instructions(f).rows
    assert got == [
        Instruction("你好", "", "你好!"),
        Instruction("Sentiment?", "great", "positive", "s"),
    ]
    with f.open("a") as fh:
        fh.write('{"instruction": "x", "output": ""}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"train.jsonl:3: 'output' must be a non-empty string"):
        read_instructions(f)
    res = read_instructions(f, skip_bad_rows=True)
    assert len(res.rows) == 2 and res.skipped == 2
