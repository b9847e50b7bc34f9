"""ONNX export: onnxruntime outputs equal PyTorch's on batch and sequence sizes other than the
ones traced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from llmos.checkpoint.io import read_config, save_checkpoint
from llmos.config.model import BertConfig
from llmos.errors import CheckpointError
from llmos.inference.onnx_export import export_onnx, exportable
from llmos.models.bert import BertForPreTraining, BertForSequenceClassification
from llmos.text.tokenizer import load_tokenizer

ort = pytest.importorskip("onnxruntime")


def run_both(path: Path, out: Path) -> None:
    module, _, _ = exportable(path)
    session = ort.InferenceSession(str(out / "model.onnx"))
    vocab = read_config(path).vocab_size
    for B, T in [(1, 3), (4, 17), (7, 30)]:
        ids = torch.randint(5, vocab, (B, T))
        types = torch.zeros_like(ids)
        mask = torch.ones_like(ids)
        mask[0, max(2, T // 2) :] = 0
        got = session.run(
            None,
            {
                "input_ids": ids.numpy(),
                "token_type_ids": types.numpy(),
                "attention_mask": mask.numpy(),
            },
        )[0]
        with torch.no_grad():
            expected = module(ids, types, mask).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_classifier_and_embedding_exports_match_pytorch(
    tiny_tokenizer: Path, tmp_path: Path
) -> None:
    tok = load_tokenizer(tiny_tokenizer)
    cfg = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        max_position=64,
    )
    torch.manual_seed(0)
    clf = save_checkpoint(
        tmp_path / "clf",
        BertForSequenceClassification(cfg, 3),
        cfg,
        tok,
        {"task": "classification", "labels": ["a", "b", "c"], "max_length": 64},
    )
    out = export_onnx(clf, tmp_path / "clf-onnx")
    assert {p.name for p in out.iterdir()} == {
        "model.onnx",
        "config.json",
        "tokenizer.json",
        "task.json",
    }
    run_both(clf, out)
    emb = save_checkpoint(
        tmp_path / "emb",
        BertForPreTraining(cfg),
        cfg,
        tok,
        {"task": "embedding", "pooling": "mean", "normalize": True},
    )
    out = export_onnx(emb, tmp_path / "emb-onnx")
    run_both(emb, out)


def test_gpt_export_is_refused(tmp_path: Path) -> None:
    from llmos.config.model import GPTConfig
    from llmos.models.gpt import GPT

    cfg = GPTConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    path = save_checkpoint(tmp_path / "gpt", GPT(cfg), cfg)
    with pytest.raises(CheckpointError, match="ONNX export covers encoders"):
        export_onnx(path, tmp_path / "x")
