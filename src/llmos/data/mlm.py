"""Masked-LM pretraining data: NSP pairs or packed sentences, dynamic masking, batches.

Every random choice is a pure function of ``(seed, epoch, instance)``: instances are rebuilt per
epoch (new NSP pairs, new packing order) and masks are redrawn each time an instance is seen, as
in RoBERTa's dynamic masking. Because a mask depends on the instance and not on which process or
micro-batch it lands in, a run split over DDP ranks or accumulation steps sees exactly the data a
single process sees, and resuming needs only ``(epoch, batch)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from llmos.data.batching import bucketed_batches, pad_batch
from llmos.data.corpus import TokenizedCorpus
from llmos.errors import DataError


@dataclass(frozen=True)
class SpecialIds:
    """Token ids the collator needs; ``first_normal`` is the lowest id of a normal token."""

    pad: int
    cls: int
    sep: int
    mask: int
    vocab_size: int
    first_normal: int


@dataclass
class Instance:
    """One training sequence: ``[CLS] A [SEP] (B [SEP])``; ``b_start`` = first index of B."""

    uid: int
    ids: np.ndarray
    b_start: int
    nsp_label: int  # 0 = B follows A, 1 = B is random, -1 = no NSP


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([abs(k) for k in key])


def _truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: np.random.Generator) -> None:
    """BERT's truncate_seq_pair: trim the longer side, from the front or back at random."""
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def nsp_instances(
    corpus: TokenizedCorpus,
    sp: SpecialIds,
    max_length: int,
    short_seq_prob: float,
    rng: np.random.Generator,
) -> list[Instance]:
    """Sentence pairs for MLM + NSP, after BERT's ``create_instances_from_document``.

    Sentences of a document are gathered up to a target length and cut at a sentence boundary
    (inside the one sentence when the chunk has only one) into A and B; half the time B is
    replaced by text from another document. Chunk sentences B did not use are put back.
    """
    max_tokens = max_length - 3
    out: list[Instance] = []
    n_docs = corpus.num_documents
    for d in range(n_docs):
        s0, s1 = int(corpus.doc_bounds[d]), int(corpus.doc_bounds[d + 1])
        target = max_tokens
        if rng.random() < short_seq_prob:
            target = int(rng.integers(2, max_tokens + 1))
        chunk: list[np.ndarray] = []
        chunk_idx: list[int] = []
        size = 0
        i = s0
        while i < s1:
            sent = corpus.sentence(i)
            if sent.size:
                chunk.append(sent)
                chunk_idx.append(i)
                size += sent.size
            if (i == s1 - 1 or size >= target) and size >= 2:
                cut = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 0
                if cut:
                    a = np.concatenate(chunk[:cut]).tolist()
                    rest = np.concatenate(chunk[cut:]).tolist()
                else:  # one sentence: cut inside it
                    tokens = chunk[0].tolist()
                    k = int(rng.integers(1, len(tokens)))
                    a, rest = tokens[:k], tokens[k:]
                if n_docs > 1 and rng.random() < 0.5:
                    b = _random_segment(corpus, d, max(1, target - len(a)), rng)
                    label = 1
                    if cut:
                        i = chunk_idx[cut] - 1  # give the unused sentences back
                else:
                    b, label = rest, 0
                _truncate_pair(a, b, max_tokens, rng)
                if a and b:
                    ids = np.array([sp.cls, *a, sp.sep, *b, sp.sep], dtype=np.int64)
                    out.append(Instance(len(out), ids, len(a) + 2, label))
                chunk, chunk_idx, size = [], [], 0
            i += 1
    return out


def _random_segment(
    corpus: TokenizedCorpus, avoid_doc: int, target: int, rng: np.random.Generator
) -> list[int]:
    n_docs = corpus.num_documents
    d = int(rng.integers(0, n_docs - 1))
    d = d + 1 if d >= avoid_doc else d  # uniform over the other documents
    s0, s1 = int(corpus.doc_bounds[d]), int(corpus.doc_bounds[d + 1])
    out: list[int] = []
    for j in range(int(rng.integers(s0, s1)), s1):
        out.extend(corpus.sentence(j).tolist())
        if len(out) >= target:
            break
    return out


def packed_instances(
    corpus: TokenizedCorpus, sp: SpecialIds, max_length: int, rng: np.random.Generator
) -> list[Instance]:
    """RoBERTa FULL-SENTENCES: whole sentences packed up to ``max_length``, across documents.

    Documents are visited in a shuffled order, each ending with an extra ``[SEP]``; a sentence
    longer than a sequence is cut into pieces.
    """
    room = max_length - 2
    out: list[Instance] = []
    cur: list[int] = []

    def emit() -> None:
        if cur:
            ids = np.array([sp.cls, *cur, sp.sep], dtype=np.int64)
            out.append(Instance(len(out), ids, len(ids), -1))
            cur.clear()

    for d in rng.permutation(corpus.num_documents):
        s0, s1 = int(corpus.doc_bounds[d]), int(corpus.doc_bounds[d + 1])
        for j in range(s0, s1):
            sent = corpus.sentence(j).tolist()
            for k in range(0, len(sent), room):
                piece = sent[k : k + room]
                if len(cur) + len(piece) > room:
                    emit()
                cur.extend(piece)
        if cur and len(cur) < room:
            cur.append(sp.sep)  # document boundary
    emit()
    return out


def mask_tokens(
    ids: np.ndarray,
    sp: SpecialIds,
    mask_prob: float,
    rng: np.random.Generator,
    protected: tuple[int, ...] = (),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BERT masking: pick ``mask_prob`` of the non-special tokens; of those 80 % become
    ``[MASK]``, 10 % a random token, 10 % stay. The count is ``floor(p * n + u)``, u ~ U[0, 1),
    so its expectation is exactly ``p * n`` (fairseq's rounding).

    ``protected``: more token ids never picked besides [CLS], [SEP] and padding (an input
    that holds a [MASK] of its own, a cloze pattern's, keeps it and it is no target).

    Returns:
        (masked ids, positions (sorted), original tokens at those positions).
    """
    candidates = np.flatnonzero(~np.isin(ids, (sp.cls, sp.sep, sp.pad, *protected)))
    n = min(int(mask_prob * candidates.size + rng.random()), candidates.size)
    positions = np.sort(rng.choice(candidates, size=n, replace=False))
    labels = ids[positions].copy()
    out = ids.copy()
    r = rng.random(n)
    out[positions[r < 0.8]] = sp.mask
    rand = (r >= 0.8) & (r < 0.9)
    out[positions[rand]] = rng.integers(sp.first_normal, sp.vocab_size, size=int(rand.sum()))
    return out, positions, labels


def collate(
    instances: list[Instance], sp: SpecialIds, mask_prob: float, seed: int, epoch: int
) -> dict[str, torch.Tensor | None]:
    """Mask and pad instances into a batch for :class:`~llmos.models.bert.BertForPreTraining`.

    Returns a dict with ``input_ids``, ``token_type_ids`` (B, T), ``attention_mask`` (B, T) or
    None when no row is padded, ``mlm_positions`` (M,) flat indices into B*T, ``mlm_labels``
    (M,), ``nsp_labels`` (B,) or None, and ``num_tokens`` (real tokens, a 0-d tensor).
    """
    masked, types, positions, labels = [], [], [], []
    for inst in instances:
        ids, pos, lab = mask_tokens(inst.ids, sp, mask_prob, _rng(seed, epoch, inst.uid))
        masked.append(ids)
        types.append((np.arange(ids.size) >= inst.b_start).astype(np.int64))
        positions.append(pos)
        labels.append(lab)
    has_nsp = instances[0].nsp_label >= 0
    batch = pad_batch(masked, types if has_nsp else None, sp.pad)
    T = batch["input_ids"].shape[1]
    offsets = [pos + row * T for row, pos in enumerate(positions)]  # flat indices into B*T
    return batch | {
        "mlm_positions": torch.from_numpy(np.concatenate(offsets)),
        "mlm_labels": torch.from_numpy(np.concatenate(labels)),
        "nsp_labels": torch.tensor([i.nsp_label for i in instances]) if has_nsp else None,
    }


class MLMBatches:
    """An endless, resumable stream of global batches of pretraining instances.

    ``state()`` / ``load_state()`` hold the position as ``(epoch, batch)``; everything else is
    rebuilt from the seed.
    """

    def __init__(
        self,
        corpus: TokenizedCorpus,
        sp: SpecialIds,
        *,
        objective: Literal["mlm+nsp", "mlm"],
        max_length: int,
        short_seq_prob: float,
        mask_prob: float,
        global_batch: int,
        seed: int,
    ) -> None:
        self.corpus, self.sp, self.objective = corpus, sp, objective
        self.max_length, self.short_seq_prob, self.mask_prob = max_length, short_seq_prob, mask_prob
        self.global_batch, self.seed = global_batch, seed
        self.epoch, self.batch = 0, 0
        self._cache: tuple[int, list[Instance], list[np.ndarray]] | None = None

    def instances(self, epoch: int) -> list[Instance]:
        """All instances of an epoch (rebuilt from the seed, new pairs/packing each epoch)."""
        return self._epoch(epoch)[1]

    def _epoch(self, epoch: int) -> tuple[int, list[Instance], list[np.ndarray]]:
        if self._cache is None or self._cache[0] != epoch:
            rng = _rng(self.seed, epoch, 1)
            if self.objective == "mlm+nsp":
                insts = nsp_instances(
                    self.corpus, self.sp, self.max_length, self.short_seq_prob, rng
                )
            else:
                insts = packed_instances(self.corpus, self.sp, self.max_length, rng)
            if len(insts) < self.global_batch:
                raise DataError(
                    f"the corpus yields {len(insts)} training sequences, fewer than one batch "
                    f"of {self.global_batch}: use more text or a smaller train.batch_size"
                )
            lengths = np.array([inst.ids.size for inst in insts])
            self._cache = (epoch, insts, bucketed_batches(lengths, self.global_batch, rng))
        return self._cache

    def __iter__(self) -> Iterator[tuple[int, list[Instance]]]:
        """Yield ``(epoch, instances of one global batch)`` from the current position on."""
        while True:
            _, insts, batches = self._epoch(self.epoch)
            if self.batch >= len(batches):
                self.epoch, self.batch = self.epoch + 1, 0
                continue
            idx = batches[self.batch]
            self.batch += 1
            yield self.epoch, [insts[i] for i in idx]

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state(self, state: dict[str, int]) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
