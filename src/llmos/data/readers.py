"""Readers for labelled data: TSV/CSV/JSONL classification rows, CoNLL and PKU ``word/POS``.

Sequence-labelling data is read into :class:`SpanExample` (text and character-offset spans)
by :func:`read_spans`, whatever the file format, so that training, evaluation and prediction
all work on the original text and character offsets.

Every malformed row is a :class:`~llmos.errors.DataError` naming ``file:line`` and what was
expected, unless ``skip_bad_rows`` is set: then it is skipped and counted in the result.

One module past ~400 lines on purpose: every user-supplied labelled file goes through it, and
the formats share one error collector and one set of row types.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from llmos.data.tagging import tags_to_spans
from llmos.errors import DataError
from llmos.text.cjk import is_cjk

Span = tuple[str, int, int]


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
class SpanExample:
    """A text and its labelled ``(type, start, end)`` character spans (``end`` exclusive).

    Word segmentation uses the type ``""``: every word is a span.
    """

    text: str
    spans: list[Span]


@dataclass
class Instruction:
    """An instruction-following example; ``input`` may be empty; ``source`` optionally names
    where it comes from (``qa``, ``sentiment``...), for per-source evaluation."""

    instruction: str
    input: str
    output: str
    source: str = ""


@dataclass
class Pair:
    """A retrieval example: a query, the passages that answer it, other wordings of the query
    that should find it too (``paraphrases``: texts of the query's own kind, which an
    asymmetric encoder reads with its query prefix), and optionally passages that look close
    but do not answer it (hard negatives). A pair has a positive or a paraphrase, or both.
    ``label`` (optional) is a class the pair belongs to (an intent): pairs of one label are
    never each other's negatives."""

    query: str
    positives: list[str]
    negatives: list[str] = field(default_factory=list)
    paraphrases: list[str] = field(default_factory=list)
    label: str | None = None


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


def _json_objects(path: Path, col: _Collector, like: str) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` of each JSONL line; a line that is not a JSON object is a bad
    row (``like`` shows the expected shape in the message)."""
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            col.bad(lineno, f"not valid JSON ({e.msg})")
            continue
        if not isinstance(obj, dict):
            col.bad(lineno, f"expected a JSON object like {like}")
            continue
        yield lineno, obj


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
        for lineno, obj in _json_objects(path, col, '{"text": ..., "label": ...}'):
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


# People's Daily POS tags that are named entities, and the entity type each one becomes.
PKU_ENTITIES = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
PKU_VIEWS = ("segmentation", "pos", "ner")


def pku_spans(words: list[str], tags: list[str], view: str) -> list[Span]:
    """Character spans of a People's Daily sentence for one task.

    ``segmentation``: every word (type ``""``); ``pos``: every word typed by its POS (joint
    segmentation and tagging); ``ner``: ``nr``/``ns``/``nt`` words as PER/LOC/ORG, where a
    surname and given name tagged ``nr`` side by side (``江/nr 泽民/nr``) form one person.
    """
    if view not in PKU_VIEWS:
        raise ValueError(f"unknown PKU view {view!r}; choose one of {PKU_VIEWS}")
    spans: list[Span] = []
    start = 0
    prev_tag = None
    for word, tag in zip(words, tags, strict=True):
        end = start + len(word)
        if view == "segmentation":
            spans.append(("", start, end))
        elif view == "pos":
            spans.append((tag, start, end))
        elif tag in PKU_ENTITIES:
            if tag == "nr" and prev_tag == "nr" and spans and spans[-1][2] == start:
                spans[-1] = ("PER", spans[-1][1], end)
            else:
                spans.append((PKU_ENTITIES[tag], start, end))
        prev_tag = tag
        start = end
    return spans


def join_tokens(tokens: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """Join CoNLL tokens into text: no space between two CJK characters, one space otherwise.

    Returns:
        The text and each token's ``(start, end)`` character offsets in it.
    """
    parts: list[str] = []
    offsets = []
    pos = 0
    for i, token in enumerate(tokens):
        if i and not (is_cjk(tokens[i - 1][-1]) and is_cjk(token[0])):
            parts.append(" ")
            pos += 1
        parts.append(token)
        offsets.append((pos, pos + len(token)))
        pos += len(token)
    return "".join(parts), offsets


def guess_scheme(tags: list[str]) -> str:
    """``"bmes"`` when any tag uses an M-, E- or S- prefix, else ``"bio"``."""
    return "bmes" if any(t.split("-", 1)[0] in "MES" and t != "O" for t in tags) else "bio"


def _spans_json(obj: dict, lineno: int, col: _Collector, spans_key: str) -> SpanExample | None:
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        col.bad(lineno, "empty or missing 'text'")
        return None
    raw = obj.get(spans_key, [])
    if not isinstance(raw, list):
        col.bad(lineno, f"{spans_key!r} must be a list of {{label, start, end}} objects")
        return None
    spans: list[Span] = []
    for item in raw:
        fields = item if isinstance(item, dict) else {}
        label = fields.get("label", fields.get("name", fields.get("type")))
        start, end = fields.get("start"), fields.get("end")
        if (
            not isinstance(label, str)
            or not label
            or not isinstance(start, int)
            or not isinstance(end, int)
            or not 0 <= start < end <= len(text)
        ):
            col.bad(
                lineno,
                f"bad span {item!r} in {spans_key!r}: expected {{label, start, end}} with "
                f"0 <= start < end <= {len(text)} (character offsets)",
            )
            return None
        spans.append((label, start, end))
    spans.sort(key=lambda s: (s[1], s[2]))
    for a, b in itertools.pairwise(spans):
        if b[1] < a[2]:
            col.bad(lineno, f"spans {a} and {b} overlap")
            return None
    return SpanExample(text, spans)


def read_spans(
    path: str | Path,
    *,
    view: str | None = None,
    spans_key: str = "spans",
    skip_bad_rows: bool = False,
) -> ReadResult:
    """Read sequence-labelling data into :class:`SpanExample` rows.

    Formats, by file suffix:
      ``.jsonl``: ``{"text": ..., spans_key: [{"label", "start", "end"}, ...]}`` with character
        offsets (``name`` or ``type`` may stand for ``label``; the intent files keep slots under
        ``"slots"``);
      ``.conll`` / ``.bio`` / ``.tsv``: CoNLL ``token<TAB>tag`` (BIO or BMES tags);
      ``.txt``: People's Daily ``word/POS`` lines, read as the task ``view`` names
        (``segmentation``, ``pos`` or ``ner``; see :func:`pku_spans`).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        if view is None:
            raise DataError(
                f"{path}: a People's Daily word/POS file needs data.view "
                f"(one of {', '.join(PKU_VIEWS)})"
            )
        res = read_pku(path, skip_bad_rows=skip_bad_rows)
        res.rows = [
            SpanExample("".join(s.tokens), pku_spans(s.tokens, s.tags, view)) for s in res.rows
        ]
        return res
    if suffix in (".conll", ".bio", ".tsv"):
        res = read_conll(path, skip_bad_rows=skip_bad_rows)
        rows = []
        for sent in res.rows:
            scheme = guess_scheme(sent.tags)
            try:
                token_spans = tags_to_spans(sent.tags, scheme)
            except ValueError as e:
                raise DataError(f"{path}: {e}") from None
            text, offsets = join_tokens(sent.tokens)
            rows.append(
                SpanExample(
                    text, [(t, offsets[s][0], offsets[e - 1][1]) for t, s, e in token_spans]
                )
            )
        res.rows = rows
        return res
    if suffix != ".jsonl":
        raise DataError(
            f"{path}: unsupported file type {suffix!r} for tagging (expected .jsonl with "
            "character spans, .conll/.bio/.tsv token<TAB>tag, or .txt word/POS)"
        )
    col = _Collector(path, skip_bad_rows)
    with_key = 0
    like = f'{{"text": ..., "{spans_key}": [...]}}'
    for lineno, obj in _json_objects(path, col, like):
        with_key += spans_key in obj
        ex = _spans_json(obj, lineno, col, spans_key)
        if ex is not None:
            col.result.rows.append(ex)
    if col.result.rows and not with_key:
        raise DataError(
            f"{path}: no row has a {spans_key!r} key; name the key holding the spans "
            "(data.spans_key, or --spans-key)"
        )
    return col.done("examples")


def read_instructions(path: str | Path, skip_bad_rows: bool = False) -> ReadResult:
    """Read JSONL records ``{"instruction": str, "input": str (optional), "output": str}``.

    Raises:
        DataError: a missing file, a line that is not a JSON object, a missing, empty or
            non-string field (names the file and line), unless ``skip_bad_rows``.
    """
    col = _Collector(Path(path), skip_bad_rows)
    like = '{"instruction": "...", "input": "", "output": "..."}'
    for lineno, obj in _json_objects(col.path, col, like):
        bad = [k for k in ("instruction", "output") if not isinstance(obj.get(k), str)]
        bad += [k for k in ("instruction", "output") if k not in bad and not obj[k].strip()]
        if bad:
            col.bad(lineno, f"{bad[0]!r} must be a non-empty string, expected {like}")
        elif not isinstance(obj.get("input", ""), str):
            col.bad(lineno, f"'input' must be a string, expected {like}")
        else:
            source = obj.get("source", "")
            col.result.rows.append(
                Instruction(
                    obj["instruction"],
                    obj.get("input", ""),
                    obj["output"],
                    source if isinstance(source, str) else "",
                )
            )
    return col.done("instruction records")


PAIR_KEYS = {"query": ("positive", "negative"), "question": ("answers", "negatives")}


def _texts(value: object) -> list[str] | None:
    """A non-empty string or a non-empty list of non-empty strings, as a list; else None."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        return None
    if not all(isinstance(t, str) and t.strip() for t in items):
        return None
    return list(dict.fromkeys(items))  # duplicates once, order kept


def read_pairs(path: str | Path, *, skip_bad_rows: bool = False) -> ReadResult:
    """Read JSONL retrieval pairs into :class:`Pair` rows.

    A row is ``{"query": str, "positive": str | [str], "negative": str | [str] (optional),
    "paraphrase": str | [str] (optional), "label": str (optional)}`` (a row may have
    paraphrases instead of positives), or in the question/answer files' shape
    (``tasks/qa-zh.jsonl``) ``{"question": str, "answers": [str], "negatives": [str]
    (optional)}``. Every text must be a non-empty string. Other keys are ignored.

    Raises:
        DataError: a missing file, a line that is not a JSON object, a missing or empty query,
            a row with neither a positive nor a paraphrase, a text that is not a non-empty
            string (names the file and line), unless ``skip_bad_rows``.
    """
    col = _Collector(Path(path), skip_bad_rows)
    like = '{"query": "...", "positive": "..." or ["..."], "negative": [...] (optional)}'
    for lineno, obj in _json_objects(col.path, col, like):
        key = "query" if "query" in obj else "question"
        pos_key, neg_key = PAIR_KEYS[key]
        query = obj.get(key)
        if not isinstance(query, str) or not query.strip():
            col.bad(lineno, f"{key!r} must be a non-empty string, expected {like}")
            continue
        lists = {}
        for k in (pos_key, neg_key, "paraphrase"):
            lists[k] = _texts(obj[k]) if k in obj else []
            if lists[k] is None:
                col.bad(lineno, f"{k!r} must be a non-empty string or list of them")
                break
        else:
            if not lists[pos_key] and not lists["paraphrase"]:
                col.bad(lineno, f"needs {pos_key!r} (or 'paraphrase'), expected {like}")
                continue
            label = obj.get("label")
            if label is not None and (not isinstance(label, str) or not label.strip()):
                col.bad(lineno, f"'label' must be a non-empty string, got {label!r:.80}")
                continue
            row = Pair(query, lists[pos_key], lists[neg_key], lists["paraphrase"], label)
            col.result.rows.append(row)
    return col.done("pairs")
