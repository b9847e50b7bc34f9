"""Semantic search: embed a corpus with an encoder checkpoint into a saved document index
(:class:`~llmos.store.vectors.DocumentIndex`); answer queries with the nearest texts. A model
with query/passage prefixes (multilingual-e5-small) gets its passage prefix on the documents
and its query prefix on the queries. An index
remembers the corpus file and checkpoint it was built from (path and sha256) and is rebuilt when
the corpus changes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from llmos.data.packages import sha256_file
from llmos.errors import DataError
from llmos.inference.encoder import EncoderPipeline
from llmos.inference.load import load_pipeline
from llmos.store.vectors import DocumentIndex, VectorIndex

log = logging.getLogger("llmos.search")


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
    pipe = load_pipeline(checkpoint)
    # Documents are passages: an asymmetric model (E5) puts its passage prefix before each.
    vectors = pipe.embed([d["text"] for d in docs], kind="passage", batch_size=batch_size)
    source = {
        "corpus": str(corpus),
        "corpus_sha256": sha256_file(corpus),
        "checkpoint": str(checkpoint),
        "text_key": text_key,
        "id_key": id_key,
    }
    index = DocumentIndex.build(vectors, docs, source)
    index.save(out)
    log.info("indexed %d documents of %s in %s", len(docs), corpus, out)
    return index.vectors


def open_index(directory: str | Path) -> tuple[DocumentIndex, EncoderPipeline]:
    """Load an index (with its documents) and its encoder; rebuild it first if its corpus file
    has changed since it was built."""
    directory = Path(directory)
    index = DocumentIndex.load(directory)
    src = index.vectors.source
    corpus = Path(src["corpus"])
    if corpus.is_file() and sha256_file(corpus) != src["corpus_sha256"]:
        log.warning("%s changed since the index was built: rebuilding %s", corpus, directory)
        build_index(
            src["checkpoint"], corpus, directory, text_key=src["text_key"], id_key=src["id_key"]
        )
        index = DocumentIndex.load(directory)
    return index, load_pipeline(src["checkpoint"])


def search(directory: str | Path, queries: list[str], k: int = 5) -> list[list[dict[str, Any]]]:
    """The ``k`` documents nearest each query: ``[{"id", "score", "text"}, ...]`` best first."""
    if k < 1:
        raise DataError(f"k must be >= 1, got {k}")
    index, pipe = open_index(directory)
    return index.search(pipe.embed(queries, kind="query"), k)
