"""Pretraining corpora: read, validate, tokenize once, cache.

A corpus file holds one sentence per line and a blank line between documents (the format of
BERT's ``create_pretraining_data.py``). Tokenized, it becomes three flat arrays: token ids, the
sentence boundaries (token offsets) and the document boundaries (sentence offsets), cached as an
``.npz`` (read with ``allow_pickle=False``) keyed by the file's and the tokenizer's checksums.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmos.data.packages import sha256_file
from llmos.errors import DataError
from llmos.files import atomic_path
from llmos.text.sentences import join_sentences

log = logging.getLogger("llmos.data")

# A sentence per line: a line this long is a file in the wrong format, not a sentence.
MAX_LINE_CHARS = 100_000


@dataclass
class TokenizedCorpus:
    """A tokenized corpus as flat arrays.

    Attributes:
        ids: (N,) int32 token ids of all sentences, back to back, without special tokens.
        sent_bounds: (S + 1,) int64 offsets into ``ids``; sentence i is ``ids[b[i]:b[i+1]]``.
        doc_bounds: (D + 1,) int64 offsets into the sentences; document j holds sentences
            ``doc_bounds[j]`` to ``doc_bounds[j+1]``.
    """

    ids: np.ndarray
    sent_bounds: np.ndarray
    doc_bounds: np.ndarray

    @property
    def num_documents(self) -> int:
        return len(self.doc_bounds) - 1

    @property
    def num_tokens(self) -> int:
        return int(self.ids.size)

    def sentence(self, i: int) -> np.ndarray:
        return self.ids[self.sent_bounds[i] : self.sent_bounds[i + 1]]


def read_documents(path: str | Path, max_documents: int | None = None) -> list[list[str]]:
    """Read a corpus file into documents (lists of sentences).

    Raises:
        DataError: the file is missing, not UTF-8 (names the line), has an over-long line, or
            holds no text.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: corpus file not found (expected one sentence per line, a blank line "
            "between documents; run `llmos data prepare`)"
        )
    docs: list[list[str]] = []
    current: list[str] = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path}:{lineno}: not valid UTF-8 (byte {e.start} of the line); corpus "
                    "files must be UTF-8 text"
                ) from None
            line = line.strip()
            if len(line) > MAX_LINE_CHARS:
                raise DataError(
                    f"{path}:{lineno}: line of {len(line):,} characters; expected one sentence "
                    f"per line (at most {MAX_LINE_CHARS:,} characters)"
                )
            if line:
                current.append(line)
            elif current:
                docs.append(current)
                current = []
                if max_documents is not None and len(docs) >= max_documents:
                    break
    if current and (max_documents is None or len(docs) < max_documents):
        docs.append(current)
    if not docs:
        raise DataError(
            f"{path}: corpus is empty (expected one sentence per line, a blank line between "
            "documents)"
        )
    return docs


def tokenize_documents(docs: list[list[str]], tokenizer) -> TokenizedCorpus:
    """Tokenize documents (without special tokens) into a :class:`TokenizedCorpus`."""
    flat = [s for d in docs for s in d]
    encodings = tokenizer.encode_batch(flat, add_special_tokens=False)
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(flat))
    ids = np.fromiter(
        (t for e in encodings for t in e.ids), dtype=np.int32, count=int(lengths.sum())
    )
    sent_bounds = np.zeros(len(flat) + 1, dtype=np.int64)
    np.cumsum(lengths, out=sent_bounds[1:])
    doc_bounds = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum([len(d) for d in docs], out=doc_bounds[1:])
    return TokenizedCorpus(ids=ids, sent_bounds=sent_bounds, doc_bounds=doc_bounds)


def load_tokenized(
    path: str | Path,
    tokenizer,
    cache_dir: str | Path | None = None,
    max_documents: int | None = None,
    whole_documents: bool = False,
) -> TokenizedCorpus:
    """Read and tokenize a corpus file, through an ``.npz`` cache when ``cache_dir`` is given.

    ``whole_documents`` tokenizes each document as one running text (sentences re-joined, see
    :func:`~llmos.text.sentences.join_sentences`), so a decoder learns the spaces between
    sentences too; each document is then a single "sentence" of the result.
    """
    path = Path(path)
    cache = None
    if cache_dir is not None:
        source = sha256_file(path) if path.is_file() else str(path)
        key = f"{source}:{tokenizer.to_str()}:{max_documents}"
        key += ":documents" if whole_documents else ""
        key = hashlib.sha256(key.encode()).hexdigest()[:20]
        cache = Path(cache_dir) / f"{path.stem}-{key}.npz"
        if cache.is_file():
            with np.load(cache, allow_pickle=False) as z:
                return TokenizedCorpus(z["ids"], z["sent_bounds"], z["doc_bounds"])
    docs = read_documents(path, max_documents)
    if whole_documents:
        docs = [[join_sentences(d)] for d in docs]
    corpus = tokenize_documents(docs, tokenizer)
    if corpus.num_tokens == 0:
        raise DataError(f"{path}: the tokenizer produced no tokens from this corpus")
    if cache is not None:
        with atomic_path(cache) as tmp:
            np.savez(
                tmp, ids=corpus.ids, sent_bounds=corpus.sent_bounds, doc_bounds=corpus.doc_bounds
            )
    log.info("%s: %d documents, %d tokens", path, corpus.num_documents, corpus.num_tokens)
    return corpus


def concat_corpora(parts: list[TokenizedCorpus]) -> TokenizedCorpus:
    """Several tokenized corpora as one, documents in order (a multilingual pretraining set)."""
    if len(parts) == 1:
        return parts[0]
    ids = np.concatenate([c.ids for c in parts])
    sent, doc = [np.zeros(1, dtype=np.int64)], [np.zeros(1, dtype=np.int64)]
    tokens = sentences = 0
    for c in parts:
        sent.append(c.sent_bounds[1:] + tokens)
        doc.append(c.doc_bounds[1:] + sentences)
        tokens += c.num_tokens
        sentences += len(c.sent_bounds) - 1
    return TokenizedCorpus(ids, np.concatenate(sent), np.concatenate(doc))
