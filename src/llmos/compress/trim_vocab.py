"""Vocabulary trimming: keep the pieces a corpus uses, drop the embedding rows of the others.

A multilingual encoder spends most of its parameters on a vocabulary that one application never
touches (multilingual-e5-small: 250,002 x 384 word embeddings are 96 M of its 117 M
parameters). This module counts which pieces a tokenizer produces on some texts, chooses what
to keep (every used piece, or the N most frequent, plus the special tokens), renumbers
``tokenizer.json`` in the original id order and slices the rows of every tensor indexed by
token id (the word embeddings and the masked-LM output bias; the MLM decoder is tied to the
embeddings, see :class:`llmos.models.bert.MLMHead`).

Why outputs stay bit-identical on covered texts:

- WordPiece is greedy longest-match-first: the piece it picked was the longest candidate in the
  full vocabulary, so it is still the longest in any subset that contains it.
- Unigram (SentencePiece, XLM-R) takes the best-scoring segmentation (Viterbi). When every
  piece of that segmentation is kept, it is still a candidate with the same score, and every
  candidate left was a candidate before, so it stays the best (ties included: the lattice
  visits the remaining candidates in the same order). One catch: Hugging Face's Unigram scores
  an unknown character ``min(score) - 10``, the minimum over the whole vocabulary
  (https://github.com/huggingface/tokenizers/blob/v0.20.0/tokenizers/src/models/unigram/model.rs),
  and that penalty competes with the kept pieces wherever a character has no single-character
  piece. One lowest-scoring piece is therefore always kept, so the penalty does not move.

Byte-level BPE is not supported: its merges build pieces out of intermediate pieces that never
appear in an output, so "the pieces used" is not a closed set.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from llmos.errors import CheckpointError, ConfigError
from llmos.text.tokenizer import special_ids

# The tensors whose rows are token ids: the word embeddings and the MLM head's output bias.
VOCAB_ROWS = ("bert.embeddings.tok.weight", "mlm.bias")
SUPPORTED = ("Unigram", "WordPiece")
_BYTE_PIECES = {f"<0x{b:02X}>" for b in range(256)}  # SentencePiece's byte fallback


def model_type(tok: Tokenizer) -> str:
    """The tokenizer model's type (``Unigram``, ``WordPiece``, ``BPE``...).

    Raises:
        CheckpointError: for a model other than Unigram or WordPiece.
    """
    kind = json.loads(tok.to_str())["model"]["type"]
    if kind not in SUPPORTED:
        raise CheckpointError(
            f"trim-vocab trims {' and '.join(SUPPORTED)} tokenizers; this one is {kind} "
            "(byte-level BPE builds pieces from intermediate merges, so it cannot be trimmed "
            "to the pieces a corpus uses)"
        )
    return kind


Framing = tuple[dict[str, Any] | None, dict[str, Any] | None]


def take_framing(tok: Tokenizer) -> Framing:
    """Turn ``tok``'s padding and truncation off and return them (``tok.padding``,
    ``tok.truncation``), so that counting sees every piece of a text and no padding
    (all-MiniLM-L6-v2's tokenizer.json pads to 128). In place: a copy of a 250k-piece Unigram
    tokenizer costs ~300 MB. :func:`put_framing` puts them back on the trimmed one."""
    framing = (tok.padding, tok.truncation)
    tok.no_padding()
    tok.no_truncation()
    return framing


def put_framing(tok: Tokenizer, framing: Framing, remap: Remap) -> None:
    """Pad and truncate ``tok`` (a trimmed tokenizer) as the original did, the pad id
    renumbered."""
    padding, truncation = framing
    if padding:
        tok.enable_padding(**{**padding, "pad_id": remap[padding["pad_id"]]})
    if truncation:
        tok.enable_truncation(**truncation)


def count_pieces(
    tok: Tokenizer, batches: Iterable[Sequence[str]], size: int, also: Sequence[Tokenizer] = ()
) -> np.ndarray:
    """How often each id occurs when ``tok`` encodes the texts (no special tokens added).

    Args:
        tok: a tokenizer without padding or truncation (see :func:`take_framing`).
        batches: lists of texts, encoded a list at a time (in parallel by the library).
        size: the length of the result (at least the tokenizer's size).
        also: other tokenizers over the same ids (the CJK-split one) whose pieces count too.

    Returns:
        ``(size,)`` int64 counts.
    """
    counts = np.zeros(size, dtype=np.int64)
    for batch in batches:
        for t in (tok, *also):
            encs = t.encode_batch(list(batch), add_special_tokens=False)
            ids = [i for e in encs for i in e.ids]
            if ids:
                counts += np.bincount(np.asarray(ids, dtype=np.int64), minlength=size)[:size]
    return counts


def reserved_ids(tok: Tokenizer) -> list[int]:
    """Ids kept whatever a corpus uses: added and special tokens, the post-processor's tokens,
    the padding and unknown tokens, role tokens (``[CLS]``, ``<mask>``...), and for Unigram one
    lowest-scoring piece (the unknown-character penalty, see the module docstring) and the byte
    fallback pieces."""
    d = json.loads(tok.to_str())
    model = d["model"]
    keep = {a["id"] for a in d.get("added_tokens") or []}
    keep |= set(_processor_ids(d.get("post_processor")))
    if d.get("padding"):
        keep.add(d["padding"]["pad_id"])
    keep |= {i for i in special_ids(tok).values() if i is not None}
    if model["type"] == "Unigram":
        if model.get("unk_id") is not None:
            keep.add(model["unk_id"])
        scores = [s for _, s in model["vocab"]]
        if scores:
            keep.add(int(np.argmin(scores)))
        if model.get("byte_fallback"):
            keep |= {i for i, (p, _) in enumerate(model["vocab"]) if p in _BYTE_PIECES}
    elif model["type"] == "WordPiece":
        unk = model["vocab"].get(model.get("unk_token"))
        if unk is not None:
            keep.add(unk)
    return sorted(keep)


def choose(counts: np.ndarray, reserved: Sequence[int], keep_top: int | None = None) -> list[int]:
    """The ids to keep, ascending: ``reserved`` plus every id with a count, or with
    ``keep_top`` the ``keep_top`` most frequent non-reserved ids (ties: the lower id first)."""
    if keep_top is not None and keep_top < 1:
        raise ConfigError(f"--keep-top must be positive, got {keep_top}")
    res = np.zeros(len(counts), dtype=bool)
    res[list(reserved)] = True
    used = np.flatnonzero((counts > 0) & ~res)
    if keep_top is not None and keep_top < len(used):
        # A stable sort on -count keeps ascending ids among equal counts.
        used = used[np.argsort(-counts[used], kind="stable")[:keep_top]]
    return sorted({*map(int, used), *map(int, reserved)})


@dataclass(frozen=True)
class Remap:
    """Old id -> new id for a kept list (``-1`` for a dropped id)."""

    keep: tuple[int, ...]
    old_size: int
    table: np.ndarray = field(repr=False, compare=False)

    @classmethod
    def of(cls, keep: Sequence[int], old_size: int) -> Remap:
        table = np.full(old_size, -1, dtype=np.int64)
        table[np.asarray(keep, dtype=np.int64)] = np.arange(len(keep))
        return cls(tuple(keep), old_size, table)

    def __getitem__(self, old: int) -> int:
        new = int(self.table[old])
        assert new >= 0, f"id {old} was dropped"
        return new


def trim_tokenizer(tok: Tokenizer, remap: Remap) -> Tokenizer:
    """``tok`` with only the kept ids, renumbered in the original order.

    Rewritten in ``tokenizer.json``: the model's vocabulary (Unigram ``[piece, score]`` list and
    ``unk_id``; WordPiece ``{piece: id}``), ``added_tokens`` ids, the post-processor's special
    token ids (TemplateProcessing, RobertaProcessing, BertProcessing, Sequence) and the padding
    ``pad_id``. Everything else (normalizer, pre-tokenizer, decoder, scores) is kept as is.
    """
    d = json.loads(tok.to_str())
    model = d["model"]
    if model["type"] == "Unigram":
        model["vocab"] = [model["vocab"][i] for i in remap.keep if i < len(model["vocab"])]
        if model.get("unk_id") is not None:
            model["unk_id"] = remap[model["unk_id"]]
    elif model["type"] == "WordPiece":
        model["vocab"] = {p: remap[i] for p, i in model["vocab"].items() if remap.table[i] >= 0}
    else:
        model_type(tok)  # raises
    for added in d.get("added_tokens") or []:
        added["id"] = remap[added["id"]]
    d["post_processor"] = _remap_processor(d.get("post_processor"), remap)
    if d.get("padding"):
        d["padding"]["pad_id"] = remap[d["padding"]["pad_id"]]
    out = Tokenizer.from_str(json.dumps(d, ensure_ascii=False))
    # Every kept id must name the same string as before (catches added tokens that Hugging
    # Face renumbers on load, which would silently shift rows against the embeddings).
    for old in remap.keep:
        if tok.id_to_token(old) is not None:
            assert out.id_to_token(remap[old]) == tok.id_to_token(old), old
    assert out.get_vocab_size() == len(remap.keep), (out.get_vocab_size(), len(remap.keep))
    return out


def _processor_ids(p: dict[str, Any] | None) -> list[int]:
    if not p:
        return []
    kind = p.get("type")
    if kind == "TemplateProcessing":
        return [i for s in p.get("special_tokens", {}).values() for i in s["ids"]]
    if kind in ("RobertaProcessing", "BertProcessing"):
        return [p["sep"][1], p["cls"][1]]
    if kind == "Sequence":
        return [i for q in p.get("processors", []) for i in _processor_ids(q)]
    return []  # ByteLevel and others hold no ids


def _remap_processor(p: dict[str, Any] | None, remap: Remap) -> dict[str, Any] | None:
    if not p:
        return p
    p = copy.deepcopy(p)
    kind = p.get("type")
    if kind == "TemplateProcessing":
        for s in p.get("special_tokens", {}).values():
            s["ids"] = [remap[i] for i in s["ids"]]
    elif kind in ("RobertaProcessing", "BertProcessing"):
        for key in ("sep", "cls"):
            p[key] = [p[key][0], remap[p[key][1]]]
    elif kind == "Sequence":
        p["processors"] = [_remap_processor(q, remap) for q in p.get("processors", [])]
    return p


def trim_weights(
    state: dict[str, torch.Tensor], remap: Remap, vocab_size: int
) -> dict[str, torch.Tensor]:
    """``state`` with the rows of the token-indexed tensors (:data:`VOCAB_ROWS`) sliced to the
    kept ids; the other tensors are the same objects.

    Rows past the tokenizer's size (a padded vocabulary) are never produced, so they go too.
    """
    out = dict(state)
    index = torch.tensor(remap.keep, dtype=torch.long)
    for name in VOCAB_ROWS:
        if name not in state:
            continue  # no MLM head (an embedding model, a classifier)
        t = state[name]
        if t.shape[0] != vocab_size:
            raise CheckpointError(
                f"weight {name!r} has {t.shape[0]} rows, config.json says vocab_size {vocab_size}"
            )
        out[name] = t.index_select(0, index).contiguous()
    if VOCAB_ROWS[0] not in state:
        raise CheckpointError(f"no word embeddings ({VOCAB_ROWS[0]!r}) in the weights")
    return out


@dataclass
class Coverage:
    """How one source's texts tokenize after trimming, against before.

    Attributes:
        texts: texts compared.
        tokens: tokens before trimming (no special tokens).
        unk_tokens: unknown tokens after trimming, less those that were unknown already.
        texts_with_unk: texts with more unknown tokens than before.
        texts_changed: texts whose ids differ from the remapped original ids.
    """

    texts: int = 0
    tokens: int = 0
    unk_tokens: int = 0
    texts_with_unk: int = 0
    texts_changed: int = 0

    def add(self, other: Coverage) -> None:
        for name in ("texts", "tokens", "unk_tokens", "texts_with_unk", "texts_changed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def unk_id(tok: Tokenizer) -> int | None:
    """The id of the tokenizer's unknown token, if it has one."""
    model = json.loads(tok.to_str())["model"]
    if model["type"] == "Unigram":
        return model.get("unk_id")
    return tok.token_to_id(model.get("unk_token") or "") if "unk_token" in model else None


def compare(
    before: Tokenizer,
    after: Tokenizer,
    remap: Remap,
    batches: Iterable[Sequence[str]],
    unk: tuple[int | None, int | None] | None = None,
) -> Coverage:
    """Encode the texts with both tokenizers (plain: no padding, no truncation, no special
    tokens) and count what trimming changed.

    Args:
        before, after: the original and the trimmed tokenizer.
        remap: the ids kept.
        batches: lists of texts.
        unk: the unknown token's id before and after (default: looked up; pass them when
            comparing many sources, the lookup serializes the tokenizer).
    """
    cov = Coverage()
    unk_before, unk_after = unk or (unk_id(before), unk_id(after))
    for batch in batches:
        texts = list(batch)
        old = before.encode_batch(texts, add_special_tokens=False)
        new = after.encode_batch(texts, add_special_tokens=False)
        n_old = np.fromiter((len(e.ids) for e in old), np.int64, len(texts))
        n_new = np.fromiter((len(e.ids) for e in new), np.int64, len(texts))
        ids_old = np.fromiter((i for e in old for i in e.ids), np.int64, int(n_old.sum()))
        ids_new = np.fromiter((i for e in new for i in e.ids), np.int64, int(n_new.sum()))
        # Per text: unknown tokens added, and whether the ids differ from the remapped ones.
        unk = _per_text(ids_new == unk_after, n_new) - _per_text(ids_old == unk_before, n_old)
        changed = n_old != n_new
        same_len = ~changed
        if same_len.any():
            # Equal lengths are aligned position by position once the others are left out.
            keep_old = np.repeat(same_len, n_old)
            keep_new = np.repeat(same_len, n_new)
            diff = remap.table[ids_old[keep_old]] != ids_new[keep_new]
            changed[same_len] = _per_text(diff, n_old[same_len]) > 0
        cov.texts += len(texts)
        cov.tokens += int(n_old.sum())
        cov.unk_tokens += int(unk[unk > 0].sum())
        cov.texts_with_unk += int((unk > 0).sum())
        cov.texts_changed += int(changed.sum())
    return cov


def _per_text(flags: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per text, how many of its positions in the flat ``flags`` are set."""
    text_of = np.repeat(np.arange(len(lengths)), lengths)
    return np.bincount(text_of, weights=flags, minlength=len(lengths)).astype(np.int64)
