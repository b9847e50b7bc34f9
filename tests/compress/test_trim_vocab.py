"""Vocabulary trimming (library and recipe) on tiny random-init BERTs with a Unigram (XLM-R
layout) and a WordPiece tokenizer: outputs on covered texts bit-identical to the untrimmed
model, uncovered pieces -> <unk> and reported, --keep-top against a brute-force count."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

import llmos
from llmos.checkpoint.io import read_checkpoint, read_config
from llmos.checkpoint.task import Embedding, MaskedLM, parse_task
from llmos.compress import trim_vocab as T
from llmos.config.trim_vocab import TrimVocabConfig
from llmos.errors import CheckpointError, ConfigError, DataError
from llmos.recipes.trim_vocab import REPORT_FILE, trim_vocab
from llmos.text.cjk import split_cjk_characters

COVERED = [
    "我们今天学习文化，the students learn about culture。",
    "teacher city 北京大学发展!",
    "经济城市老师",
    "我们今天",
]


def lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln.strip()]


def counted_texts(corpus: Path) -> list[str]:
    return lines(corpus / "train.txt") + lines(corpus / "valid.txt")


def run(ckpt: Path, corpus: Path, out: Path, **kw) -> T.Coverage:
    cfg = TrimVocabConfig(str(ckpt), str(out), corpus=str(corpus), progress=False, **kw)
    return trim_vocab(cfg)


def remap_of(before: Tokenizer, after: Tokenizer) -> dict[int, int]:
    """Old id -> new id by token string (the reference the trimmed ids must follow)."""
    return {before.token_to_id(t): i for t, i in after.get_vocab().items()}


@pytest.fixture(scope="module")
def uni_trimmed(unigram_checkpoint: Path, trim_corpus: Path, tmp_path_factory) -> tuple:
    out = tmp_path_factory.mktemp("uni-out") / "trimmed"
    report = run(unigram_checkpoint, trim_corpus, out)
    return out, report


@pytest.fixture(scope="module")
def wp_trimmed(wordpiece_checkpoint: Path, trim_corpus: Path, tmp_path_factory) -> tuple:
    out = tmp_path_factory.mktemp("wp-out") / "trimmed"
    report = run(wordpiece_checkpoint, trim_corpus, out)
    return out, report


# --- the library -------------------------------------------------------------------------


def test_reserved_ids_of_an_xlmr_like_unigram(unigram_checkpoint: Path) -> None:
    tok = read_checkpoint(unigram_checkpoint).tokenizer
    d = json.loads(tok.to_str())
    scores = [s for _, s in d["model"]["vocab"]]
    lowest = int(np.argmin(scores))
    mask = tok.token_to_id("<mask>")
    assert T.reserved_ids(tok) == sorted({0, 1, 2, 3, mask, lowest})


def test_choose_every_used_piece_or_the_top_n() -> None:
    counts = np.array([0, 5, 0, 2, 2, 9, 0, 1])
    assert T.choose(counts, [0, 2]) == [0, 1, 2, 3, 4, 5, 7]
    # Ties (ids 3 and 4, count 2) go to the lower id.
    assert T.choose(counts, [0, 2], keep_top=3) == [0, 1, 2, 3, 5]
    assert T.choose(counts, [0, 5], keep_top=1) == [0, 1, 5]  # reserved ones do not count
    with pytest.raises(ConfigError, match="--keep-top must be positive"):
        T.choose(counts, [0], keep_top=0)


def test_trimmed_unigram_tokenizes_covered_texts_to_the_same_pieces(
    unigram_checkpoint: Path, trim_corpus: Path
) -> None:
    tok = read_checkpoint(unigram_checkpoint).tokenizer
    texts = counted_texts(trim_corpus)
    size = tok.get_vocab_size()
    remap = T.Remap.of(T.choose(T.count_pieces(tok, [texts], size), T.reserved_ids(tok)), size)
    trimmed = T.trim_tokenizer(tok, remap)
    assert trimmed.get_vocab_size() < size
    for text in [*texts, *COVERED]:
        a, b = tok.encode(text), trimmed.encode(text)
        assert b.tokens == a.tokens
        assert b.ids == [remap[i] for i in a.ids]
        assert trimmed.decode(b.ids) == tok.decode(a.ids)
    # Without the lowest-scoring piece the unknown-character penalty would move; it is kept.
    scores = [s for _, s in json.loads(trimmed.to_str())["model"]["vocab"]]
    assert min(scores) == min(s for _, s in json.loads(tok.to_str())["model"]["vocab"])


def test_a_bpe_tokenizer_is_refused() -> None:
    from tokenizers import models

    with pytest.raises(CheckpointError, match="this one is BPE"):
        T.model_type(Tokenizer(models.BPE()))


def test_framing_comes_back_with_the_pad_id_renumbered() -> None:
    from tokenizers import models

    tok = Tokenizer(models.WordPiece({f"w{i}": i for i in range(8)}, unk_token="w0"))
    tok.enable_padding(pad_id=7, pad_token="w7", length=5)
    tok.enable_truncation(max_length=5)
    framing = T.take_framing(tok)
    assert tok.padding is None and tok.truncation is None
    trimmed = T.trim_tokenizer(tok, remap := T.Remap.of([0, 5, 7], 8))
    T.put_framing(trimmed, framing, remap)
    assert trimmed.padding["pad_id"] == 2 and trimmed.padding["pad_token"] == "w7"
    assert trimmed.truncation["max_length"] == 5
    assert trimmed.encode("w5").ids == [1, 2, 2, 2, 2]


def test_trim_weights_checks_the_rows() -> None:
    remap = T.Remap.of([0, 2], 4)
    state = {"bert.embeddings.tok.weight": torch.arange(12.0).view(4, 3), "other": torch.ones(4)}
    out = T.trim_weights(state, remap, 4)
    assert torch.equal(out["bert.embeddings.tok.weight"], torch.tensor([[0.0, 1, 2], [6, 7, 8]]))
    assert out["other"] is state["other"]  # only token-indexed tensors are sliced
    with pytest.raises(CheckpointError, match=r"config\.json says vocab_size 5"):
        T.trim_weights(state, remap, 5)


# --- the recipe: bit-identical outputs ------------------------------------------------------


def test_unigram_mlm_outputs_are_bit_identical_on_covered_texts(
    unigram_checkpoint: Path, uni_trimmed: tuple
) -> None:
    out, _ = uni_trimmed
    before, after = llmos.load(unigram_checkpoint), llmos.load(out)
    remap = remap_of(before.tokenizer, after.tokenizer)
    keep = torch.tensor(sorted(remap))  # old ids kept, in order: column j of the trimmed logits
    assert [remap[i] for i in keep.tolist()] == list(range(len(keep)))
    for text in COVERED:
        a, b = before.tokenizer.encode(text), after.tokenizer.encode(text)
        assert b.tokens == a.tokens
        assert b.ids == [remap[i] for i in a.ids]
        x, y = torch.tensor([a.ids]), torch.tensor([b.ids])
        with torch.inference_mode():
            ha, hb = before.model(x), after.model(y)
        assert torch.equal(ha.hidden, hb.hidden)
        assert torch.equal(ha.mlm_logits[..., keep], hb.mlm_logits)
    assert np.array_equal(before.embed(COVERED), after.embed(COVERED))
    masked = "我们今天<mask>文化"
    # Softmax over fewer pieces: other probabilities, the same ranking of the kept pieces.
    kept_best = [r["token"] for r in before.fill_mask(masked, top_k=50) if r["token_id"] in remap]
    assert [r["token"] for r in after.fill_mask(masked, top_k=3)] == kept_best[:3]


def test_unigram_trimmed_checkpoint_loads_and_records_the_trim(
    unigram_checkpoint: Path, uni_trimmed: tuple
) -> None:
    out, report = uni_trimmed
    ckpt = read_checkpoint(out)
    assert isinstance(ckpt.task, MaskedLM)
    assert ckpt.task.extra["trimmed_from"] == str(unigram_checkpoint)
    rec = ckpt.task.extra["trimmed_vocab"]
    assert rec["kept"] == ckpt.config.vocab_size == ckpt.tokenizer.get_vocab_size()
    assert rec["from"] == read_config(unigram_checkpoint).vocab_size
    raw = json.loads((out / "task.json").read_text())
    assert parse_task(raw).to_json() == raw  # task.json round-trips
    assert ckpt.config.pad_token_id == ckpt.tokenizer.token_to_id("<pad>")
    # The tokenizer round-trips through its file.
    again = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert again.to_str() == ckpt.tokenizer.to_str()
    assert json.loads((out / REPORT_FILE).read_text())["vocab"]["kept"] == rec["kept"]
    assert report["file_bytes"]["trimmed_weights"] < report["file_bytes"]["original_weights"]


def test_uncovered_piece_becomes_unk_and_is_reported(
    unigram_checkpoint: Path, uni_trimmed: tuple
) -> None:
    out, report = uni_trimmed
    before, after = llmos.load(unigram_checkpoint), llmos.load(out)
    text = "我们鑫淼学习"
    unk = after.tokenizer.token_to_id("<unk>")
    assert before.tokenizer.token_to_id("<unk>") not in before.tokenizer.encode(text).ids
    # Unigram shows an unknown piece's own text as its token, with the <unk> id. (At most one
    # of 鑫 and 淼 is kept, as the lowest-scoring piece: the trainer orders equal scores
    # differently run to run.)
    enc = after.tokenizer.encode(text)
    assert unk in enc.ids
    assert set(enc.tokens) & {"鑫", "淼", "鑫淼"}
    by = {c["source"]: c for c in report["coverage"]}
    assert by["tiny/train"]["counted"] and not by["tiny/test"]["counted"]
    for split in ("tiny/train", "tiny/valid"):
        assert by[split]["unk_tokens"] == by[split]["texts_changed"] == 0
    # Held out: the two texts with rare words ("我们鑫淼学习", "the zebra city") change;
    # 鑫, 淼 become <unk> (English letters of "zebra" survive as single-letter pieces).
    test = by["tiny/test"]
    assert test["texts_changed"] >= 2 and test["texts_with_unk"] >= 1 and test["unk_tokens"] >= 1
    assert "<unk>" in report.format_report()


def test_wordpiece_embedding_model_is_bit_identical_and_keeps_task_json(
    wordpiece_checkpoint: Path, wp_trimmed: tuple, trim_corpus: Path
) -> None:
    out, _ = wp_trimmed
    before, after = llmos.load(wordpiece_checkpoint), llmos.load(out)
    assert after.tokenizer.get_vocab_size() < before.tokenizer.get_vocab_size()
    for text in COVERED:
        assert after.tokenizer.encode(text).tokens == before.tokenizer.encode(text).tokens
    assert after.tokenizer.padding == before.tokenizer.padding  # still pads to 24
    assert after.tokenizer.truncation == before.tokenizer.truncation
    assert np.array_equal(before.embed(COVERED), after.embed(COVERED))
    spec = read_checkpoint(out).task
    assert isinstance(spec, Embedding) and spec.extra["prefixes"] == {"query": "query: "}
    assert spec.extra["trimmed_vocab"]["corpus"] == [str(trim_corpus)]
    # A WordPiece word with a dropped character becomes [UNK].
    assert "[UNK]" in after.tokenizer.encode("淼 zebra").tokens
    # Used ## continuation pieces are kept.
    vocab = after.tokenizer.get_vocab()
    used = {t for x in COVERED for t in before.tokenizer.encode(x).tokens if t.startswith("##")}
    assert used and used <= set(vocab)


def test_keep_top_keeps_exactly_n_plus_the_reserved(
    unigram_checkpoint: Path, trim_corpus: Path, tmp_path: Path
) -> None:
    n = 20
    report = run(
        unigram_checkpoint, trim_corpus, tmp_path / "top", keep_top=n, cjk_characters=False
    )
    tok = read_checkpoint(unigram_checkpoint).tokenizer
    reserved = set(T.reserved_ids(tok))
    # Brute force: count the pieces one text at a time, rank by (-count, id).
    encs = [tok.encode(text, add_special_tokens=False) for text in counted_texts(trim_corpus)]
    counts = Counter(i for e in encs for i in e.ids)
    ranked = sorted((i for i in counts if i not in reserved), key=lambda i: (-counts[i], i))
    expected = sorted(set(ranked[:n]) | reserved)
    trimmed = read_checkpoint(tmp_path / "top").tokenizer
    kept = sorted(trimmed.get_vocab().items(), key=lambda item: item[1])
    assert [tok.token_to_id(t) for t, _ in kept] == expected
    assert report["vocab"]["kept"] == len(expected) == n + len(reserved)
    train = next(c for c in report["coverage"] if c["source"] == "tiny/train")
    assert train["texts_changed"] > 0  # pieces used by the counted text were dropped


def test_task_datasets_count_too(
    unigram_checkpoint: Path, trim_corpus: Path, tmp_path: Path
) -> None:
    data = tmp_path / "sent"
    data.mkdir()
    for split in ("train", "valid"):
        (data / f"{split}.tsv").write_text("text\tlabel\n燚燚好\tpos\n")
    out = tmp_path / "with-data"
    corpus, data_dirs = str(trim_corpus), (str(data),)
    cfg = TrimVocabConfig(str(unigram_checkpoint), str(out), corpus, data_dirs, progress=False)
    trim_vocab(cfg)
    tok = read_checkpoint(out).tokenizer
    assert "<unk>" not in tok.encode("燚燚").tokens


def test_bad_input_is_a_clear_error(
    unigram_checkpoint: Path, trim_corpus: Path, tmp_path: Path
) -> None:
    with pytest.raises(DataError, match="unknown corpus 'nope'"):
        run(unigram_checkpoint, Path("nope"), tmp_path / "x")
    with pytest.raises(ConfigError, match="--keep-top"):
        run(unigram_checkpoint, trim_corpus, tmp_path / "x", keep_top=0)
    with pytest.raises(ConfigError, match="nothing to count"):
        TrimVocabConfig(str(unigram_checkpoint), str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_compare_counts_as_a_text_by_text_reference(
    unigram_checkpoint: Path, trim_corpus: Path
) -> None:
    tok = read_checkpoint(unigram_checkpoint).tokenizer
    size = tok.get_vocab_size()
    counts = T.count_pieces(tok, [counted_texts(trim_corpus)], size)
    remap = T.Remap.of(T.choose(counts, T.reserved_ids(tok), keep_top=15), size)
    trimmed = T.trim_tokenizer(tok, remap)
    texts = [*counted_texts(trim_corpus), *lines(trim_corpus / "test.txt"), "", "燚"]
    ref = T.Coverage()
    unk_old, unk_new = tok.token_to_id("<unk>"), trimmed.token_to_id("<unk>")
    for text in texts:
        a = tok.encode(text, add_special_tokens=False).ids
        b = trimmed.encode(text, add_special_tokens=False).ids
        added = b.count(unk_new) - a.count(unk_old)
        ref.texts += 1
        ref.tokens += len(a)
        ref.unk_tokens += max(added, 0)
        ref.texts_with_unk += added > 0
        ref.texts_changed += [int(remap.table[i]) for i in a] != b
    got = T.compare(tok, trimmed, remap, [texts[:7], texts[7:]])
    assert got == ref
    assert got.texts_changed > 0 and got.unk_tokens > 0


def test_a_classifier_keeps_its_labels_and_its_scores(
    wordpiece_checkpoint: Path, trim_corpus: Path, tmp_path: Path
) -> None:
    from llmos.checkpoint.io import save_checkpoint
    from llmos.checkpoint.task import Classification
    from llmos.models.bert import BertForSequenceClassification

    src = read_checkpoint(wordpiece_checkpoint)
    torch.manual_seed(1)
    model = BertForSequenceClassification(src.config, 3).eval()
    task = Classification(("a", "b", "c"), max_length=24, extra={"dataset": "x"})
    clf = save_checkpoint(tmp_path / "clf", model, src.config, src.tokenizer, task)
    run(clf, trim_corpus, tmp_path / "clf-trimmed")
    before, after = llmos.load(clf), llmos.load(tmp_path / "clf-trimmed")
    assert after.classify(COVERED) == before.classify(COVERED)
    spec = read_checkpoint(tmp_path / "clf-trimmed").task
    assert spec.labels == ("a", "b", "c") and spec.max_length == 24
    assert list(spec.extra) == ["dataset", "trimmed_from", "trimmed_vocab"]


def test_out_may_not_be_the_checkpoint_itself(unigram_checkpoint: Path, trim_corpus: Path) -> None:
    with pytest.raises(CheckpointError, match="--out must be a new directory"):
        run(unigram_checkpoint, trim_corpus, unigram_checkpoint)


def test_padded_embedding_rows_past_the_tokenizer_are_dropped(
    trim_corpus: Path, tmp_path: Path, tiny_parts: tuple
) -> None:
    # multilingual-e5-small has 250,037 embedding rows for 250,002 pieces; ids past the
    # tokenizer are never produced, so trimming drops those rows too.
    from llmos.checkpoint.io import save_checkpoint

    tiny_bert, unigram_tokenizer = tiny_parts

    tok = unigram_tokenizer()
    model, cfg = tiny_bert(tok.get_vocab_size() + 5, pad=1, heads="mlm")
    padded = save_checkpoint(tmp_path / "padded", model, cfg, tok)
    report = run(padded, trim_corpus, tmp_path / "trimmed")
    trimmed = llmos.load(tmp_path / "trimmed")  # loads: rows == pieces again
    assert trimmed.config.vocab_size == report["vocab"]["kept"] < tok.get_vocab_size()
    assert (
        read_checkpoint(tmp_path / "trimmed").task.extra["trimmed_vocab"]["from"] == cfg.vocab_size
    )


def test_single_cjk_character_pieces_are_kept_for_taggers(
    unigram_checkpoint: Path, tmp_path: Path
) -> None:
    # Taggers fine-tuned from a Unigram checkpoint split CJK characters. A corpus of words the
    # tokenizer merges: by default the single-character pieces are kept too, so the split
    # tokenizer reads the text as before; without the option they are not.
    tok = read_checkpoint(unigram_checkpoint).tokenizer
    words = [
        p
        for p in tok.get_vocab()
        if len(p.lstrip("▁")) >= 2 and all("\u4e00" <= c <= "\u9fff" for c in p.lstrip("▁"))
    ]
    text = "".join(w.lstrip("▁") for w in words[:3])
    split = split_cjk_characters(tok)
    assert len(split.encode(text).tokens) > len(tok.encode(text).tokens)  # merged words
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("train.txt", "valid.txt"):
        (corpus / name).write_text(text + "\n", encoding="utf-8")
    run(unigram_checkpoint, corpus, tmp_path / "with")
    after = split_cjk_characters(read_checkpoint(tmp_path / "with").tokenizer)
    assert after.encode(text).tokens == split.encode(text).tokens
    run(unigram_checkpoint, corpus, tmp_path / "without", cjk_characters=False)
    bare = read_checkpoint(tmp_path / "without").tokenizer.get_vocab()
    assert set(split.encode(text).tokens) - set(bare)  # some single characters went


def test_a_classifiers_text_prefix_keeps_its_pieces(
    unigram_checkpoint: Path, trim_corpus: Path, tmp_path: Path
) -> None:
    from llmos.checkpoint.io import save_checkpoint
    from llmos.checkpoint.task import Classification
    from llmos.models.bert import BertForSequenceClassification

    prefix = "zebra: "  # "zebra" is in no counted text (held out in test.txt only)
    src = read_checkpoint(unigram_checkpoint)
    tok = src.tokenizer
    own = tok.encode(prefix, add_special_tokens=False).ids
    counted = {i for e in tok.encode_batch(counted_texts(trim_corpus)) for i in e.ids}
    assert set(own) - counted  # without the prefix these pieces would be trimmed away
    torch.manual_seed(1)
    model = BertForSequenceClassification(src.config, 3).eval()
    task = Classification(("a", "b", "c"), max_length=24, text_prefix=prefix)
    clf = save_checkpoint(tmp_path / "clf", model, src.config, tok, task)
    run(clf, trim_corpus, tmp_path / "trimmed")
    after = read_checkpoint(tmp_path / "trimmed")
    assert after.task.text_prefix == prefix
    pieces = after.tokenizer.encode(prefix, add_special_tokens=False).tokens
    assert pieces == tok.encode(prefix, add_special_tokens=False).tokens
    assert llmos.load(tmp_path / "trimmed").classify(COVERED) == llmos.load(clf).classify(COVERED)
