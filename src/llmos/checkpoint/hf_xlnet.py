"""Hugging Face <-> llmos for XLNet: configs both ways, the weight map, and the
``transformers`` class a checkpoint exports to (the XLNet part of :mod:`llmos.checkpoint.hf`,
and like it importing ``transformers`` only inside the export functions).

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


def hf_xlnet_config(
    cfg: XLNetConfig,
    labels: list[str] | None = None,
    token_ids: dict[str, int | None] | None = None,
) -> Any:
    """The ``transformers.XLNetConfig`` of ``cfg``; ``labels`` name a classifier's outputs,
    ``token_ids`` (:func:`~llmos.text.tokenizer.special_ids`) give pad/bos/eos."""
    from transformers import XLNetConfig as HFXLNetConfig

    ids = token_ids or {}
    extra: dict[str, Any] = {}
    if labels is not None:
        extra = {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)},
        }
    return HFXLNetConfig(
        vocab_size=cfg.vocab_size,
        d_model=cfg.hidden_size,
        n_layer=cfg.num_layers,
        n_head=cfg.num_heads,
        d_inner=cfg.intermediate_size,
        ff_activation=cfg.ff_activation,
        dropout=cfg.dropout,
        summary_last_dropout=cfg.dropout,
        layer_norm_eps=cfg.layer_norm_eps,
        initializer_range=cfg.initializer_range,
        mem_len=cfg.mem_len or None,
        clamp_len=cfg.clamp_len,
        pad_token_id=cfg.pad_token_id if ids.get("pad") is None else ids["pad"],
        bos_token_id=ids.get("bos"),
        eos_token_id=ids.get("eos"),
        **extra,
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


def hf_xlnet_model(cfg: XLNetConfig, kind: str, labels: list[str] | None, ids: dict) -> Any:
    """The ``transformers`` XLNet class (random weights) for an llmos checkpoint: ``kind`` is
    ``lm`` (a pretrained model), ``classification`` or ``tagging``."""
    import transformers as T

    hcfg = hf_xlnet_config(cfg, labels, ids)
    if kind == "classification":
        return T.XLNetForSequenceClassification(hcfg)
    if kind == "tagging":
        return T.XLNetForTokenClassification(hcfg)
    return T.XLNetLMHeadModel(hcfg)
