"""Candidate retrieval: the items whose vectors have the largest inner product with a query
vector (a user's embedding, a wish's text embedding), from FAISS.

The index kind is chosen from the catalog's size (:func:`choose_kind`):

- up to :data:`EXACT_MAX` items, **exact** search (``IndexFlatIP``): every item scored, the
  true top ``k``; at 100,000 items of 64 dimensions one query costs about 6.4 M multiply-adds;
- above it, **IVF** (``IndexIVFFlat``, inner product): k-means cells over the items
  (``nlist`` about ``4 * sqrt(N)``), a query scans the ``nprobe`` nearest cells only. The
  vectors are kept whole (no quantisation), so a scanned item's score is exact and only items
  in unscanned cells can be missed. ``nprobe`` is *calibrated* at build time: doubled from 8
  until the recall@k of :data:`CALIBRATION_QUERIES` held-out queries against exact search
  reaches ``target_recall`` (0.95 by default; the issue's bar), and the recall reached is kept
  in ``calibration``.

HNSW was not chosen for the large case: its graph costs ``M * 2 * 4`` bytes per item on top of
the vectors and its build is the slowest of the three on a 2-core CPU; IVF-Flat's cells cost
one centroid each. ``bench/recommend_scale.py`` measures the large case (1 M items).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

EXACT_MAX = 100_000
CALIBRATION_QUERIES = 200
MAX_TRAIN_PER_CELL = 64  # k-means sees at most this many items per cell (FAISS warns below 39)


def _faiss() -> Any:
    import faiss

    return faiss


def choose_kind(num_items: int, exact_max: int = EXACT_MAX) -> str:
    """``"exact"`` up to ``exact_max`` items, else ``"ivf"``."""
    return "exact" if num_items <= exact_max else "ivf"


@dataclass
class ItemIndex:
    """Maximum inner-product search over (N, D) item vectors.

    Build with :meth:`build`; :meth:`search` answers ``(scores, item indexes)``, best first.
    """

    index: Any
    kind: str
    num_items: int
    dim: int
    nprobe: int | None = None
    calibration: dict[str, float] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        *,
        kind: str | None = None,
        nlist: int | None = None,
        target_recall: float = 0.95,
        k: int = 10,
        seed: int = 0,
        exact_max: int = EXACT_MAX,
    ) -> ItemIndex:
        """Index ``vectors`` (N, D) float32; ``kind`` None chooses by size (:func:`choose_kind`).

        For IVF, ``nlist`` defaults to ``4 * sqrt(N)`` cells and ``nprobe`` is calibrated to
        ``target_recall`` at ``k`` on held-out queries (items' own vectors plus noise, drawn
        with ``seed``)."""
        faiss = _faiss()
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or len(x) == 0:
            raise ValueError(f"vectors must be a non-empty (N, D) matrix, got {x.shape}")
        n, d = x.shape
        kind = kind or choose_kind(n, exact_max)
        if kind == "exact":
            index = faiss.IndexFlatIP(d)
            index.add(x)
            return cls(index, "exact", n, d)
        if kind != "ivf":
            raise ValueError(f"kind must be 'exact' or 'ivf', got {kind!r}")
        nlist = nlist or max(1, int(4 * math.sqrt(n)))
        rng = np.random.default_rng(seed)
        sample = x[rng.choice(n, min(n, nlist * MAX_TRAIN_PER_CELL), replace=False)]
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(sample)
        index.add(x)
        out = cls(index, "ivf", n, d)
        out._calibrate(x, target_recall, k, rng)
        return out

    def _calibrate(self, x: np.ndarray, target: float, k: int, rng: np.random.Generator) -> None:
        """The smallest power-of-two ``nprobe`` from 8 whose recall@k reaches ``target``."""
        faiss = _faiss()
        picks = x[rng.choice(len(x), min(len(x), CALIBRATION_QUERIES), replace=False)]
        queries = picks + rng.normal(0, float(x.std()), picks.shape).astype(np.float32)
        exact = faiss.IndexFlatIP(self.dim)
        exact.add(x)
        _, truth = exact.search(queries, k)
        nlist = self.index.nlist
        nprobe = min(8, nlist)
        while True:
            self.index.nprobe = nprobe
            _, got = self.index.search(queries, k)
            recall = float(
                np.mean([len(set(a) & set(b)) / k for a, b in zip(got, truth, strict=True)])
            )
            if recall >= target or nprobe >= nlist:
                break
            nprobe = min(nprobe * 2, nlist)
        self.nprobe = nprobe
        self.calibration = {"recall": recall, "nprobe": nprobe, "nlist": nlist, "k": k}

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, k) scores and item indexes of each query's best ``k`` items (-1 where fewer)."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have {q.shape[1]} dimensions, the index {self.dim}")
        return self.index.search(q, min(k, self.num_items))

    @property
    def nbytes(self) -> int:
        """The index's size as FAISS serialises it (vectors, cells, ids)."""
        return int(_faiss().serialize_index(self.index).nbytes)


def timed_search(index: ItemIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[float]]:
    """Each query searched alone (as a request would be): the indexes and the seconds each."""
    out, seconds = [], []
    for q in queries:
        start = time.perf_counter()
        _, ids = index.search(q[None, :], k)
        seconds.append(time.perf_counter() - start)
        out.append(ids[0])
    return np.stack(out), seconds
