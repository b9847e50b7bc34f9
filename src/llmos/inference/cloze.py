"""Cloze prompts on a masked LM: a text put into a pattern with one mask slot, and the
masked-LM head's log-probabilities of a few chosen tokens at that slot (Schick and Schütze,
2021, "Exploiting Cloze Questions for Few Shot Text Classification and Natural Language
Inference", https://arxiv.org/abs/2001.07676: PET's patterns and verbalizers).

A pattern holds ``{text}`` once and the mask slot ``[MASK]`` once (the tokenizer's own mask
token, ``<mask>`` for multilingual-e5, is accepted too): ``{text}。总之很[MASK]。``,
``{text} All in all, it was [MASK].``. A verbalizer is a word that the tokenizer reads as one
piece (a Chinese character such as 好, an English word such as ``great``): the label's
evidence is the MLM's probability of that piece at the mask.

SentencePiece tokenizers (multilingual-e5's) read a special token as a word of its own: the
space before ``[MASK]`` becomes a bare ``▁`` piece, and one is put before the text after it.
Neither is in the text the model learned from (there, ``was great.`` is ``▁was ▁great .``
and ``很好。`` is ``很好 。``), so both are dropped: the mask then stands where the word's own
piece would (``▁great``, ``好``), which is the piece a verbalizer is read as.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from tokenizers import Tokenizer

from llmos.data.batching import pad_batch, run_length_sorted
from llmos.errors import LlmosError

log = logging.getLogger("llmos.inference")

TEXT_SLOT = "{text}"
MASK_SLOT = "[MASK]"
BLANK_PIECE = "▁"  # SentencePiece's word-start marker, as a piece of its own


def check_pattern(pattern: str, mask_token: str) -> None:
    """A pattern must hold ``{text}`` once and one mask slot (``[MASK]`` or ``mask_token``).

    Raises:
        LlmosError: naming the pattern and what is missing or repeated.
    """
    if not isinstance(pattern, str):
        raise LlmosError(f"pattern {pattern!r}: expected a string with {{text}} and {MASK_SLOT}")
    if pattern.count(TEXT_SLOT) != 1:
        raise LlmosError(
            f"pattern {pattern!r}: put {TEXT_SLOT} (where the text goes) in it exactly once, "
            f"e.g. '{{text}} All in all, it was {MASK_SLOT}.'"
        )
    slots = pattern.count(MASK_SLOT) + (pattern.count(mask_token) if mask_token != MASK_SLOT else 0)
    if slots != 1:
        raise LlmosError(
            f"pattern {pattern!r}: put the mask slot {MASK_SLOT} (the word to predict) in it "
            f"exactly once, found {slots}"
        )


def fill(pattern: str, text: str, mask_token: str) -> str:
    """``pattern`` with ``text`` in its ``{text}`` slot and the tokenizer's mask token in its
    mask slot (a ``[MASK]`` inside ``text`` itself stays text)."""
    before, after = pattern.split(TEXT_SLOT)
    before, after = (s.replace(MASK_SLOT, mask_token) for s in (before, after))
    return before + text + after


def word_piece(tokenizer: Tokenizer, word: str) -> int | None:
    """The id of the one piece the tokenizer reads ``word`` as (a SentencePiece word-start
    marker of its own, as before a Chinese character, aside), or None when it takes several
    pieces or none."""
    blank = tokenizer.token_to_id(BLANK_PIECE)
    ids = [i for i in tokenizer.encode(word, add_special_tokens=False).ids if i != blank]
    return ids[0] if len(ids) == 1 else None


def drop_blanks(ids: list[int], mask_id: int, blank: int | None) -> list[int]:
    """``ids`` without a bare ``▁`` piece right before or after a mask token (module
    docstring); unchanged for a tokenizer without such a piece (WordPiece)."""
    if blank is None:
        return ids
    masks = {i for i, t in enumerate(ids) if t == mask_id}
    near = {i + d for i in masks for d in (-1, 1)}
    return [t for i, t in enumerate(ids) if not (i in near and t == blank)]


def encode_cloze(
    tokenizer: Tokenizer, texts: Sequence[str], mask_id: int, max_length: int
) -> tuple[list[np.ndarray], list[int], int]:
    """Token ids of filled patterns (with the special tokens), each text's mask position, and
    how many were cut to ``max_length``.

    A bare ``▁`` piece right before or after the mask is dropped (module docstring). A longer
    input keeps ``max_length`` tokens around its mask: the end (the usual place of a pattern's
    mask, after the text) when the mask is among the last ones, else the start, else a
    window centred on it; the first and last special tokens are kept.

    Raises:
        LlmosError: a text with no mask token or several (a text that holds one itself).
    """
    blank = tokenizer.token_to_id(BLANK_PIECE)
    inputs, positions, cut = [], [], 0
    for text, enc in zip(texts, tokenizer.encode_batch(list(texts)), strict=True):
        ids = drop_blanks(list(enc.ids), mask_id, blank)
        where = [i for i, t in enumerate(ids) if t == mask_id]
        if len(where) != 1:
            raise LlmosError(
                f"{text[:80]!r}: expected one mask token in a filled pattern, found "
                f"{len(where)} (does the text itself hold one?)"
            )
        at = where[0]
        if len(ids) > max_length:
            cut += 1
            body, p, keep = ids[1:-1], at - 1, max_length - 2
            start = max(0, len(body) - keep) if p >= len(body) - keep else 0
            if p >= start + keep:  # neither end: centre the window on the mask
                start = p - keep // 2
            ids = [ids[0], *body[start : start + keep], ids[-1]]
            at = p - start + 1
        inputs.append(np.array(ids, dtype=np.int64))
        positions.append(at)
    return inputs, positions, cut


@torch.inference_mode()
def mask_log_probs(
    model: torch.nn.Module,
    inputs: list[np.ndarray],
    positions: list[int],
    token_ids: Sequence[int],
    pad_id: int,
    batch_size: int = 32,
) -> np.ndarray:
    """(n, k) log-probabilities (over the whole vocabulary) of ``token_ids`` at each input's
    mask position, from a :class:`~llmos.models.bert.BertForPreTraining`'s MLM head."""
    device = next(model.parameters()).device
    wanted = torch.tensor(list(token_ids), device=device)

    def pad(idx: np.ndarray) -> dict[str, torch.Tensor | None]:
        b = pad_batch([inputs[j] for j in idx], None, pad_id)
        T = b["input_ids"].size(1)
        b["positions"] = torch.tensor([r * T + positions[j] for r, j in enumerate(idx)])
        return b

    def forward(b: dict[str, torch.Tensor | None]) -> list[np.ndarray]:
        mask = b["attention_mask"]
        out = model(
            b["input_ids"].to(device),
            None,
            mask.to(device) if mask is not None else None,
            mlm_positions=b["positions"].to(device),
        )
        logp = out.mlm_logits.float().log_softmax(-1)  # (B, V): one mask per row
        return list(logp.index_select(1, wanted).cpu().numpy())

    if not inputs:
        return np.zeros((0, len(token_ids)), dtype=np.float32)
    return np.stack(run_length_sorted(inputs, batch_size, pad, forward))
