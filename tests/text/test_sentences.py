"""Sentence splitting: known answers in Chinese and English."""

from __future__ import annotations

import pytest

from llmos.text.sentences import detect_lang, split_sentences


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("今天天气很好。我们去公园吧！你去吗？", ["今天天气很好。", "我们去公园吧！", "你去吗？"]),
        (
            "飞曰：“若如此，稍解吾恨。”玄德曰：“善。”",
            ["飞曰：“若如此，稍解吾恨。”", "玄德曰：“善。”"],
        ),
        ("他说「好的！」然后走了。", ["他说「好的！」", "然后走了。"]),
        ("第一，要稳定；第二，要发展。", ["第一，要稳定；", "第二，要发展。"]),
        ("真是……太好了", ["真是……", "太好了"]),
        # ASCII punctuation in reviews: "." between Chinese characters ends a sentence,
        # a decimal point does not.
        (
            "色彩不够鲜艳.而且价格3.5元太贵!下次不买",
            ["色彩不够鲜艳.", "而且价格3.5元太贵!", "下次不买"],
        ),
        ("没有标点的句子", ["没有标点的句子"]),
    ],
)
def test_split_chinese(text: str, expected: list[str]) -> None:
    assert split_sentences(text, "zh") == expected
    assert split_sentences(text) == expected  # auto detects zh


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Mr. Vinken is chairman of Elsevier N.V., the Dutch group. He is 61 years old.",
            ["Mr. Vinken is chairman of Elsevier N.V., the Dutch group.", "He is 61 years old."],
        ),
        (
            "He moved to the U.S. in 1990. Dr. Smith met him. Really? Yes!",
            ["He moved to the U.S. in 1990.", "Dr. Smith met him.", "Really?", "Yes!"],
        ),
        (
            'She said, "It is over." Then she left.',
            ['She said, "It is over."', "Then she left."],
        ),
        (
            "J. R. R. Tolkien wrote it. It sold well.",
            ["J. R. R. Tolkien wrote it.", "It sold well."],
        ),
        ("Use tools, e.g. Python. They help.", ["Use tools, e.g. Python.", "They help."]),
        (
            "it was 3.5 percent. and lower case follows",
            ["it was 3.5 percent. and lower case follows"],
        ),
        ("(It was.) Yes.", ["(It was.)", "Yes."]),
    ],
)
def test_split_english(text: str, expected: list[str]) -> None:
    assert split_sentences(text, "en") == expected
    assert split_sentences(text) == expected


def test_never_empty_and_lines_are_boundaries() -> None:
    assert split_sentences("") == []
    assert split_sentences("  \n\t\n") == []
    assert split_sentences("第一行\n\n第二行。") == ["第一行", "第二行。"]
    assert split_sentences("。。。！") == ["。。。！"]
    for s in split_sentences("好。  \n  Bad.   Good!  ", "auto"):
        assert s and s == s.strip()


def test_terminators_are_kept() -> None:
    text = "一。二！三？四；五…六"
    assert "".join(split_sentences(text, "zh")) == text


def test_detect_lang_and_bad_lang() -> None:
    assert detect_lang("hello 世界") == "zh"
    assert detect_lang("hello world") == "en"
    with pytest.raises(ValueError, match="lang"):
        split_sentences("x", "fr")


def test_join_sentences_puts_spaces_only_between_non_cjk_sides() -> None:
    from llmos.text.sentences import join_sentences

    assert join_sentences(["今天很好。", "我们去公园。"]) == "今天很好。我们去公园。"
    assert join_sentences(["It rained.", "We stayed in."]) == "It rained. We stayed in."
    assert join_sentences(["我用 python.", "很好。"]) == "我用 python.很好。"
    assert join_sentences(["Done!", "然后"]) == "Done!然后"
    assert join_sentences([]) == ""
