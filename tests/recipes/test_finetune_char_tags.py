"""Character tagging from the tokenizer's own pieces (``data.char_tags``): the encoder reads
the SentencePiece pieces it was pretrained on ("记者参观" is one piece) and every character
gets a tag, so a word boundary inside a piece is still predicted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from recipes.test_finetune_tagging_cjk_split import config as split_config
from recipes.test_finetune_tagging_cjk_split import (
    unigram_encoder,
    unigram_tokenizer,
    write_pku,
)

import llmos
from llmos.checkpoint.io import read_checkpoint
from llmos.config import BertConfig, FinetuneConfig
from llmos.data.readers import read_spans
from llmos.errors import CheckpointError, ConfigError
from llmos.inference.tag import SpanDecoder, tagger_model, token_scores, tokenize_for_tagging
from llmos.models.chars import BertForCharTagging
from llmos.recipes.finetune import finetune
from llmos.text.tokenizer import load_tokenizer
from llmos.train.tasks.tag import (
    IGNORE,
    TagTask,
    encode_tagging,
    training_windows,
    window_edges,
    window_units,
)

BMES = ["B", "M", "E", "S"]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unigram_encoder(tmp_path_factory.mktemp("unigram-enc") / "checkpoint")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pku-pieces")
    for name, n, seed in (("train", 300, 0), ("valid", 40, 1), ("test", 50, 2)):
        write_pku(d / f"{name}.txt", n, seed)
    return d


def config(encoder: Path, dataset: Path, out: Path, *overrides: str) -> FinetuneConfig:
    """The split-character test's segmentation run, reading pieces instead."""
    return split_config(encoder, dataset, out, "data.char_tags=true", "name=seg-chars", *overrides)


def test_units_are_the_characters_of_the_pieces() -> None:
    tok = unigram_tokenizer()
    text = "今天 记者参观城市。"
    (t,) = tokenize_for_tagging(tok, [text], char_units=True)
    pieces = [tok.id_to_token(int(i)) for i in t.ids]
    assert pieces == ["▁今天", "▁", "记者参观", "城市", "。"]
    assert t.units is not None
    # Every non-space character once, in order; the space before 记 is no unit.
    assert [text[s:e] for s, e in t.offsets] == list("今天记者参观城市。")
    assert t.units.piece.tolist() == [0, 0, 2, 2, 2, 2, 3, 3, 4]
    assert t.units.start.tolist() == [0, 1, 0, 1, 2, 3, 0, 1, 0]
    assert t.units.end.tolist() == [1, 0, 3, 2, 1, 0, 1, 0, 0]
    assert t.units.ids.tolist() == [tok.token_to_id(c) for c in "今天记者参观城市。"]
    assert t.window(2, 4) == (2, 8)  # pieces 记者参观 and 城市
    rows = t.units.rows(2, 8, 2)  # a window starting at piece 2, after [CLS]
    assert rows[:, 0].tolist() == [1, 1, 1, 1, 2, 2]
    # An unknown character is the unknown token, and the NFKC form is looked up first.
    (u,) = tokenize_for_tagging(tok, ["今Ｘ｡"], char_units=True)
    assert u.units is not None
    assert u.units.ids.tolist()[1:] == [tok.token_to_id("<unk>"), tok.token_to_id("。")]


def test_boundaries_inside_pieces_stay_representable(encoder: Path, dataset: Path) -> None:
    rows = read_spans(dataset / "test.txt", view="segmentation").rows
    tok = read_checkpoint(encoder).tokenizer
    tokens = encode_tagging(tok, rows, BMES, "bmes", "test")
    chars = encode_tagging(tok, rows, BMES, "bmes", "test", char_units=True)
    assert (tokens.dropped, chars.dropped) == (len(rows), 0)
    # The tags of "记者参观" are its two words' B E B E, although it is one piece.
    first = chars.tags[0]
    assert [BMES[i] for i in first] == ["B", "E", "B", "E", "B", "E", "B", "E", "S"]


def test_windows_units_and_edges_agree() -> None:
    """Cut into windows of 3 pieces, the labels of the windows are the text's labels, each
    window's units point at its own pieces, and the open edges are the cut ones."""
    tok = unigram_tokenizer()
    texts = ["今天记者参观城市。昨天老师研究经济。", "现在。"]
    tokens = tokenize_for_tagging(tok, texts, char_units=True)
    tags = [list(range(len(t.offsets))) for t in tokens]
    from llmos.train.tasks.tag import TagEncoded

    data = TagEncoded([], tokens, tags, 0)
    ids, labels = training_windows(data, 5, 100, 101)
    units = window_units(data, 5)
    edges = window_edges(data, 5)
    assert units is not None and len(ids) == len(labels) == len(units) == len(edges)
    n_first = -(-len(tokens[0].ids) // 3)
    assert np.concatenate(labels[:n_first]).tolist() == tags[0]
    assert labels[n_first].tolist() == tags[1]
    for x, u, y in zip(ids, units, labels, strict=True):
        assert len(u) == len(y) > 0
        assert u[:, 0].min() >= 1 and u[:, 0].max() <= len(x) - 2  # inside [CLS] .. [SEP]
    assert edges[0].tolist() == [False, True] and edges[n_first - 1].tolist() == [True, False]
    assert edges[n_first].tolist() == [False, False]


def tiny_char_tagger(crf: bool) -> BertForCharTagging:
    tok = unigram_tokenizer()
    cfg = BertConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=16, num_layers=1, num_heads=2, pad_token_id=1
    )
    torch.manual_seed(0)
    model = tagger_model(cfg, BMES, "bmes", crf=crf, char_tags=True)
    assert isinstance(model, BertForCharTagging)
    with torch.no_grad():  # a trained look: nothing at its zero init
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


def test_character_logits_follow_the_formula() -> None:
    """A character's logits come from its piece's output, its position in the piece and its
    own embedding, exactly as the docstring writes them."""
    model = tiny_char_tagger(crf=False)
    (t,) = tokenize_for_tagging(unigram_tokenizer(), ["记者参观城市"], char_units=True)
    assert t.units is not None
    ids = torch.tensor([[0, *t.ids.tolist(), 2]])
    units = torch.from_numpy(t.units.rows(0, len(t.offsets), 0))[None]
    got = model(ids, None, None, units)[0]
    h = model.bert(ids)[0]
    want = []
    for piece, j, rest, cid in units[0].tolist():
        x = h[piece] + model.char_proj(model.bert.embeddings.tok.weight[cid])
        x = model.char_norm(x + model.char_start.weight[j] + model.char_end.weight[rest])
        want.append(model.classifier(x + torch.nn.functional.gelu(model.char_mlp(x))))
    torch.testing.assert_close(got, torch.stack(want))
    with pytest.raises(ValueError, match="needs the characters' units"):
        model(ids)


def test_long_texts_take_each_character_from_its_pieces_best_window() -> None:
    """Windows of 4 pieces, 2 apart: each character's scores are those of the window where
    its piece has the most context, computed here window by window."""
    model = tiny_char_tagger(crf=False)
    text = "今天记者参观城市。昨天老师研究经济。现在农民保护农村。"
    (t,) = tokenize_for_tagging(unigram_tokenizer(), [text], char_units=True)
    assert t.units is not None
    got = token_scores(model, [t], 0, 2, 1, max_length=6)[0]
    assert got.shape == (len(text), 4)
    n, size = len(t.ids), 4
    starts = [*range(0, n - size, 2), n - size]
    per_window = []
    for s in starts:
        u0, u1 = t.window(s, s + size)
        ids = torch.tensor([[0, *t.ids[s : s + size].tolist(), 2]])
        units = torch.from_numpy(t.units.rows(u0, u1, s))[None]
        with torch.no_grad():
            per_window.append((u0, torch.log_softmax(model(ids, None, None, units)[0], -1)))
    for u, piece in enumerate(t.units.piece.tolist()):
        context = [
            min(piece - s, s + size - 1 - piece) if s <= piece < s + size else -1 for s in starts
        ]
        u0, scores = per_window[int(np.argmax(context))]
        np.testing.assert_allclose(got[u], scores[u - u0].numpy(), rtol=1e-5, atol=1e-6)


def test_crf_loss_of_character_windows_reads_their_characters_only() -> None:
    """The batched CRF loss equals the sum of each window's NLL over its own characters,
    padding left out and the cut edges open."""
    model = tiny_char_tagger(crf=True)
    tok = unigram_tokenizer()
    tokens = tokenize_for_tagging(
        tok, ["记者参观城市。", "今天。", "老师研究经济"], char_units=True
    )
    ids = [np.array([0, *t.ids.tolist(), 2]) for t in tokens]
    units = [t.units.rows(0, len(t.offsets), 0) for t in tokens if t.units is not None]
    tags = [np.array([0, 2, 0, 2, 0, 2, 3]), np.array([0, 2, IGNORE]), np.array([1, 1, 1, 1, 1, 2])]
    edges = np.array([[False, True], [False, False], [True, False]])
    task = TagTask(
        ids, tags, None, SpanDecoder(BMES, "bmes"), {"pad": 1}, 24, 3, 0,  # type: ignore[arg-type]
        crf_edges=edges, train_units=units,
    )  # fmt: skip
    batch = task.collate(np.arange(3))
    known = task.counts(batch)[0]
    loss, _ = task.loss(model, batch, [known])
    want = 0.0
    for x, u, y, (open_start, open_end) in zip(ids, units, tags, edges, strict=True):
        logits = model(torch.from_numpy(x)[None], None, None, torch.from_numpy(u)[None])
        want += model.crf.nll(
            logits, torch.from_numpy(y)[None], torch.ones(1, len(y), dtype=torch.bool),
            torch.tensor([open_start]), torch.tensor([open_end]),
        ).item()  # fmt: skip
    assert known == 15 and loss.item() == pytest.approx(want / known, rel=1e-5)


def test_char_tagger_learns_boundaries_inside_pieces(
    encoder: Path,
    dataset: Path,
    tmp_path: Path,
) -> None:
    result = finetune(config(encoder, dataset, tmp_path, "crf=true"))
    report = json.loads((result.run_dir / "report.json").read_text())
    assert report["test"]["unrepresentable_spans"] == 0
    assert report["test"]["f1"] > 0.9, report["test"]
    task = json.loads((result.checkpoint / "task.json").read_text())
    assert task["char_tags"] is True and task["crf"] is True
    # The checkpoint keeps the tokenizer as pretrained: nothing is split.
    original = read_checkpoint(encoder).tokenizer.to_str()
    assert load_tokenizer(result.checkpoint).to_str() == original
    model = llmos.load(result.checkpoint)
    words = model.tag("今天记者参观城市。")[0]
    assert [w["text"] for w in words] == ["今天", "记者", "参观", "城市", "。"]
    # Scored as tag() decodes: the evaluate recipe agrees with the run's own report.
    from llmos.train.tasks.tag import score_tagger

    again = score_tagger(model, dataset / "test.txt")
    assert again["f1"] == pytest.approx(report["test"]["f1"])
    with pytest.raises(CheckpointError, match="tags characters from the tokenizer's pieces"):
        from llmos.recipes.convert import export_hf

        export_hf(result.checkpoint, tmp_path / "hf")
    with pytest.raises(CheckpointError, match="does not cover character taggers"):
        from llmos.inference.onnx_export import export_onnx

        export_onnx(result.checkpoint, tmp_path / "onnx")
    from llmos.compress.prune_task import tagging_data
    from llmos.compress.quantize_eval import output_kind

    with pytest.raises(CheckpointError, match="quantization covers token taggers"):
        output_kind(model)
    with pytest.raises(CheckpointError, match="pruning covers token taggers"):
        tagging_data(None, model.spec, None, None, str(dataset))  # type: ignore[arg-type]


def test_char_tags_config_errors(encoder: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="set one of the two"):
        config(encoder, tmp_path, tmp_path, "data.split_cjk=true")
    with pytest.raises(ConfigError, match=r"data\.char_tags is for task: tagging"):
        config(encoder, tmp_path, tmp_path, "task=classification")


def test_task_json_round_trips_char_tags() -> None:
    from llmos.checkpoint.task import Tagging, parse_task

    d = {"task": "tagging", "labels": BMES, "scheme": "bmes", "crf": True, "char_tags": True}
    spec = parse_task(d, "x/task.json")
    assert isinstance(spec, Tagging) and spec.char_tags and spec.to_json() == d
    plain = {"task": "tagging", "labels": BMES, "scheme": "bmes"}
    assert parse_task(plain, "x/task.json").to_json() == plain  # older files: unchanged
    with pytest.raises(CheckpointError, match="field 'char_tags' must be true or false"):
        parse_task(plain | {"char_tags": "yes"}, "x/task.json")
