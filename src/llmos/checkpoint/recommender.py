"""Recommender checkpoints: the language models' directory layout, for a catalog's item models.

::

    config.json         {"model_type": "item-recommender", "num_items": N, "content_dim": D,
                        "sasrec": {...} or null (the sequential model's sizes),
                        "ranker": {"features": [...], "hidden": H} or null}
    model.safetensors   "ease.weight" (N, N), "popularity.counts" (N,), and, when the
                        catalog's text was embedded, "content.vectors" (N, D) unit rows;
                        with a sequential model, its weights under "sasrec."; with a
                        learned ranker (llmos.models.ranker), its under "ranker."; with an
                        MF model, its item vectors "mf.items" (N, dim); when it was
                        trained on an interactions file, those interactions (M of them):
                        "train.user" (M,) int64 (the file's users numbered from 0),
                        "train.item" (M,) int64 (rows of items.jsonl) and "train.time" (M,)
                        float64 (seconds, NaN for none)
    items.jsonl         the catalog in model order, one {"id", "title", "text", "tags"} a line
    task.json           {"task": "recommendation", "catalog": NAME, "revision": HEX, ...}:
                        what it was trained on and how (the EASE ``reg``, the popularity
                        half-life, the encoder that embedded the items and the prefix its
                        queries take); ``revision`` is new at every write (see below)

The ``train.*`` tensors make a checkpoint self-contained: it can be retrained later (new
store events, a changed catalog) without the file it was trained on (``llmos recommend
retrain``, the server's ``POST /v1/apps/recommend/train``). They are optional: a checkpoint
written before they were kept, or trained on store events only, has none and still loads. The
store's events are not kept here: they stay in the store and are read again at each retraining.

Written atomically like every checkpoint (a temp directory renamed into place), read through
safetensors only. Each write gives ``task.json`` a new random ``revision``: a server that
serves the checkpoint reads that small file to learn that another process (a background job,
``llmos recommend train``) rewrote it (:func:`read_revision`), whatever the file times say.
The server's model scan lists it (task ``recommendation``) next to the language models; the
recommendation app loads it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from llmos import __version__
from llmos.data.interactions import Item, read_jsonl_items
from llmos.errors import CheckpointError, DataError
from llmos.files import atomic_directory

MODEL_TYPE = "item-recommender"
TASK = "recommendation"
ITEMS_FILE = "items.jsonl"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TASK_FILE = "task.json"
REQUIRED = ("ease.weight", "popularity.counts")
SASREC = "sasrec."  # the prefix of the sequential model's weights
RANKER = "ranker."  # the prefix of the learned ranker's weights
# The interactions of the file it was trained on (optional, all three or none), with their
# dtypes: ids and item rows stay exact, and seconds since 1970 need more than float32's 24 bits.
TRAIN = {"train.user": torch.int64, "train.item": torch.int64, "train.time": torch.float64}


@dataclass(frozen=True)
class RecommenderCheckpoint:
    """A recommender checkpoint, read: the catalog, the weights and ``task.json``."""

    path: Path
    items: tuple[Item, ...]
    weights: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    sasrec: dict[str, Any] | None = None  # SASRecConfig's fields, when it has one
    ranker: dict[str, Any] | None = None  # RankerConfig's fields, when it has one

    @property
    def catalog(self) -> str:
        return str(self.meta.get("catalog", "default"))

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def revision(self) -> str | None:
        """The write it comes from (:func:`read_revision`); None for a checkpoint written
        before revisions were."""
        value = self.meta.get("revision")
        return str(value) if value is not None else None

    @property
    def interactions(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """The interactions of the file it was trained on, ``(user, item, time)`` (item: a row
        of :attr:`items`), or None when it keeps none (see the module docstring)."""
        if "train.item" not in self.weights:
            return None
        return self.weights["train.user"], self.weights["train.item"], self.weights["train.time"]


def is_recommender(path: str | Path) -> bool:
    """Whether ``path/config.json`` names an item recommender (read without the weights)."""
    try:
        raw = json.loads((Path(path) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and raw.get("model_type") == MODEL_TYPE


def save_recommender(
    path: str | Path,
    items: list[Item] | tuple[Item, ...],
    weights: dict[str, torch.Tensor],
    meta: dict[str, Any],
    sasrec: dict[str, Any] | None = None,
    ranker: dict[str, Any] | None = None,
) -> Path:
    """Write a recommender checkpoint to ``path`` (replaced if it exists), atomically;
    ``sasrec``: the sequential model's config fields (its weights are the ``sasrec.`` ones);
    ``ranker``: the learned ranker's (its weights: the ``ranker.`` ones)."""
    _check(Path(path), list(items), weights)
    content = weights.get("content.vectors")

    def fill(tmp: Path) -> None:
        config = {
            "model_type": MODEL_TYPE,
            "num_items": len(items),
            "content_dim": int(content.shape[1]) if content is not None else None,
            "sasrec": sasrec,
            "ranker": ranker,
            "llmos_version": __version__,
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        tensors = {
            k: v.detach().to(TRAIN.get(k, torch.float32)).contiguous().cpu()
            for k, v in weights.items()
        }
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        lines = [
            json.dumps(
                {"id": i.id, "title": i.title, "text": i.text, "tags": list(i.tags)},
                ensure_ascii=False,
            )
            for i in items
        ]
        (tmp / ITEMS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
        task = {"task": TASK, **meta, "revision": uuid.uuid4().hex}
        (tmp / TASK_FILE).write_text(
            json.dumps(task, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
        )

    return atomic_directory(Path(path), fill)


def _check(path: Path, items: list[Item], weights: dict[str, torch.Tensor]) -> None:
    """The weights fit the catalog: every required tensor, every shape over ``len(items)``."""
    n = len(items)
    for name in REQUIRED:
        if name not in weights:
            raise CheckpointError(f"{path / WEIGHTS_FILE}: no {name!r} tensor")
    shapes = {"ease.weight": (n, n), "popularity.counts": (n,)}
    for name, shape in shapes.items():
        if tuple(weights[name].shape) != shape:
            raise CheckpointError(
                f"{path / WEIGHTS_FILE}: {name!r} has shape {tuple(weights[name].shape)}, "
                f"the catalog of {n} items needs {shape}"
            )
    content = weights.get("content.vectors")
    if content is not None and (content.ndim != 2 or content.shape[0] != n):
        raise CheckpointError(
            f"{path / WEIGHTS_FILE}: 'content.vectors' has shape {tuple(content.shape)}, "
            f"expected ({n}, dim)"
        )
    mf = weights.get("mf.items")
    if mf is not None and (mf.ndim != 2 or mf.shape[0] != n):
        raise CheckpointError(
            f"{path / WEIGHTS_FILE}: 'mf.items' has shape {tuple(mf.shape)}, expected ({n}, dim)"
        )
    _check_interactions(path, n, weights)
    unknown = sorted(
        k
        for k in set(weights) - {*REQUIRED, *TRAIN, "content.vectors", "mf.items"}
        if not k.startswith((SASREC, RANKER))
    )
    if unknown:
        raise CheckpointError(f"{path / WEIGHTS_FILE}: unexpected tensors {unknown[:5]}")
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise CheckpointError(f"{path / ITEMS_FILE}: item id {dup!r} appears twice")


def _check_interactions(path: Path, n: int, weights: dict[str, torch.Tensor]) -> None:
    """The ``train.*`` tensors: all three or none, 1-D, of one length, integer ids, every item
    a row of the catalog."""
    have = [k for k in TRAIN if k in weights]
    if not have:
        return
    if len(have) != len(TRAIN):
        missing = sorted(set(TRAIN) - set(have))
        raise CheckpointError(f"{path / WEIGHTS_FILE}: {have} without {missing}")
    lengths = {tuple(weights[k].shape) for k in TRAIN}
    if len(lengths) != 1 or len(next(iter(lengths))) != 1:
        shapes = {k: tuple(weights[k].shape) for k in TRAIN}
        raise CheckpointError(f"{path / WEIGHTS_FILE}: the train.* tensors' shapes {shapes} differ")
    for k in ("train.user", "train.item"):
        if weights[k].is_floating_point() or weights[k].is_complex():
            raise CheckpointError(f"{path / WEIGHTS_FILE}: {k!r} must hold integers")
    item, user = weights["train.item"], weights["train.user"]
    if len(item) and (int(item.min()) < 0 or int(item.max()) >= n or int(user.min()) < 0):
        raise CheckpointError(
            f"{path / WEIGHTS_FILE}: 'train.item' must hold rows of the {n}-item catalog and "
            "'train.user' indexes from 0"
        )


def _json_object(f: Path) -> dict[str, Any]:
    if not f.is_file():
        raise CheckpointError(f"{f}: not found (a recommender checkpoint has it)")
    try:
        raw = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{f}: corrupt JSON ({e})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{f}: expected a JSON object")
    return raw


def read_items(f: Path) -> tuple[Item, ...]:
    """``items.jsonl`` (:func:`~llmos.data.interactions.read_jsonl_items`; errors name the
    line)."""
    if not f.is_file():
        raise CheckpointError(f"{f}: not found (a recommender checkpoint has it)")
    try:
        return tuple(read_jsonl_items(f))
    except DataError as e:
        raise CheckpointError(str(e)) from None


def read_task(path: str | Path) -> dict[str, Any]:
    """A recommender checkpoint's ``task.json`` (what it was trained on and what was
    measured), read without its weights."""
    return _json_object(Path(path) / TASK_FILE)


def read_revision(path: str | Path) -> str | None:
    """The ``revision`` of the checkpoint at ``path`` (new at every write; None for one
    written before revisions were), from ``task.json`` alone.

    Raises:
        CheckpointError: no readable ``task.json`` there.
    """
    value = read_task(path).get("revision")
    return str(value) if value is not None else None


def read_recommender(path: str | Path) -> RecommenderCheckpoint:
    """Read and check a recommender checkpoint (errors name the file and what is wrong)."""
    path = Path(path)
    config = _json_object(path / CONFIG_FILE)
    if config.get("model_type") != MODEL_TYPE:
        raise CheckpointError(
            f"{path / CONFIG_FILE}: model_type is {config.get('model_type')!r}, a recommender "
            f"checkpoint has {MODEL_TYPE!r}"
        )
    meta = _json_object(path / TASK_FILE)
    if meta.pop("task", None) != TASK:
        raise CheckpointError(f"{path / TASK_FILE}: field 'task' must be {TASK!r}")
    items = read_items(path / ITEMS_FILE)
    f = path / WEIGHTS_FILE
    if not f.is_file():
        raise CheckpointError(f"{f}: not found")
    try:
        weights = load_file(str(f))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{f}: corrupt safetensors file ({e})") from None
    _check(path, list(items), weights)
    sasrec = config.get("sasrec")
    if sasrec is not None and not isinstance(sasrec, dict):
        raise CheckpointError(f"{path / CONFIG_FILE}: 'sasrec' must be an object or null")
    if sasrec is not None and not any(k.startswith(SASREC) for k in weights):
        raise CheckpointError(f"{path / WEIGHTS_FILE}: 'sasrec' is configured but has no weights")
    ranker = config.get("ranker")
    if ranker is not None and not (
        isinstance(ranker, dict)
        and isinstance(ranker.get("features"), list)
        and any(k.startswith(RANKER) for k in weights)
    ):
        raise CheckpointError(
            f"{path / CONFIG_FILE}: 'ranker' must be null or {{\"features\": [...], "
            f"\"hidden\": H}} with 'ranker.' weights in {WEIGHTS_FILE}"
        )
    return RecommenderCheckpoint(path, items, weights, meta, sasrec, ranker)
