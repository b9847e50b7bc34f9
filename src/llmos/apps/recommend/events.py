"""A user's events on a catalog, folded into what the recommender reads of them (a
:class:`Taste`).

Event weights (:data:`WEIGHTS`): ``like``, ``view`` and a ``rate`` of 3 or more are a full
positive (a MovieLens rating, what the model was trained on, means "watched it"), ``click``
half of one, ``dislike`` and a ``rate`` below 3 a negative; ``hide`` removes the item and adds
nothing. The latest explicit event (like, dislike, rate, hide) of an item wins; a view or click
never overrides one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

KINDS = ("view", "click", "rate", "like", "dislike", "hide")
EXPLICIT = {"like", "dislike", "rate", "hide"}
WEIGHTS = {"view": 1.0, "click": 0.5, "like": 1.0, "dislike": -1.0, "hide": 0.0}
GOOD_RATING = 3.0


@dataclass(frozen=True)
class Act:
    """One event of a user on an item of the catalog."""

    kind: str
    item: str
    value: float | None = None


@dataclass
class Taste:
    """What a user's events say: an input weight per item, what never to show again, the
    positive items newest first."""

    weights: dict[str, float] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    hidden: set[str] = field(default_factory=set)
    recent: list[str] = field(default_factory=list)


def weight(act: Act) -> float:
    """The input weight of one event (see the module docstring)."""
    if act.kind == "rate":
        return 1.0 if (act.value if act.value is not None else 0.0) >= GOOD_RATING else -1.0
    return WEIGHTS[act.kind]


def fold(acts: Iterable[Act]) -> Taste:
    """A user's events, oldest first, folded into a :class:`Taste`."""
    taste = Taste()
    explicit: set[str] = set()
    for act in acts:
        if act.kind not in KINDS:
            continue  # other apps' events share the table
        taste.seen.add(act.item)
        w = weight(act)
        if act.kind in EXPLICIT:
            explicit.add(act.item)
            taste.weights[act.item] = w
            if act.kind == "hide":
                taste.hidden.add(act.item)
            else:
                taste.hidden.discard(act.item)
        elif act.item not in explicit:
            taste.weights[act.item] = max(taste.weights.get(act.item, 0.0), w)
        if taste.weights.get(act.item, 0.0) > 0:
            if act.item in taste.recent:
                taste.recent.remove(act.item)
            taste.recent.insert(0, act.item)
        elif act.item in taste.recent:
            taste.recent.remove(act.item)
    return taste
