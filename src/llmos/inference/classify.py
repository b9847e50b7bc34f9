"""Classification inference: texts -> token ids -> logits in length-sorted batches.

A text longer than the model's ``max_length`` is either truncated (``long_inputs="truncate"``)
or read in overlapping windows (``"window"``, :func:`encode_windows`): its content tokens are
cut into windows of ``max_length`` minus the tokenizer's special tokens, half a window apart
(the last one ending at the text's end), each window wrapped in the specials the tokenizer's
own post-processor adds (``[CLS] ... [SEP]``, ``<s> ... </s>``, ...), and the text's logits are
the mean of its windows' logits (:func:`mean_over_windows`).

A classifier fine-tuned with a ``text_prefix`` (task.json; E5's ``"query: "``) reads
``prefix + text``: its prefix counts in ``max_length``, and in the window path it begins EVERY
window, right after the leading specials, since the model only ever saw texts that start with
it (:func:`encode_windows`).
"""

from __future__ import annotations

import itertools
import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tokenizers import Encoding, Tokenizer

from llmos.data.batching import pad_batch, run_length_sorted
from llmos.errors import LlmosError
from llmos.inference.tag import windows

log = logging.getLogger("llmos.inference")


INPUTS = ("input_ids", "token_type_ids", "attention_mask")  # the encoder's call, in order

# What classify() does with a text longer than max_length; the first is the default.
LONG_INPUTS = ("window", "truncate")

_TRUNCATING: dict[tuple[int, int], tuple[Tokenizer, Tokenizer]] = {}  # (id, max_length or 0)
_TRUNCATING_LOCK = threading.Lock()


def truncating(tokenizer: Tokenizer, max_length: int | None) -> Tokenizer:
    """A copy of ``tokenizer`` that truncates to ``max_length`` (None: that never truncates,
    whatever its tokenizer.json says). Truncation is tokenizer state, so the caller's own
    tokenizer is left as it is. Copies are kept, a few at a time: making one serializes the
    whole vocabulary (milliseconds), too slow for every request."""
    key = (id(tokenizer), max_length or 0)
    with _TRUNCATING_LOCK:
        hit = _TRUNCATING.get(key)
        if hit is not None and hit[0] is tokenizer:  # the original is held, so ids stay unique
            return hit[1]
        tok = Tokenizer.from_str(tokenizer.to_str())
        if max_length is None:
            tok.no_truncation()
        else:
            tok.enable_truncation(max_length, strategy="longest_first")
        if len(_TRUNCATING) >= 32:
            _TRUNCATING.pop(next(iter(_TRUNCATING)))
        _TRUNCATING[key] = (tokenizer, tok)
        return tok


def prefixed(texts: list[str], prefix: str | None) -> list[str]:
    """``texts`` with ``prefix`` put before each (unchanged for None or "")."""
    return [prefix + t for t in texts] if prefix else list(texts)


def encode_texts(
    tokenizer: Tokenizer,
    texts: list[str],
    texts_b: list[str | None] | None,
    max_length: int,
    prefix: str | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Encode single texts or pairs (``[CLS] A [SEP] B [SEP]``), truncated longest-first to
    ``max_length`` tokens; ``prefix`` (a classifier's ``text_prefix``) is put before each text
    (the first of a pair) and its tokens count in ``max_length``.

    Returns:
        (token ids per text, token types per text, number of texts that were truncated).
    """
    texts = prefixed(texts, prefix)
    tok = truncating(tokenizer, max_length)
    if texts_b is not None and any(b is not None for b in texts_b):
        inputs: list[Any] = [(a, b or "") for a, b in zip(texts, texts_b, strict=True)]
    else:
        inputs = list(texts)
    encs = tok.encode_batch(inputs)
    ids = [np.asarray(e.ids, dtype=np.int64) for e in encs]
    types = [np.asarray(e.type_ids, dtype=np.int64) for e in encs]
    truncated = sum(1 for e in encs if e.overflowing)
    return ids, types, truncated


def check_long_inputs(long_inputs: str) -> str:
    """``long_inputs`` if it is one of :data:`LONG_INPUTS`, else a clear error."""
    if long_inputs not in LONG_INPUTS:
        raise LlmosError(
            f"long_inputs must be one of {', '.join(LONG_INPUTS)}, got {long_inputs!r}"
        )
    return long_inputs


@dataclass
class Windowed:
    """Model inputs for a list of texts, a text longer than ``max_length`` as several rows.

    Attributes:
        ids: token ids of each row (a window, or a whole text that fits), specials included.
        types: token types of each row.
        windows: how many rows each text has, in text order (its rows are consecutive).
        fallback: how many long texts were truncated instead, because the tokenizer's special
            tokens could not be told apart from the text's own (see :func:`_wrapping`).
    """

    ids: list[np.ndarray]
    types: list[np.ndarray]
    windows: list[int]
    fallback: int = 0


def _wrapping(enc: Encoding, plain: list[int]) -> tuple[int, int] | None:
    """Where the content sits in ``enc``, the truncated encoding of a text whose content
    (no specials) is ``plain``: ``(start, stop)``, so that ``enc.ids[:start]`` and
    ``enc.ids[stop:]`` are the specials the tokenizer's post-processor wraps a text in.

    The post-processor marks what it added in ``special_tokens_mask`` (specials typed in the
    text itself are not marked); None when the unmarked tokens are not one run equal to the
    start of ``plain``, a post-processor this windowing does not understand.
    """
    content = [i for i, m in enumerate(enc.special_tokens_mask) if not m]
    if not content:
        return None
    start, stop = content[0], content[-1] + 1
    if stop - start != len(content) or enc.ids[start:stop] != plain[: stop - start]:
        return None
    return start, stop


def _prefix_tokens(enc: Encoding, prefix: str) -> int:
    """How many leading tokens of ``enc`` (a ``prefix + text`` encoded without specials) are
    the prefix's: those that end within it. A token that starts in the prefix and runs into the
    text counts as the text's; a space that ends the prefix and that the tokenizer attaches to
    the next word (SentencePiece's ``▁``, byte-level BPE's ``Ġ``) goes with that word."""
    n = 0
    for _, end in enc.offsets:
        if end > len(prefix):
            break
        n += 1
    return n


def encode_windows(
    tokenizer: Tokenizer, texts: list[str], max_length: int, prefix: str | None = None
) -> Windowed:
    """Encode single texts; a text longer than ``max_length`` tokens becomes overlapping
    windows instead of being truncated.

    A text that fits is encoded exactly as :func:`encode_texts` does (one row, the same ids).
    A longer one's content tokens are cut into windows of ``max_length`` minus the number of
    specials, half a window apart, the last one ending at the text's last token (every window
    full, every token in one or two windows); each window gets the specials and token types
    that the tokenizer's post-processor gave the truncated text, so the wrapping is the
    tokenizer's own (``[CLS] .. [SEP]`` for WordPiece, ``<s> .. </s>`` for XLM-R, none at all
    for a tokenizer without a post-processor).

    With a ``prefix`` every text is read as ``prefix + text``; a long one's windows are cut
    from the text's tokens only, each window ``specials + prefix tokens + window + specials``
    (the window that much shorter), so that every window starts as the classifier was trained
    to see its inputs start. The first window is then exactly the truncated ``prefix + text``.
    A prefix that leaves no room for text falls back to truncation.
    """
    texts = prefixed(texts, prefix)
    encs = truncating(tokenizer, max_length).encode_batch(texts)
    long = [i for i, e in enumerate(encs) if e.overflowing]
    plain: dict[int, list[int]] = {}
    lead: dict[int, int] = {}  # the prefix's tokens at the start of plain[i]
    if long:
        whole = truncating(tokenizer, None).encode_batch(
            [texts[i] for i in long], add_special_tokens=False
        )
        plain = {i: e.ids for i, e in zip(long, whole, strict=True)}
        lead = {
            i: _prefix_tokens(e, prefix) if prefix else 0 for i, e in zip(long, whole, strict=True)
        }
    out = Windowed([], [], [])
    for i, enc in enumerate(encs):
        where = _wrapping(enc, plain[i]) if i in plain else None
        if where is not None and where[1] - where[0] <= lead[i]:
            where = None  # the prefix fills max_length: no room for a window of text
        if where is None:  # fits (or cannot be windowed): today's single row
            out.fallback += int(i in plain)
            out.ids.append(np.asarray(enc.ids, dtype=np.int64))
            out.types.append(np.asarray(enc.type_ids, dtype=np.int64))
            out.windows.append(1)
            continue
        start, stop = where
        k = lead[i]
        # The specials and the prefix begin every window; the text's tokens fill the rest.
        head, tail = enc.ids[:start] + plain[i][:k], enc.ids[stop:]
        text = plain[i][k:]
        size = stop - start - k  # text tokens per window: max_length minus specials and prefix
        types = np.asarray(enc.type_ids, dtype=np.int64)  # every window's types (same length)
        starts = windows(len(text), size, max(1, size // 2))
        for s in starts:
            out.ids.append(np.asarray(head + text[s : s + size] + tail, dtype=np.int64))
            out.types.append(types)
        out.windows.append(len(starts))
    return out


def label_result(labels: list[str] | tuple[str, ...], probs: list[float]) -> dict[str, Any]:
    """One text's classification from its label probabilities: ``{"label", "score",
    "scores"}``, the best label (the first of equals), its probability and every label's."""
    best = max(range(len(probs)), key=probs.__getitem__)
    return {
        "label": labels[best],
        "score": probs[best],
        "scores": dict(zip(labels, probs, strict=True)),
    }


def mean_over_windows(logits: torch.Tensor, windows: list[int]) -> torch.Tensor:
    """(rows, K) logits -> (texts, K): each text's windows' logits averaged.

    The mean is over logits, not probabilities: the classifier's last layer is linear, so the
    mean of the windows' logits is exactly the logits of the mean of their pooled [CLS]
    vectors (the text read as the average of its windows); and its softmax is the normalised
    geometric mean of the windows' probabilities, in which each window counts as evidence
    (log-odds add up), where an arithmetic mean of probabilities lets windows that say little
    (near uniform) dilute the ones that are sure. A text with one window keeps its row
    untouched, bit for bit.
    """
    if all(n == 1 for n in windows):
        return logits
    rows = np.cumsum([0, *windows])
    return torch.stack(
        [logits[a] if b - a == 1 else logits[a:b].mean(0) for a, b in itertools.pairwise(rows)]
    )


@torch.inference_mode()
def batched_logits(
    model: torch.nn.Module,
    ids: list[np.ndarray],
    types: list[np.ndarray] | None,
    pad_id: int,
    batch_size: int = 32,
) -> torch.Tensor:
    """Run ``model`` over all inputs in batches of similar length; logits in input order."""
    if not ids:
        return torch.empty(0)
    device = next(model.parameters()).device

    def forward(b: dict[str, torch.Tensor | None]) -> torch.Tensor:
        args = [b[k].to(device) if b[k] is not None else None for k in INPUTS]
        return model(*args).float().cpu()  # (B, K) logits

    def pad(idx: np.ndarray) -> dict[str, torch.Tensor | None]:
        return pad_batch([ids[i] for i in idx], [types[i] for i in idx] if types else None, pad_id)

    return torch.stack(run_length_sorted(ids, batch_size, pad, forward))
