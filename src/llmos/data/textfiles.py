"""The plain files of the file jobs (``llmos predict``, ``generate --input``, ``embed``):
texts read from stdin, a text file (a text a line) or a .tsv/.csv/.jsonl file, and JSON lines
written to stdout or, atomically, to a file."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from llmos.errors import DataError


def read_inputs(path: str, key: str = "text") -> tuple[list[str], list[str | None] | None]:
    """Texts (and second texts) from stdin / a text file (a text a line) / .tsv .csv .jsonl
    (the text under ``key``)."""
    if path == "-":
        lines = [ln.rstrip("\n") for ln in sys.stdin]
        return [ln for ln in lines if ln.strip()], None
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: input file not found")
    suffix = p.suffix.lower()
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not valid UTF-8 (byte {e.start})") from None
    if suffix == ".jsonl":
        texts, texts_b = [], []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{p}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get(key), str):
                raise DataError(f'{p}:{lineno}: expected an object with a "{key}" string')
            texts.append(obj[key])
            texts_b.append(obj.get("text_b"))
        return texts, texts_b if any(b is not None for b in texts_b) else None
    if suffix in (".tsv", ".csv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ",")
        if not reader.fieldnames or "text" not in reader.fieldnames:
            raise DataError(f"{p}:1: expected a header with a 'text' column")
        rows = list(reader)
        has_b = "text_b" in reader.fieldnames
        return [r["text"] or "" for r in rows], [r["text_b"] for r in rows] if has_b else None
    return [ln for ln in text.splitlines() if ln.strip()], None


def write_lines(lines: list[str], output: str) -> int:
    """JSON lines to stdout (``-``) or atomically to a file; returns how many."""
    if output == "-":
        for line in lines:
            print(line)
    else:
        out = Path(output)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        tmp.replace(out)
    return len(lines)
