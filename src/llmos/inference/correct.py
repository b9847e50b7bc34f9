"""Spelling correction with a :class:`~llmos.models.csc.BertForSpellingCorrection` checkpoint:
which characters of a text are wrong and what they should be.

The tokenizer gives every CJK character a token of its own
(:func:`~llmos.text.cjk.split_cjk_characters`, saved with the checkpoint); a token is a
*character position* when it covers exactly one Chinese character of the text. At each one the
detection head says how likely the character is wrong; where that reaches the checkpoint's
``threshold``, the correction head's best character replaces it unless it is the character
itself. The correction head runs at those positions only, so clean text costs the encoder and
the one-column detection head, nothing more.

Texts longer than the model's ``max_length`` are read in consecutive windows, each with its
own [CLS] and [SEP]; every character is read once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from tokenizers import Tokenizer

from llmos.data.batching import pad_batch, run_length_sorted
from llmos.text.cjk import is_hanzi


@dataclass(frozen=True)
class CharVocab:
    """The output characters of a correction head: the tokenizer's single-character pieces
    that are Chinese characters, in token-id order.

    Attributes:
        ids: (K,) their token ids.
        chars: the characters, ``chars[k]`` the one of ``ids[k]``.
        index: character -> k.
    """

    ids: np.ndarray
    chars: tuple[str, ...]
    index: dict[str, int]

    @classmethod
    def from_tokenizer(cls, tok: Tokenizer) -> CharVocab:
        pieces = sorted((i, p) for p, i in tok.get_vocab().items() if len(p) == 1 and is_hanzi(p))
        chars = tuple(p for _, p in pieces)
        return cls(
            np.array([i for i, _ in pieces], dtype=np.int64),
            chars,
            {c: k for k, c in enumerate(chars)},
        )

    @classmethod
    def from_ids(cls, tok: Tokenizer, ids: Sequence[int]) -> CharVocab:
        """The vocabulary a trained head was saved with (its ``char_ids`` buffer)."""
        chars = tuple(tok.id_to_token(int(i)) or "" for i in ids)
        return cls(np.asarray(ids, dtype=np.int64), chars, {c: k for k, c in enumerate(chars)})


@dataclass
class Window:
    """One model input: token ids with [CLS]/[SEP], the token index of each character
    position in it and that character's offset in its text."""

    text: int  # which text
    ids: np.ndarray
    positions: np.ndarray  # (P,) token indices
    offsets: np.ndarray  # (P,) character offsets into the text


def encode_windows(
    tok: Tokenizer, texts: Sequence[str], max_length: int, cls_id: int, sep_id: int
) -> list[Window]:
    """Cut each text's tokens into windows of ``max_length - 2`` with [CLS] and [SEP], and find
    the character positions of each: a token covering one Chinese character (the last such
    token, where a SentencePiece ``▁`` before the character has the same offsets)."""
    size = max_length - 2
    out: list[Window] = []
    for t, (text, enc) in enumerate(
        zip(texts, tok.encode_batch(list(texts), add_special_tokens=False), strict=True)
    ):
        ids, offsets = enc.ids, enc.offsets
        for s in range(0, max(len(ids), 1), size):
            chunk = ids[s : s + size]
            pos, off = [], []
            for j, (a, b) in enumerate(offsets[s : s + size]):
                if b - a == 1 and is_hanzi(text[a]):
                    if off and off[-1] == a:  # a word-start marker ("▁") before the character
                        pos.pop(), off.pop()
                    pos.append(j + 1)  # after [CLS]
                    off.append(a)
            out.append(
                Window(
                    t,
                    np.array([cls_id, *chunk, sep_id], dtype=np.int64),
                    np.array(pos, dtype=np.int64),
                    np.array(off, dtype=np.int64),
                )
            )
    return out


@dataclass(frozen=True)
class Correction:
    """One character the model would change: its offset, the character, the suggestion, the
    detection probability and the correction head's probability of the suggestion."""

    offset: int
    original: str
    suggestion: str
    detect: float
    prob: float


@torch.inference_mode()
def predict_corrections(
    model: torch.nn.Module,
    windows: list[Window],
    texts: Sequence[str],
    vocab: CharVocab,
    threshold: float,
    pad_id: int,
    batch_size: int = 32,
    candidates: Callable[[str], Sequence[str]] | None = None,
    mask_id: int | None = None,
) -> list[list[Correction]]:
    """The corrections of every text (sorted by offset), reading ``windows`` in batches of
    similar length.

    A character position is flagged when its detection probability is ``>= threshold``, and
    changed when the correction head's best character there differs from it. With
    ``mask_id``, a window with flagged positions is read a second time with every flagged
    character replaced by the mask token, and the correction head reads that pass: the
    character is then judged by its context alone, not copied from the input (the first pass
    only decides where to look; windows with nothing flagged cost one pass). With
    ``candidates`` (a character's confusion set: same pinyin, similar shape), the best is
    taken among the character itself and its candidates only.
    """
    allowed: dict[str, np.ndarray] = {}

    def best_of(row: torch.Tensor, original: str) -> tuple[int, float]:
        if candidates is None:
            p, k = row.max(-1)
            return int(k), float(p)
        if original not in allowed:
            chars = [original, *candidates(original)]
            allowed[original] = np.array([vocab.index[c] for c in chars if c in vocab.index])
        ks = allowed[original]
        if not len(ks):
            return -1, 0.0
        j = int(row[ks].argmax())
        return int(ks[j]), float(row[ks[j]])

    def pad(idx: np.ndarray) -> dict[str, torch.Tensor | None]:
        return pad_batch([windows[i].ids for i in idx], None, pad_id) | {
            "idx": torch.from_numpy(idx)
        }

    def forward(b: dict[str, torch.Tensor | None]) -> list[list[Correction]]:
        ids, mask, idx = b["input_ids"], b["attention_mask"], b["idx"]
        assert ids is not None and idx is not None
        h = model.bert(ids, None, mask)  # (B, T, C)
        detect = torch.sigmoid(model.detect(h).squeeze(-1).float())  # (B, T)
        rows: list[int] = []
        cols: list[int] = []
        wins: list[tuple[int, int]] = []
        for r, i in enumerate(idx.tolist()):
            w = windows[i]
            if len(w.positions):
                keep = detect[r, torch.from_numpy(w.positions)] >= threshold
                rows += [r] * int(keep.sum())
                sel = w.positions[keep.numpy()]
                cols += sel.tolist()
                wins += [(i, j) for j in np.flatnonzero(keep.numpy()).tolist()]
        out: list[list[Correction]] = [[] for _ in range(len(idx))]
        if not rows:
            return out
        if mask_id is not None:  # read the flagged characters again, hidden: from context
            again = sorted(set(rows))
            sub = {r: k for k, r in enumerate(again)}
            masked = ids[again].clone()
            masked[[sub[r] for r in rows], cols] = mask_id
            h = model.bert(masked, None, None if mask is None else mask[again])
            rows = [sub[r] for r in rows]
        flat = torch.tensor(rows) * h.size(1) + torch.tensor(cols)
        probs = model.correct(h.reshape(-1, h.size(-1)).index_select(0, flat)).float().softmax(-1)
        local = {i: r for r, i in enumerate(idx.tolist())}
        for n, (i, j) in enumerate(wins):
            w = windows[i]
            offset = int(w.offsets[j])
            original = texts[w.text][offset]
            k, p = best_of(probs[n], original)
            if k >= 0 and vocab.chars[k] != original:
                det = float(detect[local[i], cols[n]])
                out[local[i]].append(Correction(offset, original, vocab.chars[k], det, p))
        return out

    per_window = run_length_sorted([w.ids for w in windows], batch_size, pad, forward)
    result: list[list[Correction]] = [[] for _ in texts]
    for w, found in zip(windows, per_window, strict=True):
        result[w.text].extend(found)
    for found in result:
        found.sort(key=lambda c: c.offset)
    return result


class CharEdit(Protocol):
    """One character replaced: a :class:`Correction`, or an n-gram search's substitution."""

    @property
    def offset(self) -> int: ...

    @property
    def suggestion(self) -> str: ...


def apply_corrections(text: str, corrections: Sequence[CharEdit]) -> str:
    """``text`` with each correction's character put in (every correction is one character)."""
    chars = list(text)
    for c in corrections:
        chars[c.offset] = c.suggestion
    return "".join(chars)


LOGP_FLOOR = -30.0  # the log-probability of a candidate the correction head has no row for


@torch.inference_mode()
def position_evidence(
    model: torch.nn.Module,
    windows: list[Window],
    texts: Sequence[str],
    vocab: CharVocab,
    pad_id: int,
    candidates: Callable[[str], Sequence[str]],
    batch_size: int = 32,
) -> list[dict[int, tuple[float, np.ndarray]]]:
    """The spelling model's evidence at every character position that has candidates, for
    decoding with an n-gram LM (:mod:`llmos.inference.csc_lm`): per text, character offset ->
    (detection logit, the correction head's log-probabilities of [the character, *its
    ``candidates``]) from one pass over the text as it is (no masked second pass)."""
    rows_of: dict[str, np.ndarray] = {}

    def rows(ch: str) -> np.ndarray:
        if ch not in rows_of:
            rows_of[ch] = np.array([vocab.index.get(c, -1) for c in [ch, *candidates(ch)]])
        return rows_of[ch]

    out: list[dict[int, tuple[float, np.ndarray]]] = [{} for _ in texts]

    def each(found: list[tuple[int, int, float]], states: torch.Tensor) -> None:
        logp = model.correct(states).float().log_softmax(-1).numpy()  # (N, K)
        for n, (t, off, logit) in enumerate(found):
            ks = rows(texts[t][off])
            out[t][off] = (logit, np.where(ks >= 0, logp[n, np.maximum(ks, 0)], LOGP_FLOOR))

    _read_positions(model, windows, texts, pad_id, candidates, batch_size, each)
    return out


@torch.inference_mode()
def position_states(
    model: torch.nn.Module,
    windows: list[Window],
    texts: Sequence[str],
    pad_id: int,
    candidates: Callable[[str], Sequence[str]],
    batch_size: int = 32,
) -> tuple[list[tuple[int, int, float]], torch.Tensor]:
    """:func:`position_evidence` without the correction head: ``(found, states)``,
    ``found[n]`` = (text, character offset, detection logit) and ``states[n]`` the encoder's
    output there (N, hidden). A decoding that reads only the detection logits runs the head
    later, at the positions it changes (:func:`correction_logprobs`)."""
    found: list[tuple[int, int, float]] = []
    parts: list[torch.Tensor] = []

    def each(batch: list[tuple[int, int, float]], states: torch.Tensor) -> None:
        found.extend(batch)
        parts.append(states)

    _read_positions(model, windows, texts, pad_id, candidates, batch_size, each)
    if not parts:
        return found, torch.zeros(0, model.correct.in_features)
    return found, torch.cat(parts)


def _read_positions(
    model: torch.nn.Module,
    windows: list[Window],
    texts: Sequence[str],
    pad_id: int,
    candidates: Callable[[str], Sequence[str]],
    batch_size: int,
    each: Callable[[list[tuple[int, int, float]], torch.Tensor], None],
) -> None:
    """Read ``windows`` in batches of similar length; per batch with character positions
    that have candidates, ``each([(text, offset, detection logit), ...], states)`` with the
    encoder's output at those positions."""

    def pad(idx: np.ndarray) -> dict[str, torch.Tensor | None]:
        return pad_batch([windows[i].ids for i in idx], None, pad_id) | {
            "idx": torch.from_numpy(idx)
        }

    def forward(b: dict[str, torch.Tensor | None]) -> list[None]:
        ids, mask, idx = b["input_ids"], b["attention_mask"], b["idx"]
        assert ids is not None and idx is not None
        h = model.bert(ids, None, mask)  # (B, T, C)
        detect = model.detect(h).squeeze(-1).float()  # (B, T)
        found, flat = [], []
        for r, i in enumerate(idx.tolist()):
            w = windows[i]
            for tok, off in zip(w.positions.tolist(), w.offsets.tolist(), strict=True):
                if candidates(texts[w.text][off]):
                    found.append((w.text, off, float(detect[r, tok])))
                    flat.append(r * h.size(1) + tok)
        if flat:
            each(found, h.reshape(-1, h.size(-1)).index_select(0, torch.tensor(flat)))
        return [None] * len(idx)

    run_length_sorted([w.ids for w in windows], batch_size, pad, forward)


@torch.inference_mode()
def correction_logprobs(
    model: torch.nn.Module, states: torch.Tensor, vocab: CharVocab, chars: Sequence[str]
) -> list[float]:
    """The correction head's log-probability of ``chars[n]`` at the position whose encoder
    output is ``states[n]`` (:func:`position_states`); :data:`LOGP_FLOOR` for a character the
    head has no row for."""
    if not len(chars):
        return []
    logp = model.correct(states).float().log_softmax(-1)
    return [
        float(logp[n, vocab.index[c]]) if c in vocab.index else LOGP_FLOOR
        for n, c in enumerate(chars)
    ]
