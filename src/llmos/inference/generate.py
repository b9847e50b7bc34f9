"""Decoding for GPT checkpoints: greedy, sampling (temperature, top-k, top-p) and beam search,
batched prompts with left padding, one forward per new token through the key/value cache.

The token-level loops are here; text in and out (tokenizing, detokenizing, stop strings,
streaming) belongs to the pipeline layer, which reaches in through the ``stop`` hook.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch

from llmos.errors import LlmosError
from llmos.models.gpt import GPT, KVCache


@dataclass
class GenerationConfig:
    """How to pick each new token.

    ``strategy="greedy"`` takes the most likely token; ``"sample"`` draws from the distribution
    after ``repetition_penalty`` (CTRL-style: positive logits of seen tokens divided by it,
    negative ones multiplied), ``temperature``, ``top_k`` (0 = off) and ``top_p`` (nucleus; 1 =
    off). ``no_repeat_ngram_size`` n > 0 bans any token that would repeat an n-gram already in
    the prompt or output (every strategy). ``seed`` makes sampling reproducible.

    ``num_beams`` > 1 is beam search (greedy strategy only), scored like Hugging Face's:
    a finished hypothesis scores ``sum of log-probabilities / generated_length **
    length_penalty``; ``early_stopping`` True stops once ``num_beams`` hypotheses are finished,
    False stops when the best running beam can no longer beat them at its current length,
    ``"never"`` when it could not at any length. ``num_return_sequences`` (<= ``num_beams``)
    best hypotheses are returned per prompt; with sampling, that many independent samples.
    ``stop`` strings end a sequence where they first appear (the text is cut before them).

    Defaults are what a small model needs to read well: plain greedy decoding of a small GPT
    loops (``今天天气`` -> ``,我我我我...``). So by default no trigram repeats
    (``no_repeat_ngram_size=3``, as the greedy samples of the GPT pretraining report always
    had), and seen tokens get a mild ``repetition_penalty`` of 1.1 (a positive logit keeps
    91 %), which breaks the single-token loops that a trigram ban still lets through
    (``我我X我我Y``). Both are overridable: ``no_repeat_ngram_size=0`` and
    ``repetition_penalty=1.0`` turn them off (Hugging Face's defaults, which the parity tests
    pass explicitly).
    """

    max_new_tokens: int = 64
    strategy: Literal["greedy", "sample"] = "greedy"
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.1
    no_repeat_ngram_size: int = 3
    seed: int | None = None
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | Literal["never"] = False
    num_return_sequences: int = 1
    stop: tuple[str, ...] = ()

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
        if self.num_beams < 1:
            raise LlmosError(f"num_beams must be >= 1, got {self.num_beams}")
        if self.num_beams > 1 and self.strategy == "sample":
            raise LlmosError("beam search (num_beams > 1) takes strategy='greedy', not 'sample'")
        if self.early_stopping not in (True, False, "never"):
            raise LlmosError(
                f"early_stopping must be true, false or 'never', got {self.early_stopping!r}"
            )
        if self.num_return_sequences < 1:
            raise LlmosError(f"num_return_sequences must be >= 1, got {self.num_return_sequences}")
        if self.strategy == "greedy" and self.num_return_sequences > self.num_beams:
            raise LlmosError(
                f"num_return_sequences ({self.num_return_sequences}) must be <= num_beams "
                f"({self.num_beams}); greedy decoding returns one sequence (sample or use beams)"
            )
        self.stop = tuple(self.stop)
        if any(not isinstance(t, str) or not t for t in self.stop):
            raise LlmosError(f"stop strings must be non-empty strings, got {list(self.stop)!r}")


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
    # The most likely token stays whatever p is: a p below float32's smallest number (5e-324)
    # compares as 0, which would otherwise drop every token (a NaN distribution).
    drop_sorted[..., 0] = False
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


# stop(row, tokens generated so far for that row) -> True to end the row.
StopHook = Callable[[int, list[int]], bool]


@torch.inference_mode()
def generate_ids(
    model: GPT,
    prompts: list[list[int]],
    cfg: GenerationConfig,
    *,
    eos_id: int | None,
    pad_id: int = 0,
    stop: StopHook | None = None,
) -> list[list[int]]:
    """New token ids for each prompt (the prompt not included), stopping at ``eos_id`` (kept)
    or after ``cfg.max_new_tokens``.

    Prompts are left-padded into one batch; positions skip the padding, so each row decodes as
    it would alone. With ``num_return_sequences`` n, the result holds n rows per prompt (prompt
    0's first). ``stop(row, tokens)`` (greedy and sampling) ends a row when it returns True;
    the pipeline uses it for stop strings.
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
    if cfg.num_beams > 1:
        return _beam_search(model, prompts, cfg, eos_id, pad_id)
    if cfg.num_return_sequences > 1:
        prompts = [p for p in prompts for _ in range(cfg.num_return_sequences)]
    rows: list[list[int]] = [[] for _ in prompts]
    for step in decode_steps(model, prompts, cfg, eos_id=eos_id, pad_id=pad_id, stop=stop):
        for row, t in zip(rows, step, strict=True):
            if t >= 0:
                row.append(t)
    return [_trim(row, eos_id) for row in rows]


def left_pad(
    prompts: list[list[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, T) left-padded ids, their attention mask, and positions that skip the padding."""
    longest = max(len(p) for p in prompts)
    B = len(prompts)
    ids = torch.full((B, longest), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((B, longest), dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        ids[i, longest - len(p) :] = torch.tensor(p, device=device)
        mask[i, longest - len(p) :] = 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


@torch.inference_mode()
def decode_steps(
    model: GPT,
    prompts: list[list[int]],
    cfg: GenerationConfig,
    *,
    eos_id: int | None,
    pad_id: int = 0,
    stop: StopHook | None = None,
) -> Iterator[list[int]]:
    """Greedy or sampled decoding, one forward per step: yields each step's new token per
    prompt (-1 for a row that had already finished), until every row has finished or
    ``max_new_tokens`` steps. A row finishes at ``eos_id`` or when ``stop(row, new tokens)``
    says so. Streaming reads this directly; :func:`generate_ids` collects it."""
    ids, mask, positions = left_pad(prompts, pad_id, next(model.parameters()).device)
    device = ids.device
    B = ids.size(0)
    padded = bool((mask == 0).any())
    gen = None
    if cfg.strategy == "sample":
        gen = torch.Generator(device=device)
        gen.manual_seed(cfg.seed if cfg.seed is not None else torch.seed())
    cache = KVCache(ids.size(1) + cfg.max_new_tokens)
    logits, cache = model(ids, mask if padded else None, cache, positions)
    # What the processors need, kept only when they are on: ids so far (repetition penalty,
    # pads included as in HF) and unpadded token lists (n-gram bans, the stop hook).
    seen = ids if cfg.repetition_penalty != 1.0 else None
    history = [list(p) for p in prompts] if cfg.no_repeat_ngram_size or stop is not None else None
    done = torch.zeros(B, dtype=torch.bool, device=device)
    any_done = False
    next_pos = positions[:, -1:] + 1
    for _ in range(cfg.max_new_tokens):
        scores = logits[:, -1].float()
        if seen is not None:
            scores = apply_repetition_penalty(scores, seen, cfg.repetition_penalty)
        if history is not None:
            scores = ban_repeated_ngrams(scores, history, cfg.no_repeat_ngram_size)
        if cfg.strategy == "greedy":
            token = scores.argmax(-1)
        else:
            # The best score moved to 0 first (the softmax and both filters are shift-invariant):
            # a tiny temperature then sends the others to -inf, not the best to +inf, whose
            # inf - inf made the softmax NaN; the limit is greedy, as it should be.
            scaled = (scores - scores.amax(-1, keepdim=True)) / cfg.temperature
            scores = top_p_filter(top_k_filter(scaled, cfg.top_k), cfg.top_p)
            token = torch.multinomial(scores.softmax(-1), 1, generator=gen).squeeze(-1)
        was_done = done.tolist() if any_done else None
        if any_done:
            token = torch.where(done, torch.full_like(token, pad_id), token)
        if seen is not None:
            seen = torch.cat([seen, token[:, None]], dim=1)
        tokens = token.tolist()
        if history is not None:
            for row, t in enumerate(tokens):
                history[row].append(t)
        if eos_id is not None:
            done |= token == eos_id
        if stop is not None and history is not None:
            for row in range(B):
                if not done[row] and stop(row, history[row][len(prompts[row]) :]):
                    done[row] = True
        yield (
            tokens
            if was_done is None
            else [-1 if d else t for t, d in zip(tokens, was_done, strict=True)]
        )
        any_done = bool(done.any())
        if any_done and bool(done.all()):
            return
        if padded:
            mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=device)], dim=1)
        logits, cache = model(token[:, None], mask if padded else None, cache, next_pos)
        next_pos = next_pos + 1


def _trim(row: list[int], eos_id: int | None) -> list[int]:
    """A generated row up to and including its first end-of-text token."""
    if eos_id is not None and eos_id in row:
        return row[: row.index(eos_id) + 1]
    return row


def _beam_search(
    model: GPT,
    prompts: list[list[int]],
    cfg: GenerationConfig,
    eos_id: int | None,
    pad_id: int,
) -> list[list[int]]:
    """Beam search over left-padded prompts, the algorithm of Hugging Face ``generate``
    (``num_beams`` > 1, no sampling), so both pick the same hypotheses token for token.

    Per step, the ``2 * num_beams`` best continuations over all beams of a prompt are kept: the
    first ``num_beams`` of them that end in ``eos_id`` (or reach ``max_new_tokens``) compete for
    the finished list, the best ``num_beams`` that do not continue. Processors (repetition
    penalty, n-gram bans) act on log-probabilities, as in HF.
    """
    device = next(model.parameters()).device
    nb, B = cfg.num_beams, len(prompts)
    keep = 2 * nb  # max(2, 1 + number of eos tokens) * num_beams in HF
    top_nb = torch.arange(keep, device=device) < nb  # (keep,)
    ids, mask, positions = left_pad(prompts, pad_id, device)
    prompt_len = ids.size(1)
    max_len = prompt_len + cfg.max_new_tokens
    fill = pad_id if eos_id is None else (pad_id or eos_id)  # HF's output fill value
    # Row b * nb + j is beam j of prompt b; all beams start as copies of the prompt.
    ids, mask, positions = (t.repeat_interleave(nb, dim=0) for t in (ids, mask, positions))
    padded = bool((mask == 0).any())
    running = torch.full((B, nb, max_len), fill, dtype=torch.long, device=device)
    running[:, :, :prompt_len] = ids.view(B, nb, prompt_len)
    finished = running.clone()
    running_scores = torch.zeros((B, nb), device=device)
    running_scores[:, 1:] = -1e9  # only beam 0 expands at the first step (the beams are equal)
    finished_scores = torch.full((B, nb), -1e9, device=device)
    is_finished = torch.zeros((B, nb), dtype=torch.bool, device=device)
    improvable = torch.ones((B, 1), dtype=torch.bool, device=device)
    arange_b = torch.arange(B, device=device)[:, None]

    cache = KVCache(max_len)
    logits, cache = model(ids, mask if padded else None, cache, positions)
    next_pos = positions[:, -1:] + 1
    cur = prompt_len
    while True:
        seqs = running[:, :, :cur].reshape(B * nb, cur)
        logp = logits[:, -1].float().log_softmax(-1)
        logp = apply_repetition_penalty(logp, seqs, cfg.repetition_penalty)
        if cfg.no_repeat_ngram_size:
            logp = ban_repeated_ngrams(logp, seqs.tolist(), cfg.no_repeat_ngram_size)
        V = logp.size(-1)
        total = (logp.view(B, nb, V) + running_scores[:, :, None]).view(B, nb * V)
        top_scores, top_idx = total.topk(keep, dim=-1)  # (B, keep)
        src_beam, token = top_idx // V, top_idx % V
        cand = running[arange_b, src_beam]  # (B, keep, max_len)
        cand[:, :, cur] = token
        hits = torch.zeros_like(token, dtype=torch.bool)
        if eos_id is not None:
            hits |= token == eos_id
        if cur + 1 >= max_len:
            hits[:] = True
        # Running beams: the best nb candidates that did not just finish.
        alive_scores = top_scores - hits.float() * 1e9
        nxt = alive_scores.topk(nb, dim=-1).indices  # (B, nb)
        running = cand[arange_b, nxt]
        running_scores = alive_scores.gather(1, nxt)
        beam_src = src_beam.gather(1, nxt)  # which old beam each new one continues
        # Finished hypotheses: merge the newly finished among the top nb with the old list.
        just = hits & top_nb[None, :]
        score = top_scores / float(cur + 1 - prompt_len) ** cfg.length_penalty
        full = is_finished.all(-1, keepdim=True) & (cfg.early_stopping is True)
        score = score - full.float() * 1e9 - (~improvable).float() * 1e9 - (~just).float() * 1e9
        merged = torch.cat([finished, cand], dim=1)
        merged_scores = torch.cat([finished_scores, score], dim=1)
        merged_done = torch.cat([is_finished, just], dim=1)
        best = merged_scores.topk(nb, dim=-1).indices
        finished = merged[arange_b, best]
        finished_scores = merged_scores.gather(1, best)
        is_finished = merged_done.gather(1, best)
        cur += 1
        # Could a running beam still beat the worst finished hypothesis?
        if cfg.early_stopping == "never" and cfg.length_penalty > 0:
            best_len = max_len - prompt_len
        else:
            best_len = cur - prompt_len
        best_running = running_scores[:, :1] / float(best_len) ** cfg.length_penalty
        worst_done = torch.where(is_finished, finished_scores.min(dim=1, keepdim=True).values, -1e9)
        improvable = improvable & (best_running > worst_done).any(-1, keepdim=True)
        open_beam = not (bool(is_finished.all()) and cfg.early_stopping is True)
        if not bool(improvable.any()) or not open_beam or bool(hits.all()):
            break
        # Feed the chosen tokens; the cache follows each beam's parent.
        flat_src = (beam_src + arange_b * nb).view(-1)
        cache.reorder(flat_src)
        mask = torch.cat([mask, torch.ones((B * nb, 1), dtype=mask.dtype, device=device)], 1)
        logits, cache = model(
            running[:, :, cur - 1].reshape(B * nb, 1), mask if padded else None, cache, next_pos
        )
        next_pos = next_pos + 1
    out = finished[:, : cfg.num_return_sequences, prompt_len:cur].reshape(
        B * cfg.num_return_sequences, cur - prompt_len
    )
    return [_trim(row, eos_id) for row in out.tolist()]
