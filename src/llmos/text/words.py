"""Words for lexical search (BM25): jieba's words for Chinese, lower-cased letter-and-digit runs
for English and other space-separated text, punctuation and spaces dropped.

jieba cuts mixed Chinese-English text in one pass (it keeps ASCII runs whole), so one function
serves both languages: ``words("我的iPhone屏幕碎了")`` ->
``["我", "的", "iphone", "屏幕", "碎", "了"]``.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

_WORD = re.compile(r"\w", re.UNICODE)
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
