"""Semantic search: embed a corpus with an encoder checkpoint into a saved FAISS index; answer
queries with the nearest texts. An index remembers the corpus file and checkpoint it was built
from (path and sha256) and is rebuilt when the corpus changes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from llmos.data.sources import sha256_file
from llmos.errors import DataError
from llmos.inference.pipeline import Pipeline
from llmos.store.vectors import VectorIndex

log = logging.getLogger("llmos.search")

DOCS_FILE = "docs.jsonl"


def read_corpus(path: str | Path, text_key: str = "text", id_key: str = "id") -> list[dict]:
    """Documents ``{"id", "text"}`` from a text file (one a line; the id is the line number) or
    JSONL (``text_key``, optional ``id_key``, else the line number)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: corpus file not found")
    docs: list[dict] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if path.suffix.lower() != ".jsonl":
            docs.append({"id": str(lineno), "text": line.strip()})
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get(text_key), str):
            raise DataError(f"{path}:{lineno}: expected an object with a {text_key!r} string")
        docs.append({"id": str(obj.get(id_key, lineno)), "text": obj[text_key]})
    if not docs:
        raise DataError(f"{path}: no documents")
    ids = [d["id"] for d in docs]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"{path}: id {dup!r} appears more than once; ids must be unique")
    return docs


def build_index(
    checkpoint: str | Path,
    corpus: str | Path,
    out: str | Path,
    *,
    text_key: str = "text",
    id_key: str = "id",
    batch_size: int = 32,
) -> VectorIndex:
    """Embed every document of ``corpus`` and save the index (with the documents) in ``out``."""
    corpus, checkpoint, out = Path(corpus).resolve(), Path(checkpoint).resolve(), Path(out)
    docs = read_corpus(corpus, text_key, id_key)
    pipe = Pipeline.from_checkpoint(checkpoint)
    vectors = pipe.embed([d["text"] for d in docs], batch_size=batch_size)
    source = {
        "corpus": str(corpus),
        "corpus_sha256": sha256_file(corpus),
        "checkpoint": str(checkpoint),
        "text_key": text_key,
        "id_key": id_key,
    }
    index = VectorIndex.build(vectors, [d["id"] for d in docs], source)
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)
    tmp = out / f".{DOCS_FILE}.tmp"
    tmp.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), "utf-8")
    tmp.replace(out / DOCS_FILE)
    index.save(out)
    log.info("indexed %d documents of %s in %s", len(docs), corpus, out)
    return index


def open_index(directory: str | Path) -> tuple[VectorIndex, Pipeline, dict[str, str]]:
    """Load an index, its encoder and its documents; rebuild it first if its corpus file has
    changed since it was built."""
    directory = Path(directory)
    index = VectorIndex.load(directory)
    src = index.source
    corpus = Path(src["corpus"])
    if corpus.is_file() and sha256_file(corpus) != src["corpus_sha256"]:
        log.warning("%s changed since the index was built: rebuilding %s", corpus, directory)
        index = build_index(
            src["checkpoint"], corpus, directory, text_key=src["text_key"], id_key=src["id_key"]
        )
    return index, Pipeline.from_checkpoint(src["checkpoint"]), read_docs(directory)


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


def search(directory: str | Path, queries: list[str], k: int = 5) -> list[list[dict[str, Any]]]:
    """The ``k`` documents nearest each query: ``[{"id", "score", "text"}, ...]`` best first."""
    if k < 1:
        raise DataError(f"k must be >= 1, got {k}")
    index, pipe, docs = open_index(directory)
    hits = index.search(pipe.embed(queries), k)
    return [[{"id": i, "score": s, "text": docs[i]} for i, s in row] for row in hits]
