"""Permutation-LM pretraining data (XLNet, Yang et al. 2019, https://arxiv.org/abs/1906.08237).

A training row is ``mem_len + S`` consecutive tokens of the packed document stream: the model
runs the first ``mem_len`` (the previous segment) without targets to build its memory (XLNet's
segment recurrence), then predicts span-based targets of the last ``S`` under a sampled
factorisation order. The order puts every non-target first and the targets after them in a
random order, so context tokens never see a target and each target sees the context and the
targets before it; the memory holds only earlier text, so it cannot leak a target.

As in :mod:`llmos.data.mlm`, every random choice is a pure function of ``(seed, epoch, row)``:
a row's targets and order do not depend on the rank or micro-batch it lands in, and resuming
needs only ``(epoch, batch)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from llmos.data.batching import EpochBatches
from llmos.data.clm import IGNORE
from llmos.data.corpus import TokenizedCorpus
from llmos.errors import DataError


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([abs(k) for k in key])


def _check_spans(max_span: int, predict_ratio: float) -> None:
    if max_span < 1 or not 0 < predict_ratio < 1:
        raise ValueError(
            f"need max_span >= 1 and 0 < predict_ratio < 1, got {max_span} and {predict_ratio}"
        )


def sample_targets(
    n: int,
    special: np.ndarray,
    rng: np.random.Generator,
    max_span: int = 5,
    predict_ratio: float = 1 / 6,
) -> np.ndarray:
    """Span-based prediction targets (XLNet appendix A.3; HF's
    ``DataCollatorForPermutationLanguageModeling``).

    Walking ``cur`` from 0 to ``n``: draw a span length L in [1, max_span], reserve a context of
    ``round(L / predict_ratio)`` tokens, mark L tokens at a uniform start inside it, move on by
    the context. About ``predict_ratio`` of the tokens become targets; ``special`` positions
    (separators, padding) never do.

    Returns:
        (n,) bool, True at the targets.
    """
    _check_spans(max_span, predict_ratio)
    if special.shape != (n,):
        raise ValueError(f"special has shape {special.shape}, expected ({n},)")
    targets = np.zeros(n, dtype=bool)
    cur = 0
    while cur < n:
        span = int(rng.integers(1, max_span + 1))
        # round, not HF's int(): int() always shortens the context, so with a ratio like 0.15
        # (L=1: 6.67 -> 6) more than predict_ratio of the tokens would become targets
        ctx = max(span, round(span / predict_ratio))
        start = cur + int(rng.integers(0, ctx - span + 1))
        targets[start : start + span] = True
        cur += ctx
    return targets & ~special


def factorization_mask(targets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """XLNet's ``perm_mask`` of one sequence: non-targets first (rank -1), then the targets in
    a uniformly random order.

    ``mask[i, j] = 1`` means token i may not attend to token j: j is a target not before i in
    the order (``rank[j] >= rank[i]``), the formula of HF's collator. A target masks itself, as
    its query stream must; the model's content stream adds the diagonal back.

    Returns:
        (n, n) float32.
    """
    rank = np.full(targets.size, -1, dtype=np.int64)
    where = np.flatnonzero(targets)
    rank[where] = rng.permutation(where.size)
    return (targets[None, :] & (rank[None, :] >= rank[:, None])).astype(np.float32)


def _check(
    width: int, mem_len: int, max_span: int, predict_ratio: float, num_predict: int | None
) -> None:
    if not 0 <= mem_len < width:
        raise ValueError(f"mem_len must be in [0, {width}) for rows of {width} tokens: {mem_len}")
    _check_spans(max_span, predict_ratio)
    if num_predict is not None and num_predict < 1:
        raise ValueError(f"num_predict must be >= 1 or None, got {num_predict}")


def plm_collate(
    blocks: np.ndarray,
    uids: np.ndarray,
    special_ids: Sequence[int],
    seed: int,
    epoch: int,
    mem_len: int,
    max_span: int = 5,
    predict_ratio: float = 1 / 6,
    num_predict: int | None = None,
    sep_id: int | None = None,
) -> dict[str, torch.Tensor]:
    """Targets, factorisation masks and memory of packed rows, for an XLNet forward.

    Args:
        blocks: (B, mem_len + S) int64 consecutive tokens; the first ``mem_len`` of a row are
            its memory segment, the last S its prediction segment.
        uids: (B,) a stable id of each row (its block index): with ``seed`` and ``epoch`` it
            seeds the row's targets and order.
        special_ids: ids that are never targets (separator, padding, cls).
        num_predict: keep at most this many targets per row (the first, in position order;
            the rest become context) and pad every row to it; None: pad to the batch's most.
        sep_id: the separator between documents: with it, ``token_type_ids`` (B, S) number
            the documents of each segment 0, 1, 0, ... (a separator ends its document), so
            XLNet's relative segment encoding tells "same document" from "another" (the
            original pretraining's A/B segments).

    Returns:
        ``mem_ids`` (B, mem_len) (only when mem_len > 0), ``input_ids`` (B, S), ``perm_mask``
        (B, S, S) float32, ``target_mapping`` (B, M, S) float32 (row m one-hot at the m-th
        target, zero for padding), ``labels`` (B, M) (``IGNORE`` for padding) and
        ``num_tokens`` (all tokens the model reads, a 0-d tensor, for throughput), and
        ``token_type_ids`` (B, S) when ``sep_id`` is given.
    """
    blocks = np.asarray(blocks, dtype=np.int64)
    B, width = blocks.shape
    _check(width, mem_len, max_span, predict_ratio, num_predict)
    seg = blocks[:, mem_len:]
    S = seg.shape[1]
    special = np.isin(seg, np.asarray(list(special_ids), dtype=np.int64))
    perm = np.zeros((B, S, S), dtype=np.float32)
    positions = []
    for row in range(B):
        rng = _rng(seed, epoch, int(uids[row]))
        targets = sample_targets(S, special[row], rng, max_span, predict_ratio)
        where = np.flatnonzero(targets)
        if num_predict is not None and where.size > num_predict:
            where = where[:num_predict]
            targets = np.zeros(S, dtype=bool)
            targets[where] = True
        perm[row] = factorization_mask(targets, rng)
        positions.append(where)
    M = num_predict if num_predict is not None else max([1, *(p.size for p in positions)])
    mapping = np.zeros((B, M, S), dtype=np.float32)
    labels = np.full((B, M), IGNORE, dtype=np.int64)
    for row, where in enumerate(positions):
        mapping[row, np.arange(where.size), where] = 1.0
        labels[row, : where.size] = seg[row, where]
    out = {
        "input_ids": torch.from_numpy(np.ascontiguousarray(seg)),
        "perm_mask": torch.from_numpy(perm),
        "target_mapping": torch.from_numpy(mapping),
        "labels": torch.from_numpy(labels),
        "num_tokens": torch.tensor(blocks.size),
    }
    if sep_id is not None:
        ends = seg == sep_id
        out["token_type_ids"] = torch.from_numpy((np.cumsum(ends, axis=1) - ends) % 2)
    if mem_len > 0:
        out["mem_ids"] = torch.from_numpy(np.ascontiguousarray(blocks[:, :mem_len]))
    return out


def pack_segments(corpus: TokenizedCorpus, sep_id: int, seg_len: int, mem_len: int) -> np.ndarray:
    """Documents joined by ``sep_id``, cut into (N, mem_len + seg_len) rows.

    Row k starts at token ``k * seg_len``, so its memory is row k-1's prediction segment and
    every token past the first ``mem_len`` is in exactly one prediction segment (as
    :func:`llmos.data.clm.pack_stream` overlaps rows by one so each token is a target once).
    The incomplete tail is dropped.
    """
    if seg_len < 1 or mem_len < 0:
        raise ValueError(f"need seg_len >= 1 and mem_len >= 0, got {seg_len} and {mem_len}")
    between = corpus.sent_bounds[corpus.doc_bounds[1:-1]]  # token offset after each but the last
    stream = np.insert(corpus.ids.astype(np.int64), between, sep_id)
    n = max(0, (stream.size - mem_len) // seg_len)
    rows = np.arange(n)[:, None] * seg_len + np.arange(mem_len + seg_len)[None, :]
    return stream[rows]


class PLMBatches(EpochBatches):
    """Endless, resumable shuffled epochs over packed rows, with permutation-LM targets drawn
    from ``(seed, epoch, row index)``."""

    def __init__(
        self,
        blocks: np.ndarray,
        batch_size: int,
        seed: int,
        special_ids: Sequence[int],
        mem_len: int,
        max_span: int = 5,
        predict_ratio: float = 1 / 6,
        num_predict: int | None = None,
        sep_id: int | None = None,
    ) -> None:
        _check(blocks.shape[1], mem_len, max_span, predict_ratio, num_predict)
        if len(blocks) < batch_size:
            raise DataError(
                f"the corpus yields {len(blocks)} rows of {blocks.shape[1]} tokens, fewer than "
                f"one batch of {batch_size}: use more text, a smaller train.batch_size or "
                "shorter segments"
            )
        self.blocks = blocks
        self.lengths = np.full(len(blocks), blocks.shape[1] - mem_len)
        self.batch_size, self.seed = batch_size, seed
        self.special_ids = tuple(special_ids)
        self.mem_len, self.max_span = mem_len, max_span
        self.predict_ratio, self.num_predict = predict_ratio, num_predict
        self.sep_id = sep_id
        self.position = {"epoch": 0, "batch": 0}

    def collate(self, idx: np.ndarray) -> dict[str, Any]:
        # steps() collates before it moves to the next epoch, so this is the batch's epoch
        idx = np.sort(idx)
        return plm_collate(
            self.blocks[idx],
            idx,
            self.special_ids,
            self.seed,
            self.position["epoch"],
            self.mem_len,
            self.max_span,
            self.predict_ratio,
            self.num_predict,
            self.sep_id,
        )


def plm_valid_batches(
    blocks: np.ndarray,
    batch_size: int,
    special_ids: Sequence[int],
    seed: int,
    mem_len: int,
    max_span: int = 5,
    predict_ratio: float = 1 / 6,
    num_predict: int | None = None,
    sep_id: int | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Fixed validation batches: rows in order, targets of epoch 0 keyed by the row index (the
    last batch may be smaller)."""
    return [
        plm_collate(
            blocks[s : s + batch_size],
            np.arange(s, min(s + batch_size, len(blocks))),
            special_ids,
            seed,
            0,
            mem_len,
            max_span,
            predict_ratio,
            num_predict,
            sep_id,
        )
        for s in range(0, len(blocks), batch_size)
    ]
