"""FAQ files for a knowledge base: JSONL, CSV or TSV (by the file's suffix).

    JSONL  one object a line: {"question": str, "answer": str,
           "alternatives": [str, ...] (optional), "tags": [str, ...] (optional)}
    CSV    a header row naming the columns question, answer and optionally alternatives and
    TSV    tags (any order, any case); several alternatives or tags in one cell are separated
           by "|"

The whole file is read and checked before anything is stored: a malformed row is a
:class:`~llmos.errors.DataError` naming the file and line, and nothing of the file is kept.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from llmos.errors import DataError
from llmos.store.kb import FaqPair
from llmos.store.models import KbEntry

FIELDS = ("question", "answer", "alternatives", "tags")
REQUIRED = ("question", "answer")
SEPARATOR = "|"  # between several alternatives or tags in one CSV/TSV cell
FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv"}


def _strings(value: Any, where: str, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split(SEPARATOR)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{where}: {name} must be a list of strings, got {value!r:.80}")
    return tuple(v.strip() for v in value if v.strip())


def pair_from(obj: Any, where: str) -> FaqPair:
    """One :class:`FaqPair` from a row's fields (``where`` names the row in errors)."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected an object with 'question' and 'answer'")
    unknown = sorted(set(obj) - set(FIELDS))
    if unknown:
        raise DataError(
            f"{where}: unknown field {unknown[0]!r}; the fields are {', '.join(FIELDS)}"
        )
    for name in REQUIRED:
        value = obj.get(name)
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where}: {name!r} must be a non-empty string, got {value!r:.80}")
    return FaqPair(
        question=obj["question"].strip(),
        answer=obj["answer"].strip(),
        alternatives=_strings(obj.get("alternatives"), where, "alternatives"),
        tags=_strings(obj.get("tags"), where, "tags"),
    )


def _jsonl(path: str, text: str) -> list[FaqPair]:
    pairs = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        pairs.append(pair_from(obj, f"{path}:{lineno}"))
    return pairs


def _table(path: str, text: str, delimiter: str) -> list[FaqPair]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        return []
    for name in REQUIRED:
        if name not in header:
            raise DataError(
                f"{path}:1: the header must name the columns {', '.join(REQUIRED)} "
                f"(and optionally alternatives, tags); got {header}"
            )
    pairs = []
    try:
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataError(f"{where}: {len(row)} columns, the header has {len(header)}")
            obj = {
                h: cell
                for h, cell in zip(header, row, strict=True)
                if cell.strip() or h in REQUIRED
            }
            pairs.append(pair_from(obj, where))
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: {e}") from None
    return pairs


def parse_faq(text: str, kind: str, source: str = "upload") -> list[FaqPair]:
    """Every FAQ pair of ``text`` in the format ``kind`` (jsonl, csv or tsv); errors name
    ``source`` and the line."""
    if kind not in FORMATS.values():
        raise DataError(f"{source}: the format must be one of jsonl, csv, tsv; got {kind!r}")
    text = text.removeprefix("\ufeff")
    if kind == "jsonl":
        pairs = _jsonl(source, text)
    else:
        pairs = _table(source, text, "," if kind == "csv" else "\t")
    if not pairs:
        raise DataError(f"{source}: no FAQ pairs")
    return pairs


def read_faq(path: str | Path) -> list[FaqPair]:
    """Every FAQ pair of a JSONL, CSV or TSV file, checked (see the module docstring)."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: an FAQ file must end in .jsonl, .csv or .tsv")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    return parse_faq(text, kind, str(path))


def kb_pairs(entries: Iterable[FaqPair | KbEntry]) -> dict[str, list[dict[str, Any]]]:
    """A knowledge base as retrieval training pairs (``task: embedding`` JSONL rows; see
    :func:`~llmos.data.readers.read_pairs`), so an encoder can be fine-tuned on the
    knowledge base's own wordings.

    Each stored wording of an entry (its question and alternatives) is a query whose
    positive is the entry's answer (read as a passage, as the index embeds answers) and whose
    paraphrases are the entry's other wordings (read as queries, as the index embeds them).
    ``valid`` holds, for every entry with at least three wordings, its last one as an unseen
    wording to find the entry from; ``train`` is built from the others.
    """
    out: dict[str, list[dict[str, Any]]] = {"train": [], "valid": []}
    for e in entries:
        texts = list(dict.fromkeys(t for t in (e.question, *e.alternatives) if t.strip()))
        held = texts.pop() if len(texts) >= 3 else None
        answer = {"positive": e.answer} if e.answer.strip() else {}
        for t in texts:
            others = {"paraphrase": [u for u in texts if u != t]} if len(texts) > 1 else {}
            if answer or others:
                out["train"].append({"query": t, **answer, **others})
        if held is not None:
            out["valid"].append({"query": held, **answer, "paraphrase": texts})
    return out
