"""Masked language modelling (+ next-sentence prediction) for BERT-style encoders: the
special ids a BERT needs, the task (RoBERTa-style dynamic masking per epoch, validation masked
once), and the pretraining setup built from a :class:`~llmos.config.run.PretrainConfig`."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmos.checkpoint.digest import weights_digest
from llmos.checkpoint.io import read_checkpoint, require_unquantized
from llmos.checkpoint.task import Embedding, MaskedLM
from llmos.config.model import BertConfig
from llmos.config.run import PretrainConfig
from llmos.data.corpus import concat_corpora, load_tokenized
from llmos.data.datasets import resolve_corpus, resolve_tokenizer
from llmos.data.mlm import MLMBatches, SpecialIds, collate
from llmos.errors import CheckpointError, ConfigError
from llmos.models.bert import BertForPreTraining
from llmos.paths import llmos_home
from llmos.text.tokenizer import load_tokenizer, special_ids
from llmos.train.dist import DistInfo
from llmos.train.runs import Init, PretrainSetup, freeze_bottom

log = logging.getLogger("llmos.train")

VALID_SEED = 1234  # fixed masks and pairs: every validation sees the same examples


def special_ids_for_mlm(tokenizer: Any) -> SpecialIds:
    ids = special_ids(tokenizer)
    missing = [k for k in ("pad", "cls", "sep", "mask") if ids.get(k) is None]
    if missing:
        raise ConfigError(
            f"data.tokenizer lacks the special tokens {missing} a BERT needs (train a "
            "wordpiece tokenizer)"
        )
    vocab_size = tokenizer.get_vocab_size()
    # XLM-R-style vocabularies (multilingual-e5's) put <mask> last, after every normal piece:
    # the normal pieces are those after the other specials (a random replacement may then be
    # <mask> itself, one chance in the vocabulary's size).
    leading = [v for v in ids.values() if v is not None and v != vocab_size - 1]
    return SpecialIds(
        pad=ids["pad"],
        cls=ids["cls"],
        sep=ids["sep"],
        mask=ids["mask"],
        vocab_size=vocab_size,
        first_normal=max(leading) + 1,
    )


@dataclass
class PretrainTask:
    """MLM (+ NSP) for the shared training loop."""

    batches: MLMBatches
    valid: list[dict[str, Any]]  # validation batches, masked once with VALID_SEED
    sp: SpecialIds
    mask_prob: float
    seed: int

    def steps(self, info: DistInfo, micro_batch: int) -> Iterator[list[dict[str, Any]]]:
        per_rank = self.batches.global_batch // info.world
        for epoch, insts in self.batches:
            mine = insts[info.rank * per_rank : (info.rank + 1) * per_rank]
            yield [
                collate(mine[j : j + micro_batch], self.sp, self.mask_prob, self.seed, epoch)
                for j in range(0, per_rank, micro_batch)
            ]

    def counts(self, batch: dict[str, Any]) -> list[float]:
        nsp = batch["nsp_labels"]
        return [float(batch["mlm_labels"].numel()), float(nsp.numel()) if nsp is not None else 0.0]

    def _losses(
        self, model: nn.Module, batch: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        out = model(
            batch["input_ids"],
            batch["token_type_ids"],
            batch["attention_mask"],
            batch["mlm_positions"],
        )
        mlm = F.cross_entropy(out.mlm_logits.float(), batch["mlm_labels"], reduction="sum")
        nsp = torch.zeros((), device=mlm.device)
        if batch["nsp_labels"] is not None:
            nsp = F.cross_entropy(out.nsp_logits.float(), batch["nsp_labels"], reduction="sum")
        return mlm, nsp, out

    def loss(
        self, model: nn.Module, batch: dict[str, Any], totals: list[float]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        mlm, nsp, _ = self._losses(model, batch)
        mlm = mlm / max(totals[0], 1.0)
        nsp = nsp / max(totals[1], 1.0)
        loss = mlm + nsp
        return loss, {"loss": loss.item(), "mlm_loss": mlm.item(), "nsp_loss": nsp.item()}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        keys = ("mlm", "nsp", "n_mlm", "n_nsp", "mlm_hit", "nsp_hit", "masked", "n_masked")
        s = dict.fromkeys((*keys, "masked_hit"), 0.0)
        for batch in self.valid:
            batch = {
                k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
            }
            mlm, nsp, out = self._losses(model, batch)
            labels = batch["mlm_labels"]
            hit = out.mlm_logits.argmax(-1) == labels
            s["mlm"] += mlm.item()
            s["n_mlm"] += labels.numel()
            s["mlm_hit"] += hit.sum().item()
            # the targets whose input is [MASK]: the 10 % kept as they are only need copying
            hidden = batch["input_ids"].flatten()[batch["mlm_positions"]] == self.sp.mask
            ce = F.cross_entropy(out.mlm_logits.float(), labels, reduction="none")
            s["masked"] += ce[hidden].sum().item()
            s["n_masked"] += hidden.sum().item()
            s["masked_hit"] += hit[hidden].sum().item()
            if batch["nsp_labels"] is not None:
                s["nsp"] += nsp.item()
                s["n_nsp"] += batch["nsp_labels"].numel()
                s["nsp_hit"] += (out.nsp_logits.argmax(-1) == batch["nsp_labels"]).sum().item()
        mlm_loss = s["mlm"] / max(s["n_mlm"], 1)
        res = {
            "mlm_loss": mlm_loss,
            "perplexity": math.exp(min(mlm_loss, 50)),
            "mlm_accuracy": s["mlm_hit"] / max(s["n_mlm"], 1),
            # what an XLNet's or a GPT's perplexity compares with: every one of their targets
            # is hidden from the model, where 10 % of BERT's are shown (and 10 % replaced)
            "masked_perplexity": math.exp(min(s["masked"] / max(s["n_masked"], 1), 50)),
            "masked_accuracy": s["masked_hit"] / max(s["n_masked"], 1),
        }
        if s["n_nsp"]:
            res["nsp_loss"] = s["nsp"] / s["n_nsp"]
            res["nsp_accuracy"] = s["nsp_hit"] / s["n_nsp"]
        res["loss"] = mlm_loss + res.get("nsp_loss", 0.0)
        return res

    def state(self) -> dict[str, int]:
        return self.batches.state()

    def load_state(self, state: dict[str, int]) -> None:
        self.batches.load_state(state)


def setup_mlm_pretraining(cfg: PretrainConfig) -> PretrainSetup:
    """Tokenizer, tokenized corpora, the task and a :class:`BertForPreTraining` builder; the
    model config's vocabulary and pad id are the tokenizer's. With ``cfg.init`` the tokenizer,
    architecture and weights are the checkpoint's (see :class:`PretrainConfig`)."""
    init = read_init(cfg) if cfg.init else None
    if init is not None:
        tokenizer = init.tokenizer
        cfg = replace(cfg, model=replace(init.config, heads=cfg.model.heads))
    else:
        tokenizer = load_tokenizer(resolve_tokenizer(cfg.data.tokenizer))
    sp = special_ids_for_mlm(tokenizer)
    cfg = replace(cfg, model=replace(cfg.model, vocab_size=sp.vocab_size, pad_token_id=sp.pad))
    cache = llmos_home() / "cache" / "tokenized"
    parts = corpus_dirs(cfg.data.corpus)
    max_docs = cfg.data.max_train_documents
    train = concat_corpora(
        [load_tokenized(d / "train.txt", tokenizer, cache, max_docs) for d in parts]
    )
    valid = concat_corpora([load_tokenized(d / "valid.txt", tokenizer, cache) for d in parts])
    common = dict(
        objective=cfg.data.objective,
        max_length=cfg.data.max_length,
        short_seq_prob=cfg.data.short_seq_prob,
        mask_prob=cfg.data.mask_prob,
    )
    batches = MLMBatches(
        train, sp, global_batch=cfg.train.batch_size, seed=cfg.train.seed, **common
    )
    valid_stream = MLMBatches(valid, sp, global_batch=1, seed=VALID_SEED, **common)
    valid_insts = valid_stream.instances(0)[: cfg.data.max_valid_examples]
    bs = cfg.train.micro_batch_size or cfg.train.batch_size
    chunks = [valid_insts[i : i + bs] for i in range(0, len(valid_insts), bs)]
    valid_batches = [
        collate(c, sp, cfg.data.mask_prob, VALID_SEED, 0) for c in chunks[: cfg.train.eval_batches]
    ]
    task = PretrainTask(batches, valid_batches, sp, cfg.data.mask_prob, cfg.train.seed)
    model_cfg = cfg.model
    targets = [b["mlm_labels"].numpy() for b in valid_batches]

    def build() -> BertForPreTraining:
        model = BertForPreTraining(model_cfg)
        if init is not None:
            load_pretraining_weights(model, init.weights, init.path)
            if cfg.freeze_layers is not None:
                freeze_bottom(model, cfg.freeze_layers, model_cfg, init.path)
        return model

    return PretrainSetup(
        cfg=cfg,
        tokenizer=tokenizer,
        task=task,
        build=build,
        train=train,
        valid_targets=np.concatenate(targets) if targets else np.zeros(0, dtype=np.int64),
        describe=f"corpus: {train.num_documents} documents, {train.num_tokens} tokens",
        meta=None if init is None else init_meta(cfg, init),
    )


def corpus_dirs(corpus: str) -> list[Path]:
    """The directories of ``data.corpus``: one name or directory, or several joined by ``+``
    (``zh+en``)."""
    if Path(corpus).expanduser().is_dir():
        return [Path(corpus).expanduser()]
    return [resolve_corpus(name.strip()) for name in corpus.split("+")]


def read_init(cfg: PretrainConfig) -> Init:
    """The encoder checkpoint ``cfg.init`` a pretraining run continues from."""
    assert cfg.init is not None
    path = Path(cfg.init).expanduser()
    ckpt = read_checkpoint(path)
    require_unquantized(path, ckpt.config, "pretraining")
    if not isinstance(ckpt.config, BertConfig):
        raise ConfigError(f"init: {path} is not a BERT encoder checkpoint")
    if not isinstance(ckpt.task, MaskedLM | Embedding):
        raise ConfigError(
            f"init: {path} is a {ckpt.task.kind} model; continue pretraining from a pretrained "
            "or embedding encoder"
        )
    return Init(path, ckpt.config, ckpt.weights(), ckpt.tokenizer, weights_digest(path))


def load_pretraining_weights(
    model: nn.Module, weights: dict[str, torch.Tensor], path: Path
) -> None:
    """Copy a checkpoint's weights into a :class:`BertForPreTraining`: every encoder weight
    must fit; the pretraining heads it lacks (an embedding model has none) stay fresh."""
    own = model.state_dict()
    kept = {k: v for k, v in weights.items() if k in own}
    dropped = sorted(set(weights) - set(kept))
    missing, unexpected = model.load_state_dict(kept, strict=False)
    if unexpected or any(not k.startswith(("mlm.", "nsp.")) for k in missing):
        raise CheckpointError(
            f"{path}: not a BERT encoder checkpoint (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]})"
        )
    if missing:
        log.info(
            "%s has no %s weights: they start fresh",
            path,
            sorted({k.split(".")[0] for k in missing}),
        )
    if dropped:
        log.info("%s: not used by model.heads: %s", path, dropped[:5])


def init_meta(cfg: PretrainConfig, init: Init) -> dict[str, Any]:
    """``task.json`` of a run continued from a checkpoint: the checkpoint's own (an embedding
    encoder keeps its pooling and query/passage prefixes, so the result embeds as it did)
    plus where it started from and what was frozen."""
    meta = dict(read_checkpoint(init.path).task_json or {})
    meta |= {"init": str(init.path), "init_digest": init.digest}
    if cfg.freeze_layers is not None:
        meta["freeze_layers"] = cfg.freeze_layers
    return meta
