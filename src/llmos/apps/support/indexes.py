"""The knowledge bases' search indexes, kept beside the store: one
:class:`~llmos.apps.support.index.KbIndex` per knowledge base, in memory and saved in
``root/kb-<id>/``, each built with its knowledge base's encoder.

The database is the source of truth. Before a search, :meth:`KbIndexes.synced` compares the
index's revision with the store's (one small query) and syncs the difference first, so a change
made by another server process sharing the database is seen by the next search here; an index
saved by another encoder, or unreadable, is rebuilt.

A knowledge base may name its own encoder (``KbInfo.encoder``, a served embedding model: one
fine-tuned on that base's own wordings answers it far better, docs/BENCHMARKS.md); ``encoders``
turns the name into an :class:`~llmos.apps.support.index.Embedder`, and every other base embeds
with the default one.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from llmos.apps.support.index import Embedder, KbIndex
from llmos.errors import CheckpointError, LlmosError
from llmos.store.kb import KnowledgeBases

log = logging.getLogger("llmos.apps.support")

# A served model's name -> its Embedder; raises UnknownEncoder when no such model embeds.
Encoders = Callable[[str], Embedder]


class UnknownEncoder(LlmosError):
    """A knowledge base names an encoder that is not served, or that does not embed."""


class KbIndexes:
    """Every knowledge base's index and encoder (see the module docstring). Thread-safe."""

    def __init__(
        self,
        kbs: KnowledgeBases,
        embed: Embedder,
        root: str | Path,
        encoders: Encoders | None = None,
    ) -> None:
        self.kbs, self.embed, self.root, self.encoders = kbs, embed, Path(root), encoders
        self._indexes: dict[int, KbIndex] = {}
        self._embedders: dict[str, Embedder] = {}
        self._lock = threading.Lock()

    def embedder(self, encoder: str | None) -> Embedder:
        """The embedder of a knowledge base's ``encoder`` (None: the default);
        :class:`UnknownEncoder` when it is not served."""
        if encoder is None:
            return self.embed
        with self._lock:
            embed = self._embedders.get(encoder)
        if embed is not None:
            return embed
        if self.encoders is None:
            raise UnknownEncoder(f"this desk embeds with its default encoder only, not {encoder!r}")
        embed = self.encoders(encoder)
        with self._lock:
            return self._embedders.setdefault(encoder, embed)

    def embedder_of(self, owner: int, name: str) -> Embedder:
        """The embedder of the owner's knowledge base (:class:`UnknownEncoder` if its encoder
        is not served): asked before a change is stored, so a refusal stores nothing."""
        return self.embedder(self.kbs.revision(owner, name)[2])

    def synced(self, owner: int, name: str) -> tuple[KbIndex, Embedder]:
        """The index of the owner's knowledge base, brought to the store's revision first, and
        the embedder of its encoder."""
        kb_id, revision, encoder = self.kbs.revision(owner, name)
        embed = self.embedder(encoder)
        index = self._index(kb_id, embed.name)
        if index.revision == revision:
            return index, embed
        with index.lock:
            snapshot = self.kbs.snapshot(owner, name)
            if index.revision != snapshot.revision:
                changed = index.sync(snapshot, embed)
                index.save(self._dir(kb_id))
                log.info(
                    "knowledge base %r (revision %d): %d rows added, %d removed",
                    name,
                    snapshot.revision,
                    changed["added"],
                    changed["removed"],
                )
        return index, embed

    def drop(self, kb_id: int) -> None:
        """Forget a deleted knowledge base's index, in memory and on disk."""
        with self._lock:
            self._indexes.pop(kb_id, None)
        shutil.rmtree(self._dir(kb_id), ignore_errors=True)

    def _dir(self, kb_id: int) -> Path:
        return self.root / f"kb-{kb_id}"

    def _index(self, kb_id: int, encoder: str) -> KbIndex:
        """The knowledge base's index built with ``encoder`` (a weights digest): in memory,
        else as saved, else a new empty one."""
        with self._lock:
            index = self._indexes.get(kb_id)
            if index is not None and index.encoder == encoder:
                return index
            index = self._open(kb_id, encoder)
            self._indexes[kb_id] = index
            return index

    def _open(self, kb_id: int, encoder: str) -> KbIndex:
        path = self._dir(kb_id)
        if path.is_dir():
            try:
                index = KbIndex.load(path)
                if index.encoder == encoder:
                    return index
                log.info("%s was built with another encoder: rebuilding it", path)
            except CheckpointError as e:
                log.warning("%s; rebuilding it", e)
        return KbIndex(encoder)
