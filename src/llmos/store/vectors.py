"""A FAISS vector index saved with the ids it covers and what it was built from.

A saved index is a directory::

    index.faiss   the FAISS index (exact inner product over unit vectors = cosine)
    ids.json      the id of each row, in order
    meta.json     written last: count, dimension, and the ``source`` fingerprint (the corpus
                  file's sha256, the model) that tells when the index is stale

Each file is written through a temp file and ``os.replace``; ``meta.json`` comes last and is
checked against the other two on load, so an interrupted save is detected, never half-read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from llmos.errors import CheckpointError, LlmosError

INDEX_FILE, IDS_FILE, META_FILE = "index.faiss", "ids.json", "meta.json"


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is a dependency
        raise LlmosError("faiss-cpu is not installed (pip install faiss-cpu)") from e
    return faiss


def _replace(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


class VectorIndex:
    """Exact cosine search over unit-length vectors (FAISS ``IndexFlatIP``)."""

    def __init__(self, index: Any, ids: list[str], source: dict[str, Any]) -> None:
        self.index, self.ids, self.source = index, ids, source

    @classmethod
    def build(cls, vectors: np.ndarray, ids: list[str], source: dict[str, Any]) -> VectorIndex:
        """Index ``vectors`` (N, D) (normalized here) under ``ids``."""
        if len(vectors) != len(ids):
            raise LlmosError(f"{len(vectors)} vectors but {len(ids)} ids")
        if len(set(ids)) != len(ids):
            raise LlmosError("ids must be unique")
        faiss = _faiss()
        v = np.ascontiguousarray(vectors, dtype=np.float32)
        faiss.normalize_L2(v)
        index = faiss.IndexFlatIP(v.shape[1])
        index.add(v)
        return cls(index, list(ids), dict(source))

    def search(self, queries: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """The ``k`` nearest ids (cosine similarity, best first) of each query vector."""
        faiss = _faiss()
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        faiss.normalize_L2(q)
        scores, rows = self.index.search(q, min(k, len(self.ids)))
        return [
            [(self.ids[r], float(s)) for r, s in zip(rr, ss, strict=True) if r >= 0]
            for rr, ss in zip(rows, scores, strict=True)
        ]

    def save(self, directory: str | Path) -> Path:
        faiss = _faiss()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / META_FILE).unlink(missing_ok=True)  # the index is incomplete until meta is back
        _replace(d / INDEX_FILE, lambda p: faiss.write_index(self.index, str(p)))
        _replace(d / IDS_FILE, lambda p: p.write_text(json.dumps(self.ids, ensure_ascii=False)))
        meta = {"count": len(self.ids), "dim": self.index.d, "source": self.source}
        _replace(
            d / META_FILE, lambda p: p.write_text(json.dumps(meta, ensure_ascii=False, indent=2))
        )
        return d

    @classmethod
    def load(cls, directory: str | Path) -> VectorIndex:
        d = Path(directory)
        if not (d / META_FILE).is_file():
            raise CheckpointError(
                f"{d}: not a complete vector index (no {META_FILE}; build it with "
                "`llmos index build`)"
            )
        try:
            meta = json.loads((d / META_FILE).read_text(encoding="utf-8"))
            ids = json.loads((d / IDS_FILE).read_text(encoding="utf-8"))
            index = _faiss().read_index(str(d / INDEX_FILE))
        except (OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{d}: unreadable vector index ({e})") from None
        if index.ntotal != len(ids) or meta.get("count") != len(ids):
            raise CheckpointError(
                f"{d}: index has {index.ntotal} vectors, ids.json {len(ids)}, meta.json "
                f"{meta.get('count')}; rebuild it"
            )
        return cls(index, ids, meta.get("source", {}))
