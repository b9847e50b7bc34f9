"""Hybrid search over one knowledge base: BM25 over words and dense vectors, fused by
reciprocal rank.

Every entry contributes rows: its question and each alternative question (embedded as
queries: a customer's message is matched against them query to query), and its answer
(embedded as a passage: a message that asks what an answer says finds it even when no stored
question is near). A search ranks the *entries* twice, each by its best row: by BM25 over the
rows' words (``bm25s``, jieba words for Chinese, :func:`llmos.text.words.words`) and by cosine
similarity of the rows' vectors to the message's (FAISS, exact inner product over unit
vectors); the two rankings are fused by weighted reciprocal rank, score =
``1 / (RRF_K + dense rank) + w / (RRF_K + BM25 rank)`` (the second term only for entries
that share a word with the message; Cormack, Clarke and Buettcher, SIGIR 2009,
https://plg.uwaterloo.ca/~gvcormac/cormacksigir09-rrf.pdf, whose k = 60 is kept).

The BM25 weight ``w`` is the base's own (:meth:`KbIndex.calibrate`): the base asks its own
stored questions and alternatives (up to ``MAX_CALIBRATION``), each left out of the search that
answers it, so that its entry must be found by its other wordings or its answer, as a
customer's new wording must; it keeps the weight of ``CALIBRATION_WEIGHTS`` under which they
find their entries best (MRR), when that one is significantly better than ``BM25_WEIGHT``. How
much words should count depends on the encoder and on the base: an encoder fine-tuned on the
base (``llmos support kb pairs``) needs them less than a general one, and a question is matched
to an answer by words less often than to another question. A base with fewer than
``MIN_CALIBRATION`` such wordings keeps ``BM25_WEIGHT``.

The index is kept in step with the store by the knowledge base's ``revision``: :meth:`sync`
compares the stored entries with the indexed rows and embeds only rows it has not seen (an
upload of 10 entries to a 10,000-entry base embeds 10 entries' texts), removes the rows of
deleted entries from the FAISS index (``IndexIDMap2.remove_ids``), and rebuilds the BM25
matrix from the rows' stored words (no re-tokenizing). A saved index is a directory::

    dense.faiss    the FAISS index, rows by their row id
    rows.jsonl     one {"row", "entry", "field", "text", "words"} a line
    entries.json   question, answer and tags of each entry, by id
    meta.json      written last: revision, encoder, dimension, next row id
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmos.apps.hybrid import (
    RRF_K,
    Embedder,
    LexicalIndex,
    add_vectors,
    dense_scores,
    fuse_ranks,
)
from llmos.apps.hybrid import best_by_entry as _best
from llmos.apps.hybrid import faiss_module as _faiss
from llmos.apps.hybrid import rank as _rank
from llmos.errors import CheckpointError
from llmos.files import atomic_path, atomic_write, atomic_write_json
from llmos.store.kb import KbSnapshot
from llmos.text.words import words

__all__ = ["RRF_K", "Embedder", "Hit", "KbIndex", "Row", "fuse_ranks"]

log = logging.getLogger("llmos.apps.support")
# The BM25 ranking counts half as much as the dense one: chosen on the intents' valid splits
# (bench/support_eval.py --protocol paraphrase --split valid): 0.25-1 all scored within 0.7
# points of each other, 0.5 had the best MRR in both languages; 0 (dense alone) was lower in en.
BM25_WEIGHT = 0.5
CALIBRATION_WEIGHTS = (0.0, 0.125, 0.25, 0.5, 1.0, 2.0)
MIN_CALIBRATION = 30  # askable wordings (KbIndex._wordings) before a base picks its own weight
MAX_CALIBRATION = 300  # wordings asked at most (spread evenly over the base)
RECALIBRATE = 0.1  # the weight is chosen again once the wordings grew or shrank by this share
SIGNIFICANCE = 2.0  # standard errors by which a weight must beat the default (calibrate)
DENSE_FILE, ROWS_FILE, ENTRIES_FILE, META_FILE = (
    "dense.faiss",
    "rows.jsonl",
    "entries.json",
    "meta.json",
)
# Which embedding each row field gets: questions are matched query to query, answers as the
# passages a query looks for (E5's input format; a model without prefixes ignores the kind).
KINDS = {"question": "query", "alternative": "query", "answer": "passage"}


@dataclass(frozen=True)
class Row:
    row: int
    entry: int
    field: str  # question | alternative | answer
    text: str
    words: tuple[str, ...]


@dataclass(frozen=True)
class Hit:
    """One entry found for a message, with the evidence of both retrievers."""

    entry: int
    question: str
    answer: str
    tags: tuple[str, ...]
    score: float  # the fused reciprocal-rank score
    similarity: float  # cosine of the message to the entry's nearest row (-1: none)
    bm25: float  # BM25 score of the entry's best row (0: no word in common)
    matched: str  # the text of the entry's row nearest the message
    dense_rank: int | None  # 1-based; None when the entry is not among the dense candidates
    bm25_rank: int | None  # 1-based; None when it shares no word with the message


class KbIndex:
    """The hybrid index of one knowledge base (see the module docstring). Thread-safe: a sync
    and searches of the same index take its lock."""

    def __init__(self, encoder: str, bm25_weight: float | None = None) -> None:
        """``bm25_weight``: a fixed weight (None: the base's own, :meth:`calibrate`)."""
        self.encoder = encoder
        self.dim: int | None = None  # the encoder's, known at the first rows
        self.dense: Any = None  # made at the first rows, with their dimension
        self.rows: dict[int, Row] = {}
        self.entries: dict[int, dict[str, Any]] = {}
        self.revision = -1  # nothing synced yet
        self.bm25_weight = BM25_WEIGHT if bm25_weight is None else bm25_weight
        self.fixed_weight = bm25_weight is not None
        self.calibration: dict[str, Any] | None = None  # what chose bm25_weight
        self.next_row = 0
        self.lock = threading.RLock()
        self._words: LexicalIndex | None = None

    # --- keeping in step with the store ---------------------------------------------------

    def sync(self, snapshot: KbSnapshot, embed: Embedder) -> dict[str, int]:
        """Bring the index to ``snapshot``; returns how many rows were added and removed."""
        with self.lock:
            wanted: dict[tuple[int, str, str], None] = {}
            entries = {}
            for e in snapshot.entries:
                texts = [("question", e.question), *(("alternative", a) for a in e.alternatives)]
                for field, text in [*texts, ("answer", e.answer)]:
                    if text.strip():  # the store refuses empty texts; an evaluation may not
                        wanted[(e.id, field, text)] = None
                entries[e.id] = {"question": e.question, "answer": e.answer, "tags": list(e.tags)}
            have = {(r.entry, r.field, r.text): r.row for r in self.rows.values()}
            gone = [row for key, row in have.items() if key not in wanted]
            new = [key for key in wanted if key not in have]
            if gone:
                assert self.dense is not None
                self.dense.remove_ids(np.asarray(gone, dtype=np.int64))
                for row in gone:
                    del self.rows[row]
            for kind in ("query", "passage"):
                batch = [key for key in new if KINDS[key[1]] == kind]
                if batch:
                    self._add(batch, embed([key[2] for key in batch], kind))
            self.entries = entries
            self.revision = snapshot.revision
            if gone or new or self._words is None:
                self._index_words()
            if self._calibration_due():
                self.calibrate()
            return {"added": len(new), "removed": len(gone)}

    def _add(self, keys: list[tuple[int, str, str]], vectors: np.ndarray) -> None:
        if len(vectors) != len(keys):
            raise CheckpointError(f"the encoder gave {len(vectors)} vectors for {len(keys)} texts")
        self.dense, ids = add_vectors(self.dense, vectors, self.next_row)
        self.dim = self.dense.d
        for row, (entry, field, text) in zip(ids, keys, strict=True):
            self.rows[row] = Row(row, entry, field, text, tuple(words(text)))
        self.next_row += len(keys)

    def _index_words(self) -> None:
        self._words = LexicalIndex({r: row.words for r, row in self.rows.items()})

    # --- search ----------------------------------------------------------------------------

    def search(self, query: str, vector: np.ndarray, k: int = 5) -> list[Hit]:
        """The ``k`` best entries for ``query`` (whose embedding, kind "query", is ``vector``)."""
        with self.lock:
            if not self.rows:
                return []
            dense = self._dense(vector, k)
            lexical = self._lexical(query, k)
            # Two rankings of the entries, each by its best row under one retriever, fused by
            # reciprocal rank. (Ranking each field group apart, questions and answers, and
            # fusing four lists was measured worse: docs/BENCHMARKS.md, "Knowledge-base
            # answers".)
            dense_best, bm25_best = _best(dense, self.rows), _best(lexical, self.rows)
            dense_rank, bm25_rank = _rank(dense_best), _rank(bm25_best)
            fused = fuse_ranks(dense_rank, bm25_rank, self.bm25_weight)
            order = sorted(fused, key=lambda e: (-fused[e], e))[:k]
            matched = {}
            for r in sorted(dense, key=lambda r: -dense[r]):
                matched.setdefault(self.rows[r].entry, self.rows[r].text)
            return [
                Hit(
                    entry=e,
                    question=self.entries[e]["question"],
                    answer=self.entries[e]["answer"],
                    tags=tuple(self.entries[e]["tags"]),
                    score=fused[e],
                    similarity=dense_best.get(e, -1.0),
                    bm25=bm25_best.get(e, 0.0),
                    matched=matched.get(e, ""),
                    dense_rank=dense_rank.get(e),
                    bm25_rank=bm25_rank.get(e),
                )
                for e in order
            ]

    # --- the base's own BM25 weight ---------------------------------------------------------

    def _wordings(self) -> list[int]:
        """The rows that can be asked: the questions and alternatives of entries that have
        another row besides (another wording, or the answer), by which the entry can still be
        found when the asked one is left out."""
        by_entry: dict[int, list[Row]] = {}
        for r in self.rows.values():
            by_entry.setdefault(r.entry, []).append(r)
        return sorted(
            r.row
            for rows in by_entry.values()
            if len(rows) >= 2
            for r in rows
            if r.field != "answer"
        )

    def _calibration_due(self) -> bool:
        if self.fixed_weight:
            return False
        n = len(self._wordings())
        if self.calibration is None:
            return n >= MIN_CALIBRATION
        return abs(n - self.calibration["wordings"]) >= RECALIBRATE * self.calibration["wordings"]

    def calibrate(self) -> dict[str, Any] | None:
        """Choose the base's BM25 weight (see the module docstring) and return the
        measurements behind it: ``{"weight", "wordings", "asked", "mrr": {weight: MRR}}``, or
        None (and ``BM25_WEIGHT``) when the base has too few wordings.

        Each asked wording is searched with its own stored vector (the vector a customer
        typing it would get) and its own words, its row left out of both rankings; BM25's
        statistics still count it (one row in the base's, a small bias). A weight replaces
        ``BM25_WEIGHT`` only when it is significantly better on these wordings: its mean gain
        in reciprocal rank over the default's exceeds ``SIGNIFICANCE`` paired standard errors
        (so that a base whose weights all score alike keeps the default rather than follow
        noise); of those that are, the best is kept."""
        with self.lock:
            rows = self._wordings()
            if len(rows) < MIN_CALIBRATION:
                self.bm25_weight, self.calibration = BM25_WEIGHT, None
                return None
            # an even spread of at most MAX_CALIBRATION of them
            picks = np.linspace(0, len(rows) - 1, min(len(rows), MAX_CALIBRATION))
            asked = [rows[i] for i in np.unique(picks.round().astype(int))]
            reciprocal = np.zeros((len(CALIBRATION_WEIGHTS), len(asked)))
            for j, row in enumerate(asked):
                r = self.rows[row]
                vector = self.dense.reconstruct(row)
                dense = {x: s for x, s in self._dense(vector, 5).items() if x != row}
                lexical = {x: s for x, s in self._lexical(r.text, 5).items() if x != row}
                dense_rank = _rank(_best(dense, self.rows))
                bm25_rank = _rank(_best(lexical, self.rows))
                for i, w in enumerate(CALIBRATION_WEIGHTS):
                    fused = fuse_ranks(dense_rank, bm25_rank, w)
                    if r.entry in fused:
                        rank = 1 + sum(
                            1
                            for e, s in fused.items()
                            if s > fused[r.entry] or (s == fused[r.entry] and e < r.entry)
                        )
                        reciprocal[i, j] = 1.0 / rank
            mrr = dict(zip(CALIBRATION_WEIGHTS, reciprocal.mean(axis=1).tolist(), strict=True))
            gain = reciprocal - reciprocal[CALIBRATION_WEIGHTS.index(BM25_WEIGHT)]
            error = gain.std(axis=1, ddof=1) / np.sqrt(len(asked))
            better = [
                w
                for i, w in enumerate(CALIBRATION_WEIGHTS)
                if gain[i].mean() > SIGNIFICANCE * error[i]
            ]
            chosen = max(better, key=lambda w: mrr[w]) if better else BM25_WEIGHT
            self.bm25_weight = chosen
            self.calibration = {
                "weight": chosen,
                "wordings": len(rows),
                "asked": len(asked),
                "mrr": {str(w): round(v, 6) for w, v in mrr.items()},
            }
            log.info(
                "BM25 weight %g: MRR %.4f over %d wordings (%.4f at %g)",
                chosen,
                mrr[chosen],
                len(asked),
                mrr[BM25_WEIGHT],
                BM25_WEIGHT,
            )
            return self.calibration

    def hit(self, entry: int) -> Hit | None:
        """An entry by id, as a hit without search scores (None when it is not indexed)."""
        with self.lock:
            e = self.entries.get(entry)
            if e is None:
                return None
            return Hit(
                entry, e["question"], e["answer"], tuple(e["tags"]), 0.0, -1.0, 0.0, "", None, None
            )

    def _dense(self, vector: np.ndarray, k: int) -> dict[int, float]:
        """Cosine similarity of the query to its nearest rows, by row id."""
        # Enough rows that k entries with several rows each are all ranked (the lexical side
        # reads as many).
        return dense_scores(self.dense, vector, max(200, 20 * k))

    def _lexical(self, query: str, k: int) -> dict[int, float]:
        """BM25 score of the query's best-scoring rows (as many as the dense search reads),
        by row id; only rows sharing a word with the query."""
        return self._words.scores(query, max(200, 20 * k))

    # --- saving ----------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write the index atomically file by file; ``meta.json`` last (see the docstring)."""
        with self.lock:
            d = Path(directory)
            d.mkdir(parents=True, exist_ok=True)
            (d / META_FILE).unlink(missing_ok=True)  # incomplete until meta is back
            if self.dense is not None:
                with atomic_path(d / DENSE_FILE) as tmp:
                    _faiss().write_index(self.dense, str(tmp))
            rows = "".join(
                json.dumps(
                    {
                        "row": r.row,
                        "entry": r.entry,
                        "field": r.field,
                        "text": r.text,
                        "words": r.words,
                    },
                    ensure_ascii=False,
                )
                + "\n"
                for r in self.rows.values()
            )
            atomic_write(d / ROWS_FILE, rows)
            atomic_write(d / ENTRIES_FILE, json.dumps(self.entries, ensure_ascii=False))
            meta = {
                "revision": self.revision,
                "encoder": self.encoder,
                "dim": self.dim,
                "next_row": self.next_row,
                "rows": len(self.rows),
                "bm25_weight": self.bm25_weight,
                "fixed_weight": self.fixed_weight,
                "calibration": self.calibration,
            }
            atomic_write_json(d / META_FILE, meta)
            return d

    @classmethod
    def load(cls, directory: str | Path) -> KbIndex:
        d = Path(directory)
        if not (d / META_FILE).is_file():
            raise CheckpointError(f"{d}: not a complete knowledge-base index (no {META_FILE})")
        try:
            meta = json.loads((d / META_FILE).read_text(encoding="utf-8"))
            dense = _faiss().read_index(str(d / DENSE_FILE)) if meta["dim"] else None
            lines = (d / ROWS_FILE).read_text(encoding="utf-8").splitlines()
            rows = [json.loads(line) for line in lines]
            entries = json.loads((d / ENTRIES_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            raise CheckpointError(f"{d}: unreadable knowledge-base index ({e})") from None
        vectors = dense.ntotal if dense is not None else 0
        if vectors != len(rows) or meta.get("rows") != len(rows):
            raise CheckpointError(f"{d}: {vectors} vectors for {len(rows)} rows; rebuild it")
        index = cls(meta["encoder"], meta["bm25_weight"] if meta.get("fixed_weight") else None)
        index.calibration = meta.get("calibration")
        if index.calibration is not None:
            index.bm25_weight = float(meta["bm25_weight"])
        index.dim, index.dense = meta["dim"], dense
        index.revision, index.next_row = meta["revision"], meta["next_row"]
        index.rows = {
            r["row"]: Row(r["row"], r["entry"], r["field"], r["text"], tuple(r["words"]))
            for r in rows
        }
        index.entries = {int(e): v for e, v in entries.items()}
        index._index_words()
        if index._calibration_due():  # saved before bases chose their weight
            index.calibrate()
        return index
