"""split_cjk_characters: one token per CJK character on a SentencePiece Unigram tokenizer built
like XLM-R's (multilingual-e5), unchanged Latin tokenization, <unk> offsets, serialization,
and no change for WordPiece."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from llmos.text.cjk import is_cjk, split_cjk_characters, splits_cjk_by_default
from llmos.text.tokenizer import load_tokenizer, train_bpe, train_wordpiece

# Merged words (as XLM-R's vocabulary has them) score above their characters, so the original
# tokenizer prefers them; ':“' '!”' '”,' are merged punctuation pieces XLM-R has too.
WORDS = ["▁我们", "今天", "北京大学", "北京", "大学", "我们", "你好", ":“", "!”", "”,", "▁“"]
CHARS = list("我们今天去北京大学你好说他。,:!“”")
LATIN = ["▁Hello", "▁world", "▁the", "▁city", "▁today", "▁don", "▁e", "▁(", "!!"]
LETTERS = list("abcdefghijklmnopqrstuvwxyzHUSP.()'’%0123456789")
CHINESE = ["我们今天去北京大学。", "他说：“你好！”", "北京大学", "你好，我们"]
ENGLISH = [
    "Hello world, the city today!!",
    "e.g. (U.S.) don’t 3.14%",
    "the  city",  # two spaces: the normalizer folds them as XLM-R's does
    "",
    "Hello <mask> world",
]
MIXED = ["Hello world, 我们 today去北京 x", "我用Python。 好", "the city 北京大学 the city"]


def xlmr_like() -> Tokenizer:
    """A tiny tokenizer shaped like multilingual-e5's tokenizer.json: Unigram, a normalizer that
    folds full-width forms (NFKC standing in for its precompiled charsmap) and runs of spaces,
    Metaspace, ``<s> $A </s>``."""
    specials = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab = specials + [("▁", -3.0)] + [(w, -2.0) for w in WORDS] + [(w, -2.5) for w in LATIN]
    vocab += [(c, -8.0) for c in CHARS] + [(c, -9.0) for c in LETTERS] + [("▁我", -7.0)]
    vocab.append(("<mask>", 0.0))
    tok = Tokenizer(models.Unigram(vocab, unk_id=3))
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return tok


@pytest.fixture(scope="module")
def unigram() -> Tokenizer:
    return xlmr_like()


@pytest.fixture(scope="module")
def split(unigram: Tokenizer) -> Tokenizer:
    return split_cjk_characters(unigram)


def pieces(tok: Tokenizer, text: str) -> list[tuple[str, tuple[int, int]]]:
    enc = tok.encode(text, add_special_tokens=False)
    return list(zip(enc.tokens, enc.offsets, strict=True))


def test_original_merges_words(unigram: Tokenizer) -> None:
    # The problem being solved: word boundaries inside pieces.
    assert [t for t, _ in pieces(unigram, "我们今天去北京大学。")] == [
        "▁我们",
        "今天",
        "去",
        "北京大学",
        "。",
    ]


@pytest.mark.parametrize("text", CHINESE + MIXED)
def test_every_cjk_character_is_its_own_token(split: Tokenizer, text: str) -> None:
    got = pieces(split, text)
    for k, ch in enumerate(text):
        if not is_cjk(ch):
            continue
        # Exactly one token holds the character, and nothing else but a word-start marker (a
        # lone text-start "▁" also points at the first character, as in the original).
        (token,) = [(t, (s, e)) for t, (s, e) in got if s <= k < e and t != "▁"]
        t, (s, e) = token
        assert e == k + 1 and text[s:k].strip() == "", (text, k, got)
        assert t.lstrip("▁") == unicodedata.normalize("NFKC", ch)  # "：" is ":" after NFKC


def test_pieces_and_offsets(split: Tokenizer) -> None:
    assert pieces(split, "我们今天去北京大学。") == [
        ("▁我", (0, 1)),  # the text-start marker stays on the first character, as before
        ("们", (1, 2)),  # inside a run: the bare piece, no ▁
        ("今", (2, 3)),
        ("天", (3, 4)),
        ("去", (4, 5)),
        ("北", (5, 6)),
        ("京", (6, 7)),
        ("大", (7, 8)),
        ("学", (8, 9)),
        ("。", (9, 10)),
    ]
    # After a space the ▁ joins the character where the vocabulary has that piece ("▁我"),
    # else it stays a token of its own ("▁" + "北"), exactly as the original tokenizer does.
    assert pieces(split, "Hello 我 北京") == [
        ("▁Hello", (0, 5)),
        ("▁我", (5, 7)),
        ("▁", (7, 8)),
        ("北", (8, 9)),
        ("京", (9, 10)),
    ]


def test_full_width_and_merged_punctuation_next_to_cjk(
    unigram: Tokenizer, split: Tokenizer
) -> None:
    text = "他说：“你好！”"  # the normalizer folds ：！ to ASCII, where ':“' and '!”' are pieces
    assert ":“" in [t for t, _ in pieces(unigram, text)]
    assert pieces(split, text) == [
        ("▁", (0, 1)),
        ("他", (0, 1)),
        ("说", (1, 2)),
        (":", (2, 3)),
        ("“", (3, 4)),
        ("你", (4, 5)),
        ("好", (5, 6)),
        ("!", (6, 7)),
        ("”", (7, 8)),
    ]


def test_missing_character_is_unk_with_its_offsets(split: Tokenizer) -> None:
    enc = split.encode("我砭砭们", add_special_tokens=False)
    unk = split.token_to_id("<unk>")
    # One <unk> per character: unknown characters are never fused into one token.
    assert enc.ids[1:3] == [unk, unk] and unk not in (enc.ids[0], enc.ids[3])
    assert enc.offsets == [(0, 1), (1, 2), (2, 3), (3, 4)]


@pytest.mark.parametrize("text", ENGLISH)
def test_latin_text_is_unchanged(unigram: Tokenizer, split: Tokenizer, text: str) -> None:
    a, b = unigram.encode(text), split.encode(text)
    assert (a.ids, a.offsets) == (b.ids, b.offsets)


def test_latin_words_in_mixed_text_are_unchanged(unigram: Tokenizer, split: Tokenizer) -> None:
    for text in MIXED:
        latin = [p for p in pieces(unigram, text) if not any(map(is_cjk, text[slice(*p[1])]))]
        assert set(latin) <= set(pieces(split, text)), text


def test_specials_and_pairs_are_kept(unigram: Tokenizer, split: Tokenizer) -> None:
    enc = split.encode("北京", "你好")
    assert enc.tokens == ["<s>", "▁", "北", "京", "</s>", "</s>", "▁", "你", "好", "</s>"]
    assert unigram.encode("北京", "你好").tokens[0] == "<s>"


def test_saved_and_reloaded(split: Tokenizer, tmp_path: Path) -> None:
    split.save(str(tmp_path / "tokenizer.json"))
    back = load_tokenizer(tmp_path)
    for text in CHINESE + ENGLISH + MIXED + ["我砭们"]:
        a, b = split.encode(text), back.encode(text)
        assert (a.ids, a.offsets) == (b.ids, b.offsets)
    # Idempotent: splitting a split tokenizer (a tagger fine-tuned again) changes nothing.
    assert split_cjk_characters(back).to_str() == back.to_str()


def test_original_is_not_modified(unigram: Tokenizer) -> None:
    before = unigram.to_str()
    split_cjk_characters(unigram)
    assert unigram.to_str() == before


def test_transformers_loads_the_split_tokenizer(split: Tokenizer) -> None:
    transformers = pytest.importorskip("transformers")
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=split)
    for text in CHINESE + MIXED:
        assert hf(text)["input_ids"] == split.encode(text).ids


CORPUS = "\n".join(CHINESE + ENGLISH + MIXED + ["今天天气很好。", "我们用 Python 训练模型。"] * 3)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cjk") / "corpus.txt"
    path.write_text(CORPUS + "\n", encoding="utf-8")
    return path


def test_wordpiece_is_unchanged(corpus: Path) -> None:
    wp = train_wordpiece([corpus], 300, min_frequency=1)
    after = split_cjk_characters(wp)
    for text in CHINESE + ENGLISH + MIXED + ["ＡＢＣ１２３，你好！", "砭"]:
        a, b = wp.encode(text), after.encode(text)
        assert (a.ids, a.offsets) == (b.ids, b.offsets), text


def test_bpe_split_on_request(corpus: Path) -> None:
    bpe = train_bpe([corpus], 400, min_frequency=1)
    text = "我们今天去北京大学。Hello world"
    assert any(sum(map(is_cjk, text[s:e])) > 1 for s, e in bpe.encode(text).offsets)
    after = split_cjk_characters(bpe)
    enc = after.encode(text)
    assert all(sum(map(is_cjk, text[s:e])) <= 1 for s, e in enc.offsets)
    assert after.decode(enc.ids) == text  # still byte-level: exact round trip


def test_split_by_default_only_for_unigram(unigram: Tokenizer, corpus: Path) -> None:
    assert splits_cjk_by_default(unigram)
    assert not splits_cjk_by_default(train_wordpiece([corpus], 300, min_frequency=1))
    assert not splits_cjk_by_default(train_bpe([corpus], 400, min_frequency=1))
