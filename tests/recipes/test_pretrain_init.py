"""``llmos pretrain`` with ``init``: an embedding encoder without an MLM head gets one, its
encoder frozen bit for bit (``freeze_layers``), so the result embeds exactly as before and
fill-mask works on it; a second stage unfreezes the top layer only; config mistakes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from inference.test_cloze import sentencepiece_like

import llmos
from llmos.checkpoint.io import read_checkpoint, save_checkpoint
from llmos.checkpoint.task import Classification, Embedding
from llmos.config import PretrainConfig, load_config
from llmos.config.model import BertConfig
from llmos.data.corpus import TokenizedCorpus, concat_corpora
from llmos.errors import ConfigError
from llmos.models.bert import BertForPreTraining, BertForSequenceClassification
from llmos.recipes.pretrain import pretrain
from llmos.text.tokenizer import load_tokenizer
from llmos.train.tasks.mlm import special_ids_for_mlm

SIZES = {"hidden_size": 16, "num_layers": 2, "num_heads": 2, "intermediate_size": 32}
TEXTS = ["今天我们学习经济。", "the city is big"]


@pytest.fixture(scope="module")
def bare(tiny_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init 2-layer embedding encoder (E5's prefixes) without pretraining heads."""
    tok = load_tokenizer(tiny_tokenizer)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=tok.get_vocab_size(), max_position=64, heads="none", pooler=False, **SIZES
    )
    spec = Embedding(query_prefix="query: ", passage_prefix="passage: ")
    out = tmp_path_factory.mktemp("init") / "bare"
    return save_checkpoint(out, BertForPreTraining(cfg), cfg, tok, spec)


def config(init: Path, corpus: Path, out: Path, name: str, *more: str) -> PretrainConfig:
    return load_config(
        PretrainConfig,
        None,
        [
            f"name={name}",
            f"init={init}",
            f"out_dir={out}",
            f"data.corpus={corpus}+{corpus}",
            "data.objective=mlm",
            "model.heads=mlm",
            "data.max_length=32",
            "train.max_steps=3",
            "train.batch_size=8",
            "train.progress=false",
            "train.precision=fp32",
            "optim.lr=0.01",
            *more,
        ],
    )


def test_a_frozen_encoder_gets_an_mlm_head_and_still_embeds_the_same(
    bare, tiny_corpus, tmp_path
) -> None:
    result = pretrain(config(bare, tiny_corpus, tmp_path, "head", "freeze_layers=2"))
    ckpt = read_checkpoint(result.checkpoint)
    assert ckpt.config.heads == "mlm" and ckpt.config.num_layers == 2
    before, after = read_checkpoint(bare).weights(), ckpt.weights()
    assert set(after) - set(before) == {
        "mlm.dense.weight",
        "mlm.dense.bias",
        "mlm.norm.weight",
        "mlm.norm.bias",
        "mlm.bias",
    }
    for k, v in before.items():  # every encoder weight, bit for bit
        assert torch.equal(after[k], v), k
    assert after["mlm.bias"].abs().sum() > 0  # the head learned (its bias starts at zero)
    # task.json: the encoder's own spec, plus where it started and what was frozen
    assert isinstance(ckpt.task, Embedding) and ckpt.task.query_prefix == "query: "
    assert ckpt.task.extra["init"] == str(bare)
    assert ckpt.task.extra["freeze_layers"] == 2
    assert ckpt.task.extra["init_digest"].startswith("sha256:")
    pipe, old = llmos.load(result.checkpoint), llmos.load(bare)
    assert pipe.has_mlm_head and not old.has_mlm_head
    assert np.array_equal(pipe.embed(TEXTS, kind="query"), old.embed(TEXTS, kind="query"))
    filled = pipe.fill_mask("我们[MASK]习经济。", top_k=3)
    assert len(filled) == 3 and all(
        set(r) == {"token", "token_id", "score", "sequence"} for r in filled
    )
    assert filled[0]["score"] >= filled[1]["score"] >= filled[2]["score"]
    with pytest.raises(llmos.LlmosError, match="no masked-LM head"):
        old.fill_mask("我们[MASK]习经济。")

    # stage 2: the top layer (and the head) train; the embeddings and layer 0 stay
    top = pretrain(config(result.checkpoint, tiny_corpus, tmp_path, "top", "freeze_layers=1"))
    w = read_checkpoint(top.checkpoint).weights()
    for k, v in after.items():
        frozen = k.startswith(("bert.embeddings.", "bert.layers.0."))
        assert torch.equal(w[k], v) == frozen, k


def test_concat_corpora_offsets_sentences_and_documents() -> None:
    a = TokenizedCorpus(np.array([1, 2, 3]), np.array([0, 2, 3]), np.array([0, 2]))
    b = TokenizedCorpus(np.array([4, 5]), np.array([0, 1, 2]), np.array([0, 1, 2]))
    c = concat_corpora([a, b])
    assert c.ids.tolist() == [1, 2, 3, 4, 5]
    assert c.sent_bounds.tolist() == [0, 2, 3, 4, 5]
    assert c.doc_bounds.tolist() == [0, 2, 3, 4]
    assert [c.sentence(i).tolist() for i in range(4)] == [[1, 2], [3], [4], [5]]


def test_random_replacements_skip_the_leading_specials_of_an_xlmr_vocabulary() -> None:
    sp = special_ids_for_mlm(sentencepiece_like())  # <s> <pad> </s> <unk> ... <mask> last
    assert (sp.cls, sp.pad, sp.sep, sp.first_normal) == (0, 1, 2, 4)
    assert sp.mask == sp.vocab_size - 1


def test_config_mistakes(bare, tiny_corpus, tiny_tokenizer, tmp_path) -> None:
    with pytest.raises(ConfigError, match="freeze_layers keeps the first N layers of the init"):
        load_config(PretrainConfig, None, ["freeze_layers=2"])
    with pytest.raises(ConfigError, match="init continues a BERT encoder's pretraining"):
        load_config(PretrainConfig, None, ["init=x", "model.model_type=gpt"])
    tok = load_tokenizer(tiny_tokenizer)
    cfg = BertConfig(vocab_size=tok.get_vocab_size(), max_position=64, **SIZES)
    clf = save_checkpoint(
        tmp_path / "clf",
        BertForSequenceClassification(cfg, 2),
        cfg,
        tok,
        Classification(("a", "b")),
    )
    with pytest.raises(ConfigError, match="is a classification model; continue pretraining"):
        pretrain(config(clf, tiny_corpus, tmp_path, "clf"))
    with pytest.raises(ConfigError, match="freeze_layers: 3 is more than the 2 layers"):
        pretrain(config(bare, tiny_corpus, tmp_path, "deep", "freeze_layers=3"))
