"""Model discovery: what the server can serve, read from the models directory without loading
any weights.

Scanning reads only the small files of each checkpoint (``config.json``, ``task.json``, the
tokenizer when needed) so that a server with many checkpoints starts at once. The result is a
:class:`Catalog`: every servable model (:class:`ModelEntry`) and vector index
(:class:`IndexEntry`) by name. The registry (``serve/registry.py``) loads what the catalog names.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from llmos.checkpoint.clip import is_clip, read_clip, text_encoder_path
from llmos.checkpoint.io import CONFIG_FILE, WEIGHTS_FILE, Checkpoint, read_checkpoint
from llmos.checkpoint.recommender import ITEMS_FILE, is_recommender, read_items
from llmos.checkpoint.task import Classification, MaskedLM, Tagging
from llmos.errors import CheckpointError, LlmosError
from llmos.inference.onnx import ONNX_FILE
from llmos.store.vectors import IDS_FILE, META_FILE

log = logging.getLogger("llmos.serve")

MAX_DEPTH = 3
SKIP_DIRS = {"state", "plots", "__pycache__"}
# Tasks (task.json, or the kind of a pretrained checkpoint) -> the routes a model serves.
CAPABILITIES = {
    "classification": ("classify", "embed"),
    "tagging": ("tag", "embed"),
    "embedding": ("embed",),
    "multitask": ("embed",),  # its heads serve the apps (AnalyzeOp), not a route of their own
    "spelling": ("correct", "embed"),
    "fill-mask": ("fill-mask", "embed"),
    "generation": ("generate",),
    "instruct": ("generate",),
    "recommendation": ("apps/recommend",),  # loaded by the recommendation app, not a batcher
    # image-text (issue 22): images and texts into one space (/v1/embed), zero-shot image
    # classification (/v1/classify with images and labels), emoji names of an image, emoji
    # images of a text (serve/routes/images.py)
    "clip": ("embed", "classify", "images/describe", "images/search"),
}
ZH_PROBE = "今天天气很好，我们一起去公园散步，然后在附近的饭店吃午饭。"


class UnknownModel(LlmosError):
    """No model (or index) of that name under the models directory."""


@dataclass
class ModelEntry:
    """What the server knows of a checkpoint without loading its weights."""

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
    mlm_head: bool = False  # an embedding encoder that also carries a masked-LM head

    @property
    def capabilities(self) -> tuple[str, ...]:
        caps = CAPABILITIES[self.task]
        if self.onnx:
            caps = tuple(c for c in caps if c != "embed" or self.task == "embedding")
        elif self.task == "embedding" and self.mlm_head:  # e5-zh-mlm: embeds and fills blanks
            caps = (*caps, "fill-mask")
        return caps


@dataclass
class IndexEntry:
    """A saved vector index and the registry name of the encoder that embeds its queries."""

    name: str
    path: Path
    model: str
    count: int
    dim: int


def _language(ckpt: Checkpoint) -> str:
    """``task.json``'s ``language``, else ``zh`` when the tokenizer encodes Chinese compactly
    (>= 0.9 characters a token; byte-level tokenizers not trained on Chinese give ~0.4), else
    ``en``; ``unknown`` without a readable tokenizer."""
    language = ckpt.task.extra.get("language")
    if isinstance(language, str):
        return language  # the tokenizer is not read at all
    try:
        tokenizer = ckpt.tokenizer
    except Exception:  # an unreadable tokenizer fails later, at load, with its own message
        return "unknown"
    ids = tokenizer.encode(ZH_PROBE, add_special_tokens=False).ids
    unk = tokenizer.token_to_id("[UNK]")
    known = [i for i in ids if i != unk]
    return "zh" if known and len(ZH_PROBE) / len(ids) >= 0.9 and len(known) == len(ids) else "en"


def _kind(ckpt: Checkpoint) -> str:
    """The catalog's name for what the checkpoint does (a key of :data:`CAPABILITIES`): a
    pretrained encoder serves fill-mask, unless it has no MLM head (then it only embeds)."""
    match ckpt.task:
        case MaskedLM():
            return "embedding" if getattr(ckpt.config, "heads", None) == "none" else "fill-mask"
        case spec:
            return spec.kind  # classification, tagging, embedding, spelling, instruct, generation


def describe_model(name: str, path: Path, hidden: bool = False) -> ModelEntry:
    """The catalog entry of the checkpoint directory ``path``, served as ``name``.

    This is the one place discovery reads a checkpoint: :func:`read_checkpoint` (config.json
    and task.json, validated), the tokenizer only when task.json names no language, and the
    weights file's size.

    Raises:
        CheckpointError: the directory cannot be read as a checkpoint, or its task does not fit
            its model.
    """
    if is_recommender(path):
        return _describe_recommender(name, path, hidden)
    if is_clip(path):
        return _describe_clip(name, path, hidden)
    ckpt = read_checkpoint(path)
    kind = _kind(ckpt)
    weights = path / WEIGHTS_FILE if (path / WEIGHTS_FILE).is_file() else path / ONNX_FILE
    if not weights.is_file():
        raise CheckpointError(f"{path}: no {WEIGHTS_FILE} or {ONNX_FILE}")
    labels = ckpt.task.labels if isinstance(ckpt.task, Classification | Tagging) else None
    return ModelEntry(
        name=name,
        path=path,
        task=kind,
        model_type=ckpt.config.model_type,
        labels=list(labels) if labels is not None else None,
        language=_language(ckpt),
        size_bytes=weights.stat().st_size,
        quantization=getattr(ckpt.config, "quantization", None),
        max_length=ckpt.max_length,
        onnx=weights.name == ONNX_FILE,
        hidden=hidden,
        mlm_head=getattr(ckpt.config, "heads", "none") != "none",
    )


def _describe_recommender(name: str, path: Path, hidden: bool) -> ModelEntry:
    """A recommender checkpoint's entry (``llmos.checkpoint.recommender``): its catalog file
    is read (a broken one is skipped here rather than failing at first use), not its weights;
    it has no input length (``max_length`` 0)."""
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{path}: no {WEIGHTS_FILE}")
    read_items(path / ITEMS_FILE)
    return ModelEntry(
        name=name,
        path=path,
        task="recommendation",
        model_type="item-recommender",
        labels=None,
        language="any",
        size_bytes=weights.stat().st_size,
        quantization=None,
        max_length=0,
        hidden=hidden,
    )


def _describe_clip(name: str, path: Path, hidden: bool) -> ModelEntry:
    """A CLIP checkpoint's entry (``llmos.checkpoint.clip``): its size counts the text tower
    it loads too, when that is found now (else it is looked for again at load)."""
    ckpt = read_clip(path)
    size = (path / WEIGHTS_FILE).stat().st_size
    with contextlib.suppress(CheckpointError, OSError):
        size += (text_encoder_path(ckpt) / WEIGHTS_FILE).stat().st_size
    language = ckpt.meta.get("language")
    return ModelEntry(
        name=name,
        path=path,
        task="clip",
        model_type="clip",
        labels=None,
        language=language if isinstance(language, str) else "any",
        size_bytes=size,
        quantization=None,
        max_length=0,
        hidden=hidden,
    )


def scan(root: Path) -> tuple[dict[str, ModelEntry], dict[str, Path]]:
    """Checkpoints and vector index directories under ``root`` (up to three levels deep).

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
                models[name] = describe_model(name, d)
            except LlmosError as e:
                log.warning("skipping %s: %s", d, e)
            return
        if (d / META_FILE).is_file() and (d / IDS_FILE).is_file():
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


@dataclass
class Catalog:
    """Every model and index a server can serve, by name (hidden models included)."""

    models: dict[str, ModelEntry] = field(default_factory=dict)
    indexes: dict[str, IndexEntry] = field(default_factory=dict)

    @classmethod
    def read(cls, root: Path) -> Catalog:
        """The catalog of the models directory ``root``. An index whose encoder lives outside
        ``root`` brings that encoder in under the hidden name ``index:NAME``; an index that
        cannot be read is skipped with a warning."""
        models, index_dirs = scan(root)
        by_path = {e.path.resolve(): name for name, e in models.items()}
        indexes: dict[str, IndexEntry] = {}
        for name, d in index_dirs.items():
            try:
                meta = json.loads((d / META_FILE).read_text(encoding="utf-8"))
                ckpt = Path(meta["source"]["checkpoint"]).resolve()
                model = by_path.get(ckpt)
                if model is None:  # the encoder lives elsewhere: serve it under a hidden name
                    model = f"index:{name}"
                    models[model] = describe_model(model, ckpt, hidden=True)
                indexes[name] = IndexEntry(name, d, model, int(meta["count"]), int(meta["dim"]))
            except (LlmosError, OSError, KeyError, ValueError, TypeError) as e:
                log.warning("skipping index %s: %s", d, e)
        return cls(models, indexes)

    def entry(self, name: str) -> ModelEntry:
        """The model ``name`` (:class:`UnknownModel`, listing the visible ones, if none)."""
        e = self.models.get(name)
        if e is None:
            visible = sorted(n for n, m in self.models.items() if not m.hidden)
            raise UnknownModel(
                f"no model named {name!r} (GET /v1/models lists them; this server has: "
                f"{', '.join(visible[:20]) or 'none'})"
            )
        return e

    def encoder(self, name: str) -> ModelEntry:
        """The model ``name`` if it embeds (:class:`UnknownModel` if it is missing or does
        not): what a knowledge base may search with."""
        e = self.entry(name)
        if "embed" not in e.capabilities:
            raise UnknownModel(f"{name!r} is a {e.task} model, which does not embed")
        return e

    def index(self, name: str) -> IndexEntry:
        """The index ``name`` (:class:`UnknownModel`, listing the others, if none)."""
        e = self.indexes.get(name)
        if e is None:
            raise UnknownModel(
                f"no index named {name!r} (this server has: {', '.join(sorted(self.indexes))}"
                f"{'' if self.indexes else 'none'})"
            )
        return e
