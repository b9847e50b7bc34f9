"""Incremental detokenization: whole characters only, stop strings never shown in part."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmos.inference.stream import TextStream
from llmos.text.tokenizer import decode, load_tokenizer, token_bytes, train_tokenizer

TEXT = "今天天气很好,我们去公园散步。The park is nice! 《三国演义》第一回"


@pytest.fixture(scope="module")
def bpe(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("bpe")
    (d / "t.txt").write_text("今天我们学习。\nthe park is big.\n" * 20, encoding="utf-8")
    # 300 tokens: almost every CJK character of TEXT stays split over 2-3 byte tokens.
    return load_tokenizer(train_tokenizer("bpe", [d / "t.txt"], 300, d))


def test_token_bytes_rebuild_the_text(bpe) -> None:
    table = token_bytes(bpe)
    ids = bpe.encode(TEXT).ids
    assert b"".join(table[i] for i in ids).decode("utf-8") == decode(bpe, ids) == TEXT
    assert table[bpe.token_to_id("<|endoftext|>")] == b""


def test_pieces_are_whole_characters_and_join_to_the_text(bpe) -> None:
    ids = bpe.encode(TEXT).ids
    assert len(ids) > len(TEXT)  # characters really are split over tokens
    stream = TextStream(bpe)
    pieces = [stream.push(i) for i in ids] + [stream.finish()]
    assert "".join(pieces) == TEXT
    assert not any("\ufffd" in p for p in pieces)
    assert pieces.count("") > 0  # tokens that ended inside a character showed nothing yet


def test_stray_bytes_are_dropped_and_an_unfinished_character_is_not_shown(bpe) -> None:
    table = token_bytes(bpe)
    first = [table.index(bytes([b])) for b in "雨".encode()]  # its three single-byte tokens
    stream = TextStream(bpe)
    out = stream.push(first[2]) + stream.push(first[0]) + stream.push(first[1])
    assert out == "" and stream.finish() == ""  # a lone continuation byte, then half of 今


def test_stop_strings_are_held_back_then_cut(bpe) -> None:
    ids = bpe.encode("好的 END 不要").ids
    stream = TextStream(bpe, stop=("END",))
    shown = ""
    for i in ids:
        shown += stream.push(i)
        assert "E" not in shown  # no prefix of the stop string ever appears
        if stream.stopped:
            break
    assert stream.stopped and shown == "好的 " and stream.text == "好的 "


def test_wordpiece_falls_back_to_whole_decodes(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("今天 天气 很 好 。\n" * 30, encoding="utf-8")
    wp = load_tokenizer(train_tokenizer("wordpiece", [tmp_path / "t.txt"], 60, tmp_path))
    assert token_bytes(wp) is None
    stream = TextStream(wp)
    ids = wp.encode("今天天气很好。", add_special_tokens=False).ids
    assert "".join([stream.push(i) for i in ids] + [stream.finish()]) == "今天天气很好。"
