"""Readers for labelled data: TSV/CSV/JSONL classification rows, CoNLL and PKU ``word/POS``.

Every malformed row is a :class:`~llmos.errors.DataError` naming ``file:line`` and what was
expected, unless ``skip_bad_rows`` is set: then it is skipped and counted in the result.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from llmos.errors import DataError


@dataclass
class Example:
    """A classification example; ``text_b`` is set for sentence pairs."""

    text: str
    label: str
    text_b: str | None = None


@dataclass
class TaggedSentence:
    """Tokens (words or characters) and one tag per token."""

    tokens: list[str]
    tags: list[str]


@dataclass
class ReadResult:
    """What a reader returns: the rows, and how many bad rows were skipped (with where)."""

    rows: list = field(default_factory=list)
    skipped: int = 0
    skipped_at: list[str] = field(default_factory=list)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                yield lineno, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path}:{lineno}: not valid UTF-8 (byte {e.start} of the line)"
                ) from None


class _Collector:
    def __init__(self, path: Path, skip_bad_rows: bool) -> None:
        self.path, self.skip = path, skip_bad_rows
        self.result = ReadResult()

    def bad(self, lineno: int, message: str) -> None:
        where = f"{self.path}:{lineno}"
        if not self.skip:
            raise DataError(f"{where}: {message} (use --skip-bad-rows to skip such rows)")
        self.result.skipped += 1
        self.result.skipped_at.append(where)

    def done(self, what: str) -> ReadResult:
        if not self.result.rows:
            raise DataError(f"{self.path}: no {what} found")
        return self.result


def _example(fields: dict, lineno: int, col: _Collector, label_key: str) -> None:
    text, label, text_b = fields.get("text"), fields.get(label_key), fields.get("text_b")
    if not isinstance(text, str) or not text.strip():
        col.bad(lineno, "empty or missing 'text'")
    elif label is None or str(label).strip() == "":
        col.bad(lineno, f"empty or missing {label_key!r}")
    elif text_b is not None and not isinstance(text_b, str):
        col.bad(lineno, "'text_b' must be a string")
    else:
        col.result.rows.append(
            Example(text.strip(), str(label).strip(), text_b.strip() if text_b else None)
        )


def read_classification(
    path: str | Path, *, label_key: str = "label", skip_bad_rows: bool = False
) -> ReadResult:
    """Read ``text[, text_b], label`` rows from ``.tsv``, ``.csv`` or ``.jsonl``.

    TSV and CSV files need a header naming the columns ``text``, ``label`` (or ``label_key``)
    and optionally ``text_b``; JSONL objects use the same keys (the prepared intent files use
    ``label_key="intent"``).
    """
    path = Path(path)
    col = _Collector(path, skip_bad_rows)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        for lineno, line in _lines(path):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                col.bad(lineno, f"not valid JSON ({e.msg})")
                continue
            if not isinstance(obj, dict):
                col.bad(lineno, 'expected a JSON object like {"text": ..., "label": ...}')
                continue
            _example(obj, lineno, col, label_key)
        return col.done("examples")
    if suffix not in (".tsv", ".csv"):
        raise DataError(f"{path}: unsupported file type {suffix!r} (expected .tsv, .csv or .jsonl)")
    # One row per line: TSV takes quotes literally (review text is full of them); CSV quotes
    # fields as usual, within a line.
    dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if suffix == ".tsv" else {}
    header: list[str] | None = None
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        cells = next(csv.reader([line], **dialect))
        if header is None:
            header = [c.strip() for c in cells]
            if "text" not in header or label_key not in header:
                raise DataError(
                    f"{path}:{lineno}: expected a header with columns 'text' and {label_key!r} "
                    f"(and optionally 'text_b'), got {header}"
                )
            continue
        if len(cells) != len(header):
            col.bad(lineno, f"{len(cells)} columns, expected {len(header)} ({', '.join(header)})")
            continue
        _example(dict(zip(header, cells, strict=True)), lineno, col, label_key)
    return col.done("examples")


def read_conll(path: str | Path, *, skip_bad_rows: bool = False) -> ReadResult:
    """Read ``token<TAB>tag`` lines, a blank line between sentences, into TaggedSentences."""
    path = Path(path)
    col = _Collector(path, skip_bad_rows)
    tokens: list[str] = []
    tags: list[str] = []
    for lineno, line in _lines(path):
        if not line.strip():
            if tokens:
                col.result.rows.append(TaggedSentence(tokens, tags))
            tokens, tags = [], []
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0] or not parts[1].strip():
            col.bad(lineno, "expected token<TAB>tag")
            continue
        tokens.append(parts[0])
        tags.append(parts[1].strip())
    if tokens:
        col.result.rows.append(TaggedSentence(tokens, tags))
    return col.done("sentences")


def read_pku(path: str | Path, *, skip_bad_rows: bool = False) -> ReadResult:
    """Read People's Daily ``word/POS word/POS ...`` lines into TaggedSentences of words."""
    path = Path(path)
    col = _Collector(path, skip_bad_rows)
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        words, tags = [], []
        for item in line.split():
            word, sep, tag = item.rpartition("/")
            if not sep or not word or not tag:
                col.bad(lineno, f"token {item!r} is not word/POS")
                break
            words.append(word)
            tags.append(tag)
        else:
            col.result.rows.append(TaggedSentence(words, tags))
    return col.done("sentences")
