"""CLIP checkpoints (issue 22), read without their weights: what ``llmos pretrain`` writes
for ``model.model_type: clip``.

::

    config.json         the CLIPConfig: the ViT's sizes, the projections, and
                        ``text_encoder``, the frozen text tower's checkpoint as it was given
                        (often relative: ``runs/e5-zh``)
    model.safetensors   the ViT, both projections and the temperature (not the text tower)
    task.json           the training meta: ``{"task": "clip", "text_encoder", "text_kind",
                        "text_encoder_digest", "train_styles", "eval_style", ...}``

No ``tokenizer.json``: text goes through the text tower, another checkpoint, whose vectors
the checkpoint's ``text_projection`` was trained on. :func:`text_encoder_path` finds that
tower; :func:`check_text_encoder` refuses one with other weights than those it was trained
with, when ``task.json`` recorded their digest (``text_encoder_digest``; runs before it was
recorded are not checked). No torch here, so the server's model scan stays cheap.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmos.checkpoint.digest import WEIGHTS_FILE, weights_digest
from llmos.config.loader import from_dict
from llmos.config.model import CLIPConfig
from llmos.errors import CheckpointError, ConfigError

CONFIG_FILE, TASK_FILE = "config.json", "task.json"
MODEL_TYPE = "clip"


def is_clip(path: str | Path) -> bool:
    """Whether ``path/config.json`` names a CLIP model (read without the weights)."""
    try:
        raw = json.loads((Path(path) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and raw.get("model_type") == MODEL_TYPE


@dataclass(frozen=True)
class ClipCheckpoint:
    """A CLIP checkpoint directory, read: its config and its training meta.

    Attributes:
        path: the directory.
        config: the architecture, ``text_encoder`` as it was given at training.
        meta: ``task.json`` (``{}`` when missing): ``text_kind``, ``text_encoder_digest``,
            ``train_styles``, ``eval_style``, ...
    """

    path: Path
    config: CLIPConfig
    meta: dict[str, Any]

    @property
    def text_kind(self) -> str:
        """The prefix kind the captions were embedded with (``query``/``passage``)."""
        return str(self.meta.get("text_kind") or self.config.text_kind)


def _read_json(f: Path) -> Any:
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{f}: corrupt JSON ({e})") from None


def read_clip(path: str | Path) -> ClipCheckpoint:
    """Read and validate ``config.json`` and ``task.json`` of a CLIP checkpoint directory.

    Raises:
        CheckpointError: naming the file: not a directory, no ``config.json`` or weights, a
            corrupt file, not a CLIP config, or an invalid field.
    """
    path = Path(path)
    f = path / CONFIG_FILE
    if not f.is_file() or not (path / WEIGHTS_FILE).is_file():
        raise CheckpointError(
            f"{path}: not a CLIP checkpoint (expected a directory with {CONFIG_FILE} and "
            f"{WEIGHTS_FILE}, written by `llmos pretrain` with model.model_type clip)"
        )
    raw = _read_json(f)
    if not isinstance(raw, dict) or raw.get("model_type") != MODEL_TYPE:
        raise CheckpointError(f"{f}: expected a JSON object with model_type {MODEL_TYPE!r}")
    raw.pop("llmos_version", None)
    try:
        config = from_dict(CLIPConfig, raw, source=str(f))
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    meta = _read_json(path / TASK_FILE) if (path / TASK_FILE).is_file() else {}
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path / TASK_FILE}: expected a JSON object")
    return ClipCheckpoint(path, config, meta)


def text_encoder_path(ckpt: ClipCheckpoint, override: str | os.PathLike[str] | None = None) -> Path:
    """The text tower's checkpoint directory.

    ``override`` when given (it must exist); else ``config.json``'s ``text_encoder``: as is
    when absolute, else relative to the working directory, else relative to the checkpoint
    directory's parents, nearest first (``runs/e5-zh`` from ``runs/clip-emoji/checkpoint``
    is found from any working directory, the run having been trained from the repository
    root).

    Raises:
        CheckpointError: no such directory, saying where it looked and how to override.
    """
    if override is not None:
        given = Path(override).expanduser()
        if not (given / CONFIG_FILE).is_file():
            raise CheckpointError(f"text encoder {given}: not a checkpoint directory")
        return given
    name = Path(ckpt.config.text_encoder).expanduser()
    if name.is_absolute():
        candidates = [name]
    else:
        base = ckpt.path.resolve()
        candidates = [Path.cwd() / name, *(parent / name for parent in base.parents)]
    for c in candidates:
        if (c / CONFIG_FILE).is_file():
            return c
    where = "" if name.is_absolute() else " under the working directory or the checkpoint's parents"
    raise CheckpointError(
        f"{ckpt.path / CONFIG_FILE}: its text tower {str(name)!r} was not found{where}; pass "
        "the text encoder checkpoint the model was trained with (text_encoder=PATH, on the "
        "command line --text-encoder PATH)"
    )


def check_text_encoder(ckpt: ClipCheckpoint, tower: Path, digest: str | None = None) -> None:
    """Refuse a text tower with other weights than the one ``text_projection`` was trained
    on, when ``task.json`` recorded that one's digest. ``digest``: the tower's
    :func:`~llmos.checkpoint.digest.weights_digest`, when the caller has it already.

    Raises:
        CheckpointError: the digests differ (both named, and what to do).
    """
    want = ckpt.meta.get("text_encoder_digest")
    if not want:
        return
    have = digest or weights_digest(tower)
    if have != want:
        raise CheckpointError(
            f"{ckpt.path}: its text projection was trained on the vectors of a text tower "
            f"with weights {want}, but {tower} has {have or f'no {WEIGHTS_FILE}'}; pass that "
            "tower's checkpoint (text_encoder=PATH, --text-encoder PATH)"
        )
