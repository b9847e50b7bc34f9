"""Hugging Face <-> llmos for XLNet: its ``config.json`` read, the checks of what this XLNet
builds, and the weight map both ways. It imports no ``transformers``: the ``transformers``
config and classes an XLNet exports to are built in :mod:`llmos.checkpoint.hf`.

llmos's XLNet keeps HF's parameter names and shapes (``models/xlnet.py``), so the map is the
identity, less two things: a bare ``XLNetModel`` saves its keys without the ``transformer.``
prefix, and the LM head's ``lm_loss.weight`` is the word embeddings (tied: stored once).
"""

from __future__ import annotations

from typing import Any

import torch

from llmos.config.model import XLNetConfig
from llmos.errors import CheckpointError

TIED = "lm_loss.weight"
PREFIX = "transformer."
# Keys of the heads that sit beside the encoder in HF's XLNet classes.
HEAD_PREFIXES = ("lm_loss.", "sequence_summary.", "logits_proj.", "classifier.")
# HF options that change the architecture and that llmos's XLNet does not build.
UNSUPPORTED = {"attn_type": "bi", "bi_data": False, "same_length": False}
# The sequence summary of a classifier that llmos's XLNet builds (HF's defaults): the last
# token, a projection to the hidden size, tanh.
SUMMARY = {
    "summary_type": "last",
    "summary_use_proj": True,
    "summary_activation": "tanh",
    "summary_proj_to_labels": False,
}


def xlnet_config_from_hf(c: dict[str, Any], source: str) -> XLNetConfig:
    """An HF XLNet ``config.json`` object -> :class:`XLNetConfig`, refusing the options this
    XLNet does not build (a clear error, not different outputs)."""
    for key, want in UNSUPPORTED.items():
        if c.get(key, want) != want:
            raise CheckpointError(
                f"{source}: {key} {c[key]!r} is not supported (llmos's XLNet is {key}={want!r})"
            )
    d_model, n_head = c.get("d_model", 1024), c.get("n_head", 16)
    if c.get("d_head") not in (None, d_model // n_head):
        raise CheckpointError(f"{source}: d_head must be d_model / n_head, got {c['d_head']}")
    if c.get("ff_activation", "gelu") not in ("gelu", "relu", "gelu_new"):
        raise CheckpointError(
            f"{source}: ff_activation {c['ff_activation']!r} is not supported (gelu, relu, "
            "gelu_new)"
        )
    return XLNetConfig(
        vocab_size=c.get("vocab_size", 32000),
        hidden_size=d_model,
        num_layers=c.get("n_layer", 24),
        num_heads=n_head,
        intermediate_size=c.get("d_inner", 4096),
        dropout=c.get("dropout", 0.1),
        layer_norm_eps=c.get("layer_norm_eps", 1e-12),
        initializer_range=c.get("initializer_range", 0.02),
        pad_token_id=c.get("pad_token_id") if c.get("pad_token_id") is not None else 5,
        mem_len=c.get("mem_len") or 0,
        clamp_len=c.get("clamp_len", -1),
        ff_activation=c.get("ff_activation", "gelu"),
    )


def check_sequence_summary(c: dict[str, Any], source: str) -> None:
    """Refuse an HF XLNet classifier whose ``config.json`` asks for another sequence summary
    than the one llmos builds (:data:`SUMMARY`)."""
    for key, want in SUMMARY.items():
        if c.get(key, want) != want:
            raise CheckpointError(
                f"{source}: {key} {c[key]!r} is not supported (llmos's XLNet classifier is "
                f"{key}={want!r})"
            )


def xlnet_from_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF XLNet state dict (any head class, or a bare ``XLNetModel``) -> llmos names: bare
    encoder keys get the ``transformer.`` prefix, the tied ``lm_loss.weight`` is dropped."""
    out = {}
    for key, value in sd.items():
        if key == TIED:
            continue
        if not key.startswith(PREFIX) and not key.startswith(HEAD_PREFIXES):
            key = PREFIX + key
        out[key] = value
    return out


def xlnet_to_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """llmos XLNet state dict -> HF's: the same keys, with ``lm_loss.weight`` written out when
    the checkpoint has an LM head (transformers ties it on load)."""
    out = {k: v for k, v in sd.items() if k != TIED}
    if "lm_loss.bias" in out:
        out[TIED] = out[PREFIX + "word_embedding.weight"]
    return out
