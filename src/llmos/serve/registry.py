"""The model registry: the models of the catalog, loaded on first use within a memory budget.

Weights are loaded when a request first names a model, in a thread, while other models keep
serving. Loaded models share a memory budget: a load that would exceed it unloads the least
recently used models first. What can be served is the :class:`~llmos.serve.catalog.Catalog`
(read again by :meth:`Registry.rescan`); how a batch runs is the operations' business
(``serve/operations.py``): each loaded model owns a :class:`~llmos.serve.batcher.Batcher`
whose keys are those operations.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import gc
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from llmos.errors import LlmosError
from llmos.inference.onnx import ONNX_FILE
from llmos.serve.batcher import Batcher
from llmos.serve.catalog import Catalog, IndexEntry, ModelEntry
from llmos.serve.metrics import Metrics
from llmos.serve.operations import Runtime, isolating, run_batch
from llmos.serve.settings import ServeSettings
from llmos.store.vectors import DocumentIndex

log = logging.getLogger("llmos.serve")


@dataclass
class Loaded:
    """A model in memory: its catalog entry, pipeline, batcher and size."""

    entry: ModelEntry
    pipe: Any
    batcher: Batcher
    nbytes: int
    loaded_at: float = field(default_factory=time.time)


def model_bytes(pipe: Any) -> int:
    """Bytes held by a loaded model: its parameters and buffers (shared tensors once), or its
    ONNX file's size for an ONNX Runtime session."""
    from llmos.inference.onnx import OnnxModel

    if isinstance(pipe.model, OnnxModel):
        return (pipe.path / ONNX_FILE).stat().st_size
    seen, total = set(), 0
    for t in [*pipe.model.parameters(), *pipe.model.buffers()]:
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


class Registry:
    """Models by name, loaded on demand within a memory budget (least recently used out)."""

    def __init__(self, settings: ServeSettings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.budget = int(settings.memory_budget_mb * 2**20)
        self.metrics = metrics
        self.catalog = Catalog()
        self.loaded: collections.OrderedDict[str, Loaded] = collections.OrderedDict()
        self._locks: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self.loads = 0
        self.evictions = 0

    # --- the catalog -----------------------------------------------------------------------

    @property
    def models(self) -> dict[str, ModelEntry]:
        return self.catalog.models

    @property
    def indexes(self) -> dict[str, IndexEntry]:
        return self.catalog.indexes

    def rescan(self) -> None:
        """Read the models directory again (new checkpoints appear; loaded ones stay)."""
        self.catalog = Catalog.read(self.settings.models_dir)
        log.info(
            "serving %d models and %d indexes from %s",
            sum(not m.hidden for m in self.models.values()),
            len(self.indexes),
            self.settings.models_dir,
        )

    def entry(self, name: str) -> ModelEntry:
        """The catalog entry of the model ``name`` (:class:`~llmos.serve.catalog.UnknownModel`
        if none)."""
        return self.catalog.entry(name)

    def index(self, name: str) -> IndexEntry:
        """The catalog entry of the index ``name``."""
        return self.catalog.index(name)

    # --- loading ---------------------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        return sum(m.nbytes for m in self.loaded.values())

    async def get(self, name: str) -> Loaded:
        """The loaded model ``name`` (loading it first if needed), marked most recently used."""
        entry = self.entry(name)
        m = self.loaded.get(name)
        if m is not None and not m.batcher.closed:
            self.loaded.move_to_end(name)
            return m
        async with self._locks[name]:
            m = self.loaded.get(name)
            if m is not None and not m.batcher.closed:
                return m
            return await self._load(entry)

    async def _load(self, entry: ModelEntry) -> Loaded:
        if entry.task == "recommendation":
            raise LlmosError(
                f"model {entry.name!r} is a recommender: the recommendation app "
                "(/v1/apps/recommend) reads it, no /v1 inference route does"
            )
        if entry.size_bytes > self.budget:
            raise LlmosError(
                f"model {entry.name!r} needs {entry.size_bytes / 2**20:.0f} MiB, more than the "
                f"server's whole memory budget of {self.budget / 2**20:.0f} MiB"
            )
        await self._make_room(entry.size_bytes, keep=entry.name)
        started = time.monotonic()
        pipe, nbytes = await asyncio.to_thread(self._read, entry)
        runtime = Runtime(pipe)
        for ix in self.indexes.values():
            if ix.model == entry.name:
                runtime.indexes[ix.name] = await asyncio.to_thread(DocumentIndex.load, ix.path)
        run = isolating(functools.partial(run_batch, runtime))
        batcher = Batcher(
            entry.name,
            run,
            max_batch=self.settings.max_batch,
            max_wait=self.settings.max_wait_ms / 1000,
            queue_size=self.settings.queue_size,
            observe=(
                (lambda n, s: self.metrics.observe_batch(entry.name, n, s))
                if self.metrics
                else None
            ),
        )
        m = Loaded(entry, pipe, batcher, nbytes)
        self.loaded[entry.name] = m
        self.loads += 1
        if self.metrics:
            self.metrics.loads.inc()
        await self._make_room(0, keep=entry.name)  # the real size may exceed the estimate
        log.info(
            "loaded %s (%.1f MiB) in %.1f s; %.1f of %.1f MiB in use",
            entry.name,
            nbytes / 2**20,
            time.monotonic() - started,
            self.used_bytes / 2**20,
            self.budget / 2**20,
        )
        return m

    def _read(self, entry: ModelEntry) -> tuple[Any, int]:
        """The pipeline of ``entry`` and the bytes it holds (run in a thread).

        From the path, not from a Checkpoint kept in the catalog: the pipeline's tokenizer then
        goes when the model is unloaded, and a checkpoint rewritten since the scan is read as it
        is now. A CLIP model decodes images under the server's limits, and its text tower is
        loaded now rather than on first use, so that the memory budget counts it (every route
        but image embedding needs it); a tower that cannot be loaded is left to fail, with its
        message, on the routes that need it.
        """
        if entry.task != "clip":
            from llmos.inference.load import load_pipeline

            pipe = load_pipeline(entry.path, precision=self.settings.precision)
            return pipe, model_bytes(pipe)
        from llmos.inference.image import load_image_pipeline

        s = self.settings
        pipe = load_image_pipeline(
            entry.path,
            precision=s.precision,
            emoji_home=s.emoji_home,
            max_bytes=s.max_image_bytes,
            max_pixels=s.max_image_pixels,
        )
        try:
            return pipe, model_bytes(pipe) + model_bytes(pipe.text_tower)
        except LlmosError as e:
            log.warning("%s: its text tower is not loaded (%s)", entry.name, e)
            return pipe, model_bytes(pipe)

    async def _make_room(self, incoming: int, keep: str) -> None:
        while self.used_bytes + incoming > self.budget:
            victim = next((n for n in self.loaded if n != keep), None)
            if victim is None:
                return
            await self.unload(victim)
            self.evictions += 1
            if self.metrics:
                self.metrics.evictions.inc()

    async def unload(self, name: str, collect: bool = True) -> bool:
        """Unload a model: its queued requests are served first, then its memory is freed
        (``collect=False``: by the caller's next ``gc.collect()``)."""
        m = self.loaded.pop(name, None)
        if m is None:
            return False
        await m.batcher.close()
        del m
        if collect:  # a pipeline holds reference cycles: only a collection frees it
            gc.collect()
        log.info("unloaded %s; %.1f MiB in use", name, self.used_bytes / 2**20)
        return True

    async def close(self) -> None:
        """Unload every model, then free them all in one collection: a full collection takes
        time in proportion to the whole process's heap (seconds in a large test process),
        not to the model's size."""
        names = list(self.loaded)
        for name in names:
            await self.unload(name, collect=False)
        if names:
            gc.collect()
