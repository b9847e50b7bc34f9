"""Causal language modelling for GPT-style decoders: next-token loss and metrics, the task
(pretraining on packed blocks, or instruction tuning on padded pairs), the sample generations a
pretraining report shows, and the pretraining setup built from a
:class:`~llmos.config.run.PretrainConfig`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmos.config.run import PretrainConfig
from llmos.data.batching import EpochBatches
from llmos.data.clm import IGNORE, BlockBatches, block_batch, pack_blocks
from llmos.data.corpus import load_tokenized
from llmos.data.datasets import resolve_corpus, resolve_tokenizer
from llmos.errors import ConfigError, DataError
from llmos.inference.load import load_pipeline
from llmos.models.gpt import GPT
from llmos.paths import llmos_home
from llmos.text.tokenizer import load_tokenizer, special_ids
from llmos.train.dist import DistInfo
from llmos.train.runs import PretrainSetup

# Prompts for the samples a pretraining report shows, per corpus language.
SAMPLE_PROMPTS = {
    "zh": ["中国", "今天天气", "却说曹操"],
    "en": ["The", "It was a", "In the morning"],
}


def lm_loss_sum(model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy over the targets that are not ``IGNORE``, and the
    number of correct argmax predictions among them."""
    logits, _ = model(batch["input_ids"], batch["attention_mask"])
    flat = logits.float().reshape(-1, logits.size(-1))
    labels = batch["labels"].reshape(-1)
    loss = F.cross_entropy(flat, labels, ignore_index=IGNORE, reduction="sum")
    hits = ((flat.argmax(-1) == labels) & (labels != IGNORE)).sum()
    return loss, hits


LossSum = Callable[[nn.Module, dict[str, Any]], tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def lm_metrics(
    model: nn.Module, batches: list[dict[str, Any]], loss_sum: LossSum = lm_loss_sum
) -> dict[str, float]:
    """Mean loss, perplexity and top-1 accuracy over the targets of ``batches`` (``IGNORE``
    targets left out), plus how many targets were scored. ``loss_sum`` gives a batch's summed
    loss and hits: next-token prediction by default (XLNet's permutation LM passes its own)."""
    device = next(model.parameters()).device
    total, hits, n = 0.0, 0.0, 0.0
    for batch in batches:
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        loss, hit = loss_sum(model, batch)
        total += loss.item()
        hits += hit.item()
        n += float((batch["labels"] != IGNORE).sum())
    loss = total / max(n, 1.0)
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50)),
        "accuracy": hits / max(n, 1.0),
        "targets": n,
    }


@dataclass
class CausalLMTask:
    """Next-token prediction for the shared training loop: pretraining on packed blocks, or
    instruction tuning on padded pairs whose prompt targets are ``IGNORE``. Any LM whose
    batches carry ``labels`` (``IGNORE`` where nothing is predicted) trains through it with
    its own ``loss_sum``, as XLNet's permutation LM does (``llmos.train.tasks.plm``); the loss
    is normalised by the step's number of targets."""

    batches: EpochBatches
    valid: list[dict[str, Any]]
    loss_sum: LossSum = lm_loss_sum

    def steps(self, info: DistInfo, micro_batch: int) -> Iterator[list[dict[str, Any]]]:
        return self.batches.steps(info, micro_batch)

    def counts(self, batch: dict[str, Any]) -> list[float]:
        return [float((batch["labels"] != IGNORE).sum())]

    def loss(
        self, model: nn.Module, batch: dict[str, Any], totals: list[float]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        loss = self.loss_sum(model, batch)[0] / max(totals[0], 1.0)
        return loss, {"loss": loss.item()}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return lm_metrics(model, self.valid, self.loss_sum)

    def state(self) -> dict[str, int]:
        return self.batches.state()

    def load_state(self, state: dict[str, int]) -> None:
        self.batches.load_state(state)


def eos_id_of(tokenizer: Any, what: str) -> int:
    """The tokenizer's end-of-text id, or a ConfigError naming ``what`` (a GPT needs one)."""
    eos = special_ids(tokenizer).get("eos")
    if eos is None:
        raise ConfigError(
            f"{what} has no end-of-text token a GPT needs (train a byte-level BPE tokenizer: "
            "`llmos tokenizer train --kind bpe --corpus zh --vocab-size 8000`)"
        )
    return eos


def sample_generations(checkpoint: Path, corpus: str) -> list[dict[str, str]]:
    """Greedy (with no-repeat-3-gram) and seeded top-p samples from a few fixed prompts.

    The decoding is pinned (no repetition penalty; the n-gram ban on greedy only), as these
    samples always were: ``GenerationConfig``'s defaults for interactive use add a penalty and
    a trigram ban everywhere, which would change what the reports of older runs compare to."""
    pipe = load_pipeline(checkpoint)
    prompts = SAMPLE_PROMPTS.get(corpus, SAMPLE_PROMPTS["en"])
    new = min(48, pipe.config.max_position // 2)  # small context windows: leave room for prompts
    out = []
    for prompt in prompts:
        greedy = pipe.generate(
            prompt, max_new_tokens=new, no_repeat_ngram_size=3, repetition_penalty=1.0
        )
        sample = pipe.generate(
            prompt,
            max_new_tokens=new,
            strategy="sample",
            top_p=0.9,
            temperature=0.8,
            seed=0,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
        )
        out.append({"prompt": prompt, "greedy": greedy, "top_p": sample})
    return out


def setup_clm_pretraining(cfg: PretrainConfig) -> PretrainSetup:
    """Tokenizer (it must have an end-of-text token), the corpus packed into blocks of
    ``data.max_length`` tokens (documents joined by end-of-text), the task, a :class:`GPT`
    builder, and sample generations for the report; the model's vocabulary is the
    tokenizer's."""
    tokenizer = load_tokenizer(resolve_tokenizer(cfg.data.tokenizer))
    eos = eos_id_of(tokenizer, f"data.tokenizer {cfg.data.tokenizer!r}")
    cfg = replace(cfg, model=replace(cfg.model, vocab_size=tokenizer.get_vocab_size()))
    corpus_dir = resolve_corpus(cfg.data.corpus)
    cache = llmos_home() / "cache" / "tokenized"
    train = load_tokenized(
        corpus_dir / "train.txt",
        tokenizer,
        cache,
        cfg.data.max_train_documents,
        whole_documents=True,
    )
    valid = load_tokenized(corpus_dir / "valid.txt", tokenizer, cache, whole_documents=True)
    block = cfg.data.max_length
    batches = BlockBatches(pack_blocks(train, eos, block), cfg.train.batch_size, cfg.train.seed)
    valid_blocks = pack_blocks(valid, eos, block)[: cfg.data.max_valid_examples]
    if len(valid_blocks) == 0:
        raise DataError(f"{corpus_dir / 'valid.txt'}: shorter than one block of {block} tokens")
    bs = cfg.train.micro_batch_size or cfg.train.batch_size
    valid_batches = [
        block_batch(valid_blocks[i : i + bs]) for i in range(0, len(valid_blocks), bs)
    ][: cfg.train.eval_batches]
    model_cfg, corpus = cfg.model, cfg.data.corpus
    return PretrainSetup(
        cfg=cfg,
        tokenizer=tokenizer,
        task=CausalLMTask(batches, valid_batches),
        build=lambda: GPT(model_cfg),
        train=train,
        valid_targets=np.concatenate([b["labels"].numpy().ravel() for b in valid_batches]),
        describe=(
            f"corpus: {train.num_documents} documents, {train.num_tokens} tokens, "
            f"{len(batches.blocks)} blocks of {block}"
        ),
        extra_report=lambda result: {"samples": sample_generations(result.checkpoint, corpus)},
    )
