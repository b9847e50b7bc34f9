"""Material suggestions per user: the shared corpus's index and each user's own, kept in step
with their documents in the store, searched together (:func:`llmos.apps.write.materials.search`;
that module's docstring says how the two rankings are merged). What the HTTP route
(``POST /v1/apps/write/suggest``) and ``llmos write suggest`` call.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from llmos.apps.hybrid import Embedder
from llmos.apps.write.materials import (
    BM25_WEIGHT,
    MaterialIndex,
    MaterialsError,
    Suggestion,
    search,
)
from llmos.data.materials import SourceDocument
from llmos.errors import CheckpointError
from llmos.paths import llmos_home

log = logging.getLogger("llmos.apps.write")

MAX_K = 50
CACHED_USERS = 64  # users' indexes kept in memory (least recently used out)
USER_CORPUS = "user"


def check_request(text: str, k: int) -> str:
    """The paragraph, stripped; :class:`MaterialsError` naming the field when it is unusable."""
    if not isinstance(text, str) or not text.strip():
        raise MaterialsError("text: the paragraph to find materials for is empty")
    if not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise MaterialsError(f"k: expected a number of suggestions from 1 to {MAX_K}, got {k!r}")
    return text.strip()


class UserDocuments(Protocol):
    """What :class:`Materials` needs of the store: a user's documents (with ``id``, ``title``
    and ``text``) and their revision, which changes whenever they do
    (:class:`llmos.store.documents.WriteDocuments` is one)."""

    def list(self, user: int) -> list[Any]: ...

    def revision(self, user: int) -> Any: ...


class Materials:
    """Suggestions from the shared corpus and each user's own documents (see the module
    docstring). Thread-safe; testable without HTTP.

    Args:
        embed: the encoder (texts, kind -> unit vectors); the shared index must have been
            built with the same one (its ``name``).
        shared: the shared corpus's index (None: the user's documents only).
        documents: the store's users' documents (None: the shared corpus only), anything with
            ``list(user)`` and ``revision(user)`` like ``WriteDocuments``.
        root: where users' indexes are saved (``root/user-<id>/``); None keeps them in memory.
    """

    def __init__(
        self,
        embed: Embedder,
        shared: MaterialIndex | None = None,
        documents: UserDocuments | None = None,
        root: str | Path | None = None,
        bm25_weight: float = BM25_WEIGHT,
    ) -> None:
        if shared is not None and shared.encoder != embed.name:
            raise CheckpointError(
                f"the material index was built with encoder {shared.encoder}, not the one "
                f"given ({embed.name}); rebuild it: llmos write materials build --encoder ..."
            )
        self.embed, self.shared, self.documents = embed, shared, documents
        self.root = Path(root) if root is not None else None
        self.bm25_weight = bm25_weight
        self._users: collections.OrderedDict[int, MaterialIndex] = collections.OrderedDict()
        self._lock = threading.Lock()

    def suggest(self, user_id: int | None, text: str, k: int = 5) -> list[Suggestion]:
        """The ``k`` passages for the paragraph ``text``: the shared corpus's and user
        ``user_id``'s own (None: the shared corpus only), ranked together."""
        paragraph = check_request(text, k)
        indexes = [self.shared] if self.shared is not None else []
        if user_id is not None and self.documents is not None:
            indexes.append(self.user_index(user_id))
        vector = self.embed([paragraph], "query")[0]
        return search(indexes, paragraph, vector, k, "hybrid", self.bm25_weight)

    def user_index(self, user_id: int) -> MaterialIndex:
        """The user's index, brought to the store's revision of their documents first."""
        assert self.documents is not None
        revision = list(self.documents.revision(user_id))
        with self._lock:
            index = self._users.get(user_id)
            if index is None:
                index = self._open(user_id)
            self._users[user_id] = index
            self._users.move_to_end(user_id)
            while len(self._users) > CACHED_USERS:
                self._users.popitem(last=False)
        with index.lock:
            if index.version != revision:
                docs = [
                    SourceDocument(USER_CORPUS, str(d.id), d.title, tuple(d.text.split("\n")))
                    for d in self.documents.list(user_id)
                ]
                changed = index.sync(docs, self.embed)
                index.version = revision
                if self.root is not None:
                    index.save(self.root / f"user-{user_id}")
                log.info(
                    "user %d's materials: %d passages added, %d removed",
                    user_id,
                    changed["added"],
                    changed["removed"],
                )
        return index

    def _open(self, user_id: int) -> MaterialIndex:
        if self.root is not None and (path := self.root / f"user-{user_id}").is_dir():
            try:
                index = MaterialIndex.load(path)
                if index.encoder == self.embed.name:
                    return index
                log.info("%s was built with another encoder: rebuilding it", path)
            except CheckpointError as e:
                log.warning("%s; rebuilding it", e)
        return MaterialIndex(self.embed.name)


def shared_index_dir() -> Path:
    """Where ``llmos write materials build`` saves the shared corpus's index by default."""
    return llmos_home() / "apps" / "write" / "materials"


def users_index_dir() -> Path:
    """Where users' indexes are saved (``user-<id>/`` each)."""
    return llmos_home() / "apps" / "write" / "users"


def build_shared(
    docs: Iterable[SourceDocument], embed: Embedder, version: Any = None
) -> MaterialIndex:
    """The shared corpus's index over ``docs`` (embeds every passage: slow on a CPU)."""
    index = MaterialIndex(embed.name, version)
    index.sync(docs, embed)
    return index
