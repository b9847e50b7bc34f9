"""Causal-LM data: packed pretraining blocks and instruction-tuning pairs.

Pretraining (GPT-2 style): every document is followed by the end-of-text token and the stream of
all documents is cut into blocks of ``block_size + 1`` tokens that overlap by one, so the
inputs are ``block[:-1]``, the targets ``block[1:]`` and every token of the stream is a target
exactly once. No padding is ever computed. Attention crosses document boundaries inside a block
(as in GPT-2); the end-of-text token tells the model where a new document starts.

Instruction tuning (the supervised step of InstructGPT): an ``{instruction, input, output}``
record becomes ``prompt + output + <eos>`` where the prompt is :data:`PROMPT_TEMPLATE` filled in;
the loss is taken on the output tokens and the end-of-text token only (prompt targets are
``IGNORE``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from llmos.data.batching import EpochBatches
from llmos.data.corpus import TokenizedCorpus
from llmos.data.readers import Instruction
from llmos.errors import DataError

log = logging.getLogger("llmos.data")

IGNORE = -100  # target id that contributes no loss (F.cross_entropy's ignore_index)

# Alpaca's layout; the headers are plain ASCII so one template serves Chinese and English.
PROMPT_TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:\n"
PROMPT_TEMPLATE_INPUT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"


def pack_blocks(corpus: TokenizedCorpus, eos_id: int, block_size: int) -> np.ndarray:
    """Documents, each followed by ``eos_id``, back to back, cut into (N, block_size + 1) rows
    overlapping by one token; the incomplete tail is dropped."""
    doc_ends = corpus.sent_bounds[corpus.doc_bounds[1:]]  # token offset after each document
    return pack_stream(np.insert(corpus.ids, doc_ends, eos_id), block_size)


def pack_stream(stream: np.ndarray, block_size: int) -> np.ndarray:
    """A token stream cut into (N, block_size + 1) rows overlapping by one token; the
    incomplete tail is dropped."""
    n = (stream.size - 1) // block_size
    if n == 0:
        return np.zeros((0, block_size + 1), dtype=np.int64)
    rows = np.arange(n)[:, None] * block_size + np.arange(block_size + 1)[None, :]
    return stream[rows].astype(np.int64)


class BlockBatches(EpochBatches):
    """Endless, resumable shuffled epochs over packed blocks (all the same length)."""

    def __init__(self, blocks: np.ndarray, batch_size: int, seed: int) -> None:
        if len(blocks) < batch_size:
            raise DataError(
                f"the corpus yields {len(blocks)} blocks of {blocks.shape[1] - 1} tokens, fewer "
                f"than one batch of {batch_size}: use more text, a smaller train.batch_size or "
                "a smaller data.max_length"
            )
        self.blocks = blocks
        self.lengths = np.full(len(blocks), blocks.shape[1] - 1)
        self.batch_size, self.seed = batch_size, seed
        self.position = {"epoch": 0, "batch": 0}

    def collate(self, idx: np.ndarray) -> dict[str, Any]:
        return block_batch(self.blocks[np.sort(idx)])


def block_batch(blocks: np.ndarray) -> dict[str, Any]:
    """Inputs and next-token targets of packed blocks (B, block_size + 1)."""
    x = torch.from_numpy(blocks)
    return {
        "input_ids": x[:, :-1].contiguous(),
        "attention_mask": None,
        "labels": x[:, 1:],
        "num_tokens": torch.tensor(x[:, 1:].numel()),
    }


# --- instruction tuning -------------------------------------------------------------------


def format_prompt(
    instruction: str,
    input: str = "",
    *,
    template: str | None = None,
    template_with_input: str | None = None,
) -> str:
    """The prompt the model sees (and is given at generation time) for an instruction.

    ``template`` / ``template_with_input``: a checkpoint's own templates (``task.json``);
    None: :data:`PROMPT_TEMPLATE` / :data:`PROMPT_TEMPLATE_INPUT`."""
    if input.strip():
        return (template_with_input or PROMPT_TEMPLATE_INPUT).format(
            instruction=instruction.strip(), input=input.strip()
        )
    return (template or PROMPT_TEMPLATE).format(instruction=instruction.strip())


def encode_instructions(
    examples: list[Instruction], tokenizer: Any, eos_id: int, max_length: int
) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Token ids and targets of each example: ``prompt + output + eos``, targets ``IGNORE`` on
    the prompt. The prompt and the output are tokenized separately, exactly as the prompt is
    at generation time.

    An example longer than ``max_length`` keeps its whole prompt and loses the end of its
    output; one whose prompt alone leaves no room for an output token is dropped.

    Returns:
        ids, targets (both already shifted: ``targets[t]`` is the token after ``ids[t]``),
        and the number of examples dropped.
    """
    prompts = tokenizer.encode_batch(
        [format_prompt(e.instruction, e.input) for e in examples], add_special_tokens=False
    )
    outputs = tokenizer.encode_batch([e.output for e in examples], add_special_tokens=False)
    ids, targets, dropped = [], [], 0
    for p, o in zip(prompts, outputs, strict=True):
        seq = p.ids + o.ids + [eos_id]
        labels = [IGNORE] * len(p.ids) + o.ids + [eos_id]
        seq, labels = seq[: max_length + 1], labels[: max_length + 1]
        if len(p.ids) >= len(seq):
            dropped += 1
            continue
        ids.append(np.asarray(seq[:-1], dtype=np.int64))
        targets.append(np.asarray(labels[1:], dtype=np.int64))
    return ids, targets, dropped


def pad_pairs(ids: list[np.ndarray], targets: list[np.ndarray], pad_id: int) -> dict[str, Any]:
    """Right-pad (ids, targets) pairs: pads get ``pad_id`` inputs, ``IGNORE`` targets and a 0
    in the attention mask (None when nothing is padded)."""
    lengths = np.array([len(x) for x in ids])
    B, T = len(ids), int(lengths.max())
    x = np.full((B, T), pad_id, dtype=np.int64)
    y = np.full((B, T), IGNORE, dtype=np.int64)
    for row, (a, b) in enumerate(zip(ids, targets, strict=True)):
        x[row, : len(a)] = a
        y[row, : len(b)] = b
    mask = None
    if (lengths < T).any():
        mask = torch.from_numpy((np.arange(T)[None, :] < lengths[:, None]).astype(np.int64))
    return {
        "input_ids": torch.from_numpy(x),
        "attention_mask": mask,
        "labels": torch.from_numpy(y),
        "num_tokens": torch.tensor(int(lengths.sum())),
    }


class InstructionBatches(EpochBatches):
    """Endless, resumable length-bucketed epochs over encoded instruction examples."""

    def __init__(
        self,
        ids: list[np.ndarray],
        targets: list[np.ndarray],
        pad_id: int,
        batch_size: int,
        seed: int,
    ) -> None:
        self.ids, self.targets, self.pad_id = ids, targets, pad_id
        self.lengths = np.array([len(x) for x in ids])
        self.batch_size, self.seed = batch_size, seed
        self.position = {"epoch": 0, "batch": 0}

    def collate(self, idx: np.ndarray) -> dict[str, Any]:
        return pad_pairs([self.ids[i] for i in idx], [self.targets[i] for i in idx], self.pad_id)
