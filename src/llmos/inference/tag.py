"""Sequence-labelling inference: text -> subword windows -> per-token scores -> Viterbi -> spans.

Texts longer than the model's window are cut into overlapping windows; each token takes its
scores from the window where it sits farthest from an edge (the most context on both sides),
and one constrained Viterbi pass over the whole text turns the scores into a valid tag
sequence, so spans never break at window edges. Spans come back as character offsets into
the original text.

A tagger with a CRF (``task.json`` ``crf: true``) is decoded the same way, on its stitched
logits (the CRF's emissions) and with its learned transitions merged with the scheme's
constraints; its per-token scores are the CRF's marginal log-probabilities (forward-backward
over the whole text), so a span's ``score`` stays a probability.

A character tagger (``task.json`` ``char_tags: true``,
:class:`~llmos.models.bert.BertForCharTagging`) reads the text in the tokenizer's own pieces
and tags every character: the tagged *units* are then the characters (:class:`CharUnits`),
the windows are still cut over pieces, and each character takes its scores from the window
where its piece sits farthest from an edge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from llmos.config.model import BertConfig, XLNetConfig
from llmos.data.batching import pad_batch, run_length_sorted
from llmos.data.tagging import allowed_transitions, tags_to_spans, viterbi_decode
from llmos.errors import ConfigError
from llmos.models.bert import BertForTokenClassification
from llmos.models.chars import BertForCharTagging
from llmos.models.crf import CRF
from llmos.models.xlnet import XLNetForTokenClassification
from llmos.text.tokenizer import special_ids


@dataclass
class CharUnits:
    """The characters of a text read in pieces: for each, the piece holding it, its position
    in that piece from the start and from the end, and its own token id."""

    piece: np.ndarray  # (U,) index into the text's pieces, non-decreasing
    start: np.ndarray  # (U,) position in the piece
    end: np.ndarray  # (U,) positions left to the piece's end
    ids: np.ndarray  # (U,) the character as a piece of its own (the unknown token if none)

    def window(self, first: int, last: int) -> tuple[int, int]:
        """The characters ``[u0, u1)`` of the pieces ``[first, last)``."""
        return (
            int(np.searchsorted(self.piece, first, side="left")),
            int(np.searchsorted(self.piece, last, side="left")),
        )

    def rows(self, u0: int, u1: int, first_piece: int) -> np.ndarray:
        """(u1 - u0, 4) model input for characters ``[u0, u1)`` of a window whose first piece
        is ``first_piece``, sitting after [CLS] (see BertForCharTagging)."""
        piece = self.piece[u0:u1] - first_piece + 1
        return np.stack([piece, self.start[u0:u1], self.end[u0:u1], self.ids[u0:u1]], axis=1)


@dataclass
class TokenizedText:
    """A text's content tokens (no specials) and the character offsets of its tagged units:
    the tokens themselves, or with ``units`` (a character tagger) its characters."""

    ids: np.ndarray  # (T,)
    offsets: list[tuple[int, int]]  # one per unit
    units: CharUnits | None = None

    def window(self, first: int, last: int) -> tuple[int, int]:
        """The units ``[u0, u1)`` of the tokens ``[first, last)``."""
        if self.units is None:
            return min(first, len(self.ids)), min(last, len(self.ids))
        return self.units.window(first, last)


def char_ids(tokenizer: Tokenizer) -> Callable[[str], int]:
    """A character's id as a piece of its own: the normalized character, else with the
    word-start marker of a Metaspace tokenizer, else the unknown token (0 if none)."""
    normalizer = tokenizer.normalizer
    unk = special_ids(tokenizer)["unk"] or 0
    cache: dict[str, int] = {}

    def lookup(ch: str) -> int:
        if ch not in cache:
            norm = normalizer.normalize_str(ch) if normalizer is not None else ch
            found = tokenizer.token_to_id(norm)
            if found is None:
                found = tokenizer.token_to_id("\u2581" + norm)
            cache[ch] = unk if found is None else found
        return cache[ch]

    return lookup


def tokenize_for_tagging(
    tokenizer: Tokenizer, texts: list[str], char_units: bool = False
) -> list[TokenizedText]:
    """Content tokens of each text: special tokens and empty tokens are left out. With
    ``char_units`` the tagged units are the characters of the pieces (whitespace excluded; a
    character that several pieces cover, as NFKC expansions do, belongs to the first)."""
    lookup = char_ids(tokenizer) if char_units else None
    out = []
    encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    for text, enc in zip(texts, encodings, strict=True):
        keep = [i for i, (s, e) in enumerate(enc.offsets) if e > s]
        ids = np.asarray([enc.ids[i] for i in keep], dtype=np.int64)
        offsets = [enc.offsets[i] for i in keep]
        if lookup is None:
            out.append(TokenizedText(ids, offsets))
            continue
        rows: list[tuple[int, int, int, int]] = []
        chars: list[tuple[int, int]] = []
        free = 0  # characters before this one already belong to a piece
        for p, (s, e) in enumerate(offsets):
            inside = [c for c in range(max(s, free), e) if not text[c].isspace()]
            rows += [(p, j, len(inside) - 1 - j, lookup(text[c])) for j, c in enumerate(inside)]
            chars += [(c, c + 1) for c in inside]
            free = max(free, e)
        cols = np.asarray(rows, dtype=np.int64).reshape(-1, 4).T
        out.append(TokenizedText(ids, chars, CharUnits(*cols)))
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


def frame(ids: np.ndarray, cls_id: int, sep_id: int, cls_last: bool = False) -> np.ndarray:
    """A window of token ids with its special tokens: ``[CLS] w [SEP]`` (BERT), or
    ``w <sep> <cls>`` when ``cls_last`` (XLNet's layout: its summary token ends the text)."""
    if cls_last:
        return np.concatenate([ids, [sep_id, cls_id]]).astype(np.int64)
    return np.concatenate([[cls_id], ids, [sep_id]]).astype(np.int64)


def reads_cls_last(model: torch.nn.Module) -> bool:
    """Whether ``model`` reads texts in XLNet's layout (see :func:`frame`)."""
    return isinstance(getattr(model, "cfg", None), XLNetConfig)


@torch.inference_mode()
def token_scores(
    model: torch.nn.Module,
    texts: list[TokenizedText],
    cls_id: int,
    sep_id: int,
    pad_id: int,
    max_length: int,
    batch_size: int = 32,
    log_probs: bool = True,
    cls_last: bool = False,
) -> list[np.ndarray]:
    """Log-probabilities (U, K) per text, one row per tagged unit (a token, or a character of
    a character tagger), from windows of ``max_length`` tokens with specials (framed as
    :func:`frame` does); the logits themselves when not ``log_probs`` (a CRF's emissions)."""
    size = max_length - 2
    stride = max(1, size // 2)
    starts = [windows(len(t.ids), size, stride) for t in texts]  # per text
    spans = [[t.window(s, s + size) for s in ss] for t, ss in zip(texts, starts, strict=True)]
    inputs = [
        frame(t.ids[s : s + size], cls_id, sep_id, cls_last)
        for t, text_starts in zip(texts, starts, strict=True)
        for s in text_starts
    ]
    units = [
        t.units.rows(u0, u1, s) if t.units is not None else None
        for t, text_starts, text_spans in zip(texts, starts, spans, strict=True)
        for s, (u0, u1) in zip(text_starts, text_spans, strict=True)
    ]
    device = next(model.parameters()).device

    def pad(idx: np.ndarray) -> dict[str, torch.Tensor | None]:
        batch = pad_batch([inputs[j] for j in idx], None, pad_id)
        if units[idx[0]] is not None:
            batch["units"] = pad_units([units[j] for j in idx])  # type: ignore[misc]
        return batch

    def forward(batch: dict[str, torch.Tensor | None]) -> np.ndarray:
        mask = batch["attention_mask"]
        args = [batch["input_ids"].to(device), None, mask.to(device) if mask is not None else None]
        if batch.get("units") is not None:
            args.append(batch["units"].to(device))
        logits = model(*args)
        if not log_probs:
            return logits.float().cpu().numpy()  # (B, T, K)
        return torch.log_softmax(logits.float(), dim=-1).cpu().numpy()  # (B, T, K)

    # Each window's units: its rows without [CLS], [SEP] and padding, or its characters.
    padded = run_length_sorted(inputs, batch_size, pad, forward)
    first = 0 if cls_last else 1  # the content's first row
    window_scores = [
        p[first : first + len(x) - 2] if u is None else p[: len(u)]
        for p, x, u in zip(padded, inputs, units, strict=True)
    ]
    out: list[np.ndarray] = []
    k = 0  # index of the text's first window
    for t, text_starts, text_spans in zip(texts, starts, spans, strict=True):
        if len(text_starts) == 1:
            out.append(window_scores[k])
        else:
            choice = best_window(len(t.ids), size, text_starts)  # per token
            piece = t.units.piece if t.units is not None else np.arange(len(t.ids))
            rows = [window_scores[k + w][u - text_spans[w][0]] for u, w in enumerate(choice[piece])]
            out.append(np.stack(rows) if rows else window_scores[k][:0])
        k += len(text_starts)
    return out


def pad_units(rows: list[np.ndarray]) -> torch.Tensor:
    """(B, U, 4) character units of a batch of windows, zero-padded (piece 0 is [CLS])."""
    width = max(1, max(len(r) for r in rows))
    out = np.zeros((len(rows), width, 4), dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return torch.from_numpy(out)


class SpanDecoder:
    """Per-token log-probabilities -> the best valid tag sequence -> character spans."""

    def __init__(self, labels: list[str], scheme: str) -> None:
        self.labels, self.scheme = labels, scheme
        self.index = {label: i for i, label in enumerate(labels)}
        self.allowed, self.start, self.end = allowed_transitions(labels, scheme)

    def tags(self, scores: np.ndarray) -> list[str]:
        return [self.labels[i] for i in viterbi_decode(scores, self.allowed, self.start, self.end)]

    def spans(
        self,
        text: str,
        tokens: TokenizedText,
        scores: np.ndarray,
        path: list[int] | None = None,
    ) -> tuple[list[str], list[dict[str, Any]]]:
        """The tag of each token and ``[{"text", "label", "start", "end", "score"}, ...]``.

        ``path`` is the label indices when already decoded (by a CRF), else the constrained
        Viterbi over ``scores`` picks them. ``score`` is the mean probability of the span's tags.
        """
        tags = self.tags(scores) if path is None else [self.labels[i] for i in path]
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
    """Scores (log-probabilities, a CRF's log-marginals), tags and character spans for every
    text."""
    crf = getattr(model, "crf", None)  # None: softmax tagger (or an ONNX export)
    scores = token_scores(
        model,
        tokens,
        special["cls"] or 0,
        special["sep"] or 0,
        special["pad"] or 0,
        max_length,
        batch_size,
        log_probs=crf is None,
        cls_last=reads_cls_last(model),
    )
    paths: list[list[int] | None] = [None] * len(scores)
    if crf is not None:
        scores, paths = crf_decode(crf, scores, batch_size)  # type: ignore[assignment]
    tags, spans = [], []
    for text, tok, sc, path in zip(texts, tokens, scores, paths, strict=True):
        t, s = decoder.spans(text, tok, sc, path)
        tags.append(t)
        spans.append(s)
    return scores, tags, spans


@torch.inference_mode()
def crf_decode(
    crf: CRF, emissions: list[np.ndarray], batch_size: int = 32
) -> tuple[list[np.ndarray], list[list[int]]]:
    """Each text's (T, K) log-marginals and Viterbi path under ``crf``, from its whole-text
    (T, K) emissions; texts of similar length run together."""
    device = crf.transitions.device

    def pad(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([len(emissions[i]) for i in idx])
        em = torch.zeros(len(idx), int(lengths.max()), crf.num_labels)  # (B, T, K)
        for row, i in enumerate(idx):
            em[row, : len(emissions[i])] = torch.from_numpy(emissions[i])
        mask = torch.arange(em.shape[1])[None, :] < lengths[:, None]  # (B, T)
        return em.to(device), mask.to(device)

    def forward(batch: tuple[torch.Tensor, torch.Tensor]) -> list[tuple[np.ndarray, list[int]]]:
        em, mask = batch
        marginals = crf.marginals(em, mask).cpu().numpy()  # (B, T, K)
        paths = crf.decode(em, mask).cpu().numpy()  # (B, T)
        lengths = mask.sum(1).tolist()
        return [(m[:n], p[:n].tolist()) for m, p, n in zip(marginals, paths, lengths, strict=True)]

    out = run_length_sorted(emissions, batch_size, pad, forward)
    return [m for m, _ in out], [p for _, p in out]


def tagging_crf(labels: list[str], scheme: str) -> CRF:
    """A fresh CRF over ``labels`` under ``scheme``'s hard transition constraints."""
    return CRF(len(labels), *(torch.from_numpy(m) for m in allowed_transitions(labels, scheme)))


def tagger_model(
    config: BertConfig | XLNetConfig,
    labels: list[str],
    scheme: str,
    crf: bool = False,
    char_tags: bool = False,
) -> BertForTokenClassification | XLNetForTokenClassification:
    """A tagger (random weights) over ``labels``, with a CRF under ``scheme`` when ``crf``;
    one tag per character of the tokenizer's pieces when ``char_tags`` (BERT only)."""
    head = tagging_crf(labels, scheme) if crf else None
    if isinstance(config, XLNetConfig):
        if char_tags:
            raise ConfigError("char_tags is built for BERT encoders, not XLNet")
        return XLNetForTokenClassification(config, len(labels), head)
    cls = BertForCharTagging if char_tags else BertForTokenClassification
    return cls(config, len(labels), head)
