"""ONNX export of encoder checkpoints (classifiers, taggers, sentence-embedding models).

``export_onnx(checkpoint, out_dir)`` writes ``model.onnx`` (inputs ``input_ids``,
``token_type_ids``, ``attention_mask``, all int64 (batch, sequence) with both axes dynamic) and
copies ``config.json``, ``tokenizer.json`` and ``task.json`` beside it, so the directory is
self-contained for onnxruntime. The output is ``logits`` (classification: (batch, labels);
tagging: (batch, sequence, labels)) or ``embeddings`` (batch, hidden) for embedding and
pretrained encoders, pooled and normalized as the checkpoint says.

:class:`~llmos.inference.onnx.OnnxModel` runs such a directory.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch
from torch import nn

from llmos.checkpoint.io import (
    CONFIG_FILE,
    ONNX_FILE,
    TASK_FILE,
    TOKENIZER_FILE,
    Checkpoint,
    load_state_dict_strict,
    read_checkpoint,
    require_unquantized,
)
from llmos.checkpoint.task import Classification, Embedding, Tagging
from llmos.errors import CheckpointError
from llmos.files import atomic_directory
from llmos.inference.embed import pool
from llmos.inference.load import build_model

log = logging.getLogger("llmos.inference")

INPUTS = ["input_ids", "token_type_ids", "attention_mask"]


class EmbeddingHead(nn.Module):
    """Encoder -> pooled (and normalized) sentence vectors, as one graph."""

    def __init__(self, encoder: nn.Module, pooling: str, normalize: bool) -> None:
        super().__init__()
        self.encoder, self.pooling, self.normalize = encoder, pooling, normalize

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """(B, T) ids, types and mask -> (B, C) sentence vectors."""
        h = self.encoder(input_ids, token_type_ids, attention_mask)
        v = pool(h, attention_mask, self.pooling)
        return nn.functional.normalize(v, dim=-1) if self.normalize else v


def exportable(path: str | Path | Checkpoint) -> tuple[nn.Module, str, Checkpoint]:
    """The module to export for a checkpoint, its output name, and the checkpoint."""
    ckpt = path if isinstance(path, Checkpoint) else read_checkpoint(path)
    if ckpt.is_decoder:
        raise CheckpointError(f"{ckpt.path}: ONNX export covers encoders; this is a GPT")
    require_unquantized(ckpt.path, ckpt.config, "ONNX export")
    if isinstance(ckpt.task, Tagging) and ckpt.task.char_tags:
        raise CheckpointError(
            f"{ckpt.path}: ONNX export does not cover character taggers (task.json "
            "char_tags: true); serve the llmos checkpoint itself"
        )
    if isinstance(ckpt.task, Tagging) and ckpt.task.crf:
        # The graph would give emissions only, and the ONNX runtime path decodes without the
        # learned transitions: its spans would silently differ from the checkpoint's.
        raise CheckpointError(
            f"{ckpt.path}: ONNX export does not cover taggers with a CRF head (task.json "
            "crf: true); serve the llmos checkpoint itself"
        )
    model = build_model(ckpt.config, ckpt.task, ckpt.path)
    load_state_dict_strict(model, ckpt.weights())
    model.eval()
    if isinstance(ckpt.task, Classification | Tagging):
        return model, "logits", ckpt
    # An embedding model pools as its task.json says; a pretrained encoder with the defaults.
    spec = ckpt.task if isinstance(ckpt.task, Embedding) else Embedding()
    return EmbeddingHead(model.bert, spec.pooling, spec.normalize).eval(), "embeddings", ckpt


def export_onnx(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Export an encoder checkpoint to ``out_dir/model.onnx`` (written atomically)."""
    module, output, ckpt = exportable(checkpoint)
    example = torch.randint(5, 50, (2, 8))
    args = (example, torch.zeros_like(example), torch.ones_like(example))
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("sequence", min=2, max=ckpt.config.max_position)
    shapes = {name: {0: batch, 1: seq} for name in INPUTS}

    def fill(tmp: Path) -> None:
        torch.onnx.export(
            module,
            args,
            str(tmp / ONNX_FILE),
            input_names=INPUTS,
            output_names=[output],
            dynamic_shapes=shapes,
            dynamo=True,
            external_data=False,  # one self-contained file (models here are far below 2 GB)
            verbose=False,
        )
        for name in (CONFIG_FILE, TOKENIZER_FILE, TASK_FILE):
            if (ckpt.path / name).is_file():
                shutil.copyfile(ckpt.path / name, tmp / name)

    out = atomic_directory(Path(out_dir), fill)
    log.info("exported %s -> %s (%s)", ckpt.path, out / ONNX_FILE, output)
    return out
