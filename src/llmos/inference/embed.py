"""Sentence embeddings: texts -> encoder hidden states -> one pooled (normalized) vector each."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from llmos.checkpoint.task import POOLINGS
from llmos.data.batching import pad_batch, run_length_sorted

Pooling = Literal["mean", "cls", "max"]
__all__ = ["POOLINGS", "Pooling", "embed_ids", "pool"]


def pool(hidden: torch.Tensor, mask: torch.Tensor | None, how: str) -> torch.Tensor:
    """(B, T, C) hidden states -> (B, C): the mean or the max over real tokens (``mask`` 1),
    or the first ([CLS]) token, as sentence-transformers' Pooling module does."""
    if how == "cls":
        return hidden[:, 0]
    m = torch.ones(hidden.shape[:2], device=hidden.device) if mask is None else mask.float()
    if how == "mean":
        total = (hidden * m[..., None]).sum(1)
        return total / m.sum(1, keepdim=True).clamp(min=1e-9)
    if how == "max":
        return hidden.masked_fill(m[..., None] == 0, -1e9).max(1).values
    raise ValueError(f"pooling must be one of {POOLINGS}, got {how!r}")


@torch.inference_mode()
def embed_ids(
    encoder: torch.nn.Module,
    ids: list[np.ndarray],
    types: list[np.ndarray],
    pad_id: int,
    pooling: str,
    normalize: bool,
    batch_size: int = 32,
) -> np.ndarray:
    """(N, C) float32 embeddings of token-id sequences, batched by similar length, in input
    order. ``encoder`` maps (ids, types, mask) to (B, T, C) hidden states."""
    if not ids:
        return np.zeros((0, 0), dtype=np.float32)
    device = next(encoder.parameters()).device

    def pad(idx: np.ndarray) -> dict[str, torch.Tensor | None]:
        return pad_batch([ids[i] for i in idx], [types[i] for i in idx], pad_id)

    def forward(b: dict[str, torch.Tensor | None]) -> np.ndarray:
        mask = b["attention_mask"].to(device) if b["attention_mask"] is not None else None
        h = encoder(b["input_ids"].to(device), b["token_type_ids"].to(device), mask).float()
        v = pool(h, mask, pooling)  # (B, C)
        if normalize:
            v = torch.nn.functional.normalize(v, dim=-1)
        return v.cpu().numpy()

    return np.stack(run_length_sorted(ids, batch_size, pad, forward)).astype(np.float32)
