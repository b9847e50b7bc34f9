"""A multi-task model whose slot head tags the characters of the tokenizer's own pieces
(``heads[].data.char_tags``): every head reads the text as the encoder was pretrained (no
split characters), the slot head still finds a boundary inside a piece, and one pass gives
what each head's own pipeline gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from recipes.test_finetune_multitask import config, write_datasets
from recipes.test_finetune_tagging_cjk_split import unigram_encoder, unigram_tokenizer

import llmos
from llmos.checkpoint.io import read_checkpoint, read_weights
from llmos.checkpoint.task import MultiTask, Tagging, parse_task
from llmos.config import BertConfig
from llmos.errors import ConfigError
from llmos.inference.tag import tagger_model, tagging_crf, tokenize_for_tagging
from llmos.models.chars import BertForCharTagging
from llmos.models.multitask import BertMultiTask, HeadShape, HeadView
from llmos.recipes.finetune import finetune
from llmos.text.tokenizer import load_tokenizer

CHARS = "heads.1.data.char_tags=true"


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unigram_encoder(tmp_path_factory.mktemp("mtc-enc") / "checkpoint")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_datasets(tmp_path_factory)


@pytest.fixture(scope="module")
def trained(encoder: Path, datasets: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    return finetune(config(encoder, datasets, tmp_path_factory.mktemp("mtc-run"), CHARS))


def test_char_slot_head_finds_boundaries_inside_pieces(trained, encoder: Path) -> None:
    report = json.loads((trained.run_dir / "report.json").read_text())
    heads = report["heads"]
    # The subject shares the piece "记者参观" with the verb, and nothing is split: only a
    # character head can put the slot's end inside it.
    assert heads["slots"]["unrepresentable_spans"] == 0
    assert heads["slots"]["f1"] > 0.9, heads["slots"]
    assert heads["intent"]["accuracy"] > 0.95, heads["intent"]
    # (Sentiment, "今天" against other days, is one piece of four here, not two tokens of
    # nine as with split characters: 180 shared steps do not teach the tiny encoder that; the
    # split-character test checks that head.)
    # Every head read the pretrained tokenizer's pieces: the checkpoint keeps it unsplit.
    assert (
        load_tokenizer(trained.checkpoint).to_str() == read_checkpoint(encoder).tokenizer.to_str()
    )
    spec = read_checkpoint(trained.checkpoint).task
    assert isinstance(spec, MultiTask)
    slots = spec.heads["slots"]
    assert isinstance(slots, Tagging) and slots.char_tags and slots.crf
    raw = json.loads((trained.checkpoint / "task.json").read_text())
    assert raw["heads"]["slots"]["char_tags"] is True
    assert parse_task(raw).to_json() == raw
    weights = read_weights(trained.checkpoint)
    assert {"chars.slots.char_start.weight", "chars.slots.char_mlp.weight"} <= set(weights)
    assert not any(k.startswith(("chars.intent", "chars.sentiment")) for k in weights)


def test_one_pass_equals_each_heads_pipeline(trained) -> None:
    pipe = llmos.load(trained.checkpoint)
    texts = ["昨天农民研究经济。", "今天记者参观城市。", "现在老师保护农村。"]
    results, vectors = pipe.analyze(texts)
    intents = pipe.head("intent").classify(texts)
    slots = pipe.head("slots").tag(texts)
    for r, i, s in zip(results, intents, slots, strict=True):
        assert r["intent"]["label"] == i["label"]
        assert r["intent"]["score"] == pytest.approx(i["score"], abs=1e-5)
        assert [(x["label"], x["start"], x["end"]) for x in r["slots"]] == [
            (x["label"], x["start"], x["end"]) for x in s
        ]
    np.testing.assert_allclose(vectors, pipe.embed(texts), atol=1e-5)
    assert [r["intent"]["label"] for r in results] == ["研究", "参观", "保护"]
    assert [(x["label"], x["text"]) for x in results[1]["slots"]] == [
        ("who", "记者"),
        ("what", "城市"),
    ]
    # Longer than the model's window: the slot head reads it in its own windows.
    long = "今天记者参观城市。" * 6
    (res,), _ = pipe.analyze([long])
    assert [(x["start"], x["end"]) for x in res["slots"]] == [
        (x["start"], x["end"]) for x in pipe.head("slots").tag([long])[0]
    ]
    assert len(res["slots"]) == 12


def test_a_char_head_computes_what_a_char_tagger_computes() -> None:
    """Head ``slots`` of a multi-task model and a :class:`BertForCharTagging` with the same
    weights give the same logits (and the CRF the same paths): single-task code runs on it."""
    tok = unigram_tokenizer()
    cfg = BertConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=16, num_layers=1, num_heads=2, pad_token_id=1
    )
    labels = ["B", "M", "E", "S"]
    torch.manual_seed(0)
    multi = BertMultiTask(
        cfg,
        {
            "intent": HeadShape("classification", 3),
            "slots": HeadShape("tagging", 4, tagging_crf(labels, "bmes"), char_tags=True),
        },
    )
    with torch.no_grad():  # a trained look: nothing at its zero init
        for p in multi.parameters():
            p.normal_(0, 0.3)
    single = tagger_model(cfg, labels, "bmes", crf=True, char_tags=True)
    assert isinstance(single, BertForCharTagging)
    own = multi.state_dict()
    mapped = {k: v for k, v in own.items() if k.startswith("bert.")}
    mapped |= {f"classifier.{k}": own[f"heads.slots.{k}"] for k in ("weight", "bias")}
    mapped |= {k.removeprefix("chars.slots."): v for k, v in own.items() if "chars.slots." in k}
    mapped |= {f"crf.{k.removeprefix('crfs.slots.')}": v for k, v in own.items() if "crfs." in k}
    single.load_state_dict(mapped, strict=True)
    multi.eval(), single.eval()
    (t,) = tokenize_for_tagging(tok, ["今天记者参观城市。"], char_units=True)
    assert t.units is not None
    ids = torch.tensor([[0, *t.ids.tolist(), 2]])
    units = torch.from_numpy(t.units.rows(0, len(t.offsets), 0))[None]
    view = HeadView(multi, "slots")
    torch.testing.assert_close(view(ids, None, None, units), single(ids, None, None, units))
    assert view.crf is multi.crfs["slots"]
    with pytest.raises(ValueError, match="head 'slots' tags characters: it needs units"):
        view(ids)
    out = multi(ids, None, None, units=units)  # every head from one pass
    assert out["intent"].shape == (1, 3) and out["slots"].shape == (1, len(t.offsets), 4)


def test_a_model_without_char_heads_draws_the_same_weights() -> None:
    """The character layers come last: a model without them initialises as before."""
    tok = unigram_tokenizer()
    cfg = BertConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=16, num_layers=1, num_heads=2, pad_token_id=1
    )
    shapes = {"intent": HeadShape("classification", 3), "slots": HeadShape("tagging", 4)}
    torch.manual_seed(0)
    plain = BertMultiTask(cfg, shapes).state_dict()
    torch.manual_seed(0)
    chars = BertMultiTask(
        cfg, shapes | {"slots": HeadShape("tagging", 4, char_tags=True)}
    ).state_dict()
    assert all(torch.equal(plain[k], chars[k]) for k in plain)
    assert set(chars) - set(plain) == {k for k in chars if k.startswith("chars.slots.")}
    with pytest.raises(ValueError, match="char_tags is for tagging heads"):
        BertMultiTask(cfg, {"intent": HeadShape("classification", 3, char_tags=True)})


def test_tagging_heads_must_read_the_same_tokens(encoder, datasets, tmp_path: Path) -> None:
    second = [
        "heads.2.task=tagging",
        f"heads.2.data.dataset={datasets[0]}",
        "heads.2.data.spans_key=slots",
    ]
    with pytest.raises(ConfigError, match=r"tagging heads must agree on data\.char_tags"):
        config(encoder, datasets, tmp_path, CHARS, *second)
    with pytest.raises(ConfigError, match=r"heads\[intent\]\.data\.char_tags is for task"):
        config(encoder, datasets, tmp_path, "heads.0.data.char_tags=true")
