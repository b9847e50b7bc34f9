"""A FAISS vector index saved with the ids it covers and what it was built from, and the
document index that adds the texts a search answers with.

A saved index is a directory::

    index.faiss   the FAISS index (exact inner product over unit vectors = cosine)
    ids.json      the id of each row, in order
    docs.jsonl    (a document index) the text of each id, one ``{"id", "text"}`` a line
    meta.json     written last: count, dimension, and the ``source`` fingerprint (the corpus
                  file's sha256, the model) that tells when the index is stale

Each file is written atomically (:mod:`llmos.files`); ``meta.json`` comes last and is
checked against the other two on load, so an interrupted save is detected, never half-read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from llmos.errors import CheckpointError, LlmosError
from llmos.files import atomic_path, atomic_write, atomic_write_json

INDEX_FILE, IDS_FILE, META_FILE, DOCS_FILE = "index.faiss", "ids.json", "meta.json", "docs.jsonl"


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is a dependency
        raise LlmosError("faiss-cpu is not installed (pip install faiss-cpu)") from e
    return faiss


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
        with atomic_path(d / INDEX_FILE) as tmp:
            faiss.write_index(self.index, str(tmp))
        atomic_write(d / IDS_FILE, json.dumps(self.ids, ensure_ascii=False))
        meta = {"count": len(self.ids), "dim": self.index.d, "source": self.source}
        atomic_write_json(d / META_FILE, meta)
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


class DocumentIndex:
    """A :class:`VectorIndex` with the texts of the documents it covers, saved beside it as
    ``docs.jsonl`` (one ``{"id", "text"}`` object a line): what a search answers with.

    The texts are written before the index (whose ``meta.json`` comes last), so a saved
    document index is complete exactly when its vector index is.
    """

    def __init__(self, vectors: VectorIndex, texts: dict[str, str]) -> None:
        self.vectors, self.texts = vectors, texts

    @classmethod
    def build(
        cls, vectors: np.ndarray, docs: list[dict[str, str]], source: dict[str, Any]
    ) -> DocumentIndex:
        """Index ``vectors`` (N, D), one per document of ``docs`` (``{"id", "text"}``)."""
        index = VectorIndex.build(vectors, [d["id"] for d in docs], source)
        return cls(index, {d["id"]: d["text"] for d in docs})

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / META_FILE).unlink(missing_ok=True)  # incomplete until the vector index is saved
        lines = "".join(
            json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n"
            for i, t in self.texts.items()
        )
        atomic_write(d / DOCS_FILE, lines)
        return self.vectors.save(d)

    @classmethod
    def load(cls, directory: str | Path) -> DocumentIndex:
        """The index saved in ``directory`` and its texts (none when ``docs.jsonl`` is missing:
        hits then come back with empty texts)."""
        return cls(VectorIndex.load(directory), read_docs(directory))

    def search(self, queries: np.ndarray, k: int) -> list[list[dict[str, Any]]]:
        """The ``k`` documents nearest each query vector: ``[{"id", "score", "text"}, ...]``,
        best first."""
        return [
            [{"id": i, "score": s, "text": self.texts.get(i, "")} for i, s in row]
            for row in self.vectors.search(queries, k)
        ]


def read_docs(directory: str | Path) -> dict[str, str]:
    """The texts an index was built from, by id (its ``docs.jsonl``; empty when missing)."""
    path = Path(directory) / DOCS_FILE
    if not path.is_file():
        return {}
    docs = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        docs[d["id"]] = d["text"]
    return docs
