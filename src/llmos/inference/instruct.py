"""Constrained answers from an instruction-tuned GPT: a text put into the instruction prompt
the checkpoint was tuned with (:func:`~llmos.data.clm.format_prompt`, the text as the
instruction's input), and the GPT's log-probability of each of a few given answers after it.
Zero-shot classification asks the model a question and reads which label's answer it finds
likeliest (``ZeroShotClassifier(method="instruct")``), instead of letting it generate freely.

An answer's log-probability is that of its tokens *and the end-of-text token after them*,
``log p(正面 <eos> | prompt)``: the model was tuned to end its answer there, and without it an
answer that is the start of a likelier one (``正`` of ``正面``) would take that one's mass as
well. The answer is tokenized on its own, as the outputs were in tuning
(:func:`~llmos.data.clm.encode_instructions`).

Each prompt runs once: its keys and values are copied to one cache row per answer, and every
answer of every prompt of a batch goes through one forward on top of that cache. Prompts are
right-padded (a token never sees the pads after it, so the prompt pass needs no mask); answers
are right-padded too, and a pad after an answer is never read by it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from tokenizers import Tokenizer

from llmos.data.batching import pad_batch, run_length_sorted
from llmos.data.clm import format_prompt
from llmos.errors import LlmosError
from llmos.models.gpt import GPT, KVCache


class AnswerScorer(Protocol):
    """What ``instruct`` needs of a pipeline: each answer's log-probability after each text's
    instruction prompt (:meth:`~llmos.inference.generator.GeneratorPipeline.answer_scores`)."""

    def answer_scores(
        self, instruction: str, texts: list[str], answers: Sequence[str], batch_size: int = 32
    ) -> np.ndarray: ...


def encode_prompts(
    tokenizer: Tokenizer,
    instruction: str,
    texts: Sequence[str],
    room: int,
    template: str | None = None,
    template_with_input: str | None = None,
) -> tuple[list[np.ndarray], int]:
    """Token ids of each text's instruction prompt (no special tokens, as in tuning), and how
    many texts were cut so that their prompt fits in ``room`` tokens.

    A text too long loses its end: the template and the instruction stay whole, and the
    prompt still ends where the model answers.

    Raises:
        LlmosError: the instruction with one character of the text does not fit.
    """

    def filled(text: str) -> str:
        return format_prompt(
            instruction, text, template=template, template_with_input=template_with_input
        )

    def prompt(text: str) -> list[int]:
        return tokenizer.encode(filled(text), add_special_tokens=False).ids

    out, cut = [], 0
    encoded = tokenizer.encode_batch([filled(t) for t in texts], add_special_tokens=False)
    for text, enc in zip(texts, encoded, strict=True):
        ids = enc.ids
        if len(ids) > room:
            cut += 1
            text = text.strip()
            # The longest start of the text whose prompt fits (a binary search; ``lo`` is
            # always a length that fits, 0 standing for none).
            lo, hi = 0, len(text) - 1
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if len(prompt(text[:mid])) <= room else (lo, mid - 1)
            ids = prompt(text[:lo]) if lo else []
            if not ids:
                raise LlmosError(
                    f"the instruction leaves no room for the text: with one character of it, "
                    f"the prompt takes {len(prompt(text[:1]))} tokens, more than the {room} "
                    "that the context window leaves beside the answers; give a shorter "
                    "instruction"
                )
        out.append(np.array(ids, dtype=np.int64))
    return out, cut


@torch.inference_mode()
def answer_log_probs(
    model: GPT,
    prompts: Sequence[np.ndarray],
    answers: Sequence[Sequence[int]],
    pad_id: int,
    batch_size: int = 32,
) -> np.ndarray:
    """(n, m) the log-probability of each answer's tokens after each prompt: the sum of the
    log-softmax of the GPT's logits at each answer token (module docstring).

    Args:
        model: the GPT.
        prompts: n token id arrays, each non-empty; a prompt and the longest answer must fit
            the context window together.
        answers: m token id lists, each non-empty (the end-of-text token included by the
            caller when it should count).
        pad_id: the id written in padding (no real token attends to it).
        batch_size: prompts per forward (a forward of the answers holds m rows per prompt).
    """
    assert answers and all(answers), "every answer needs at least one token"
    device = next(model.parameters()).device
    m, A = len(answers), max(len(a) for a in answers)
    ans = torch.full((m, A), pad_id, dtype=torch.long)
    real = torch.zeros((m, A), dtype=torch.bool)  # which answer positions hold a token
    for j, a in enumerate(answers):
        ans[j, : len(a)] = torch.tensor(list(a))
        real[j, : len(a)] = True
    ans, real = ans.to(device), real.to(device)

    def pad(idx: np.ndarray) -> dict[str, torch.Tensor | None]:
        return pad_batch([prompts[j] for j in idx], None, pad_id)

    def forward(b: dict[str, torch.Tensor | None]) -> list[np.ndarray]:
        ids = b["input_ids"]
        assert ids is not None
        ids = ids.to(device)
        B, T = ids.shape
        mask = b["attention_mask"]
        lengths = mask.to(device).sum(1) if mask is not None else torch.full((B,), T, device=device)
        logits, cache = model(ids, None, KVCache(T + A))  # (B, T, V)
        last = logits[torch.arange(B, device=device), lengths - 1].float().log_softmax(-1)  # (B, V)
        rows = torch.arange(B, device=device).repeat_interleave(m)  # (B*m,): row b*m + j
        cache.reorder(rows)
        x = ans.repeat(B, 1)  # (B*m, A): answer j after prompt b
        keep = None
        if mask is not None:  # the gap of pads between a shorter prompt and its answer
            keep = torch.cat([mask.to(device)[rows], torch.ones_like(x)], dim=1)  # (B*m, T + A)
        positions = lengths[rows, None] + torch.arange(A, device=device)  # (B*m, A)
        logits, _ = model(x, keep, cache, positions)  # (B*m, A, V)
        # Answer token 0 is predicted at the prompt's last token, token t + 1 at token t.
        total = last[rows].gather(1, x[:, :1]).squeeze(1)  # (B*m,)
        if A > 1:
            logp = logits[:, :-1].float().log_softmax(-1)  # (B*m, A-1, V)
            later = logp.gather(2, x[:, 1:, None]).squeeze(2)  # (B*m, A-1)
            total = total + later.masked_fill(~real.repeat(B, 1)[:, 1:], 0.0).sum(1)
        return list(total.view(B, m).double().cpu().numpy())

    if not prompts:
        return np.zeros((0, m))
    return np.stack(run_length_sorted(prompts, batch_size, pad, forward))


class InstructChoice:
    """``instruct``'s scores: each label's log-probability as the answer to an instruction
    about each text, from the GPT's log-probabilities of the labels' answers (module
    docstring); several answers of one label count as the log of their mean probability.

    Args:
        pipe: a GPT pipeline (:meth:`~llmos.inference.generator.GeneratorPipeline.answer_scores`).
        answers: each label's answer strings, in label order (each non-empty).
        instruction: what to ask of every text (``判断下面这条评论的情感是正面还是负面。``).

    Raises:
        LlmosError: no instruction, a label without an answer, or one answer given to two
            labels.
    """

    def __init__(self, pipe: AnswerScorer, answers: dict[str, list[str]], instruction: str) -> None:
        if not isinstance(instruction, str) or not instruction.strip():
            raise LlmosError(
                "method instruct needs an instruction, e.g. "
                "'判断下面这条评论的情感是正面还是负面。'"
            )
        self.pipe, self.instruction = pipe, instruction.strip()
        self.answers: list[str] = []  # every label's answers, label by label
        self.owner: list[int] = []  # the label (index) of each answer
        seen: dict[str, str] = {}
        for i, (label, words) in enumerate(answers.items()):
            if not words:
                raise LlmosError(f"label {label!r} has no answer (method instruct needs one)")
            for word in words:
                if seen.get(word, label) != label:
                    raise LlmosError(
                        f"the answer {word!r} is given to two labels, {seen[word]!r} and {label!r}"
                    )
                seen[word] = label
                self.answers.append(word)
                self.owner.append(i)
        self.num_labels = len(answers)

    def scores(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """(n, k) each label's log-probability given each text: the log of the mean
        probability of its answers, normalised over the labels (a log softmax)."""
        logp = self.pipe.answer_scores(self.instruction, texts, self.answers, batch_size)
        owner = np.array(self.owner)
        # log(mean(exp(x))) per label, through numpy's pairwise log(exp(a) + exp(b))
        label = np.stack(
            [
                np.logaddexp.reduce(logp[:, owner == i], axis=1) - np.log((owner == i).sum())
                for i in range(self.num_labels)
            ],
            axis=1,
        )
        return label - np.logaddexp.reduce(label, axis=1, keepdims=True)
