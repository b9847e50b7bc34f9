"""Sentence splitting for Chinese and English text.

Rule-based and dependency-free, in the spirit of the splitters that BERT's
``create_pretraining_data.py`` inputs are usually made with: Chinese splits after the sentence
terminators ``。！？；…`` (and the closing quotes that follow them, ``。”``), English after ``.!?``
when the next sentence starts with a capital letter, except after common abbreviations
(``Mr.``, ``Dr.``, ``U.S.``, ``e.g.``). Terminators stay with their sentence.
"""

from __future__ import annotations

import re

__all__ = ["detect_lang", "join_sentences", "split_sentences"]

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

# A run of terminators, then any closing quotes or brackets that belong to the same sentence.
# ASCII "!?" count too (reviews mix them in), and "." only when it sits between two CJK
# characters, so that numbers (3.5) and URLs (www.a.com) are not cut.
_ZH_END = re.compile(
    r"(?:[。！？；!?]|…+|\.{3,}|(?<=[\u4e00-\u9fff])\.(?=[\u4e00-\u9fff]|$))+[”’」』）)\"']*"
)

# A candidate boundary: terminators, optional closing quotes, whitespace, then something that
# may open a sentence (a capital, possibly behind an opening quote or bracket).
_EN_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s+[\"'“‘(\[]?[A-Z])")

# Lower-cased, without the final period. Single letters (initials: "J. Smith") are handled
# separately, and so are dotted acronyms ("U.S.", "e.g.").
# fmt: off
_EN_ABBREVIATIONS = frozenset((
    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "rev", "gen", "sen", "rep", "gov", "lt",
    "col", "capt", "sgt", "cmdr", "adm", "mt", "ft", "vs", "etc", "inc", "corp", "co", "ltd",
    "bros", "no", "nos", "vol", "fig", "approx", "dept", "est", "jan", "feb", "mar", "apr", "jun",
    "jul", "aug", "sep", "sept", "oct", "nov", "dec", "mon", "tue", "tues", "wed", "thu",
    "thurs", "fri", "sat", "sun", "ave", "blvd", "rd",
))
# fmt: on
_ACRONYM = re.compile(r"^(?:[A-Za-z]\.)+[A-Za-z]?$")


def detect_lang(text: str) -> str:
    """Guess ``"zh"`` if the text has any CJK ideograph, else ``"en"``."""
    return "zh" if _CJK.search(text) else "en"


def split_sentences(text: str, lang: str = "auto") -> list[str]:
    """Split ``text`` into sentences.

    Args:
        text: any text; line breaks are treated as sentence boundaries too.
        lang: ``"zh"``, ``"en"`` or ``"auto"`` (``zh`` when the text contains CJK ideographs).

    Returns:
        The sentences, stripped, with their terminators; never an empty string.

    Raises:
        ValueError: ``lang`` is not one of the three values.
    """
    if lang not in ("auto", "zh", "en"):
        raise ValueError(f"lang must be 'auto', 'zh' or 'en', got {lang!r}")
    sentences: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        line_lang = detect_lang(line) if lang == "auto" else lang
        cuts = _zh_cuts(line) if line_lang == "zh" else _en_cuts(line)
        start = 0
        for end in [*cuts, len(line)]:
            piece = line[start:end].strip()
            if piece:
                sentences.append(piece)
            start = end
    return sentences


def _zh_cuts(line: str) -> list[int]:
    """Offsets just after each Chinese sentence end (closing quotes included)."""
    return [m.end() for m in _ZH_END.finditer(line) if m.end() < len(line)]


def _en_cuts(line: str) -> list[int]:
    """Offsets just after each English sentence end that is not an abbreviation."""
    cuts = []
    for m in _EN_END.finditer(line):
        if line[m.start()] == "." and _is_abbreviation(line, m.start()):
            continue
        cuts.append(m.end())
    return cuts


def _is_abbreviation(line: str, dot: int) -> bool:
    """Whether the period at ``line[dot]`` ends an abbreviation rather than a sentence."""
    word_start = dot
    while word_start > 0 and not line[word_start - 1].isspace():
        word_start -= 1
    word = line[word_start:dot].lstrip("\"'“‘([")
    if not word:
        return False
    if len(word) == 1 and word.isupper():  # an initial: "J. R. R. Tolkien"
        return True
    if word.lower() in _EN_ABBREVIATIONS:
        return True
    return bool(_ACRONYM.match(word + ".")) and "." in word  # "U.S", "e.g", "N.V"


def join_sentences(sentences: list[str]) -> str:
    """Join the sentences of a document back into running text: no space where either side of
    a boundary is CJK or full-width (``。`` then ``他``), one space otherwise (``it. The``)."""
    out: list[str] = []
    for s in sentences:
        if out and out[-1] and s and ord(out[-1][-1]) < 0x2E80 and ord(s[0]) < 0x2E80:
            out.append(" ")
        out.append(s)
    return "".join(out)
