"""Material suggestions: for the paragraph being written, passages of a shared corpus (三国演义,
People's Daily, classical poetry: :mod:`llmos.data.materials`) and of the user's own documents
that are about the same thing, each with its source.

Documents are cut into passages (:func:`chunk`: whole paragraphs merged up to ``MAX_CHARS``
characters, a longer paragraph cut at sentence ends), and searched as the knowledge bases are
(:mod:`llmos.apps.hybrid`): BM25 and E5's dense vectors (passages embedded as ``passage``, the
paragraph as ``query``), each ranking the *documents* by their best passage, fused by weighted
reciprocal rank. BM25 reads each Chinese character and pair of adjacent characters
(:data:`LEXICAL_UNITS`; an index saved with jieba's words, as before that choice, is cut again
when loaded; each kind has its own fusion weight, :data:`BM25_WEIGHTS`). A suggestion is one
document with its best passage, so five suggestions are five documents.

This module is the index and the search; :mod:`llmos.apps.write.suggestions` serves them per
user. The shared corpus has one :class:`MaterialIndex`, built once (``llmos write materials
build``) and saved; each user has another over their documents in the store, kept in step with
the store's revision (:class:`~llmos.apps.write.suggestions.Materials`). The two are searched as
one (:func:`search`): the passages' cosines are
comparable (one encoder), so the dense ranking covers both; BM25 scores are not (a user's few
documents give every word a low idf, and the corpus's passages would always win), so each
index keeps its own BM25 ranking, and a user's best document by words counts as much as the
corpus's. A user's own text is thereby suggested where it fits the paragraph, neither hidden
behind the corpus nor put ahead of it whatever it says.

The paragraph itself is never suggested: a passage that contains it, or that it contains (at
least ``MIN_SAME`` characters either way), is the user's own text being written.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmos.apps.hybrid import (
    Embedder,
    LexicalIndex,
    add_vectors,
    dense_scores,
    faiss_module,
    fuse_ranks,
    rank,
)
from llmos.data.materials import SourceDocument
from llmos.errors import CheckpointError, LlmosError
from llmos.files import atomic_directory, atomic_write, atomic_write_json
from llmos.text.words import UNITS, check_units, lexical_units

log = logging.getLogger("llmos.apps.write")

MAX_CHARS = 240  # a passage: a paragraph or a few, "a few hundred characters at most"
MIN_SAME = 20  # characters from which containment means "the paragraph itself"
# What a new index's BM25 reads (llmos.text.words.UNITS): each Chinese character and pair of
# adjacent characters, or jieba's words. On the bench's 156 held-out paragraphs
# (bench/write_suggest_eval.py, docs/BENCHMARKS.md "Material suggestions"), BM25 alone finds
# the paragraph's document in the top 5 for 0.686 over characters against 0.628 over words:
# classical verse shares characters and two-character images more than jieba's words.
LEXICAL_UNITS = "chars"
# The BM25 ranking's weight in the fusion, by the index's units: the best of 0-4 on the bench's
# 68 valid paragraphs, by top-5 hit and then MRR summed over the two encoders measured. Over
# characters: 4 (runs/e5-zh 0.662, the encoder tuned on neighbouring passages 0.691; at 1,
# 0.632 and 0.691); fusing never fell below dense alone there. Over words: 0.1 (0.618 and
# 0.662; at 1 both fell below dense alone).
BM25_WEIGHTS = {"words": 0.1, "chars": 4.0}
CANDIDATES = 200  # rows read from each retriever (at least 20 per suggestion asked)
EMBED_BATCH = 256  # passages handed to the encoder at a time while building
DENSE_FILE, ROWS_FILE, DOCUMENTS_FILE, META_FILE = (
    "dense.faiss",
    "rows.jsonl",
    "documents.json",
    "meta.json",
)
# A sentence ends at 。！？!?… (with closing quotes after them) or at a line's end.
_SENTENCE = re.compile(r"[^。！？!?…]*(?:[。！？!?…]+[”’」』\"']*|$)")


class MaterialsError(LlmosError, ValueError):
    """A request the material suggestions refuse (empty paragraph, k out of range)."""


@dataclass(frozen=True)
class Row:
    """One passage: ``entry`` is its document's number in the index, ``offset`` its first
    character in the document's text (the paragraphs joined by newlines)."""

    row: int
    entry: int
    offset: int
    text: str
    words: tuple[str, ...]  # its lexical units (the index's ``units``), as BM25 reads them


@dataclass(frozen=True)
class Suggestion:
    """A passage suggested for a paragraph, with its source and the evidence."""

    text: str
    score: float  # the fused reciprocal-rank score
    corpus: str  # sanguo | peoples_daily | tang | songci | ... | user
    title: str
    doc: str  # the document's id in its corpus (a user's: the store's id)
    offset: int
    similarity: float  # cosine of the paragraph to the passage (-1: not among the dense rows)
    dense_rank: int | None
    bm25_rank: int | None

    def as_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "score": round(self.score, 6),
            "source": {
                "corpus": self.corpus,
                "title": self.title,
                "doc": self.doc,
                "offset": self.offset,
            },
            "similarity": round(self.similarity, 4),
            "dense_rank": self.dense_rank,
            "bm25_rank": self.bm25_rank,
        }


def _spans(text: str, start: int, end: int, max_chars: int) -> list[tuple[int, int]]:
    """``text[start:end]`` as spans of at most ``max_chars``: whole sentences where they fit,
    a longer sentence cut every ``max_chars``."""
    spans: list[tuple[int, int]] = []
    for m in _SENTENCE.finditer(text, start, end):
        s, e = m.span()
        if s == e:
            continue
        while e - s > max_chars:
            spans.append((s, s + max_chars))
            s += max_chars
        if spans and e - spans[-1][0] <= max_chars and spans[-1][1] == s:
            spans[-1] = (spans[-1][0], e)  # the sentence joins the previous piece
        else:
            spans.append((s, e))
    return spans


def chunk(paragraphs: Sequence[str], max_chars: int = MAX_CHARS) -> list[tuple[int, str]]:
    """A document's passages as ``(offset, text)``, offsets into ``"\\n".join(paragraphs)``.

    Consecutive paragraphs are merged while the passage stays within ``max_chars`` (a poem,
    a short exchange of dialogue is one passage); a longer paragraph is cut at its sentence
    ends. Every character of the text except the joining newlines is in exactly one passage.
    """
    text = "\n".join(paragraphs)
    pieces: list[tuple[int, int]] = []  # each paragraph, or a long one's sentence groups
    at = 0
    for p in paragraphs:
        if p.strip():
            if len(p) <= max_chars:
                pieces.append((at, at + len(p)))
            else:
                pieces += _spans(text, at, at + len(p), max_chars)
        at += len(p) + 1
    passages: list[tuple[int, int]] = []
    for s, e in pieces:
        if passages and e - passages[-1][0] <= max_chars:
            passages[-1] = (passages[-1][0], e)
        else:
            passages.append((s, e))
    return [(s, text[s:e]) for s, e in passages if text[s:e].strip()]


def _normal(text: str) -> str:
    return re.sub(r"\s+", "", text)


def same_text(passage: str, paragraph: str) -> bool:
    """Whether ``passage`` is the paragraph being written (see the module docstring)."""
    a, b = _normal(passage), _normal(paragraph)
    if not a or not b:
        return False
    if a == b:
        return True
    return (len(a) >= MIN_SAME and a in b) or (len(b) >= MIN_SAME and b in a)


class MaterialIndex:
    """The hybrid index of one collection of documents (the shared corpus, or one user's).

    Thread-safe: changes and searches take its lock. ``version`` is what the index was built
    from (the shared corpus's manifest sha256, a user's store revision)."""

    def __init__(self, encoder: str, version: Any = None, units: str = LEXICAL_UNITS) -> None:
        self.encoder = encoder
        self.version = version
        # what BM25 reads: jieba words or Chinese characters + bigrams
        self.units = check_units(units)
        self.dim: int | None = None
        self.dense: Any = None
        self.rows: dict[int, Row] = {}
        self.documents: dict[int, dict[str, str]] = {}  # entry -> corpus, doc, title
        self.next_row = 0
        self.lock = threading.RLock()
        self._words: LexicalIndex | None = None

    def __len__(self) -> int:
        return len(self.rows)

    # --- building ----------------------------------------------------------------------------

    def sync(
        self,
        docs: Iterable[SourceDocument],
        embed: Embedder,
        max_chars: int = MAX_CHARS,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, int]:
        """Bring the index to exactly ``docs``: passages already indexed (same document, same
        text) are kept, only new ones are embedded, those of changed or removed documents are
        dropped. Returns how many passages were added and removed.

        ``progress(embedded, to_embed)`` is called after each batch of ``EMBED_BATCH``
        passages embedded (not at all when none is new); an exception it raises (a cancelled
        job's) stops the sync there, leaving the index half-synced: build a new one then."""
        with self.lock:
            entries = {(d["corpus"], d["doc"]): e for e, d in self.documents.items()}
            next_entry = max(self.documents, default=-1) + 1
            wanted: dict[tuple[int, str], int] = {}  # (entry, text) -> offset
            documents: dict[int, dict[str, str]] = {}
            for doc in docs:
                key = (doc.corpus, doc.doc)
                entry = entries.get(key)
                if entry is None:
                    entry, next_entry = next_entry, next_entry + 1
                    entries[key] = entry
                documents[entry] = {"corpus": doc.corpus, "doc": doc.doc, "title": doc.title}
                for offset, text in chunk(doc.paragraphs, max_chars):
                    wanted.setdefault((entry, text), offset)
            have = {(r.entry, r.text): r.row for r in self.rows.values()}
            gone = [row for key, row in have.items() if key not in wanted]
            if gone:
                self.dense.remove_ids(np.asarray(gone, dtype=np.int64))
                for row in gone:
                    del self.rows[row]
            for (entry, text), offset in wanted.items():  # a paragraph moved: same vector
                row = have.get((entry, text))
                if row is not None and self.rows[row].offset != offset:
                    r = self.rows[row]
                    self.rows[row] = Row(r.row, r.entry, offset, r.text, r.words)
            new = [(key, offset) for key, offset in wanted.items() if key not in have]
            for i in range(0, len(new), EMBED_BATCH):
                batch = new[i : i + EMBED_BATCH]
                vectors = embed([text for (_, text), _ in batch], "passage")
                self._add(batch, vectors)
                if len(new) > EMBED_BATCH:
                    log.info("embedded %d of %d passages", i + len(batch), len(new))
                if progress is not None:
                    progress(i + len(batch), len(new))
            self.documents = documents
            if gone or new or self._words is None:
                self._words = self._lexical()
            return {"added": len(new), "removed": len(gone)}

    def drop(self, rows: Iterable[int]) -> None:
        """Remove passages by row id (the benchmark holds paragraphs out this way); their
        documents stay, with their other passages."""
        with self.lock:
            gone = [r for r in dict.fromkeys(rows) if r in self.rows]
            if gone:
                self.dense.remove_ids(np.asarray(gone, dtype=np.int64))
                for r in gone:
                    del self.rows[r]
                self._words = self._lexical()

    def _add(self, batch: list[tuple[tuple[int, str], int]], vectors: np.ndarray) -> None:
        if len(vectors) != len(batch):
            raise CheckpointError(f"the encoder gave {len(vectors)} vectors for {len(batch)} texts")
        self.dense, ids = add_vectors(self.dense, vectors, self.next_row)
        self.dim = self.dense.d
        for row, ((entry, text), offset) in zip(ids, batch, strict=True):
            self.rows[row] = Row(row, entry, offset, text, tuple(lexical_units(text, self.units)))
        self.next_row += len(batch)

    def _lexical(self) -> LexicalIndex:
        return LexicalIndex({r: row.words for r, row in self.rows.items()}, self.units)

    # --- search --------------------------------------------------------------------------------

    def candidates(
        self, paragraph: str, vector: np.ndarray, n: int = CANDIDATES
    ) -> tuple[dict[int, float], dict[int, float]]:
        """The rows nearest the paragraph by cosine and by BM25 (``n`` each), by row id,
        without the paragraph's own text."""
        with self.lock:
            if not self.rows:
                return {}, {}
            dense = dense_scores(self.dense, vector, n)
            assert self._words is not None
            lexical = self._words.scores(paragraph, n)
            drop = {
                r for r in dense.keys() | lexical.keys() if same_text(self.rows[r].text, paragraph)
            }
            return (
                {r: s for r, s in dense.items() if r not in drop},
                {r: s for r, s in lexical.items() if r not in drop},
            )

    def search(
        self,
        paragraph: str,
        vector: np.ndarray,
        k: int = 5,
        mode: str = "hybrid",
        bm25_weight: float | None = None,
    ) -> list[Suggestion]:
        """The ``k`` documents best for ``paragraph`` (embedded as a query: ``vector``), each
        with its best passage; ``mode`` ``bm25`` or ``dense`` ranks by one retriever alone;
        ``bm25_weight`` None: the one for the index's units (:data:`BM25_WEIGHTS`)."""
        return search([self], paragraph, vector, k, mode, bm25_weight)

    # --- saving --------------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write the index into ``directory`` as a whole (a reader sees the old index or the
        new one); ``meta.json`` is written last inside it and checked on load."""
        with self.lock:
            return atomic_directory(directory, self._write)

    def _write(self, d: Path) -> None:
        if self.dense is not None:
            faiss_module().write_index(self.dense, str(d / DENSE_FILE))
        lines = (
            json.dumps(
                {
                    "row": r.row,
                    "entry": r.entry,
                    "offset": r.offset,
                    "text": r.text,
                    "words": r.words,
                },
                ensure_ascii=False,
            )
            + "\n"
            for r in self.rows.values()
        )
        atomic_write(d / ROWS_FILE, "".join(lines))
        atomic_write(d / DOCUMENTS_FILE, json.dumps(self.documents, ensure_ascii=False))
        meta = {
            "encoder": self.encoder,
            "version": self.version,
            "dim": self.dim,
            "next_row": self.next_row,
            "rows": len(self.rows),
            "documents": len(self.documents),
            "max_chars": MAX_CHARS,
            "units": self.units,
        }
        atomic_write_json(d / META_FILE, meta)

    @classmethod
    def load(cls, directory: str | Path, units: str | None = LEXICAL_UNITS) -> MaterialIndex:
        """A saved index; :class:`~llmos.errors.CheckpointError` when it is incomplete or
        unreadable (then build it again).

        ``units``: the lexical units to search with. An index saved with others (one saved
        before characters were the default holds jieba's words) has its passages cut again,
        which needs no embedding (the whole corpus: seconds); its next ``save`` keeps them.
        None: the saved units."""
        d = Path(directory)
        if not (d / META_FILE).is_file():
            raise CheckpointError(f"{d}: not a complete material index (no {META_FILE})")
        try:
            meta = json.loads((d / META_FILE).read_text(encoding="utf-8"))
            dense = faiss_module().read_index(str(d / DENSE_FILE)) if meta["dim"] else None
            with open(d / ROWS_FILE, encoding="utf-8") as fh:
                rows = [json.loads(line) for line in fh]
            documents = json.loads((d / DOCUMENTS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            raise CheckpointError(f"{d}: unreadable material index ({e})") from None
        vectors = dense.ntotal if dense is not None else 0
        if vectors != len(rows) or meta.get("rows") != len(rows):
            raise CheckpointError(f"{d}: {vectors} vectors for {len(rows)} passages; rebuild it")
        saved = meta.get("units", "words")  # an index saved before the field: jieba words
        if saved not in UNITS:
            raise CheckpointError(
                f"{d}: unknown lexical units {saved!r} in {META_FILE}; rebuild it"
            )
        units = saved if units is None else units
        index = cls(meta["encoder"], meta.get("version"), units)
        index.dim, index.dense, index.next_row = meta["dim"], dense, meta["next_row"]
        if units != saved:
            log.info(
                "%s holds BM25 %s: cutting its %d passages into %s", d, saved, len(rows), units
            )
        index.rows = {
            r["row"]: Row(
                r["row"],
                r["entry"],
                r["offset"],
                r["text"],
                tuple(r["words"]) if units == saved else tuple(lexical_units(r["text"], units)),
            )
            for r in rows
        }
        index.documents = {int(e): v for e, v in documents.items()}
        index._words = index._lexical()
        return index


def search(
    indexes: Sequence[MaterialIndex],
    paragraph: str,
    vector: np.ndarray,
    k: int = 5,
    mode: str = "hybrid",
    bm25_weight: float | None = None,
) -> list[Suggestion]:
    """The ``k`` best documents for ``paragraph`` over several indexes ranked together (see
    the module docstring), each with its best passage.

    A document is ranked by its best passage under each retriever; ``hybrid`` fuses the two
    rankings, ``bm25`` and ``dense`` use one alone (the benchmark's baselines).
    ``bm25_weight`` None: the weight for the first index's units (:data:`BM25_WEIGHTS`; the
    app loads and builds every index with :data:`LEXICAL_UNITS`, so they agree).
    """
    if mode not in ("hybrid", "bm25", "dense"):
        raise MaterialsError(f"mode must be hybrid, bm25 or dense, not {mode!r}")
    n = max(CANDIDATES, 20 * k)
    dense_best: dict[tuple[int, int], tuple[float, Row]] = {}
    bm25_best: dict[tuple[int, int], tuple[float, Row]] = {}
    for i, index in enumerate(indexes):
        dense, lexical = index.candidates(paragraph, vector, n)
        for scores, best in ((dense, dense_best), (lexical, bm25_best)):
            for r, s in scores.items():
                row = index.rows[r]
                key = (i, row.entry)
                if key not in best or s > best[key][0]:
                    best[key] = (s, row)
    dense_rank = rank({key: s for key, (s, _) in dense_best.items()}) if mode != "bm25" else {}
    bm25_rank: dict[tuple[int, int], int] = {}
    if mode != "dense":  # within each index (see the module docstring)
        for i in range(len(indexes)):
            bm25_rank |= rank({key: s for key, (s, _) in bm25_best.items() if key[0] == i})
    if bm25_weight is None:
        bm25_weight = BM25_WEIGHTS[indexes[0].units] if indexes else 1.0
    fused = fuse_ranks(dense_rank, bm25_rank, bm25_weight if mode == "hybrid" else 1.0)
    out = []
    for key in sorted(fused, key=lambda e: (-fused[e], e))[:k]:
        i, entry = key
        # The passage shown: the document's nearest by meaning, else its best by words.
        row = (dense_best.get(key) if mode != "bm25" else None) or bm25_best[key]
        doc = indexes[i].documents[entry]
        out.append(
            Suggestion(
                text=row[1].text,
                score=fused[key],
                corpus=doc["corpus"],
                title=doc["title"],
                doc=doc["doc"],
                offset=row[1].offset,
                similarity=dense_best[key][0] if key in dense_best else -1.0,
                dense_rank=dense_rank.get(key),
                bm25_rank=bm25_rank.get(key),
            )
        )
    return out
