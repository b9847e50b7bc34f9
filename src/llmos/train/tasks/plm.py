"""Permutation language modelling for XLNet (Yang et al. 2019): the loss over the predicted
positions of sampled factorisation orders, and the pretraining setup built from a
:class:`~llmos.config.run.PretrainConfig`; the task, its normalisation and metrics are the
causal LM's (:class:`~llmos.train.tasks.clm.CausalLMTask` with :func:`plm_loss_sum`).

Segment recurrence without state between steps: each row of a batch holds ``plm_memory``
tokens of the previous segment, then the segment to predict. The previous segment runs first,
without gradient (Transformer-XL stops gradients at the memory too), and its per-layer states
are the memory the predicted segment attends to. The original trainer instead carries the
memory from one batch to the next; building it inside the step costs one more forward of the
previous segment (without the last layer or any backward) and keeps every step a pure function
of its batch, so resuming after a kill is exact and DDP ranks need nothing from each other.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmos.config.run import PretrainConfig
from llmos.data.clm import IGNORE
from llmos.data.corpus import load_tokenized
from llmos.data.datasets import resolve_corpus, resolve_tokenizer
from llmos.data.plm import PLMBatches, pack_segments, plm_valid_batches
from llmos.errors import DataError
from llmos.models.xlnet import XLNetLMHeadModel
from llmos.paths import llmos_home
from llmos.text.tokenizer import load_tokenizer, special_ids, xlnet_layout
from llmos.train.runs import PretrainSetup
from llmos.train.tasks.clm import CausalLMTask

VALID_SEED = 1234  # fixed targets and orders: every validation scores the same predictions


def plm_loss_sum(model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy over the predicted positions (padding rows left out) and the number
    of correct argmax predictions among them."""
    raw = getattr(model, "module", model)  # the memory pass needs no DDP hooks: no gradient
    mems = raw.transformer.memory(batch["mem_ids"]) if "mem_ids" in batch else None
    out = model(
        batch["input_ids"],
        token_type_ids=batch.get("token_type_ids"),
        mems=mems,
        perm_mask=batch["perm_mask"],
        target_mapping=batch["target_mapping"],
    )
    flat = out.logits.float().reshape(-1, out.logits.size(-1))  # (B*M, V)
    labels = batch["labels"].reshape(-1)
    loss = F.cross_entropy(flat, labels, ignore_index=IGNORE, reduction="sum")
    hits = ((flat.argmax(-1) == labels) & (labels != IGNORE)).sum()
    return loss, hits


def setup_plm_pretraining(cfg: PretrainConfig) -> PretrainSetup:
    """Tokenizer (laid out as XLNet reads text: ``<cls>`` last), the corpus packed into rows
    of ``plm_memory`` + ``max_length`` tokens (documents joined by the separator), the task
    and an :class:`XLNetLMHeadModel` builder; the model's vocabulary and pad id are the
    tokenizer's."""
    tokenizer = xlnet_layout(load_tokenizer(resolve_tokenizer(cfg.data.tokenizer)))
    ids = special_ids(tokenizer)
    sep = ids["sep"]
    assert sep is not None  # xlnet_layout checked it
    pad = ids["pad"] if ids["pad"] is not None else cfg.model.pad_token_id
    cfg = replace(
        cfg, model=replace(cfg.model, vocab_size=tokenizer.get_vocab_size(), pad_token_id=pad)
    )
    corpus_dir = resolve_corpus(cfg.data.corpus)
    cache = llmos_home() / "cache" / "tokenized"
    max_docs = cfg.data.max_train_documents
    train = load_tokenized(
        corpus_dir / "train.txt", tokenizer, cache, max_docs, whole_documents=True
    )
    valid = load_tokenized(corpus_dir / "valid.txt", tokenizer, cache, whole_documents=True)
    d, mem = cfg.data, cfg.data.plm_memory
    specials = [i for i in ids.values() if i is not None]
    options = dict(mem_len=mem, max_span=d.plm_max_span, predict_ratio=d.plm_ratio, sep_id=sep)
    batches = PLMBatches(
        pack_segments(train, sep, d.max_length, mem),
        cfg.train.batch_size,
        cfg.train.seed,
        specials,
        **options,
    )
    valid_rows = pack_segments(valid, sep, d.max_length, mem)[: d.max_valid_examples]
    if len(valid_rows) == 0:
        raise DataError(
            f"{corpus_dir / 'valid.txt'}: shorter than one row of {mem + d.max_length} tokens"
        )
    bs = cfg.train.micro_batch_size or cfg.train.batch_size
    valid_batches = plm_valid_batches(
        valid_rows, bs, special_ids=specials, seed=VALID_SEED, **options
    )[: cfg.train.eval_batches]
    labels = np.concatenate([b["labels"].numpy().ravel() for b in valid_batches])
    model_cfg = cfg.model
    return PretrainSetup(
        cfg=cfg,
        tokenizer=tokenizer,
        task=CausalLMTask(batches, valid_batches, plm_loss_sum),
        build=lambda: XLNetLMHeadModel(model_cfg),
        train=train,
        valid_targets=labels[labels != IGNORE],
        describe=(
            f"corpus: {train.num_documents} documents, {train.num_tokens} tokens, "
            f"{len(batches.blocks)} rows of {mem} memory + {d.max_length} tokens"
        ),
    )
