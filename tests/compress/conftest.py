"""Tiny checkpoints for the vocabulary-trimming tests: a random-init BERT with an XLM-R-like
SentencePiece Unigram tokenizer (Metaspace, ``<s> A </s>``, ``<mask>`` last) and one with our
WordPiece tokenizer, plus a corpus that uses only part of their vocabularies."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import trainers as hf_trainers

from llmos.checkpoint.io import save_checkpoint
from llmos.checkpoint.task import Embedding
from llmos.config.model import BertConfig
from llmos.models.bert import BertForPreTraining
from llmos.text.tokenizer import train_wordpiece

COMMON_ZH = ["我们", "今天", "北京", "大学", "学习", "文化", "经济", "发展", "城市", "老师"]
COMMON_EN = ["the", "students", "learn", "about", "culture", "city", "today", "teacher"]
# In the tokenizers' training text only: their pieces exist but the counted corpus never uses
# them, so held-out text with them loses pieces.
RARE_ZH = ["鑫淼", "龘靐", "燚"]
RARE_EN = ["zebra", "quixotic", "jukebox"]


def sentences(words_zh: list[str], words_en: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        zh = "".join(rng.choice(words_zh) for _ in range(rng.randint(2, 5)))
        en = " ".join(rng.choice(words_en) for _ in range(rng.randint(2, 5)))
        out.append(f"{zh}，{en}。" if rng.random() < 0.5 else f"{en} {zh}!")
    return out


def tokenizer_text() -> list[str]:
    return sentences(COMMON_ZH + RARE_ZH, COMMON_EN + RARE_EN, 400, seed=1)


@pytest.fixture(scope="session")
def trim_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/valid without the rare words; test with them (held out, partly uncovered)."""
    root = tmp_path_factory.mktemp("corpus") / "tiny"
    root.mkdir()
    (root / "train.txt").write_text("\n".join(sentences(COMMON_ZH, COMMON_EN, 60, 2)) + "\n")
    (root / "valid.txt").write_text("\n".join(sentences(COMMON_ZH, COMMON_EN, 10, 3)) + "\n")
    held_out = [*sentences(COMMON_ZH, COMMON_EN, 5, 4), "我们鑫淼学习", "the zebra city"]
    (root / "test.txt").write_text("\n".join(held_out) + "\n")
    return root


def unigram_tokenizer() -> Tokenizer:
    """A SentencePiece Unigram tokenizer laid out as XLM-R's: ``<s> <pad> </s> <unk>`` first,
    ``<mask>`` the last piece of the model's vocabulary."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = hf_trainers.UnigramTrainer(
        vocab_size=300,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_text(), trainer=trainer)
    d = json.loads(tok.to_str())
    d["model"]["vocab"].append(["<mask>", 0.0])
    mask_id = len(d["model"]["vocab"]) - 1
    d["added_tokens"].append(
        {
            "id": mask_id,
            "content": "<mask>",
            "single_word": False,
            "lstrip": True,  # as XLM-R: "a <mask>" masks the word with its space
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
    )
    tok = Tokenizer.from_str(json.dumps(d))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return tok


def tiny_bert(vocab_size: int, pad: int, heads: str) -> tuple[BertForPreTraining, BertConfig]:
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        max_position=64,
        pad_token_id=pad,
        heads=heads,  # type: ignore[arg-type]
        pooler=heads == "mlm+nsp",
    )
    model = BertForPreTraining(cfg)
    # A non-zero MLM bias, so that slicing it is tested too.
    if model.mlm is not None:
        torch.nn.init.normal_(model.mlm.bias)
    return model.eval(), cfg


@pytest.fixture(scope="session")
def unigram_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pretrained (MLM head, no task.json) BERT with the Unigram tokenizer."""
    tok = unigram_tokenizer()
    model, cfg = tiny_bert(tok.get_vocab_size(), pad=1, heads="mlm")
    return save_checkpoint(tmp_path_factory.mktemp("uni") / "ckpt", model, cfg, tok)


@pytest.fixture(scope="session")
def wordpiece_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedding BERT (no MLM head, task.json with extra keys) with our WordPiece, padding
    every text to 24 tokens."""
    root = tmp_path_factory.mktemp("wp")
    text = root / "text.txt"
    text.write_text("\n".join(tokenizer_text()) + "\n")
    # Small enough that English words split into ## continuation pieces.
    tok = train_wordpiece([text], 110, min_frequency=1)
    # Padding and truncation in the file, as all-MiniLM-L6-v2's (pads to 128).
    tok.enable_padding(pad_id=0, pad_token="[PAD]", length=24)
    tok.enable_truncation(max_length=24)
    model, cfg = tiny_bert(tok.get_vocab_size(), pad=0, heads="none")
    task = Embedding(pooling="mean", normalize=True, extra={"prefixes": {"query": "query: "}})
    return save_checkpoint(root / "ckpt", model, cfg, tok, task)


@pytest.fixture
def tiny_parts() -> tuple:
    """:func:`tiny_bert` and :func:`unigram_tokenizer`, for tests that build their own
    checkpoint (a module named ``conftest`` cannot be imported by name: pytest has several)."""
    return tiny_bert, unigram_tokenizer
