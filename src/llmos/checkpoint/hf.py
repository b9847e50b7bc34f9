"""Hugging Face <-> llmos: weight maps, readers of HF model directories, and the
``transformers`` models and tokenizers an llmos checkpoint exports to.

This is the only module of llmos that imports ``transformers`` (XLNet's maps live in
:mod:`llmos.checkpoint.hf_xlnet`, which does not), and only inside the functions that export
(importing a model reads its files with safetensors and ``tokenizers`` alone), so
``transformers`` is needed for ``llmos convert --to-hf`` only.

Maps are declarative templates: an HF key (``{}`` = layer index) names its llmos key, ``None``
drops it (tied or derived weights). The one transform is the fused attention projection: HF keeps
``query``/``key``/``value`` apart, llmos concatenates them into ``qkv`` (rows q, then k, then v).
Conversions are strict: an unknown or missing key raises with its name, and shapes are checked.

One subject (Hugging Face interop, both directions, every family), hence past 500 lines.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from tokenizers import Tokenizer, processors
from tokenizers.implementations import BertWordPieceTokenizer, ByteLevelBPETokenizer

from llmos.checkpoint.task import Classification, Tagging, TaskSpec
from llmos.config.model import BertConfig, GPTConfig, ModelConfig, XLNetConfig
from llmos.errors import CheckpointError
from llmos.text.tokenizer import load_tokenizer, special_ids

# Buffers HF models keep in their state dicts that llmos does not store.
HF_BUFFERS = ("position_ids", "attn.bias", "attn.masked_bias")
TOKENIZER_FILE = "tokenizer.json"


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file holding an object (an HF ``config.json`` and the like), or a clear error."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return obj


def read_hf_weights(src: Path) -> dict[str, torch.Tensor]:
    """The state dict of an HF model directory: ``model.safetensors`` (or its shards), else
    ``pytorch_model.bin`` read with ``weights_only=True`` (tensors only, nothing executed)."""
    index = src / "model.safetensors.index.json"
    try:
        if (src / "model.safetensors").is_file():
            return load_file(str(src / "model.safetensors"))
        if index.is_file():
            shards = sorted(set(read_json_object(index).get("weight_map", {}).values()))
            out: dict[str, torch.Tensor] = {}
            for shard in shards:
                out.update(load_file(str(src / shard)))
            return out
        if (src / "pytorch_model.bin").is_file():
            sd = torch.load(src / "pytorch_model.bin", map_location="cpu", weights_only=True)
            if not isinstance(sd, dict):
                raise CheckpointError(f"{src}/pytorch_model.bin: not a state dict")
            return sd
    except (SafetensorError, OSError, RuntimeError) as e:
        raise CheckpointError(f"{src}: unreadable weights ({e})") from None
    raise CheckpointError(
        f"{src}: no weights (expected model.safetensors, model.safetensors.index.json or "
        "pytorch_model.bin)"
    )


def read_hf_tokenizer(src: Path, family: str) -> Tokenizer:
    """``tokenizer.json`` as is (its padding and truncation switched off: llmos batches
    itself), else one built from ``vocab.txt`` (WordPiece) or ``vocab.json`` + ``merges.txt``
    (byte-level BPE, with RoBERTa's ``<s> ... </s>`` template for RoBERTa). SentencePiece
    tokenizers (XLNet's) are read from ``tokenizer.json`` only: a directory with nothing but
    ``spiece.model`` is refused with a way to write one."""
    settings = (
        read_json_object(src / "tokenizer_config.json")
        if (src / "tokenizer_config.json").is_file()
        else {}
    )
    if (src / TOKENIZER_FILE).is_file():
        tok = load_tokenizer(src / TOKENIZER_FILE)
    elif (src / "vocab.txt").is_file():
        lower = bool(settings.get("do_lower_case", True))
        tok = BertWordPieceTokenizer(str(src / "vocab.txt"), lowercase=lower)._tokenizer
    elif (src / "vocab.json").is_file() and (src / "merges.txt").is_file():
        bpe = ByteLevelBPETokenizer(str(src / "vocab.json"), str(src / "merges.txt"))
        tok = bpe._tokenizer
        if family == "roberta":
            bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
            if bos is None or eos is None:
                raise CheckpointError(f"{src}/vocab.json: a RoBERTa vocabulary needs <s> and </s>")
            tok.post_processor = processors.RobertaProcessing(("</s>", eos), ("<s>", bos))
    elif (src / "spiece.model").is_file():
        # Reading the protobuf model would need the sentencepiece library; transformers
        # converts it and writes the tokenizer.json that the `tokenizers` library reads.
        raise CheckpointError(
            f"{src}: the tokenizer is only spiece.model (SentencePiece); llmos reads "
            "SentencePiece tokenizers from tokenizer.json: write one with "
            "transformers (AutoTokenizer.from_pretrained(dir).save_pretrained(dir)) and "
            "convert again"
        )
    else:
        raise CheckpointError(
            f"{src}: no tokenizer (expected tokenizer.json, vocab.txt, or vocab.json and "
            "merges.txt)"
        )
    tok.no_padding()
    tok.no_truncation()
    return tok


# HF BertForPreTraining key -> llmos BertForPreTraining key (None = dropped on import).
BERT_KEYS: dict[str, str | None] = {
    "bert.embeddings.word_embeddings.weight": "bert.embeddings.tok.weight",
    "bert.embeddings.position_embeddings.weight": "bert.embeddings.pos.weight",
    "bert.embeddings.token_type_embeddings.weight": "bert.embeddings.seg.weight",
    "bert.embeddings.LayerNorm.weight": "bert.embeddings.norm.weight",
    "bert.embeddings.LayerNorm.bias": "bert.embeddings.norm.bias",
    "bert.embeddings.position_ids": None,
    "bert.encoder.layer.{}.attention.output.dense.weight": "bert.layers.{}.attn.proj.weight",
    "bert.encoder.layer.{}.attention.output.dense.bias": "bert.layers.{}.attn.proj.bias",
    "bert.encoder.layer.{}.attention.output.LayerNorm.weight": "bert.layers.{}.attn_norm.weight",
    "bert.encoder.layer.{}.attention.output.LayerNorm.bias": "bert.layers.{}.attn_norm.bias",
    "bert.encoder.layer.{}.intermediate.dense.weight": "bert.layers.{}.ffn.up.weight",
    "bert.encoder.layer.{}.intermediate.dense.bias": "bert.layers.{}.ffn.up.bias",
    "bert.encoder.layer.{}.output.dense.weight": "bert.layers.{}.ffn.down.weight",
    "bert.encoder.layer.{}.output.dense.bias": "bert.layers.{}.ffn.down.bias",
    "bert.encoder.layer.{}.output.LayerNorm.weight": "bert.layers.{}.ffn_norm.weight",
    "bert.encoder.layer.{}.output.LayerNorm.bias": "bert.layers.{}.ffn_norm.bias",
    "bert.pooler.dense.weight": "bert.pooler.weight",
    "bert.pooler.dense.bias": "bert.pooler.bias",
    "cls.predictions.transform.dense.weight": "mlm.dense.weight",
    "cls.predictions.transform.dense.bias": "mlm.dense.bias",
    "cls.predictions.transform.LayerNorm.weight": "mlm.norm.weight",
    "cls.predictions.transform.LayerNorm.bias": "mlm.norm.bias",
    "cls.predictions.bias": "mlm.bias",
    "cls.predictions.decoder.weight": None,  # tied to the word embeddings
    "cls.predictions.decoder.bias": None,  # the same tensor as cls.predictions.bias
    "cls.seq_relationship.weight": "nsp.weight",
    "cls.seq_relationship.bias": "nsp.bias",
    # BertForSequenceClassification / BertForTokenClassification heads
    "classifier.weight": "classifier.weight",
    "classifier.bias": "classifier.bias",
}
# Fused in llmos: HF's three projections, in this order, become rows of one qkv matrix.
BERT_QKV = ("query", "key", "value")
_HF_QKV = re.compile(
    r"bert\.encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)"
)


def _template(key: str) -> tuple[str, str | None]:
    """``bert.encoder.layer.3.output.dense.weight`` -> (``...layer.{}...``, ``"3"``)."""
    m = re.search(r"\.(\d+)\.", key)
    if m is None:
        return key, None
    return key[: m.start()] + ".{}." + key[m.end() :], m.group(1)


def bert_from_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF BERT state dict (pretraining, sequence or token classification) -> llmos's."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        m = _HF_QKV.fullmatch(key)
        if m:
            layer, which, kind = m.groups()
            qkv.setdefault((layer, kind), {})[which] = value
            continue
        tmpl, idx = _template(key)
        if tmpl not in BERT_KEYS:
            raise CheckpointError(f"unknown Hugging Face BERT weight {key!r}")
        target = BERT_KEYS[tmpl]
        if target is not None:
            out[target.format(idx)] = value
    for (layer, kind), parts in sorted(qkv.items()):
        missing = [p for p in BERT_QKV if p not in parts]
        if missing:
            raise CheckpointError(f"layer {layer}: attention {kind} lacks {missing}")
        out[f"bert.layers.{layer}.attn.qkv.{kind}"] = torch.cat([parts[p] for p in BERT_QKV])
    return out


def bert_to_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """llmos BERT state dict -> HF's (the inverse of :func:`bert_from_hf`)."""
    reverse = {v: k for k, v in BERT_KEYS.items() if v is not None}
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        m = re.fullmatch(r"bert\.layers\.(\d+)\.attn\.qkv\.(weight|bias)", key)
        if m:
            layer, kind = m.groups()
            for name, part in zip(BERT_QKV, value.chunk(3), strict=True):
                out[f"bert.encoder.layer.{layer}.attention.self.{name}.{kind}"] = part.clone()
            continue
        tmpl, idx = _template(key)
        if tmpl not in reverse:
            raise CheckpointError(f"llmos weight {key!r} has no Hugging Face BERT counterpart")
        out[reverse[tmpl].format(idx)] = value
    if "cls.predictions.bias" in out:  # the tied decoder of the MLM head
        out["cls.predictions.decoder.weight"] = out["bert.embeddings.word_embeddings.weight"]
        out["cls.predictions.decoder.bias"] = out["cls.predictions.bias"]
    return out


def hf_bert_config(cfg: BertConfig) -> Any:
    """The ``transformers.BertConfig`` of an llmos :class:`BertConfig`."""
    import transformers

    return transformers.BertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position,
        type_vocab_size=cfg.type_vocab_size,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.attention_dropout,
        layer_norm_eps=cfg.layer_norm_eps,
        initializer_range=cfg.initializer_range,
        pad_token_id=cfg.pad_token_id,
        hidden_act="gelu",
    )


# HF GPT2LMHeadModel stores these Linear-like weights as Conv1D, (in, out): transposed here.
GPT2_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Buffers and tied copies HF may keep in a state dict, none of which llmos stores.
GPT2_DROPPED = re.compile(r"^(lm_head\.weight|transformer\.h\.\d+\.attn\.(masked_)?bias)$")


def gpt2_from_hf(hf_state: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """HF ``GPT2LMHeadModel`` state dict -> llmos :class:`~llmos.models.gpt.GPT` state dict.

    Names are the same; Conv1D weights are transposed; the tied ``lm_head.weight`` is dropped
    (llmos ties it to ``transformer.wte.weight`` itself). Strict: a key llmos does not know, or
    a missing one, raises with its name.
    """
    from llmos.models.gpt import GPT

    expected = {k: v.shape for k, v in GPT(config).state_dict().items() if k != "lm_head.weight"}
    out: dict[str, torch.Tensor] = {}
    for key, value in hf_state.items():
        if GPT2_DROPPED.match(key):
            continue
        if key not in expected:
            raise CheckpointError(f"unknown GPT-2 weight {key!r}")
        out[key] = value.t().contiguous() if key.endswith(GPT2_CONV1D) else value
        if out[key].shape != expected[key]:
            raise CheckpointError(
                f"GPT-2 weight {key!r}: shape {tuple(out[key].shape)}, "
                f"expected {tuple(expected[key])}"
            )
    missing = sorted(set(expected) - set(out))
    if missing:
        raise CheckpointError(f"GPT-2 weights missing: {missing[:5]}")
    return out


def gpt2_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """llmos GPT state dict -> HF ``GPT2LMHeadModel`` state dict (Conv1D weights transposed,
    the tied ``lm_head.weight`` added back)."""
    out = {
        k: v.t().contiguous() if k.endswith(GPT2_CONV1D) else v
        for k, v in state.items()
        if k != "lm_head.weight"
    }
    out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


def hf_gpt2_config(config: Any, token_ids: dict[str, int | None] | None = None) -> Any:
    """The ``transformers.GPT2Config`` of an llmos :class:`~llmos.config.model.GPTConfig`.

    ``token_ids`` (:func:`~llmos.text.tokenizer.special_ids` of the checkpoint's tokenizer)
    give the end-of-text id (GPT-2's ``bos_token_id`` and ``eos_token_id`` are both its
    ``<|endoftext|>``) and the pad id. Without them transformers keeps GPT-2's 50256, an id
    an llmos vocabulary of a few thousand tokens does not have: ``generate`` would never stop
    at the real end of text.
    """
    from transformers import GPT2Config

    ids = token_ids or {}
    eos, pad = ids.get("eos"), ids.get("pad")
    specials: dict[str, int] = {}
    if eos is not None:
        specials |= {"bos_token_id": eos, "eos_token_id": eos}
    if pad is not None:
        specials["pad_token_id"] = pad
    return GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.max_position,
        n_embd=config.hidden_size,
        n_layer=config.num_layers,
        n_head=config.num_heads,
        n_inner=config.intermediate_size,
        activation_function="gelu_new",
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.attention_dropout,
        layer_norm_epsilon=config.layer_norm_eps,
        initializer_range=config.initializer_range,
        tie_word_embeddings=True,
        **specials,
    )


# --- whole-family key normalisation (HF model classes differ in prefixes and head names) -----

# RoBERTa's names -> BERT's, then the BERT map applies.
ROBERTA_RENAMES = (
    ("roberta.", "bert."),
    ("lm_head.dense.", "cls.predictions.transform.dense."),
    ("lm_head.layer_norm.", "cls.predictions.transform.LayerNorm."),
    ("lm_head.bias", "cls.predictions.bias"),
)
ROBERTA_DROPPED = ("lm_head.decoder.weight", "lm_head.decoder.bias")  # tied copies
BERT_BARE = ("embeddings.", "encoder.", "pooler.")  # BertModel saves its keys unprefixed


def normalize_bert_keys(sd: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    """HF BERT or RoBERTa state dict of any head class -> BertForPreTraining-style names:
    legacy TF ``gamma``/``beta`` -> ``weight``/``bias``, bare ``BertModel`` keys prefixed with
    ``bert.``, RoBERTa's ``roberta.*`` and ``lm_head.*`` renamed, tied decoder copies dropped."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)
        key = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)
        if family == "roberta":
            if key in ROBERTA_DROPPED:
                continue
            for old, new in ROBERTA_RENAMES:
                if key.startswith(old):
                    key = new + key[len(old) :]
                    break
        if key.startswith(BERT_BARE):
            key = "bert." + key
        out[key] = value
    return out


def roberta_positions_from_hf(weight: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """HF RoBERTa counts positions from ``pad_token_id + 1``: drop the rows before it, so that
    position 0 here is HF's first real position."""
    return weight[pad_token_id + 1 :].clone()


def roberta_positions_to_hf(weight: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """The inverse: ``pad_token_id + 1`` leading rows (zeros; HF never reads them for real
    tokens) before the positions."""
    lead = torch.zeros(pad_token_id + 1, weight.size(1), dtype=weight.dtype)
    return torch.cat([lead, weight])


def to_roberta_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF BERT names (as :func:`bert_to_hf` writes them) -> HF RoBERTa names."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias"):
            continue
        for new, old in ROBERTA_RENAMES:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    if "lm_head.bias" in out:
        out["lm_head.decoder.weight"] = out["roberta.embeddings.word_embeddings.weight"]
        out["lm_head.decoder.bias"] = out["lm_head.bias"]
    return out


def hf_encoder_config(cfg: BertConfig, labels: list[str] | None = None) -> Any:
    """``transformers.BertConfig`` or ``RobertaConfig`` (positions shifted back) of an llmos
    encoder config, with ``id2label`` for a classifier or tagger."""
    import transformers

    base = hf_bert_config(cfg).to_dict()
    for k in ("model_type", "transformers_version", "architectures"):
        base.pop(k, None)
    if labels:
        base["id2label"] = dict(enumerate(labels))
        base["label2id"] = {label: i for i, label in enumerate(labels)}
    if cfg.model_type == "roberta":
        base["max_position_embeddings"] = cfg.max_position + cfg.pad_token_id + 1
        return transformers.RobertaConfig(**base)
    return transformers.BertConfig(**base)


def refuse_llmos_heads(task: TaskSpec) -> None:
    """Refuse the heads and task options that only llmos has (a character tagger, a CRF, a
    classifier's text prefix), whatever the encoder family."""
    if isinstance(task, Tagging) and task.char_tags:
        raise CheckpointError(
            "this tagger tags characters from the tokenizer's pieces (task.json char_tags: "
            "true; weights char_*), which no transformers class does; it stays an llmos "
            "checkpoint"
        )
    if isinstance(task, Tagging) and task.crf:
        raise CheckpointError(
            "this tagger has a CRF head (task.json crf: true; weights crf.*), which no "
            "transformers class has; it stays an llmos checkpoint (a softmax tagger, crf: "
            "false, exports)"
        )
    if isinstance(task, Classification) and task.text_prefix:
        # transformers' config.json has no field for it: the exported model would be fed
        # texts without the prefix it was trained on, and answer differently, silently.
        raise CheckpointError(
            f"this classifier reads every text after the prefix {task.text_prefix!r} "
            "(task.json text_prefix), which a transformers checkpoint cannot record; it "
            "stays an llmos checkpoint (`llmos export onnx` exports it, task.json included)"
        )


def hf_model(cfg: ModelConfig, task: TaskSpec, tokenizer: Tokenizer) -> Any:
    """The ``transformers`` model (random weights) an llmos checkpoint exports to: the class
    of its head (pretraining, masked LM, bare encoder, sequence or token classification, GPT-2
    LM head, XLNet LM head or classifiers), configured with the tokenizer's special ids."""
    import transformers as T

    if isinstance(cfg, GPTConfig):
        return T.GPT2LMHeadModel(hf_gpt2_config(cfg, special_ids(tokenizer)))
    refuse_llmos_heads(task)
    if isinstance(cfg, XLNetConfig):
        kind, labels = "lm", None
        if isinstance(task, Classification | Tagging):
            kind, labels = task.kind, list(task.labels)
        ids = special_ids(tokenizer) | {"bos": tokenizer.token_to_id("<s>")}
        return hf_xlnet_model(cfg, kind, labels, ids)
    if cfg.albert:
        raise CheckpointError(
            "this encoder uses ALBERT-style options (embedding_size, share_layers), which no "
            "transformers BERT or RoBERTa class has; it stays an llmos checkpoint"
        )
    if cfg.pruned:
        # transformers 5 dropped BertConfig.pruned_heads: every layer has num_attention_heads
        # heads and intermediate_size neurons, so per-layer sizes have nowhere to go.
        raise CheckpointError(
            "this encoder is pruned (layer_heads / layer_intermediate: sizes differ per layer), "
            "which transformers' BERT and RoBERTa classes cannot load; it stays an llmos "
            "checkpoint (`llmos export onnx` exports it)"
        )
    labels = task.labels if isinstance(task, Classification | Tagging) else None
    hcfg = hf_encoder_config(cfg, labels)
    roberta = cfg.model_type == "roberta"
    if isinstance(task, Classification):
        if task.pooling != "cls":
            raise CheckpointError(
                f"this classifier reads the mean of the last layer (pooling: {task.pooling}), "
                "which transformers' BertForSequenceClassification (tanh pooler over [CLS]) "
                "cannot; it stays an llmos checkpoint (`llmos export onnx` exports it)"
            )
        if roberta:
            raise CheckpointError("exporting a RoBERTa classifier is not supported")
        return T.BertForSequenceClassification(hcfg)
    if isinstance(task, Tagging):
        return (T.RobertaForTokenClassification if roberta else T.BertForTokenClassification)(hcfg)
    if cfg.heads == "mlm+nsp":
        if roberta:
            raise CheckpointError("RoBERTa has no next-sentence head in transformers")
        return T.BertForPreTraining(hcfg)
    if cfg.heads == "mlm":
        return (T.RobertaForMaskedLM if roberta else T.BertForMaskedLM)(hcfg)
    return (T.RobertaModel if roberta else T.BertModel)(hcfg, add_pooling_layer=cfg.pooler)


# llmos's special tokens -> the role names of transformers' tokenizers.
HF_TOKEN_ROLES = {
    "<|endoftext|>": "eos_token",
    "<|pad|>": "pad_token",
    "[CLS]": "cls_token",
    "[SEP]": "sep_token",
    "[PAD]": "pad_token",
    "[MASK]": "mask_token",
    "[UNK]": "unk_token",
    "<s>": "bos_token",
    "</s>": "eos_token",
    "<pad>": "pad_token",
    "<mask>": "mask_token",
    "<unk>": "unk_token",
    "<sep>": "sep_token",  # XLNet's SentencePiece vocabulary
    "<cls>": "cls_token",
}


def save_hf_tokenizer(tok: Tokenizer, cfg: ModelConfig, out: Path) -> None:
    """Save ``tok`` as a ``transformers`` fast tokenizer (``AutoTokenizer`` reads it), its
    special tokens named by role.

    An XLNet's tokenizer pads on the left, as HF's XLNet tokenizer does (the classifier reads
    the last position), and returns token type ids: llmos's XLNet reads the segments its
    tokenizer gives (``<cls>`` in its own, 2), where transformers 5's default inputs leave
    them out and with them XLNet's segment term.
    """
    from transformers import PreTrainedTokenizerFast

    special = {HF_TOKEN_ROLES[t]: t for t in tok.get_vocab() if t in HF_TOKEN_ROLES}
    if cfg.model_type == "roberta":  # RoBERTa's <s> and </s> are also its cls and sep
        special |= {"cls_token": "<s>", "sep_token": "</s>"}
    if isinstance(cfg, GPTConfig) and "eos_token" in special:
        special["bos_token"] = special["eos_token"]  # as GPT-2's: <|endoftext|> both ways
    options: dict[str, Any] = {}
    if isinstance(cfg, XLNetConfig):
        options = {
            "padding_side": "left",
            "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
        }
    PreTrainedTokenizerFast(tokenizer_object=tok, **special, **options).save_pretrained(str(out))


# --- XLNet's transformers config and classes (its maps: llmos.checkpoint.hf_xlnet) ---------


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
