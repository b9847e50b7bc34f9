"""The recommendation app's service: a recommender checkpoint, the store's events, no HTTP.

Each user's events on the catalog live in the store's ``events`` table (``catalog`` set to the
model's catalog); their onboarding choices (interests, a free-text wish, blocked tags) in their
profile under ``"recommend"``. Every call reads them anew, so an event recorded by one request
changes the next one's list (no retraining; :mod:`~llmos.apps.recommend.engine`). The model is
read once and read again when its checkpoint is rewritten by another process (a background
job's sequential model, :mod:`~llmos.apps.recommend.sequential`; ``llmos recommend train``
while the server runs): every write gives the checkpoint a new ``revision``
(:func:`~llmos.checkpoint.recommender.read_revision`), which is looked at (one small file
read) at most every ``check_s`` seconds. :meth:`RecommendService.forget` makes the next call
read it at once (the server's own catalog and training jobs,
:mod:`~llmos.apps.recommend.jobs`). A wish is
embedded by ``embed`` (the server's encoder model, as an E5 query); it is used only when that
encoder is the one that embedded the catalog (the weights digest the checkpoint records), since
vectors of two encoders do not compare.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmos.apps.recommend.engine import Recommendation, Recommender
from llmos.apps.recommend.events import KINDS, Act, fold
from llmos.checkpoint.recommender import read_recommender, read_revision
from llmos.data.interactions import Item
from llmos.errors import LlmosError
from llmos.store.db import Store

log = logging.getLogger("llmos.apps.recommend")
PROFILE_KEY = "recommend"
MAX_INTERESTS = 50
WISH_CACHE = 1024
CHECK_S = 1.0  # how often the model's checkpoint is looked at for a new revision


class UnknownItem(LlmosError):
    """An item id that the catalog does not have."""


class NoRecommender(LlmosError):
    """No recommender checkpoint to answer with."""


@dataclass(frozen=True)
class Preferences:
    """A user's onboarding choices."""

    interests: tuple[str, ...] = ()
    wish: str = ""
    blocked_tags: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "interests": list(self.interests),
            "wish": self.wish,
            "blocked_tags": list(self.blocked_tags),
        }


class RecommendService:
    """Recommendations for the store's users from the checkpoint ``locate()`` names.

    Args:
        store: the users' events and profiles.
        locate: the recommender checkpoint's directory (raises :class:`NoRecommender`, or
            any :class:`~llmos.errors.LlmosError`, when there is none).
        embed: ``texts, kind -> unit vectors`` for wishes (None: wishes are kept but unused).
        encoder_digest: the weights digest of ``embed``'s model (compared with the
            checkpoint's), or a callable that returns it.
        check_s: how often (seconds) a call looks whether the checkpoint was rewritten; in
            between, calls answer with the model read (0: every call looks).
    """

    def __init__(
        self,
        store: Store,
        locate: Callable[[], Path],
        embed: Callable[[list[str], str], np.ndarray] | None = None,
        encoder_digest: Callable[[], str | None] | None = None,
        check_s: float = CHECK_S,
    ) -> None:
        self.store, self.locate, self.embed = store, locate, embed
        self.encoder_digest = encoder_digest
        self.check_s = check_s
        self._lock = threading.Lock()
        self._model: Recommender | None = None
        self._stamp: tuple[Path, str | None] | None = None
        self._checked = -math.inf  # time.monotonic() of the last look at the checkpoint
        self._wishes: dict[str, torch.Tensor | None] = {}

    # --- the model -------------------------------------------------------------------------

    def model(self) -> Recommender:
        """The recommender, read again when its checkpoint has a new revision (looked at at
        most every ``check_s`` seconds). While the checkpoint cannot be read (another process
        is swapping a new one into place), the model read before keeps answering."""
        with self._lock:
            if self._model is not None and time.monotonic() - self._checked < self.check_s:
                return self._model
            path = self.locate()
            try:
                stamp = (path, read_revision(path))
            except (LlmosError, OSError):
                if self._model is not None and self._stamp is not None and self._stamp[0] == path:
                    log.debug("recommender %s: unreadable now, serving the model read", path)
                    return self._model
                raise NoRecommender(f"{path}: no recommender checkpoint") from None
            self._checked = time.monotonic()
            if self._model is None or self._stamp != stamp:
                try:
                    self._model = Recommender(read_recommender(path))
                except LlmosError as e:  # the server's model is broken: not the caller's fault
                    self._model, self._stamp = None, None
                    raise NoRecommender(str(e)) from None
                self._stamp = stamp
                self._wishes.clear()
                log.info(
                    "recommender %s (revision %s): %d items%s",
                    path,
                    stamp[1],
                    self._model.num_items,
                    ", with its sequential model" if self._model.sasrec is not None else "",
                )
            return self._model

    def forget(self) -> None:
        """Drop the model read: the next call reads the checkpoint again (after this server's
        own job rewrote it, without waiting for the next look at its revision)."""
        with self._lock:
            self._model, self._stamp, self._checked = None, None, -math.inf
            self._wishes.clear()

    @property
    def catalog(self) -> str:
        return self.model().catalog

    def item(self, item: str) -> Item:
        model = self.model()
        i = model.index.get(item)
        if i is None:
            raise UnknownItem(f"the catalog {model.catalog!r} has no item {item!r}")
        return model.items[i]

    # --- a user's events and choices -------------------------------------------------------

    def add_events(self, user_id: int, events: list[tuple[str, str, float | None]]) -> list[int]:
        """Record events (all or none): every kind one of :data:`KINDS`, every item in the
        catalog, a ``rate`` with its value."""
        model = self.model()
        for kind, item, value in events:
            if kind not in KINDS:
                raise LlmosError(f"event kind {kind!r} is not one of {', '.join(KINDS)}")
            if item not in model.index:
                raise UnknownItem(f"the catalog {model.catalog!r} has no item {item!r}")
            if kind == "rate" and value is None:
                raise LlmosError(f"a 'rate' event needs a value (item {item!r})")
            if value is not None and not math.isfinite(value):
                raise LlmosError(f"an event's value must be a finite number, got {value}")
        return self.store.add_catalog_events(user_id, model.catalog, events)

    def acts(self, user_id: int, catalog: str | None = None) -> list[Act]:
        """The user's events on ``catalog`` (default: the model's), oldest first."""
        rows = self.store.catalog_events(user_id, catalog or self.catalog)
        return [Act(kind, item or "", value) for kind, item, value in rows]

    def preferences(self, user_id: int) -> Preferences:
        raw = self.store.profile(user_id).get(PROFILE_KEY) or {}
        return Preferences(
            tuple(raw.get("interests", ())), raw.get("wish", ""), tuple(raw.get("blocked_tags", ()))
        )

    def set_preferences(self, user_id: int, prefs: Preferences) -> Preferences:
        """Save onboarding choices (they replace the earlier ones)."""
        for name, values in (("interests", prefs.interests), ("blocked_tags", prefs.blocked_tags)):
            if len(values) > MAX_INTERESTS:
                raise LlmosError(f"{name}: at most {MAX_INTERESTS} tags, got {len(values)}")
        self.store.update_profile(user_id, {PROFILE_KEY: prefs.as_json()})
        return prefs

    def _wish(self, model: Recommender, text: str) -> torch.Tensor | None:
        """The wish as a query vector (cached), or None when it cannot be compared with
        ``model``'s catalog vectors."""
        if not text or self.embed is None or model.content is None:
            return None
        if text in self._wishes:
            return self._wishes[text]
        want = model.meta.get("encoder_digest")
        have = self.encoder_digest() if self.encoder_digest is not None else None
        vector = None
        if want and have and want != have:
            log.warning("the served encoder is not the one that embedded the catalog: wish unused")
        else:
            try:
                vector = torch.from_numpy(np.asarray(self.embed([text], "query"), np.float32)[0])
            except LlmosError as e:  # no encoder served now: the list comes without the wish
                log.warning("wish unused: %s", e)
                return None
        if len(self._wishes) >= WISH_CACHE:
            self._wishes.clear()
        self._wishes[text] = vector
        return vector

    # --- answers ---------------------------------------------------------------------------

    def recommend(
        self,
        user_id: int,
        k: int = 10,
        exclude: tuple[str, ...] = (),
        tags: tuple[str, ...] = (),
        diversity: float = 0.0,
        wish: str | None = None,
    ) -> list[Recommendation]:
        """The user's next ``k`` items. ``wish`` (this request's) replaces the saved one."""
        if not 1 <= k <= 1000:
            raise LlmosError(f"k must be 1-1000, got {k}")
        if not 0.0 <= diversity <= 1.0:
            raise LlmosError(f"diversity must be between 0 and 1, got {diversity}")
        model = self.model()
        prefs = self.preferences(user_id)
        text = wish if wish is not None else prefs.wish
        return model.recommend(
            fold(self.acts(user_id, model.catalog)),
            k,
            wish=self._wish(model, text),
            wish_text=text,
            interests=prefs.interests,
            exclude=exclude,
            tags=tags,
            blocked_tags=prefs.blocked_tags,
            diversity=diversity,
        )

    def similar(self, item: str, k: int = 10) -> list[Recommendation]:
        model = self.model()
        if item not in model.index:
            raise UnknownItem(f"the catalog {model.catalog!r} has no item {item!r}")
        return model.similar(item, k)

    def search(self, query: str, k: int = 20) -> list[Item]:
        return self.model().search(query, k)

    def profile(self, user_id: int) -> dict[str, Any]:
        """What the user's events show, and their onboarding choices."""
        model = self.model()
        view = model.profile(fold(self.acts(user_id, model.catalog)))
        return {**view, "preferences": self.preferences(user_id).as_json()}

    def tags(self) -> list[tuple[str, int]]:
        """The catalog's tags with their item counts, the commonest first (onboarding)."""
        return self.model().tag_counts
