"""The model registry: every checkpoint under the models directory, loaded on first use.

Scanning reads only the small files (``config.json``, ``task.json``, the tokenizer) so that a
server with many checkpoints starts at once; weights are loaded when a request first names a
model, in a thread, while other models keep serving. Loaded models share a memory budget: a
load that would exceed it unloads the least recently used models first.

Each loaded model owns a :class:`~llmos.serve.batcher.Batcher`; the batch functions here turn a
batch of requests into one call of the :class:`~llmos.inference.pipeline.Pipeline`.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos.checkpoint.io import CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, read_config, read_task
from llmos.errors import CheckpointError, LlmosError
from llmos.inference.onnx import ONNX_FILE
from llmos.serve.batcher import Batcher
from llmos.serve.metrics import Metrics
from llmos.serve.settings import ServeSettings

log = logging.getLogger("llmos.serve")

MAX_DEPTH = 3
SKIP_DIRS = {"state", "plots", "__pycache__"}
# Tasks (task.json, or the kind of a pretrained checkpoint) -> the routes a model serves.
CAPABILITIES = {
    "classification": ("classify", "embed"),
    "tagging": ("tag", "embed"),
    "embedding": ("embed",),
    "fill-mask": ("fill-mask", "embed"),
    "generation": ("generate",),
    "instruct": ("generate",),
}
ZH_PROBE = "今天天气很好，我们一起去公园散步，然后在附近的饭店吃午饭。"


class UnknownModel(LlmosError):
    """No model (or index) of that name under the models directory."""


@dataclass
class ModelEntry:
    """What the registry knows of a checkpoint without loading its weights."""

    name: str
    path: Path
    task: str
    model_type: str
    labels: list[str] | None
    language: str
    size_bytes: int
    quantization: str | None
    max_length: int
    onnx: bool = False  # run by ONNX Runtime: the graph answers its own task only
    hidden: bool = False  # an index's encoder that lives outside the models directory

    @property
    def capabilities(self) -> tuple[str, ...]:
        caps = CAPABILITIES[self.task]
        if self.onnx:
            caps = tuple(c for c in caps if c != "embed" or self.task == "embedding")
        return caps


@dataclass
class IndexEntry:
    name: str
    path: Path
    model: str  # the registry name of its encoder
    count: int
    dim: int


@dataclass
class Loaded:
    entry: ModelEntry
    pipe: Any
    batcher: Batcher
    nbytes: int
    loaded_at: float = field(default_factory=time.time)


def _language(path: Path, task: dict[str, Any] | None) -> str:
    """``task.json``'s ``language``, else ``zh`` when the tokenizer encodes Chinese compactly
    (>= 0.9 characters a token; byte-level tokenizers not trained on Chinese give ~0.4)."""
    if task and isinstance(task.get("language"), str):
        return task["language"]
    from llmos.text.tokenizer import load_tokenizer

    try:
        tok = load_tokenizer(path / TOKENIZER_FILE)
    except Exception:  # an unreadable tokenizer fails later, at load, with its own message
        return "unknown"
    ids = tok.encode(ZH_PROBE, add_special_tokens=False).ids
    unk = tok.token_to_id("[UNK]")
    known = [i for i in ids if i != unk]
    return "zh" if known and len(ZH_PROBE) / len(ids) >= 0.9 and len(known) == len(ids) else "en"


def describe(name: str, path: Path, hidden: bool = False) -> ModelEntry:
    """A checkpoint directory's entry (reads config.json, task.json and the tokenizer)."""
    config = read_config(path)
    task = read_task(path)
    kind = task.get("task") if task else None
    if config.model_type == "gpt":
        kind = "instruct" if kind == "instruct" else "generation"
    elif kind is None:
        kind = "embedding" if getattr(config, "heads", None) == "none" else "fill-mask"
    if kind not in CAPABILITIES:
        raise CheckpointError(f"{path}/task.json: the server cannot serve task {kind!r}")
    weights = path / WEIGHTS_FILE if (path / WEIGHTS_FILE).is_file() else path / ONNX_FILE
    if not weights.is_file():
        raise CheckpointError(f"{path}: no {WEIGHTS_FILE} or {ONNX_FILE}")
    labels = task.get("labels") if task else None
    return ModelEntry(
        name=name,
        path=path,
        task=kind,
        model_type=config.model_type,
        labels=list(labels) if isinstance(labels, list) else None,
        language=_language(path, task),
        size_bytes=weights.stat().st_size,
        quantization=getattr(config, "quantization", None),
        max_length=int((task or {}).get("max_length", config.max_position)),
        onnx=weights.name == ONNX_FILE,
        hidden=hidden,
    )


def scan(root: Path) -> tuple[dict[str, ModelEntry], dict[str, Path]]:
    """Checkpoints and vector indexes under ``root`` (up to three levels deep).

    A checkpoint is named by its directory's path relative to ``root``, without a trailing
    ``checkpoint`` (``runs/ner-zh/checkpoint`` -> ``ner-zh``); of a training run only that final
    checkpoint is served (not ``best/`` or ``checkpoints/step-*``). A directory that cannot be read
    as a checkpoint is skipped with a warning, so that one broken run does not stop a server.
    """
    models: dict[str, ModelEntry] = {}
    indexes: dict[str, Path] = {}
    if not root.is_dir():
        raise LlmosError(f"models directory {root} does not exist")

    def visit(d: Path, depth: int) -> None:
        rel = d.relative_to(root)
        parts = rel.parts[:-1] if rel.parts and rel.parts[-1] == "checkpoint" else rel.parts
        name = "/".join(parts) or d.resolve().name
        if (d / CONFIG_FILE).is_file():
            try:
                models[name] = describe(name, d)
            except LlmosError as e:
                log.warning("skipping %s: %s", d, e)
            return
        if (d / "meta.json").is_file() and (d / "ids.json").is_file():
            indexes[name] = d
            return
        if (d / "checkpoint" / CONFIG_FILE).is_file():  # a training run: its final model only
            visit(d / "checkpoint", depth + 1)
            return
        if depth >= MAX_DEPTH:
            return
        for child in sorted(d.iterdir()):
            if child.is_dir() and not child.name.startswith(".") and child.name not in SKIP_DIRS:
                visit(child, depth + 1)

    visit(root, 0)
    return models, indexes


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


# --- batch functions (run in the model's thread) -------------------------------------------


def _split(flat: list[Any], sizes: list[int]) -> list[list[Any]]:
    out, i = [], 0
    for n in sizes:
        out.append(flat[i : i + n])
        i += n
    return out


def run_batch(pipe: Any, indexes: dict[str, Any], key: Hashable, payloads: list[Any]) -> list[Any]:
    """One forward pass for a batch of same-key requests; one result per payload."""
    op = key[0]
    sizes = [len(p["texts"]) for p in payloads] if op in ("classify", "tag", "embed") else []
    texts = [t for p in payloads for t in p["texts"]] if sizes else []
    batch_size = max(32, len(texts))
    if op == "classify":
        pairs = [t for p in payloads for t in p["texts_b"]] if key[1] else None
        return _split(pipe.classify(texts, pairs, batch_size=batch_size), sizes)
    if op == "tag":
        return _split(pipe.tag(texts, batch_size=batch_size), sizes)
    if op == "embed":
        _, pooling, normalize = key
        vectors = pipe.embed(texts, pooling=pooling, normalize=normalize, batch_size=batch_size)
        return _split(vectors.tolist(), sizes)
    if op == "fill-mask":
        return [pipe.fill_mask(p["text"], top_k=key[1]) for p in payloads]
    if op == "generate":
        options, raw = key[1], key[2]
        out = pipe.generate([p["prompt"] for p in payloads], raw=raw, **dict(options))
        return list(out)
    if op == "stream":
        (p,) = payloads
        pieces = []
        outcome = "error"
        try:
            for piece in pipe.stream(p["prompt"], raw=p["raw"], **p["options"]):
                if p["cancelled"].is_set():  # the client went away: stop decoding
                    outcome = "client_closed"
                    break
                pieces.append(piece)
                p["emit"](piece)
            else:
                outcome = "done"
        finally:
            p["ended"](outcome)
        return ["".join(pieces)]
    if op == "search":
        index, docs = indexes[key[1]]
        queries = [p["query"] for p in payloads]
        k = max(p["k"] for p in payloads)
        hits = index.search(pipe.embed(queries, batch_size=batch_size), k)
        return [
            [{"id": i, "score": s, "text": docs.get(i, "")} for i, s in row[: p["k"]]]
            for row, p in zip(hits, payloads, strict=True)
        ]
    raise ValueError(f"unknown operation {op!r}")


def isolating(run: Callable[[Hashable, list[Any]], list[Any]]) -> Callable:
    """A batch function that, when a batch of several requests fails, runs them one by one so
    that one bad request fails alone (its exception becomes its result)."""

    def wrapped(key: Hashable, payloads: list[Any]) -> list[Any]:
        try:
            return run(key, payloads)
        except Exception:
            if len(payloads) == 1:
                raise
        out: list[Any] = []
        for p in payloads:
            try:
                out.extend(run(key, [p]))
            except Exception as e:
                out.append(e)
        return out

    return wrapped


class Registry:
    """Models by name, loaded on demand within a memory budget (least recently used out)."""

    def __init__(self, settings: ServeSettings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.budget = int(settings.memory_budget_mb * 2**20)
        self.metrics = metrics
        self.models: dict[str, ModelEntry] = {}
        self.indexes: dict[str, IndexEntry] = {}
        self.loaded: collections.OrderedDict[str, Loaded] = collections.OrderedDict()
        self._index_data: dict[str, Any] = {}
        self._locks: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self.loads = 0
        self.evictions = 0

    # --- discovery -------------------------------------------------------------------------

    def rescan(self) -> None:
        """Read the models directory again (new checkpoints appear; loaded ones stay)."""
        models, index_dirs = scan(self.settings.models_dir)
        by_path = {e.path.resolve(): name for name, e in models.items()}
        indexes: dict[str, IndexEntry] = {}
        for name, d in index_dirs.items():
            try:
                meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
                ckpt = Path(meta["source"]["checkpoint"]).resolve()
                model = by_path.get(ckpt)
                if model is None:  # the encoder lives elsewhere: serve it under a hidden name
                    model = f"index:{name}"
                    models[model] = describe(model, ckpt, hidden=True)
                indexes[name] = IndexEntry(name, d, model, int(meta["count"]), int(meta["dim"]))
            except (LlmosError, OSError, KeyError, ValueError, TypeError) as e:
                log.warning("skipping index %s: %s", d, e)
        self.models, self.indexes = models, indexes
        log.info(
            "serving %d models and %d indexes from %s",
            sum(not m.hidden for m in models.values()),
            len(indexes),
            self.settings.models_dir,
        )

    def entry(self, name: str) -> ModelEntry:
        e = self.models.get(name)
        if e is None:
            visible = sorted(n for n, m in self.models.items() if not m.hidden)
            raise UnknownModel(
                f"no model named {name!r} (GET /v1/models lists them; this server has: "
                f"{', '.join(visible[:20]) or 'none'})"
            )
        return e

    def index(self, name: str) -> IndexEntry:
        e = self.indexes.get(name)
        if e is None:
            raise UnknownModel(
                f"no index named {name!r} (this server has: {', '.join(sorted(self.indexes))}"
                f"{'' if self.indexes else 'none'})"
            )
        return e

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
        if entry.size_bytes > self.budget:
            raise LlmosError(
                f"model {entry.name!r} needs {entry.size_bytes / 2**20:.0f} MiB, more than the "
                f"server's whole memory budget of {self.budget / 2**20:.0f} MiB"
            )
        await self._make_room(entry.size_bytes, keep=entry.name)
        from llmos.inference.pipeline import Pipeline

        started = time.monotonic()
        pipe = await asyncio.to_thread(Pipeline.from_checkpoint, entry.path)
        index_data = {}
        for ix in self.indexes.values():
            if ix.model == entry.name:
                index_data[ix.name] = await asyncio.to_thread(self._open_index, ix)
        nbytes = model_bytes(pipe)
        run = isolating(lambda key, payloads: run_batch(pipe, index_data, key, payloads))
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

    @staticmethod
    def _open_index(ix: IndexEntry) -> tuple[Any, dict[str, str]]:
        from llmos.recipes.search import read_docs
        from llmos.store.vectors import VectorIndex

        return VectorIndex.load(ix.path), read_docs(ix.path)

    async def _make_room(self, incoming: int, keep: str) -> None:
        while self.used_bytes + incoming > self.budget:
            victim = next((n for n in self.loaded if n != keep), None)
            if victim is None:
                return
            await self.unload(victim)
            self.evictions += 1
            if self.metrics:
                self.metrics.evictions.inc()

    async def unload(self, name: str) -> bool:
        """Unload a model: its queued requests are served first, then its memory is freed."""
        m = self.loaded.pop(name, None)
        if m is None:
            return False
        await m.batcher.close()
        del m
        gc.collect()
        log.info("unloaded %s; %.1f MiB in use", name, self.used_bytes / 2**20)
        return True

    async def close(self) -> None:
        for name in list(self.loaded):
            await self.unload(name)
