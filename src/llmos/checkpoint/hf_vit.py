"""Hugging Face <-> llmos for the Vision Transformer: its ``config.json`` read, and the weight
map both ways. It imports no ``transformers`` (tests build HF's ``ViTModel`` themselves).

The map is a template dict, as BERT's in :mod:`llmos.checkpoint.hf`: each HF ``ViTModel`` key
(``{}`` = layer index) names its llmos :class:`~llmos.models.vision.ViTModel` key. The one
transform is BERT's too: HF keeps the query/key/value projections apart, llmos fuses them into
one ``qkv`` (rows q, then k, then v). Strict: an unknown or missing key raises with its name.

HF has two spellings of ViT's keys. transformers 5 names them ``layers.{}.attention.q_proj``,
``mlp.fc1``, ...; checkpoints saved by transformers 4 (every ViT on the Hub) say
``encoder.layer.{}.attention.attention.query``, ``intermediate.dense``, ... and transformers 5
renames them on load (``transformers/conversion_mapping.py``, ``"ViTModel"``). Import reads
both; export writes transformers 5's, or the older ones with ``legacy=True``.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from llmos.config.model import ViTConfig
from llmos.errors import CheckpointError

# HF ViTModel key (transformers 5) -> llmos ViTModel key. No None entries: nothing is dropped.
VIT_KEYS: dict[str, str] = {
    "embeddings.cls_token": "embeddings.cls",
    "embeddings.position_embeddings": "embeddings.pos",
    "embeddings.patch_embeddings.projection.weight": "embeddings.patch.weight",
    "embeddings.patch_embeddings.projection.bias": "embeddings.patch.bias",
    "layers.{}.layernorm_before.weight": "layers.{}.attn_norm.weight",
    "layers.{}.layernorm_before.bias": "layers.{}.attn_norm.bias",
    "layers.{}.attention.o_proj.weight": "layers.{}.attn.proj.weight",
    "layers.{}.attention.o_proj.bias": "layers.{}.attn.proj.bias",
    "layers.{}.layernorm_after.weight": "layers.{}.ffn_norm.weight",
    "layers.{}.layernorm_after.bias": "layers.{}.ffn_norm.bias",
    "layers.{}.mlp.fc1.weight": "layers.{}.ffn.up.weight",
    "layers.{}.mlp.fc1.bias": "layers.{}.ffn.up.bias",
    "layers.{}.mlp.fc2.weight": "layers.{}.ffn.down.weight",
    "layers.{}.mlp.fc2.bias": "layers.{}.ffn.down.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
    "pooler.dense.weight": "pooler.weight",
    "pooler.dense.bias": "pooler.bias",
}
# Fused in llmos: HF's three projections, in this order, become rows of one qkv matrix.
VIT_QKV = ("q_proj", "k_proj", "v_proj")
_HF_QKV = re.compile(r"layers\.(\d+)\.attention\.(q_proj|k_proj|v_proj)\.(weight|bias)")
_QKV = re.compile(r"layers\.(\d+)\.attn\.qkv\.(weight|bias)")
# transformers 4's spelling -> transformers 5's, per layer (the suffix after ``layer.{i}.``).
LEGACY_LAYER: dict[str, str] = {
    "attention.attention.query": "attention.q_proj",
    "attention.attention.key": "attention.k_proj",
    "attention.attention.value": "attention.v_proj",
    "attention.output.dense": "attention.o_proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "layernorm_before": "layernorm_before",
    "layernorm_after": "layernorm_after",
}
_LEGACY = re.compile(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)")
_LAYER = re.compile(r"layers\.(\d+)\.(.+)\.(weight|bias)")
# HF options that change the architecture and that llmos's ViT does not build.
UNSUPPORTED = {"hidden_act": "gelu", "qkv_bias": True, "pooler_act": "tanh"}


def vit_config_from_hf(c: dict[str, Any], source: str, pooler: bool = True) -> ViTConfig:
    """An HF ViT ``config.json`` object -> :class:`ViTConfig`, refusing what this ViT does not
    build (a clear error, not different outputs). ``pooler``: whether the weights have HF's
    pooler (``ViTModel(add_pooling_layer=...)``; the config does not say)."""
    for key, want in UNSUPPORTED.items():
        if c.get(key, want) != want:
            raise CheckpointError(
                f"{source}: {key} {c[key]!r} is not supported (llmos's ViT is {key}={want!r})"
            )
    for key in ("image_size", "patch_size"):
        if not isinstance(c.get(key, 1), int):
            raise CheckpointError(f"{source}: {key} {c[key]!r}: llmos's ViT takes square sizes")
    hidden = c.get("hidden_size", 768)
    if c.get("pooler_output_size") not in (None, hidden):
        raise CheckpointError(
            f"{source}: pooler_output_size {c['pooler_output_size']} is not supported "
            f"(llmos's pooler keeps the hidden size {hidden})"
        )
    return ViTConfig(
        image_size=c.get("image_size", 224),
        patch_size=c.get("patch_size", 16),
        num_channels=c.get("num_channels", 3),
        hidden_size=hidden,
        num_layers=c.get("num_hidden_layers", 12),
        num_heads=c.get("num_attention_heads", 12),
        intermediate_size=c.get("intermediate_size", 3072),
        dropout=c.get("hidden_dropout_prob", 0.0),
        attention_dropout=c.get("attention_probs_dropout_prob", 0.0),
        layer_norm_eps=c.get("layer_norm_eps", 1e-12),
        initializer_range=c.get("initializer_range", 0.02),
        pooler=pooler,
    )


def _template(key: str) -> tuple[str, str | None]:
    """``layers.3.mlp.fc1.weight`` -> (``layers.{}.mlp.fc1.weight``, ``"3"``)."""
    m = re.match(r"layers\.(\d+)\.", key)
    if m is None:
        return key, None
    return "layers.{}." + key[m.end() :], m.group(1)


def _modern(key: str) -> str:
    """A transformers 4 key in transformers 5's spelling (other keys as they are)."""
    m = _LEGACY.fullmatch(key)
    if m is None:
        return key
    layer, module, kind = m.groups()
    if module not in LEGACY_LAYER:
        raise CheckpointError(f"unknown Hugging Face ViT weight {key!r}")
    return f"layers.{layer}.{LEGACY_LAYER[module]}.{kind}"


def vit_from_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF ``ViTModel`` state dict (either spelling, with or without the pooler) -> llmos's."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        key = _modern(key)
        m = _HF_QKV.fullmatch(key)
        if m:
            layer, which, kind = m.groups()
            qkv.setdefault((layer, kind), {})[which] = value
            continue
        tmpl, idx = _template(key)
        if tmpl not in VIT_KEYS:
            raise CheckpointError(f"unknown Hugging Face ViT weight {key!r}")
        out[VIT_KEYS[tmpl].format(idx)] = value
    for (layer, kind), parts in sorted(qkv.items()):
        missing = [p for p in VIT_QKV if p not in parts]
        if missing:
            raise CheckpointError(f"ViT layer {layer}: attention {kind} lacks {missing}")
        out[f"layers.{layer}.attn.qkv.{kind}"] = torch.cat([parts[p] for p in VIT_QKV])
    return out


def vit_to_hf(sd: dict[str, torch.Tensor], legacy: bool = False) -> dict[str, torch.Tensor]:
    """llmos ViT state dict -> HF ``ViTModel``'s (the inverse of :func:`vit_from_hf`), in
    transformers 5's spelling, or transformers 4's with ``legacy`` (which transformers 5 also
    reads through ``from_pretrained``)."""
    reverse = {v: k for k, v in VIT_KEYS.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        m = _QKV.fullmatch(key)
        if m:
            layer, kind = m.groups()
            for name, part in zip(VIT_QKV, value.chunk(3), strict=True):
                out[f"layers.{layer}.attention.{name}.{kind}"] = part.clone()
            continue
        tmpl, idx = _template(key)
        if tmpl not in reverse:
            raise CheckpointError(f"llmos weight {key!r} has no Hugging Face ViT counterpart")
        out[reverse[tmpl].format(idx)] = value
    if legacy:
        old = {v: k for k, v in LEGACY_LAYER.items()}
        renamed = {}
        for key, value in out.items():
            m = _LAYER.fullmatch(key)
            if m:
                layer, module, kind = m.groups()
                key = f"encoder.layer.{layer}.{old[module]}.{kind}"
            renamed[key] = value
        out = renamed
    return out
