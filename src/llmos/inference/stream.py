"""Generated token ids -> text, incrementally: what a stream may show after each new token.

A byte-level BPE token can end in the middle of a UTF-8 character (a CJK glyph is three bytes,
often split over two tokens). The stream decodes the tokens' bytes with an incremental UTF-8
decoder: a character is shown once all its bytes are there, and bytes that can never form a
character (a small model may emit a stray continuation byte) are dropped rather than shown as
U+FFFD. It also holds back any tail that could be the start of a stop string, so a reader never
sees half a character or part of a stop string. Tokenizers that are not byte-level are decoded
whole after each token instead (their decode never splits a character).
"""

from __future__ import annotations

import codecs
from typing import Any

from llmos.text.tokenizer import decode, token_bytes

REPLACEMENT = "\ufffd"


class TextStream:
    """The text of one generated sequence, grown one token at a time.

    ``push(token)`` returns the newly printable text (possibly ``""``); ``stopped`` turns True
    once a stop string appears (the text is cut before it); ``finish()`` returns what was held
    back; ``text`` is the whole cleaned output so far.
    """

    def __init__(
        self, tokenizer: Any, stop: tuple[str, ...] = (), table: list[bytes] | None = None
    ) -> None:
        self.tokenizer, self.stop = tokenizer, stop
        self.table = table if table is not None else token_bytes(tokenizer)
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self.tokens: list[int] = []
        self.text = ""
        self.shown = 0  # characters of ``text`` already returned
        self.stopped = False

    def push(self, token: int) -> str:
        if self.stopped:
            return ""
        if self.table is not None:
            if 0 <= token < len(self.table):
                self.text += self.utf8.decode(self.table[token])
            safe = len(self.text)
        else:
            self.tokens.append(token)
            self.text = decode(self.tokenizer, self.tokens)
            safe = len(self.text.rstrip(REPLACEMENT))  # an incomplete character
        text = self.text
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped = text[:cut], True
            return self.finish()
        hold = max(  # the longest tail that may still grow into a stop string
            (
                k
                for s in self.stop
                for k in range(min(len(s) - 1, safe), 0, -1)
                if text.endswith(s[:k], 0, safe)
            ),
            default=0,
        )
        safe -= hold
        piece = text[self.shown : max(safe, self.shown)]
        self.shown = max(safe, self.shown)
        return piece

    def finish(self) -> str:
        """The rest of the text; an incomplete last character (generation stopped inside it)
        is dropped."""
        if self.table is not None and not self.stopped:
            self.text += self.utf8.decode(b"", final=True)
        self.text = self.text.rstrip(REPLACEMENT) if self.table is None else self.text
        piece = self.text[self.shown :]
        self.shown = len(self.text)
        return piece
