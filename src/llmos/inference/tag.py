"""Sequence-labelling inference: text -> subword windows -> per-token scores -> Viterbi -> spans.

Texts longer than the model's window are cut into overlapping windows; each token takes its
scores from the window where it sits farthest from an edge (the most context on both sides),
and one constrained Viterbi pass over the whole text turns the scores into a valid tag
sequence, so spans never break at window edges. Spans come back as character offsets into
the original text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from llmos.data.batching import pad_batch, run_length_sorted
from llmos.data.tagging import allowed_transitions, tags_to_spans, viterbi_decode


@dataclass
class TokenizedText:
    """A text's content tokens (no specials) and their character offsets."""

    ids: np.ndarray  # (T,)
    offsets: list[tuple[int, int]]


def tokenize_for_tagging(tokenizer: Tokenizer, texts: list[str]) -> list[TokenizedText]:
    """Content tokens of each text: special tokens and empty tokens are left out."""
    out = []
    for enc in tokenizer.encode_batch(list(texts), add_special_tokens=False):
        keep = [i for i, (s, e) in enumerate(enc.offsets) if e > s]
        out.append(
            TokenizedText(
                np.asarray([enc.ids[i] for i in keep], dtype=np.int64),
                [enc.offsets[i] for i in keep],
            )
        )
    return out


def windows(length: int, size: int, stride: int) -> list[int]:
    """Start positions of windows of ``size`` tokens, ``stride`` apart, covering ``length``."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size, stride))
    return [*starts, length - size]


def best_window(length: int, size: int, starts: list[int]) -> np.ndarray:
    """For each token, the index of the window where it has the most context on both sides."""
    pos = np.arange(length)[:, None]  # (T, 1)
    st = np.asarray(starts)[None, :]  # (1, W)
    inside = (pos >= st) & (pos < st + size)
    context = np.minimum(pos - st, st + size - 1 - pos)  # (T, W)
    return np.where(inside, context, -1).argmax(axis=1)


@torch.inference_mode()
def token_scores(
    model: torch.nn.Module,
    texts: list[TokenizedText],
    cls_id: int,
    sep_id: int,
    pad_id: int,
    max_length: int,
    batch_size: int = 32,
) -> list[np.ndarray]:
    """Log-probabilities (T, K) per text, from windows of ``max_length`` tokens with specials."""
    size = max_length - 2
    stride = max(1, size // 2)
    starts = [windows(len(t.ids), size, stride) for t in texts]  # per text
    inputs = [
        np.concatenate([[cls_id], t.ids[s : s + size], [sep_id]])
        for t, text_starts in zip(texts, starts, strict=True)
        for s in text_starts
    ]
    device = next(model.parameters()).device

    def pad(idx: np.ndarray) -> dict[str, torch.Tensor | None]:
        return pad_batch([inputs[j] for j in idx], None, pad_id)

    def forward(batch: dict[str, torch.Tensor | None]) -> np.ndarray:
        mask = batch["attention_mask"]
        logits = model(
            batch["input_ids"].to(device), None, mask.to(device) if mask is not None else None
        )
        return torch.log_softmax(logits.float(), dim=-1).cpu().numpy()  # (B, T, K)

    # Each window's rows without its [CLS] and [SEP] (and without the batch's padding).
    padded = run_length_sorted(inputs, batch_size, pad, forward)
    window_scores = [p[1 : len(x) - 1] for p, x in zip(padded, inputs, strict=True)]
    out: list[np.ndarray] = []
    k = 0  # index of the text's first window
    for t, text_starts in zip(texts, starts, strict=True):
        if len(text_starts) == 1:
            out.append(window_scores[k])
        else:
            choice = best_window(len(t.ids), size, text_starts)
            out.append(
                np.stack(
                    [window_scores[k + w][pos - text_starts[w]] for pos, w in enumerate(choice)]
                )
            )
        k += len(text_starts)
    return out


class SpanDecoder:
    """Per-token log-probabilities -> the best valid tag sequence -> character spans."""

    def __init__(self, labels: list[str], scheme: str) -> None:
        self.labels, self.scheme = labels, scheme
        self.index = {label: i for i, label in enumerate(labels)}
        self.allowed, self.start, self.end = allowed_transitions(labels, scheme)

    def tags(self, scores: np.ndarray) -> list[str]:
        return [self.labels[i] for i in viterbi_decode(scores, self.allowed, self.start, self.end)]

    def spans(
        self, text: str, tokens: TokenizedText, scores: np.ndarray
    ) -> tuple[list[str], list[dict[str, Any]]]:
        """The tag of each token and ``[{"text", "label", "start", "end", "score"}, ...]``.

        ``score`` is the mean probability of the span's tags.
        """
        tags = self.tags(scores)
        chosen = np.exp(scores[np.arange(len(tags)), [self.index[t] for t in tags]])
        out = []
        for type_, first, last in tags_to_spans(tags, self.scheme):
            start, end = tokens.offsets[first][0], tokens.offsets[last - 1][1]
            out.append(
                {
                    "text": text[start:end],
                    "label": type_,
                    "start": start,
                    "end": end,
                    "score": float(chosen[first:last].mean()),
                }
            )
        return tags, out


def predict_spans(
    model: torch.nn.Module,
    tokens: list[TokenizedText],
    texts: list[str],
    decoder: SpanDecoder,
    special: dict[str, int | None],
    max_length: int,
    batch_size: int = 32,
) -> tuple[list[np.ndarray], list[list[str]], list[list[dict[str, Any]]]]:
    """Scores, tags and character spans for every text."""
    scores = token_scores(
        model,
        tokens,
        special["cls"] or 0,
        special["sep"] or 0,
        special["pad"] or 0,
        max_length,
        batch_size,
    )
    tags, spans = [], []
    for text, tok, sc in zip(texts, tokens, scores, strict=True):
        t, s = decoder.spans(text, tok, sc)
        tags.append(t)
        spans.append(s)
    return scores, tags, spans
