"""Classification inference: texts -> token ids -> logits in length-sorted batches."""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from llmos.data.batching import pad_batch, run_length_sorted

log = logging.getLogger("llmos.inference")


INPUTS = ("input_ids", "token_type_ids", "attention_mask")  # the encoder's call, in order

_TRUNCATING: dict[tuple[int, int], tuple[Tokenizer, Tokenizer]] = {}
_TRUNCATING_LOCK = threading.Lock()


def truncating(tokenizer: Tokenizer, max_length: int) -> Tokenizer:
    """A copy of ``tokenizer`` that truncates to ``max_length`` (truncation is tokenizer state,
    so the caller's own tokenizer is left as it is). Copies are kept, a few at a time: making
    one serializes the whole vocabulary (milliseconds), too slow for every request."""
    key = (id(tokenizer), max_length)
    with _TRUNCATING_LOCK:
        hit = _TRUNCATING.get(key)
        if hit is not None and hit[0] is tokenizer:  # the original is held, so ids stay unique
            return hit[1]
        tok = Tokenizer.from_str(tokenizer.to_str())
        tok.enable_truncation(max_length, strategy="longest_first")
        if len(_TRUNCATING) >= 32:
            _TRUNCATING.pop(next(iter(_TRUNCATING)))
        _TRUNCATING[key] = (tokenizer, tok)
        return tok


def encode_texts(
    tokenizer: Tokenizer, texts: list[str], texts_b: list[str | None] | None, max_length: int
) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Encode single texts or pairs (``[CLS] A [SEP] B [SEP]``), truncated longest-first to
    ``max_length`` tokens.

    Returns:
        (token ids per text, token types per text, number of texts that were truncated).
    """
    tok = truncating(tokenizer, max_length)
    if texts_b is not None and any(b is not None for b in texts_b):
        inputs: list[Any] = [(a, b or "") for a, b in zip(texts, texts_b, strict=True)]
    else:
        inputs = list(texts)
    encs = tok.encode_batch(inputs)
    ids = [np.asarray(e.ids, dtype=np.int64) for e in encs]
    types = [np.asarray(e.type_ids, dtype=np.int64) for e in encs]
    truncated = sum(1 for e in encs if e.overflowing)
    return ids, types, truncated


@torch.inference_mode()
def batched_logits(
    model: torch.nn.Module,
    ids: list[np.ndarray],
    types: list[np.ndarray] | None,
    pad_id: int,
    batch_size: int = 32,
) -> torch.Tensor:
    """Run ``model`` over all inputs in batches of similar length; logits in input order."""
    if not ids:
        return torch.empty(0)
    device = next(model.parameters()).device

    def forward(b: dict[str, torch.Tensor | None]) -> torch.Tensor:
        args = [b[k].to(device) if b[k] is not None else None for k in INPUTS]
        return model(*args).float().cpu()  # (B, K) logits

    def pad(idx: np.ndarray) -> dict[str, torch.Tensor | None]:
        return pad_batch([ids[i] for i in idx], [types[i] for i in idx] if types else None, pad_id)

    return torch.stack(run_length_sorted(ids, batch_size, pad, forward))
