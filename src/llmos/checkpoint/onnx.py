"""ONNX export of encoder checkpoints (classifiers, taggers, sentence-embedding models).

``export_onnx(checkpoint, out_dir)`` writes ``model.onnx`` (inputs ``input_ids``,
``token_type_ids``, ``attention_mask``, all int64 (batch, sequence) with both axes dynamic) and
copies ``config.json``, ``tokenizer.json`` and ``task.json`` beside it, so the directory is
self-contained for onnxruntime. The output is ``logits`` (classification: (batch, labels);
tagging: (batch, sequence, labels)) or ``embeddings`` (batch, hidden) for embedding and
pretrained encoders, pooled and normalized as the checkpoint says.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmos.checkpoint.io import (
    CONFIG_FILE,
    TASK_FILE,
    TOKENIZER_FILE,
    atomic_directory,
    load_state_dict_strict,
    read_config,
    read_task,
    read_weights,
    require_unquantized,
)
from llmos.errors import CheckpointError

log = logging.getLogger("llmos.checkpoint")

INPUTS = ["input_ids", "token_type_ids", "attention_mask"]


class EmbeddingHead(nn.Module):
    """Encoder -> pooled (and normalized) sentence vectors, as one graph."""

    def __init__(self, encoder: nn.Module, pooling: str, normalize: bool) -> None:
        super().__init__()
        self.encoder, self.pooling, self.normalize = encoder, pooling, normalize

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        from llmos.inference.embed import pool

        h = self.encoder(input_ids, token_type_ids, attention_mask)
        v = pool(h, attention_mask, self.pooling)
        return nn.functional.normalize(v, dim=-1) if self.normalize else v


def exportable(path: Path) -> tuple[nn.Module, str, dict[str, Any] | None]:
    """The module to export for a checkpoint, and its output name."""
    from llmos.inference.pipeline import build_model

    cfg = read_config(path)
    if cfg.model_type == "gpt":
        raise CheckpointError(f"{path}: ONNX export covers encoders; this is a GPT")
    require_unquantized(path, cfg, "ONNX export")
    task = read_task(path)
    model = build_model(cfg, task, path)
    load_state_dict_strict(model, read_weights(path))
    model.eval()
    kind = task.get("task") if task else None
    if kind in ("classification", "tagging"):
        return model, "logits", task
    settings = task or {}
    head = EmbeddingHead(
        model.bert, settings.get("pooling", "mean"), bool(settings.get("normalize", True))
    )
    return head.eval(), "embeddings", task


def export_onnx(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Export an encoder checkpoint to ``out_dir/model.onnx`` (written atomically)."""
    checkpoint = Path(checkpoint)
    module, output, _ = exportable(checkpoint)
    example = torch.randint(5, 50, (2, 8))
    args = (example, torch.zeros_like(example), torch.ones_like(example))
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("sequence", min=2, max=read_config(checkpoint).max_position)
    shapes = {name: {0: batch, 1: seq} for name in INPUTS}

    def fill(tmp: Path) -> None:
        torch.onnx.export(
            module,
            args,
            str(tmp / "model.onnx"),
            input_names=INPUTS,
            output_names=[output],
            dynamic_shapes=shapes,
            dynamo=True,
            external_data=False,  # one self-contained file (models here are far below 2 GB)
            verbose=False,
        )
        for name in (CONFIG_FILE, TOKENIZER_FILE, TASK_FILE):
            if (checkpoint / name).is_file():
                shutil.copyfile(checkpoint / name, tmp / name)

    out = atomic_directory(Path(out_dir), fill)
    log.info("exported %s -> %s (%s)", checkpoint, out / "model.onnx", output)
    return out
