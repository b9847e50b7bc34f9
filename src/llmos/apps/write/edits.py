"""What every corrector of the writing assistant answers: edits on the text it was given."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

# What found an edit: a spelling model or the n-gram baseline ("spelling"), or the user's
# own confusion pairs ("dictionary").
KINDS = ("spelling", "dictionary")


@dataclass(frozen=True)
class Edit:
    """Replace ``text[start:end]`` (``original``) by ``suggestion``.

    ``score`` is the corrector's confidence in [0, 1] (a model's detection probability, 1 for
    the user's own pairs) or, for the n-gram baseline, its log-probability gain.
    """

    start: int
    end: int
    original: str
    suggestion: str
    score: float
    kind: str = "spelling"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def apply_edits(text: str, edits: Sequence[Edit]) -> str:
    """``text`` with non-overlapping ``edits`` applied (any order given)."""
    out, at = [], 0
    for e in sorted(edits, key=lambda e: e.start):
        if e.start < at:
            raise ValueError(f"edits overlap at {e.start}: {e}")
        out += [text[at : e.start], e.suggestion]
        at = e.end
    return "".join(out) + text[at:]
