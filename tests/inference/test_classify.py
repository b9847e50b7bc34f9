"""Encoding for classification: truncation happens on a kept copy, never on the caller's
tokenizer, and gives the same ids as a fresh truncating tokenizer."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from llmos.inference.classify import encode_texts, truncating
from llmos.text.tokenizer import load_tokenizer


def test_truncation_uses_a_kept_copy_and_leaves_the_tokenizer_alone(tiny_tokenizer: Path) -> None:
    tok = load_tokenizer(tiny_tokenizer)
    texts = ["我们今天参观城市。" * 5, "老师讨论经济"]
    ids, _, truncated = encode_texts(tok, texts, None, 12)
    fresh = Tokenizer.from_str(tok.to_str())
    fresh.enable_truncation(12, strategy="longest_first")
    assert [list(x) for x in ids] == [e.ids for e in fresh.encode_batch(texts)]
    assert truncated == 1 and len(ids[0]) == 12
    assert tok.truncation is None  # the caller's tokenizer does not truncate
    assert truncating(tok, 12) is truncating(tok, 12)  # made once, not per call
    assert truncating(tok, 16) is not truncating(tok, 12)
    assert len(encode_texts(tok, texts, None, 64)[0][0]) > 12
