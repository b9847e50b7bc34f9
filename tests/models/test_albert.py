"""ALBERT-style encoder options: cross-layer sharing (stored once) and factorized embeddings,
through pretraining, fine-tuning, checkpoints and export refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llmos.checkpoint.io import read_config, read_weights
from llmos.config import FinetuneConfig, PretrainConfig, load_config
from llmos.config.model import BertConfig
from llmos.errors import CheckpointError, ConfigError
from llmos.inference.load import load_pipeline
from llmos.models.bert import BertForPreTraining
from llmos.recipes.convert import export_hf
from llmos.recipes.finetune import finetune
from llmos.recipes.pretrain import pretrain

BASE = dict(
    vocab_size=100,
    hidden_size=32,
    num_layers=4,
    num_heads=4,
    intermediate_size=64,
    max_position=32,
    dropout=0.0,
    attention_dropout=0.0,
)


def test_shared_layers_equal_a_stack_of_copies_and_are_stored_once() -> None:
    torch.manual_seed(0)
    shared = BertForPreTraining(BertConfig(**BASE, share_layers=True)).eval()
    stack = BertForPreTraining(BertConfig(**BASE)).eval()
    sd = shared.state_dict()
    layer0 = {k.split("layers.0.", 1)[1]: v for k, v in sd.items() if "layers.0." in k}
    for i in range(4):  # every layer of the stack gets the shared layer's weights
        stack.bert.layers[i].load_state_dict(layer0)
    rest = {k: v for k, v in sd.items() if "layers." not in k}
    stack.load_state_dict(rest, strict=False)
    ids = torch.randint(5, 100, (2, 9))
    with torch.no_grad():
        a, b = shared(ids), stack(ids)
    assert torch.allclose(a.mlm_logits, b.mlm_logits, atol=1e-5)
    assert not any("layers.1." in k for k in sd)
    n_shared = sum(p.numel() for p in shared.parameters())
    n_stack = sum(p.numel() for p in stack.parameters())
    per_layer = sum(p.numel() for p in stack.bert.layers[0].parameters())
    assert n_stack - n_shared == 3 * per_layer


def test_factorized_embeddings_project_to_the_hidden_size() -> None:
    torch.manual_seed(1)
    model = BertForPreTraining(BertConfig(**BASE, embedding_size=8)).eval()
    emb = model.bert.embeddings
    assert emb.tok.weight.shape == (100, 8) and emb.project.weight.shape == (32, 8)
    ids = torch.randint(5, 100, (2, 7))
    with torch.no_grad():
        manual = emb.project(emb.norm(emb.tok(ids) + emb.pos.weight[:7] + emb.seg.weight[0]))
        assert torch.allclose(emb(ids, None), manual, atol=1e-6)
        out = model(ids)
    assert out.mlm_logits.shape == (2, 7, 100)  # decoder tied to the 8-wide embeddings
    full = BertForPreTraining(BertConfig(**BASE))
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in full.parameters())
    with pytest.raises(ConfigError, match="embedding_size must be in"):
        BertConfig(**BASE, embedding_size=64)


def test_albert_pretrains_finetunes_reloads_and_refuses_hf_export(
    tiny_corpus: Path, tiny_tokenizer: Path, tmp_path: Path
) -> None:
    cfg = load_config(
        PretrainConfig,
        None,
        [
            f"data.corpus={tiny_corpus}",
            f"data.tokenizer={tiny_tokenizer}",
            f"out_dir={tmp_path}",
            "name=albert",
            "model.hidden_size=32",
            "model.num_layers=3",
            "model.num_heads=2",
            "model.intermediate_size=64",
            "model.embedding_size=16",
            "model.share_layers=true",
            "data.max_length=32",
            "train.max_steps=4",
            "train.batch_size=8",
            "train.progress=false",
            "train.precision=fp32",
        ],
    )
    ckpt = pretrain(cfg).checkpoint
    stored = read_config(ckpt)
    assert stored.share_layers and stored.embedding_size == 16
    weights = read_weights(ckpt)
    assert not any("layers.1." in k for k in weights)
    data = tmp_path / "data"
    data.mkdir()
    rows = "text\tlabel\n" + "".join(
        f"{t}\t{'pos' if i % 2 else 'neg'}\n"
        for i, t in enumerate(
            ["今天老师学习经济", "记者参观城市", "我们喜欢音乐", "他保护环境"] * 8
        )
    )
    for split in ("train", "valid", "test"):
        (data / f"{split}.tsv").write_text(rows, encoding="utf-8")
    ft = load_config(
        FinetuneConfig,
        None,
        [
            f"init={ckpt}",
            f"data.dataset={data}",
            f"out_dir={tmp_path}",
            "name=albert-clf",
            "train.max_steps=4",
            "train.batch_size=8",
            "train.eval_every=2",
            "train.progress=false",
            "train.precision=fp32",
        ],
    )
    result = finetune(ft)
    assert "accuracy" in json.loads((result.run_dir / "report.json").read_text())["test"]
    tuned = read_weights(result.checkpoint)
    assert not any("layers.1." in k for k in tuned)  # the classifier keeps the sharing
    key = "bert.layers.0.ffn.up.weight"
    assert not torch.equal(tuned[key], weights[key])  # and fine-tuning moved the shared layer
    pipe = load_pipeline(result.checkpoint)
    assert pipe.config.share_layers and pipe.classify(["今天老师学习经济"])[0]["label"] in (
        "pos",
        "neg",
    )
    with pytest.raises(CheckpointError, match="ALBERT-style options"):
        export_hf(ckpt, tmp_path / "hf")
