"""Units for lexical search (BM25), in two kinds (:data:`UNITS`):

- ``words`` (:func:`words`): jieba's words for Chinese, lower-cased letter-and-digit runs for
  English and other space-separated text, punctuation and spaces dropped. jieba cuts mixed
  Chinese-English text in one pass (it keeps ASCII runs whole), so one function serves both
  languages: ``words("我的iPhone屏幕碎了")`` -> ``["我", "的", "iphone", "屏幕", "碎", "了"]``.
- ``chars`` (:func:`char_grams`): each Chinese character and each pair of adjacent ones within
  a run of Chinese, and lower-cased letter-and-digit runs elsewhere: ``char_grams("春眠不觉晓")``
  -> ``["春", "眠", "不", "觉", "晓", "春眠", "眠不", "不觉", "觉晓"]``. Classical Chinese and
  verse, which jieba's modern-prose dictionary cuts badly, share characters and two-character
  images where they share few jieba words: for 70 held-out passages of Tang and Song poems,
  BM25 over these finds the poem in the top 5 for 26 against 19 by words (docs/BENCHMARKS.md,
  "BM25 over characters in the app"). Only the CJK basic block and extension A are cut into
  characters; rarer ideographs stay in runs, as letters do.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

_WORD = re.compile(r"\w", re.UNICODE)
# A run of CJK ideographs (the basic block and extension A), or of other word characters.
_HAN_OR_WORD = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff]+)|([^\W\u3400-\u4dbf\u4e00-\u9fff]+)")
UNITS = ("words", "chars")
_lock = threading.Lock()
_jieba: Any = None


def _tokenizer() -> Any:
    """jieba's default tokenizer, initialised once (its dictionary loads in about a second)."""
    global _jieba
    with _lock:
        if _jieba is None:
            import jieba

            logging.getLogger("jieba").setLevel(logging.WARNING)  # no "Building prefix dict"
            jieba.initialize()
            _jieba = jieba.dt
    return _jieba


def words(text: str) -> list[str]:
    """The words of ``text``, lower-cased, without punctuation or spaces."""
    return [w for w in _tokenizer().lcut(text.lower()) if _WORD.search(w)]


def char_grams(text: str) -> list[str]:
    """Chinese characters and adjacent character pairs within each run of Chinese, then
    lower-cased letter-and-digit runs of the rest; punctuation and spaces dropped."""
    out: list[str] = []
    for han, other in _HAN_OR_WORD.findall(text.lower()):
        if han:
            out.extend(han)
            out.extend(han[i : i + 2] for i in range(len(han) - 1))
        else:
            out.append(other)
    return out


def check_units(units: str) -> str:
    """``units`` when it is one of :data:`UNITS`.

    Raises:
        ValueError: naming the kinds there are.
    """
    if units not in UNITS:
        raise ValueError(f"lexical units must be one of {', '.join(UNITS)}, got {units!r}")
    return units


def lexical_units(text: str, units: str) -> list[str]:
    """``text`` as BM25 reads it: :func:`words` or :func:`char_grams` (``units`` in
    :data:`UNITS`).

    Raises:
        ValueError: for other ``units``.
    """
    return words(text) if check_units(units) == "words" else char_grams(text)
