"""Lexical units for BM25: jieba words and Chinese characters with their bigrams."""

from __future__ import annotations

import pytest

from llmos.text.words import UNITS, char_grams, lexical_units, words


def test_char_grams_are_characters_and_pairs_within_each_run_of_chinese() -> None:
    chars = ["春", "眠", "不", "觉", "晓"]
    assert char_grams("春眠不觉晓") == [*chars, "春眠", "眠不", "不觉", "觉晓"]
    # no pair across punctuation; latin and digit runs lower-cased whole; spaces dropped
    assert char_grams("处处，闻鸟。iPhone 15好") == [
        *["处", "处", "处处"],
        *["闻", "鸟", "闻鸟"],
        *["iphone", "15", "好"],
    ]
    assert char_grams("！？ ，") == []


def test_lexical_units_dispatch_and_refuse_an_unknown_kind() -> None:
    assert UNITS == ("words", "chars")
    text = "我的iPhone屏幕碎了"
    assert lexical_units(text, "words") == words(text) == ["我", "的", "iphone", "屏幕", "碎", "了"]
    assert lexical_units(text, "chars") == char_grams(text)
    with pytest.raises(ValueError, match="words, chars"):
        lexical_units(text, "letters")
