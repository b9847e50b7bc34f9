"""Masked language modelling (+ next-sentence prediction) for BERT-style encoders: the
special ids a BERT needs, the task (RoBERTa-style dynamic masking per epoch, validation masked
once), and the pretraining setup built from a :class:`~llmos.config.run.PretrainConfig`."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmos.config.run import PretrainConfig
from llmos.data.corpus import load_tokenized
from llmos.data.datasets import resolve_corpus, resolve_tokenizer
from llmos.data.mlm import MLMBatches, SpecialIds, collate
from llmos.errors import ConfigError
from llmos.models.bert import BertForPreTraining
from llmos.paths import llmos_home
from llmos.text.tokenizer import load_tokenizer, special_ids
from llmos.train.dist import DistInfo
from llmos.train.runs import PretrainSetup

VALID_SEED = 1234  # fixed masks and pairs: every validation sees the same examples


def special_ids_for_mlm(tokenizer: Any) -> SpecialIds:
    ids = special_ids(tokenizer)
    missing = [k for k in ("pad", "cls", "sep", "mask") if ids.get(k) is None]
    if missing:
        raise ConfigError(
            f"data.tokenizer lacks the special tokens {missing} a BERT needs (train a "
            "wordpiece tokenizer)"
        )
    specials = [v for v in ids.values() if v is not None]
    return SpecialIds(
        pad=ids["pad"],
        cls=ids["cls"],
        sep=ids["sep"],
        mask=ids["mask"],
        vocab_size=tokenizer.get_vocab_size(),
        first_normal=max(specials) + 1,
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
        s = dict.fromkeys(("mlm", "nsp", "n_mlm", "n_nsp", "mlm_hit", "nsp_hit"), 0.0)
        for batch in self.valid:
            batch = {
                k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
            }
            mlm, nsp, out = self._losses(model, batch)
            s["mlm"] += mlm.item()
            s["n_mlm"] += batch["mlm_labels"].numel()
            s["mlm_hit"] += (out.mlm_logits.argmax(-1) == batch["mlm_labels"]).sum().item()
            if batch["nsp_labels"] is not None:
                s["nsp"] += nsp.item()
                s["n_nsp"] += batch["nsp_labels"].numel()
                s["nsp_hit"] += (out.nsp_logits.argmax(-1) == batch["nsp_labels"]).sum().item()
        mlm_loss = s["mlm"] / max(s["n_mlm"], 1)
        res = {
            "mlm_loss": mlm_loss,
            "perplexity": math.exp(min(mlm_loss, 50)),
            "mlm_accuracy": s["mlm_hit"] / max(s["n_mlm"], 1),
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
    model config's vocabulary and pad id are the tokenizer's."""
    tokenizer = load_tokenizer(resolve_tokenizer(cfg.data.tokenizer))
    sp = special_ids_for_mlm(tokenizer)
    cfg = replace(cfg, model=replace(cfg.model, vocab_size=sp.vocab_size, pad_token_id=sp.pad))
    corpus_dir = resolve_corpus(cfg.data.corpus)
    cache = llmos_home() / "cache" / "tokenized"
    train = load_tokenized(corpus_dir / "train.txt", tokenizer, cache, cfg.data.max_train_documents)
    valid = load_tokenized(corpus_dir / "valid.txt", tokenizer, cache)
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
    return PretrainSetup(
        cfg=cfg,
        tokenizer=tokenizer,
        task=task,
        build=lambda: BertForPreTraining(model_cfg),
        train=train,
        valid_targets=np.concatenate(targets) if targets else np.zeros(0, dtype=np.int64),
        describe=f"corpus: {train.num_documents} documents, {train.num_tokens} tokens",
    )
