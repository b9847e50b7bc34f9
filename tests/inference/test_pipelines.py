"""llmos.load picks the pipeline of the checkpoint's kind; each answers what its model can do
and says so clearly for the rest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import llmos
from llmos.checkpoint.io import read_checkpoint, save_checkpoint
from llmos.checkpoint.task import Classification, Embedding, MaskedLM, Tagging
from llmos.config.model import BertConfig, GPTConfig
from llmos.inference.encoder import EncoderPipeline
from llmos.inference.generate import GenerationConfig, generate_ids
from llmos.inference.generator import GeneratorPipeline
from llmos.inference.load import load_pipeline
from llmos.inference.pipeline import Pipeline, UnsupportedTaskError
from llmos.models.bert import (
    BertForPreTraining,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from llmos.models.gpt import GPT
from llmos.text.tokenizer import load_tokenizer

TEXTS = ["今天我们学习经济。", "他", "去年老师参观城市，the market grew。", "我们"]


@pytest.fixture(scope="module")
def checkpoints(tiny_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tok = load_tokenizer(tiny_tokenizer)
    out = tmp_path_factory.mktemp("pipelines")
    torch.manual_seed(0)
    bert = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        intermediate_size=32,
        max_position=32,
    )
    gpt = GPTConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        intermediate_size=32,
        max_position=64,
    )
    clf = Classification(labels=("neg", "pos", "mid"), max_length=16)
    tagger = Tagging(labels=("O", "B-LOC", "I-LOC"), scheme="bio", max_length=8)
    return {
        "mlm": save_checkpoint(out / "mlm", BertForPreTraining(bert), bert, tok),
        "clf": save_checkpoint(out / "clf", BertForSequenceClassification(bert, 3), bert, tok, clf),
        "tag": save_checkpoint(out / "tag", BertForTokenClassification(bert, 3), bert, tok, tagger),
        "emb": save_checkpoint(
            out / "emb", BertForPreTraining(bert), bert, tok, Embedding(pooling="cls")
        ),
        "gpt": save_checkpoint(out / "gpt", GPT(gpt), gpt, tok),
    }


def test_load_picks_the_pipeline_of_the_kind(checkpoints: dict) -> None:
    for name, path in checkpoints.items():
        pipe = llmos.load(path)
        want = GeneratorPipeline if name == "gpt" else EncoderPipeline
        assert type(pipe) is want and isinstance(pipe, Pipeline)
    assert isinstance(llmos.load(checkpoints["mlm"]).spec, MaskedLM)
    assert llmos.load(checkpoints["mlm"]).task is None
    assert llmos.load(checkpoints["clf"]).task == {
        "task": "classification",
        "labels": ["neg", "pos", "mid"],
        "max_length": 16,
    }


def test_a_gpt_has_no_encoder_methods(checkpoints: dict) -> None:
    pipe = llmos.load(checkpoints["gpt"])
    for name in ("classify", "tag", "fill_mask", "embed"):
        assert not hasattr(pipe, name)
        with pytest.raises(
            llmos.LlmosError,
            match=f"a pretrained GPT: it can generate, stream; {name} needs an encoder",
        ):
            getattr(pipe, name)
    with pytest.raises(UnsupportedTaskError):
        pipe.classify(["你好"])
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = pipe.nothing


def test_an_encoder_has_no_generator_methods_and_guards_its_tasks(checkpoints: dict) -> None:
    mlm = llmos.load(checkpoints["mlm"])
    with pytest.raises(
        UnsupportedTaskError,
        match="it can classify, tag, fill_mask, embed, correct; generate needs a GPT checkpoint",
    ):
        mlm.generate("今天")
    assert not hasattr(mlm, "stream")
    with pytest.raises(
        llmos.LlmosError, match="pretraining \\(fill-mask\\) model, not a classification model"
    ):
        mlm.classify(["你好"])
    with pytest.raises(llmos.LlmosError, match="not a tagging model"):
        mlm.tag(["你好"])
    clf = llmos.load(checkpoints["clf"])
    with pytest.raises(llmos.LlmosError, match="classification model; fill-mask needs"):
        clf.fill_mask("我[MASK]")
    with pytest.raises(llmos.LlmosError, match="tagging model, not a classification model"):
        llmos.load(checkpoints["tag"]).classify(["你好"])
    # an embedding encoder fills masks only when it carries an MLM head (this one does:
    # heads mlm+nsp; e5-zh, heads none, does not: tests/recipes/test_pretrain_init.py)
    assert len(llmos.load(checkpoints["emb"]).fill_mask("我[MASK]", top_k=2)) == 2


def test_encoder_tasks_answer_in_input_order(checkpoints: dict) -> None:
    clf = llmos.load(checkpoints["clf"])
    batched = clf.classify(TEXTS, batch_size=3)
    one_by_one = [clf.classify([t], batch_size=1)[0] for t in TEXTS]
    assert [r["label"] for r in batched] == [r["label"] for r in one_by_one]
    for a, b in zip(batched, one_by_one, strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)
    tags = llmos.load(checkpoints["tag"]).tag(TEXTS, batch_size=2)
    assert len(tags) == len(TEXTS)
    for text, spans in zip(TEXTS, tags, strict=True):
        assert all(text[s["start"] : s["end"]] == s["text"] for s in spans)
    emb = llmos.load(checkpoints["emb"])
    vectors = emb.embed(TEXTS, batch_size=3)
    assert vectors.shape == (4, 16) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    for i, text in enumerate(TEXTS):
        assert np.allclose(emb.embed(text), vectors[i], atol=1e-5)
    raw = emb.embed(TEXTS, pooling="mean", normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    # no prefixes in its task.json: queries and passages are embedded alike
    assert np.array_equal(emb.embed(TEXTS, kind="query"), emb.embed(TEXTS))
    filled = llmos.load(checkpoints["mlm"]).fill_mask("我[MASK]", top_k=3)
    assert len(filled) == 3 and {"token", "token_id", "score", "sequence"} <= set(filled[0])


def test_embed_kinds_put_the_checkpoints_prefixes_first(checkpoints: dict, tmp_path) -> None:
    src = read_checkpoint(checkpoints["emb"])
    spec = Embedding(query_prefix="问：", passage_prefix="文：")
    model = load_pipeline(checkpoints["emb"]).model
    save_checkpoint(tmp_path / "e", model, src.config, src.tokenizer, spec)
    assert read_checkpoint(tmp_path / "e").task == spec  # task.json round-trips the prefixes
    emb = llmos.load(tmp_path / "e")
    assert np.array_equal(emb.embed(["今天"], kind="query"), emb.embed(["问：今天"]))
    assert np.array_equal(emb.embed(["今天"], kind="passage"), emb.embed(["文：今天"]))
    with pytest.raises(llmos.LlmosError, match="kind must be one of"):
        emb.embed(["今天"], kind="doc")


def test_generation_defaults_break_loops_and_turn_off(checkpoints: dict) -> None:
    cfg = GenerationConfig()
    assert cfg.no_repeat_ngram_size == 3 and cfg.repetition_penalty == 1.1
    torch.manual_seed(3)
    gpt_cfg = GPTConfig(
        vocab_size=40, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32
    )
    model = GPT(gpt_cfg).eval()
    with torch.no_grad():  # sharp distributions: plain greedy falls into a loop
        model.transformer.wte.weight.mul_(30)
    prompt = [[5, 9, 13]]
    plain = generate_ids(
        model,
        prompt,
        GenerationConfig(max_new_tokens=30, repetition_penalty=1.0, no_repeat_ngram_size=0),
        eos_id=None,
    )[0]
    trigrams = [tuple(plain[i : i + 3]) for i in range(len(plain) - 2)]
    assert len(set(trigrams)) < len(trigrams)  # the loop this default is for
    default = generate_ids(model, prompt, GenerationConfig(max_new_tokens=30), eos_id=None)[0]
    seq = prompt[0] + default
    trigrams = [tuple(seq[i : i + 3]) for i in range(len(seq) - 2)]
    assert len(set(trigrams)) == len(trigrams)
    # The pipeline takes its defaults from GenerationConfig, and the same options turn them off.
    pipe = llmos.load(checkpoints["gpt"])
    ids = [pipe.tokenizer.encode("今天", add_special_tokens=False).ids]
    for options in ({}, {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0}):
        rows = generate_ids(
            pipe.model,
            ids,
            GenerationConfig(max_new_tokens=8, **options),
            eos_id=pipe._ids.get("eos"),
            pad_id=pipe._pad_id(),
        )
        assert pipe.generate("今天", max_new_tokens=8, **options) == pipe._finish_text(rows[0], ())
