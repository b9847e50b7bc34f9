"""Train a LoRA adapter of a GPT on a user's own texts (the writing assistant's continuation in
the user's style), through the shared training loop.

The texts are tokenized with the base's tokenizer, each followed by end-of-text, and packed into
blocks as pretraining packs its corpus (:func:`llmos.data.clm.pack_stream`); every tenth block
(and at least one) is held out for validation. Only the adapter's ``A`` and ``B`` train; the base
stays frozen and is never written: checkpoints (``run_dir/checkpoints/step-N/``, with the
optimizer state for exact resume) and the result (``run_dir/checkpoint/``) are PEFT adapter
directories (:mod:`llmos.models.lora`), whose ``llmos.json`` records the base's path and weights
digest, so an adapter is never applied to another base by mistake.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from llmos.checkpoint.digest import weights_digest
from llmos.checkpoint.io import read_checkpoint
from llmos.config.run import OptimConfig, TrainConfig
from llmos.data.clm import BlockBatches, block_batch, pack_stream
from llmos.errors import ConfigError, DataError
from llmos.files import atomic_write_json
from llmos.inference.load import load_model
from llmos.models import lora
from llmos.train.loop import fit
from llmos.train.tasks.clm import CausalLMTask, eos_id_of, lm_metrics

log = logging.getLogger("llmos.train")

ADAPTER = "adapter"  # the adapter's name inside the model while it trains
VALID_EVERY = 10  # one block in this many is held out
DEFAULT_BLOCK = 128  # tokens per training block (gpt-zh pretrains on 128)


@dataclass
class AdapterRun:
    """How to train one adapter: its shape, and a short run of the shared loop."""

    lora: lora.LoraConfig = field(default_factory=lora.LoraConfig)
    max_steps: int = 300
    batch_size: int = 8
    block: int | None = None  # tokens per block (None: 128, or the base's window if smaller)
    lr: float = 4e-3  # measured: 17.3 % / 11.1 % below the base against 16.4 % / 10.5 % at 2e-3
    warmup_steps: int = 20
    eval_every: int = 100
    seed: int = 0
    num_threads: int | None = None
    progress: bool = True

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            max_steps=self.max_steps,
            batch_size=self.batch_size,
            eval_every=self.eval_every,
            save_every=self.eval_every or self.max_steps,
            keep_last=1,
            seed=self.seed,
            num_threads=self.num_threads,
            progress=self.progress,
            precision="fp32",
            device="cpu",
        )

    def optim_config(self) -> OptimConfig:
        # No weight decay: it would pull B back towards zero, i.e. towards the base.
        return OptimConfig(
            lr=self.lr,
            warmup_steps=min(self.warmup_steps, self.max_steps // 2),
            schedule="cosine",
            min_lr_ratio=0.1,
            weight_decay=0.0,
        )


class AdapterWeights:
    """What the loop's checkpoints keep: the adapter alone (a loop ``Weights``)."""

    def __init__(self, model: nn.Module, cfg: lora.LoraConfig, base: Path, info: dict) -> None:
        self.model, self.cfg, self.base, self.info = model, cfg, base, info

    def save(self, directory: Path) -> None:
        lora.write_adapter(directory, self.model, ADAPTER, self.cfg, str(self.base), self.info)

    def load(self, directory: Path) -> None:
        _, state = lora.read_adapter(directory)
        lora.load_adapter_state(self.model, ADAPTER, state, str(directory))


@dataclass
class AdapterResult:
    adapter: Path  # the adapter directory (run_dir/checkpoint)
    step: int
    parameters: int  # the adapter's
    base_parameters: int
    base_valid: dict[str, float]  # the base model on the held-out blocks
    valid: dict[str, float]  # the adapter on them

    def summary(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "parameters": self.parameters,
            "base_parameters": self.base_parameters,
            "size_ratio": self.parameters / max(self.base_parameters, 1),
            "base_perplexity": self.base_valid.get("perplexity"),
            "perplexity": self.valid.get("perplexity"),
        }


def tokenize_documents(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return [enc.ids for enc in tokenizer.encode_batch([t for t in texts if t.strip()])]


def train_adapter(
    base: str | Path,
    texts: list[str],
    run_dir: str | Path,
    run: AdapterRun | None = None,
    *,
    resume: bool = False,
    on_step: Callable[[int, int], None] | None = None,
) -> AdapterResult:
    """Train a LoRA adapter of the GPT checkpoint ``base`` on ``texts`` (a user's documents)
    into ``run_dir``; with ``resume`` a cut-off run continues from its last checkpoint and ends
    exactly where an uninterrupted one would. ``on_step(step, max_steps)``: see
    :func:`~llmos.train.loop.fit`."""
    run = run or AdapterRun()
    base = Path(base)
    ckpt = read_checkpoint(base)
    if not ckpt.is_decoder:
        raise ConfigError(f"{base}: an adapter for continuation needs a GPT checkpoint")
    window = ckpt.config.max_position
    block = run.block or min(DEFAULT_BLOCK, window)
    if block > window:
        raise ConfigError(f"block of {block} tokens exceeds {base}'s context window of {window}")
    tokenizer = ckpt.tokenizer
    eos = eos_id_of(tokenizer, str(base))
    docs = tokenize_documents(tokenizer, texts)
    stream = np.fromiter(
        (t for doc in docs for t in (*doc, eos)),
        dtype=np.int64,
        count=sum(len(d) + 1 for d in docs),
    )
    blocks = pack_stream(stream, block)
    if len(blocks) < 2:
        raise DataError(
            f"the texts hold {stream.size} tokens: an adapter needs at least two blocks of "
            f"{block} (upload more text)"
        )
    held = np.zeros(len(blocks), dtype=bool)
    held[VALID_EVERY - 1 :: VALID_EVERY] = True
    held[-1] = True  # at least one
    train_blocks, valid_blocks = blocks[~held], blocks[held]
    if len(train_blocks) < run.batch_size:
        raise DataError(
            f"the texts give {len(train_blocks)} training blocks of {block} tokens, fewer "
            f"than one batch of {run.batch_size}: upload more text or use a smaller batch"
        )
    valid = [
        block_batch(valid_blocks[i : i + run.batch_size])
        for i in range(0, len(valid_blocks), run.batch_size)
    ]

    model = load_model(ckpt)
    base_parameters = sum(p.numel() for p in model.parameters())
    torch.manual_seed(run.seed)  # the adapter's A
    model.eval()
    base_valid = lm_metrics(model, valid)
    lora.add_adapter(model, ADAPTER, run.lora)
    trained = lora.train_only(model, ADAPTER)
    log.info(
        "adapter: %d parameters (%.2f%% of the base's %d); %d training blocks, %d held out",
        trained,
        100 * trained / base_parameters,
        base_parameters,
        len(train_blocks),
        len(valid_blocks),
    )
    info = {
        "base": str(base),
        "base_digest": weights_digest(base),
        "documents": len(docs),
        "train_tokens": int(train_blocks.shape[0] * block),
    }
    weights = AdapterWeights(model, run.lora, base, info)
    task = CausalLMTask(BlockBatches(train_blocks, run.batch_size, run.seed), valid)
    fitted = fit(
        model,
        task,
        run.train_config(),
        run.optim_config(),
        run_dir,
        model_config=ckpt.config,
        resume=resume,
        title="adapter",
        weights=weights,
        on_step=on_step,
    )
    model.eval()
    last = lm_metrics(model, valid)
    result = AdapterResult(
        adapter=fitted.checkpoint,
        step=fitted.step,
        parameters=trained,
        base_parameters=base_parameters,
        base_valid=base_valid,
        valid=last,
    )
    # The final adapter (written by fit) records the held-out comparison too.
    atomic_write_json(fitted.checkpoint / lora.INFO_FILE, {**info, **result.summary()})
    log.info(
        "held-out perplexity: base %.1f, adapter %.1f",
        base_valid["perplexity"],
        last["perplexity"],
    )
    return result
