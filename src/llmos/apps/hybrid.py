"""The parts of hybrid search that the apps share: BM25 over lexical units (jieba words, or
Chinese characters and their pairs: :mod:`llmos.text.words`) and exact dense search over unit
vectors, each scoring *rows* (a knowledge base's questions and answers, a corpus's
passages), ranked per *entry* (the knowledge-base entry, the document) by its best row, and the
two rankings fused by weighted reciprocal rank.

The knowledge-base index (:mod:`llmos.apps.support.index`) and the writing assistant's material
suggestions (:mod:`llmos.apps.write.materials`) both search this way; what differs between them
(which rows an entry has, how the index follows the store, which lexical units BM25 reads, how
the BM25 weight is chosen) stays in each app.

Fusion: score = ``1 / (RRF_K + dense rank) + w / (RRF_K + BM25 rank)``, the second term only for
entries that share a word with the query (Cormack, Clarke and Buettcher, SIGIR 2009,
https://plg.uwaterloo.ca/~gvcormac/cormacksigir09-rrf.pdf, whose k = 60 is kept).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np

from llmos.errors import CheckpointError
from llmos.text.words import check_units, lexical_units

RRF_K = 60
K = TypeVar("K", bound=Hashable)


class Embedder(Protocol):
    """Text -> unit vectors (N, D) with one encoder; ``name`` identifies the encoder, so an
    index built with another one is rebuilt rather than mixed."""

    name: str

    def __call__(self, texts: list[str], kind: str) -> np.ndarray: ...


class HasEntry(Protocol):
    """A row of an index: it belongs to one entry (the unit a search ranks)."""

    @property
    def entry(self) -> Any: ...


@functools.cache
def faiss_module() -> Any:
    """FAISS, set to one OpenMP thread for the whole process.

    One query at a time is searched here, and FAISS's OpenMP threads cost more than they
    save on it: an exact search of 20,000 rows took 22 ms with the default threads and 1.3 ms
    with one, on 2 cores that a training run shared (docs/BENCHMARKS.md, "a 10,000-entry
    knowledge base"). The setting is the process's: every FAISS search in it runs on one
    thread, as the server's single-query searches want too.
    """
    import faiss

    faiss.omp_set_num_threads(1)
    return faiss


def best_by_entry(scores: Mapping[int, float], rows: Mapping[int, HasEntry]) -> dict[Any, float]:
    """The best score of each entry over its rows."""
    best: dict[Any, float] = {}
    for r, s in scores.items():
        entry = rows[r].entry
        if s > best.get(entry, -np.inf):
            best[entry] = s
    return best


def rank(best: Mapping[K, float]) -> dict[K, int]:
    """1-based ranks of the entries by score, best first (ties by entry, stable)."""
    order = sorted(best, key=lambda e: (-best[e], e))
    return {e: i + 1 for i, e in enumerate(order)}


def fuse_ranks(
    dense_rank: Mapping[K, int], bm25_rank: Mapping[K, int], weight: float
) -> dict[K, float]:
    """Weighted reciprocal-rank fusion of the entries' two rankings."""
    fused: dict[K, float] = {}
    for ranking, w in ((dense_rank, 1.0), (bm25_rank, weight)):
        for e, r in ranking.items():
            fused[e] = fused.get(e, 0.0) + w / (RRF_K + r)
    return fused


def add_vectors(index: Any, vectors: np.ndarray, first: int) -> tuple[Any, list[int]]:
    """Add ``vectors`` (N, D), normalized here, under the ids ``first ..  first + N - 1`` to a
    FAISS exact inner-product index with ids (made here when ``index`` is None, with their
    dimension); returns the index and the ids.

    Raises:
        CheckpointError: the vectors' dimension is not the index's (another encoder).
    """
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    faiss = faiss_module()
    if index is None and v.ndim == 2:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(v.shape[1]))
    if v.ndim != 2 or v.shape[1] != index.d:
        expected = f"(N, {index.d})" if index is not None else "(N, D)"
        raise CheckpointError(f"the encoder gave vectors of shape {v.shape}, expected {expected}")
    faiss.normalize_L2(v)
    ids = np.arange(first, first + len(v), dtype=np.int64)
    index.add_with_ids(v, ids)
    return index, ids.tolist()


def dense_scores(index: Any, vector: np.ndarray, n: int) -> dict[int, float]:
    """Cosine similarity of the query ``vector`` (D,) to its ``n`` nearest rows of a FAISS
    inner-product ``index`` over unit vectors, by row id."""
    if index is None or index.ntotal == 0:
        return {}
    q = np.ascontiguousarray(np.atleast_2d(vector), dtype=np.float32)
    faiss_module().normalize_L2(q)
    scores, ids = index.search(q, min(index.ntotal, n))
    return {r: s for s, r in zip(scores[0].tolist(), ids[0].tolist(), strict=True) if r >= 0}


class LexicalIndex:
    """BM25 (``bm25s``: k1 1.5, b 0.75, Lucene's idf, its defaults) over rows given as their
    lexical units, searched by row id. ``units`` says which (:func:`llmos.text.words.lexical_units`:
    jieba ``words``, or Chinese ``chars`` and their bigrams); a query is cut the same way."""

    def __init__(self, rows: Mapping[int, Sequence[str]], units: str = "words") -> None:
        import bm25s

        logging.getLogger("bm25s").setLevel(logging.WARNING)  # a DEBUG line per index build
        self.units = check_units(units)
        self.rows = sorted(rows)
        self.bm25 = bm25s.BM25()
        if self.rows:
            self.bm25.index([list(rows[r]) for r in self.rows], show_progress=False)

    def vocabulary(self) -> dict[str, int]:
        return getattr(self.bm25, "vocab_dict", None) or {}

    def scores(self, query: str, n: int) -> dict[int, float]:
        """BM25 score of the query's ``n`` best-scoring rows, by row id; only rows sharing a
        word with the query."""
        vocabulary = self.vocabulary()
        tokens = [w for w in lexical_units(query, self.units) if w in vocabulary]
        if not tokens:
            return {}
        scores = self.bm25.get_scores(tokens)
        n = min(len(scores), n)
        # The n best rows without sorting them all: a common word (的, the) scores most rows,
        # and turning every one into a Python object cost more than the search itself
        # (measured on 20,000 rows: 80 ms a query before, 35 ms after, on shared cores).
        top = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
        return {self.rows[i]: float(scores[i]) for i in top.tolist() if scores[i] > 0}
