"""Decoding for GPT checkpoints: greedy and sampling (temperature, top-k, top-p), batched
prompts with left padding, one forward per new token through the key/value cache.

The token-level loop is here; text in and out (tokenizing, detokenizing, stop strings,
streaming) belongs to the pipeline layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from llmos.errors import LlmosError
from llmos.models.gpt import GPT


@dataclass
class GenerationConfig:
    """How to pick each new token.

    ``strategy="greedy"`` takes the most likely token; ``"sample"`` draws from the distribution
    after ``repetition_penalty`` (CTRL-style: positive logits of seen tokens divided by it,
    negative ones multiplied), ``temperature``, ``top_k`` (0 = off) and ``top_p`` (nucleus; 1 =
    off). ``no_repeat_ngram_size`` n > 0 bans any token that would repeat an n-gram already in
    the prompt or output (both strategies). ``seed`` makes sampling reproducible.
    """

    max_new_tokens: int = 64
    strategy: Literal["greedy", "sample"] = "greedy"
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise LlmosError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.strategy not in ("greedy", "sample"):
            raise LlmosError(f"strategy must be 'greedy' or 'sample', got {self.strategy!r}")
        if self.strategy == "sample" and self.temperature <= 0:
            raise LlmosError(
                f"temperature must be > 0 when sampling, got {self.temperature} "
                "(use strategy='greedy' for deterministic decoding)"
            )
        if not 0 < self.top_p <= 1:
            raise LlmosError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise LlmosError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.no_repeat_ngram_size < 0:
            raise LlmosError(
                f"no_repeat_ngram_size must be >= 0 (0 = off), got {self.no_repeat_ngram_size}"
            )
        if self.repetition_penalty <= 0:
            raise LlmosError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits per row (ties at the k-th value kept); others -> -inf."""
    if k <= 0 or k >= logits.size(-1):
        return logits
    kth = logits.topk(k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens whose probability reaches
    ``p`` (always at least the most likely one); others -> -inf."""
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    cum = sorted_logits.softmax(-1).cumsum(-1)
    drop_sorted = cum - sorted_logits.softmax(-1) >= p  # mass before this token already >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def apply_repetition_penalty(
    logits: torch.Tensor, seen: torch.Tensor, penalty: float
) -> torch.Tensor:
    """Penalise tokens already in ``seen`` (B, S) (prompt and output so far)."""
    if penalty == 1.0:
        return logits
    picked = logits.gather(-1, seen)
    picked = torch.where(picked > 0, picked / penalty, picked * penalty)
    return logits.scatter(-1, seen, picked)


def ban_repeated_ngrams(logits: torch.Tensor, seen: list[list[int]], n: int) -> torch.Tensor:
    """Set to -inf every token that would complete an n-gram already present in its row."""
    if n <= 0:
        return logits
    logits = logits.clone()
    for row, tokens in enumerate(seen):
        if len(tokens) < n:
            continue
        prefix = tuple(tokens[len(tokens) - n + 1 :]) if n > 1 else ()
        banned = {
            tokens[i + n - 1]
            for i in range(len(tokens) - n + 1)
            if tuple(tokens[i : i + n - 1]) == prefix
        }
        if banned:
            logits[row, list(banned)] = float("-inf")
    return logits


@torch.inference_mode()
def generate_ids(
    model: GPT,
    prompts: list[list[int]],
    cfg: GenerationConfig,
    *,
    eos_id: int | None,
    pad_id: int = 0,
) -> list[list[int]]:
    """New token ids for each prompt (the prompt not included), stopping at ``eos_id`` (kept)
    or after ``cfg.max_new_tokens``.

    Prompts are left-padded into one batch; positions skip the padding, so each row decodes as
    it would alone.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise LlmosError("every prompt needs at least one token")
    longest = max(len(p) for p in prompts)
    window = model.cfg.max_position
    if longest + cfg.max_new_tokens > window:
        raise LlmosError(
            f"prompt ({longest} tokens) + max_new_tokens ({cfg.max_new_tokens}) exceeds the "
            f"context window of {window} tokens"
        )
    device = next(model.parameters()).device
    B = len(prompts)
    ids = torch.full((B, longest), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((B, longest), dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        ids[i, longest - len(p) :] = torch.tensor(p, device=device)
        mask[i, longest - len(p) :] = 1
    padded = bool((mask == 0).any())
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    gen = None
    if cfg.strategy == "sample":
        gen = torch.Generator(device=device)
        gen.manual_seed(cfg.seed if cfg.seed is not None else torch.seed())
    logits, cache = model(ids, mask if padded else None, None, positions)
    seen = ids
    history = [list(p) for p in prompts]  # unpadded, for n-gram bans
    out = torch.empty((B, 0), dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    next_pos = positions[:, -1:] + 1
    for _ in range(cfg.max_new_tokens):
        scores = logits[:, -1].float()
        scores = apply_repetition_penalty(scores, seen, cfg.repetition_penalty)
        scores = ban_repeated_ngrams(scores, history, cfg.no_repeat_ngram_size)
        if cfg.strategy == "greedy":
            token = scores.argmax(-1)
        else:
            scores = top_p_filter(top_k_filter(scores / cfg.temperature, cfg.top_k), cfg.top_p)
            token = torch.multinomial(scores.softmax(-1), 1, generator=gen).squeeze(-1)
        token = torch.where(done, torch.full_like(token, pad_id), token)
        out = torch.cat([out, token[:, None]], dim=1)
        seen = torch.cat([seen, token[:, None]], dim=1)
        for row, t in enumerate(token.tolist()):
            history[row].append(t)
        if eos_id is not None:
            done |= token == eos_id
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=device)], dim=1)
        logits, cache = model(token[:, None], mask if padded else None, cache, next_pos)
        next_pos = next_pos + 1
    result = []
    for row in out.tolist():
        if eos_id is not None and eos_id in row:
            row = row[: row.index(eos_id) + 1]
        result.append(row)
    return result
