"""Tokenizer training, round trips, offsets, errors and Hugging Face interop."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models

from llmos.errors import CheckpointError, ConfigError, DataError
from llmos.text import tokenizer as tokenizer_module
from llmos.text.cjk import is_cjk
from llmos.text.tokenizer import (
    SPECIAL_TOKENS_WORDPIECE,
    decode,
    load_tokenizer,
    special_ids,
    train_bpe,
    train_tokenizer,
    train_wordpiece,
)

CORPUS = """\
今天天气很好。
我爱北京天安门！
我们用 Python 训练模型，效果很好。
他说：“你好，世界。”
机器学习是人工智能的一个分支。
自然语言处理让计算机理解人类的语言。
这家餐厅的菜很好吃，服务也不错。
质量很好，价格便宜，下次还会再来。
The quick brown fox jumps over the lazy dog.
Machine learning models learn from data.
Natural language processing is fun!
We train small transformer models on a laptop CPU.
Hello world, this is a test of the tokenizer.
abc 123 abc123 (note: 3.14 at 10:30)
"""
RARE_LINE = "鑫淼\n"  # characters seen exactly once, below min_frequency

WORDPIECE_ROUND_TRIPS = [
    ("今天天气很好。", "今天天气很好。"),
    ("我爱北京天安门！", "我爱北京天安门!"),
    (
        "The quick brown fox jumps over the lazy dog.",
        "the quick brown fox jumps over the lazy dog.",
    ),
    ("我们用 Python 训练模型，效果很好。", "我们用 python 训练模型,效果很好。"),
    ("他说：“你好，世界。”", "他说:“你好,世界。”"),
    ("ＡＢＣ１２３", "abc123"),
    ("abc (note: 3.14 at 10:30)", "abc (note: 3.14 at 10:30)"),
    ("鑫淼", "鑫淼"),
]
BPE_ROUND_TRIPS = [
    "今天天气很好。",
    "The quick brown fox jumps over the lazy dog.",
    "我们用 Python 训练模型，效果很好。",
    "emoji 😀👍🏽 and 龘 𠀀 never seen",
    "tabs\tand\nnew lines\r\n  double  spaces ",
    "ＡＢＣ１２３ full width",
    "",
    "   \n\t ",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(CORPUS * 5 + RARE_LINE, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def wordpiece(corpus: Path) -> Tokenizer:
    return train_wordpiece([corpus], vocab_size=400)


@pytest.fixture(scope="module")
def bpe(corpus: Path) -> Tokenizer:
    return train_bpe([corpus], vocab_size=400)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_special_ids(wordpiece: Tokenizer, bpe: Tokenizer) -> None:
    assert [wordpiece.token_to_id(t) for t in SPECIAL_TOKENS_WORDPIECE] == [0, 1, 2, 3, 4]
    assert special_ids(wordpiece) == {
        "pad": 0,
        "unk": 1,
        "cls": 2,
        "sep": 3,
        "mask": 4,
        "eos": None,
    }
    assert special_ids(bpe) == {
        "pad": 1,
        "unk": None,
        "cls": None,
        "sep": None,
        "mask": None,
        "eos": 0,
    }
    assert wordpiece.padding is None and wordpiece.truncation is None


@pytest.mark.parametrize(("text", "expected"), WORDPIECE_ROUND_TRIPS)
def test_wordpiece_round_trip(wordpiece: Tokenizer, text: str, expected: str) -> None:
    enc = wordpiece.encode(text)
    assert "[UNK]" not in enc.tokens
    assert decode(wordpiece, enc.ids) == expected


def test_mask_token_in_text(wordpiece: Tokenizer) -> None:
    enc = wordpiece.encode("今天天气很[MASK]。")
    assert enc.tokens == ["[CLS]", "今", "天", "天", "气", "很", "[MASK]", "。", "[SEP]"]
    assert enc.ids[6] == special_ids(wordpiece)["mask"] == 4


def test_wordpiece_unknown_emoji(wordpiece: Tokenizer) -> None:
    enc = wordpiece.encode("我爱😀")
    assert enc.tokens == ["[CLS]", "我", "爱", "[UNK]", "[SEP]"]
    assert decode(wordpiece, enc.ids) == "我爱"
    assert "[UNK]" in decode(wordpiece, enc.ids, skip_special_tokens=False)


@pytest.mark.parametrize("text", ["", "   ", "\n\t \u3000"])
def test_empty_and_whitespace_wordpiece(wordpiece: Tokenizer, text: str) -> None:
    enc = wordpiece.encode(text)
    assert enc.tokens == ["[CLS]", "[SEP]"]
    assert decode(wordpiece, enc.ids) == ""


def test_empty_bpe(bpe: Tokenizer) -> None:
    # Whitespace is content for a decoder: it encodes and round-trips (see BPE_ROUND_TRIPS).
    assert bpe.encode("").ids == []
    assert decode(bpe, []) == ""


@pytest.mark.parametrize("text", BPE_ROUND_TRIPS)
def test_bpe_round_trip_is_exact(bpe: Tokenizer, text: str) -> None:
    ids = bpe.encode(text).ids
    assert decode(bpe, ids) == unicodedata.normalize("NFKC", text)
    assert 0 not in ids and 1 not in ids  # no tokens added around the text


def test_each_cjk_character_is_a_token(wordpiece: Tokenizer) -> None:
    enc = wordpiece.encode("今天天气很好")
    assert enc.tokens == ["[CLS]", "今", "天", "天", "气", "很", "好", "[SEP]"]


def test_characters_seen_once_are_in_vocab(wordpiece: Tokenizer) -> None:
    vocab = wordpiece.get_vocab()
    assert "鑫" in vocab and "淼" in vocab
    for ch in set(CORPUS.lower()) - {" ", "\n"}:
        assert unicodedata.normalize("NFKC", ch) in vocab, ch


def _bert_normal(text: str) -> str:
    lowered = unicodedata.normalize("NFKC", text).lower()
    return "".join(
        c for c in unicodedata.normalize("NFD", lowered) if unicodedata.category(c) != "Mn"
    )


@pytest.mark.parametrize(
    "text", ["ＡＢＣ今天 hello, World!", "Café naïve 我们", "１０：３０ 好", "x  \t y\n今"]
)
def test_wordpiece_offsets_point_into_original(wordpiece: Tokenizer, text: str) -> None:
    enc = wordpiece.encode(text)
    surfaces = []
    for token, (start, end), special in zip(
        enc.tokens, enc.offsets, enc.special_tokens_mask, strict=True
    ):
        if special and token != "[UNK]":
            continue
        surface = text[start:end]
        if token != "[UNK]":
            assert _bert_normal(surface) == token.removeprefix("##"), (token, surface)
        surfaces.append(surface)
    assert "".join(surfaces) == "".join(text.split())


def test_fullwidth_offsets(wordpiece: Tokenizer, bpe: Tokenizer) -> None:
    text = "ＡＢＣ１２３"
    enc = wordpiece.encode(text)
    surfaces = [text[s:e] for s, e in enc.offsets[1:-1]]
    assert [_bert_normal(s) for s in surfaces] == [t.removeprefix("##") for t in enc.tokens[1:-1]]
    assert "".join(surfaces) == text
    enc = bpe.encode(text)
    assert "".join(dict.fromkeys(text[s:e] for s, e in enc.offsets)) == text


def test_bpe_offsets_cover_text(bpe: Tokenizer) -> None:
    text = "Hello 世界，ＡＢＣ!\n😀"
    enc = bpe.encode(text)
    spans = list(dict.fromkeys(enc.offsets))  # a character split over byte tokens repeats
    assert "".join(text[s:e] for s, e in spans) == text


def test_pair_token_type_ids(wordpiece: Tokenizer) -> None:
    enc = wordpiece.encode("今天天气", "很好")
    assert enc.tokens == ["[CLS]", "今", "天", "天", "气", "[SEP]", "很", "好", "[SEP]"]
    assert enc.type_ids == [0, 0, 0, 0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize(
    ("ch", "expected"),
    [
        ("中", True),
        ("㐀", True),  # extension A
        ("𠀀", True),  # extension B
        ("豈", True),  # compatibility ideograph
        ("。", True),
        ("，", True),
        ("Ａ", True),
        ("a", False),
        ("ア", False),
        ("😀", False),
        ("", False),
        ("中文", False),
    ],
)
def test_is_cjk(ch: str, expected: bool) -> None:
    assert is_cjk(ch) is expected


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        (["今", "天", ",", "好", "。"], "今天,好。"),
        (["天", "气", ",", "hello"], "天气, hello"),
        (["我", "用", "python", "。"], "我用 python。"),
        (["(", "测", "试", ")", "ok"], "(测试) ok"),
        (["hello", "(", "world", ")", ":", "yes"], "hello (world): yes"),
        (["3", ".", "14", "and", "10", ":", "30"], "3.14 and 10:30"),
        (["《", "三", "国", "》", "好"], "《三国》好"),
    ],
)
def test_decode_spacing(tokens: list[str], expected: str) -> None:
    vocab = {t: i for i, t in enumerate(dict.fromkeys(["[UNK]", *tokens]))}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.decoder = decoders.WordPiece()
    assert decode(tok, [vocab[t] for t in tokens]) == expected


def test_save_and_load(
    wordpiece: Tokenizer, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # WordPiece training is not reproducible run to run (huggingface/tokenizers#1794), so the
    # fixture's tokenizer is what gets saved and compared.
    monkeypatch.setitem(tokenizer_module._TRAINERS, "wordpiece", lambda *a, **k: wordpiece)
    path = train_tokenizer("wordpiece", [corpus], 400, tmp_path / "tok")
    assert path == tmp_path / "tok" / "tokenizer.json"
    assert sorted(p.name for p in path.parent.iterdir()) == ["tokenizer.json"]
    text = "我们用 Python 训练模型，效果很好。"
    expected = wordpiece.encode(text, "ＡＢＣ１２３")
    for source in (path, path.parent, str(path)):
        enc = load_tokenizer(source).encode(text, "ＡＢＣ１２３")
        assert (enc.ids, enc.offsets, enc.type_ids) == (
            expected.ids,
            expected.offsets,
            expected.type_ids,
        )
        assert decode(load_tokenizer(source), enc.ids) == decode(wordpiece, expected.ids)


def test_bpe_training_is_reproducible(corpus: Path, tmp_path: Path) -> None:
    path = train_tokenizer("bpe", [corpus], 300, tmp_path / "bpe", min_frequency=3)
    assert load_tokenizer(path).to_str() == train_bpe([corpus], 300, min_frequency=3).to_str()


def test_wordpiece_training_is_reproducible(tiny_corpus: Path, tmp_path: Path) -> None:
    # The library's trainer alone numbers the ## pieces in hash-map order, which differs run to
    # run even in one process, and on this corpus merges differently on ties (6 distinct
    # vocabularies in 6 runs before the fix, huggingface/tokenizers#1794).
    files = [tiny_corpus / "train.txt"]
    path = train_tokenizer("wordpiece", files, 200, tmp_path / "wp")
    again = {train_wordpiece(files, 200).to_str() for _ in range(3)}
    assert again == {load_tokenizer(path).to_str()}
    tok = load_tokenizer(path)
    # the ## pieces numbered up front are plain vocabulary again, not special tokens
    assert [t.content for t in tok.get_added_tokens_decoder().values()] == SPECIAL_TOKENS_WORDPIECE
    pieces = [t for t in tok.get_vocab() if t.startswith("##")]
    assert pieces and tok.token_to_id("##e") is not None
    enc = tok.encode("studentsgrew", add_special_tokens=False)  # a word no one wrote
    assert len(enc.tokens) > 1 and all(t.startswith("##") for t in enc.tokens[1:])
    assert decode(tok, enc.ids) == "studentsgrew"


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_tokenizer(tmp_path)
    corrupt = _write(tmp_path / "tokenizer.json", '{"model": {"type": "WordPiece", ')
    with pytest.raises(CheckpointError, match=r"tokenizer.json"):
        load_tokenizer(corrupt)
    with pytest.raises(CheckpointError, match=re.escape(str(tmp_path / "tokenizer.json"))):
        load_tokenizer(tmp_path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing.txt.*not found"):
        train_tokenizer("wordpiece", [tmp_path / "missing.txt"], 100, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", ["", " \n\t\n\u3000 "])
def test_empty_file(corpus: Path, tmp_path: Path, content: str) -> None:
    empty = _write(tmp_path / "empty.txt", content)
    with pytest.raises(DataError, match=r"empty.txt.*empty"):
        train_tokenizer("bpe", [corpus, empty], 300, tmp_path / "out")


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "gbk.txt"
    path.write_bytes(b"first line\nsecond\n" + "第三行".encode("gbk") + b"\n")
    with pytest.raises(DataError, match=r"gbk.txt: not valid UTF-8 at line 3, byte offset 18"):
        train_tokenizer("wordpiece", [path], 100, tmp_path / "out")


def test_non_utf8_position_across_read_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokenizer_module, "_READ_BYTES", 5)
    good = "中文\n" * 7  # characters split across 5-byte blocks decode fine
    path = tmp_path / "bad.txt"
    path.write_bytes(good.encode() + b"ab\xffc\n")
    with pytest.raises(DataError, match=f"line 8, byte offset {len(good.encode()) + 2}"):
        list(tokenizer_module._read_text(path))


def test_reader_streams_in_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokenizer_module, "_READ_BYTES", 7)
    monkeypatch.setattr(tokenizer_module, "_PIECE_CHARS", 10)
    text = "今天天气很好 hello world\n第二行 one two three four\nno-space-run-" + "x" * 30
    path = _write(tmp_path / "t.txt", "\ufeff" + text)
    pieces = list(tokenizer_module._read_text(path))
    assert "".join(pieces) == text
    assert len(pieces) > 3 and max(len(p) for p in pieces) < 60


def test_unknown_kind(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown tokenizer kind 'unigram'.*bpe, wordpiece"):
        train_tokenizer("unigram", [corpus], 1000, tmp_path)


def test_tiny_vocab(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"vocab_size=100 .* at least 258"):
        train_tokenizer("bpe", [corpus], 100, tmp_path)
    with pytest.raises(ConfigError, match="vocab_size=20 is too small"):
        train_tokenizer("wordpiece", [corpus], 20, tmp_path)
    with pytest.raises(ConfigError, match="vocab_size=3 "):
        train_wordpiece([corpus], 3)


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_ten_megabyte_line(tmp_path: Path, kind: str) -> None:
    sentences = CORPUS.replace("\n", " ").split("。")
    line = "。".join(sentences * 400)
    reps = 10_000_000 // len(line.encode()) + 1
    path = _write(tmp_path / "long.txt", line * reps)
    assert path.stat().st_size >= 10_000_000 and path.read_bytes().count(b"\n") == 0
    out = train_tokenizer(kind, [path], 600, tmp_path / kind)
    tok = load_tokenizer(out)
    assert decode(tok, tok.encode("今天天气很好。").ids) == "今天天气很好。"


@pytest.mark.parametrize("name", ["wordpiece", "bpe"])
def test_transformers_interop(request: pytest.FixtureRequest, name: str) -> None:
    transformers = pytest.importorskip("transformers")
    tok = request.getfixturevalue(name)
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=tok)
    for text in ["我们用 Python 训练模型，效果很好。", "The quick brown fox.", "今天天气很好"]:
        assert hf(text)["input_ids"] == tok.encode(text).ids
    pair = hf("今天天气", "很好", return_token_type_ids=True)
    enc = tok.encode("今天天气", "很好")
    assert pair["input_ids"] == enc.ids
    assert pair["token_type_ids"] == enc.type_ids
