"""Tagging on a SentencePiece tokenizer that merges Chinese words across gold word boundaries:
with ``data.split_cjk`` (on by default for Unigram tokenizers) every character is a token, no
gold span is lost, and the checkpoint saves and tags with the split tokenizer."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

import llmos
from llmos.checkpoint.io import read_checkpoint, save_checkpoint
from llmos.config import BertConfig, FinetuneConfig, load_config
from llmos.data.readers import read_spans
from llmos.recipes.finetune import finetune
from llmos.text.cjk import split_cjk_characters
from llmos.text.tokenizer import load_tokenizer
from llmos.train.runs import load_init
from llmos.train.tasks.tag import encode_tagging

ADVERBS = ["今天", "昨天", "现在"]
SUBJECTS = ["记者", "老师", "农民"]
VERBS = ["参观", "研究", "保护"]
OBJECTS = ["城市", "农村", "经济"]


def unigram_tokenizer() -> Tokenizer:
    """XLM-R-shaped Unigram whose best pieces join a subject and its verb ("记者参观"), as
    SentencePiece joins frequent neighbours, so the word boundary between them is inside a
    token unless characters are split."""
    chars = sorted(set("".join(ADVERBS + SUBJECTS + VERBS + OBJECTS)) | {"。"})
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    vocab += [(f"▁{w}", -2.0) for w in ADVERBS] + [(w, -2.0) for w in OBJECTS]
    vocab += [(s + v, -1.0) for s in SUBJECTS for v in VERBS]
    vocab += [(c, -8.0) for c in chars] + [("<mask>", 0.0)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=3))
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return tok


def write_pku(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = [
        f"{rng.choice(ADVERBS)}/t {rng.choice(SUBJECTS)}/n {rng.choice(VERBS)}/v "
        f"{rng.choice(OBJECTS)}/n 。/w"
        for _ in range(n)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def unigram_encoder(out: Path) -> Path:
    """A random 2-layer BERT (seed 0) with the Unigram tokenizer (pad id 1, as XLM-R), saved
    as a checkpoint at ``out``; the multitask and support-desk tests start from it too."""
    import torch

    from llmos.models.bert import BertForPreTraining

    tok = unigram_tokenizer()
    cfg = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        max_position=64,
        pad_token_id=1,
        heads="mlm",
        pooler=False,
    )
    torch.manual_seed(0)
    return save_checkpoint(out, BertForPreTraining(cfg), cfg, tok)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unigram_encoder(tmp_path_factory.mktemp("unigram-enc") / "checkpoint")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pku-merged")
    write_pku(d / "train.txt", 300, 0)
    write_pku(d / "valid.txt", 40, 1)
    write_pku(d / "test.txt", 50, 2)
    return d


def config(encoder: Path, dataset: Path, out: Path, *overrides: str) -> FinetuneConfig:
    return load_config(
        FinetuneConfig,
        None,
        [
            f"init={encoder}",
            "task=tagging",
            f"data.dataset={dataset}",
            "data.view=segmentation",
            "data.scheme=bmes",
            "data.max_length=24",
            f"out_dir={out}",
            "name=seg",
            "train.max_steps=60",
            "train.batch_size=16",
            "train.eval_every=20",
            "train.save_every=20",
            "train.progress=false",
            "train.precision=fp32",
            "optim.lr=3e-3",
            "optim.warmup_steps=5",
            *overrides,
        ],
    )


def test_splitting_keeps_every_gold_span(encoder: Path, dataset: Path) -> None:
    rows = read_spans(dataset / "test.txt", view="segmentation").rows
    labels = ["B", "M", "E", "S"]
    original = read_checkpoint(encoder).tokenizer
    before = encode_tagging(original, rows, labels, "bmes", "test").dropped
    after = encode_tagging(split_cjk_characters(original), rows, labels, "bmes", "test").dropped
    # Each sentence's subject and verb share the piece "记者参观": the verb is lost. Split: none.
    assert (before, after) == (len(rows), 0)


def test_load_init_splits_for_tagging_only(encoder: Path, tiny_encoder: Path, tmp_path) -> None:
    unigram = read_checkpoint(encoder).tokenizer
    split = split_cjk_characters(unigram).to_str()
    assert load_init(config(encoder, tmp_path, tmp_path)).tokenizer.to_str() == split
    off = config(encoder, tmp_path, tmp_path, "data.split_cjk=false")
    assert load_init(off).tokenizer.to_str() == unigram.to_str()
    classify = config(encoder, tmp_path, tmp_path, "task=classification")
    assert load_init(classify).tokenizer.to_str() == unigram.to_str()
    # WordPiece checkpoints are left as they were by default (BERT already splits ideographs).
    wordpiece = read_checkpoint(tiny_encoder).tokenizer.to_str()
    assert load_init(config(tiny_encoder, tmp_path, tmp_path)).tokenizer.to_str() == wordpiece


def test_finetuned_checkpoint_tags_characters(encoder: Path, dataset: Path, tmp_path: Path) -> None:
    result = finetune(config(encoder, dataset, tmp_path))
    report = json.loads((result.run_dir / "report.json").read_text())
    assert report["test"]["unrepresentable_spans"] == 0
    assert report["test"]["f1"] > 0.9, report["test"]
    # The checkpoint carries the split tokenizer: tag() needs no option to split.
    saved = load_tokenizer(result.checkpoint).to_str()
    assert saved == split_cjk_characters(read_checkpoint(encoder).tokenizer).to_str()
    words = llmos.load(result.checkpoint).tag("今天记者参观城市。")[0]
    assert [w["text"] for w in words] == ["今天", "记者", "参观", "城市", "。"]

    unsplit = finetune(config(encoder, dataset, tmp_path, "name=unsplit", "data.split_cjk=false"))
    report = json.loads((unsplit.run_dir / "report.json").read_text())
    assert report["test"]["unrepresentable_spans"] == 50  # one verb per sentence
    assert report["test"]["recall"] <= 0.8  # 50 of 250 gold words can never be found
    assert (
        load_tokenizer(unsplit.checkpoint).to_str() == read_checkpoint(encoder).tokenizer.to_str()
    )
