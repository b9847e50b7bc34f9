"""The llmos checkpoint format: a directory written atomically.

::

    config.json         architecture and sizes (``model_type`` picks the class)
    model.safetensors   weights (safetensors only: nothing is ever unpickled)
    tokenizer.json      the tokenizer, so a checkpoint is self-contained
    task.json           fine-tuned models only: task type and label names

A directory is first written as ``.tmp-<name>-<pid>`` beside its target and renamed into place,
so a crash mid-write never leaves a half checkpoint under the final name.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from llmos import __version__
from llmos.config.loader import from_dict, to_dict
from llmos.config.model import UNSET_NOT_SAVED, BertConfig, GPTConfig
from llmos.errors import CheckpointError, ConfigError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
TASK_FILE = "task.json"


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` through a temp file and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def atomic_directory(target: Path, fill: Callable[[Path], None]) -> Path:
    """Create ``target`` by filling a temp directory and renaming it into place.

    An existing ``target`` is replaced: it is moved aside first and removed only once the new
    directory is in place.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        fill(tmp)
        _fsync_dir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".old-{target.name}-{os.getpid()}"
        os.replace(target, old)
    os.replace(tmp, target)
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_config(directory: Path, config: BertConfig | GPTConfig) -> None:
    """Write ``config.json`` (the architecture, and the llmos version that wrote it)."""
    meta = {k: v for k, v in to_dict(config).items() if v is not None or k not in UNSET_NOT_SAVED}
    meta["llmos_version"] = __version__
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def save_checkpoint(
    out_dir: str | Path,
    model: torch.nn.Module,
    config: BertConfig | GPTConfig,
    tokenizer: Any | None = None,
    task: dict[str, Any] | None = None,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Save a model as an llmos checkpoint directory, atomically.

    Args:
        out_dir: the checkpoint directory to create (replaced if it exists).
        model: the (unwrapped) model; its ``state_dict`` is saved.
        config: the architecture config, saved as ``config.json``.
        tokenizer: a ``tokenizers.Tokenizer`` saved as ``tokenizer.json``.
        task: task metadata for fine-tuned models, saved as ``task.json``.
        extra: writes more files (training state) into the temp directory before the rename.
    """

    def fill(tmp: Path) -> None:
        write_config(tmp, config)
        tied = tied_weights(model)
        state = {
            k: v.detach().contiguous().cpu()
            for k, v in model.state_dict().items()
            if k not in tied  # a tied weight is stored once, under its source's name
        }
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save(str(tmp / TOKENIZER_FILE))
        if task is not None:
            (tmp / TASK_FILE).write_text(json.dumps(task, ensure_ascii=False, indent=2) + "\n")
        if extra is not None:
            extra(tmp)

    return atomic_directory(Path(out_dir), fill)


def _require(path: Path, name: str) -> Path:
    if not path.is_dir():
        raise CheckpointError(
            f"{path}: not a checkpoint directory (expected a directory with {CONFIG_FILE}, "
            f"{WEIGHTS_FILE}, {TOKENIZER_FILE})"
        )
    f = path / name
    if not f.is_file():
        raise CheckpointError(
            f"{path}: missing {name}; a checkpoint directory holds {CONFIG_FILE}, "
            f"{WEIGHTS_FILE} and {TOKENIZER_FILE}"
        )
    return f


MODEL_CONFIGS: dict[str, type] = {"bert": BertConfig, "roberta": BertConfig, "gpt": GPTConfig}


def tied_weights(model: torch.nn.Module) -> dict[str, str]:
    """``{tied weight name: the name it shares storage with}`` (GPT: the output projection and
    the token embeddings). safetensors refuses shared tensors, so only the source is saved."""
    return dict(getattr(model, "tied_weights", {}))


def read_config(path: str | Path) -> BertConfig | GPTConfig:
    """Read and validate ``config.json`` of a checkpoint directory."""
    f = _require(Path(path), CONFIG_FILE)
    try:
        raw = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{f}: corrupt JSON ({e})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{f}: expected a JSON object")
    raw.pop("llmos_version", None)
    model_type = raw.get("model_type", "bert")
    if model_type not in MODEL_CONFIGS:
        raise CheckpointError(
            f"{f}: unsupported model_type {model_type!r} (supported: {', '.join(MODEL_CONFIGS)})"
        )
    try:
        return from_dict(MODEL_CONFIGS[model_type], raw, source=str(f))
    except ConfigError as e:
        raise CheckpointError(str(e)) from None


def require_unquantized(path: str | Path, config: BertConfig | GPTConfig, what: str) -> None:
    """Quantized checkpoints are for inference: refuse one for ``what`` (fine-tuning, export)."""
    method = getattr(config, "quantization", None)
    if method:
        raise CheckpointError(
            f"{path}: a quantized checkpoint ({method}) is for inference only; {what} needs "
            "the fp32 checkpoint it came from (task.json 'quantized_from')"
        )


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read ``model.safetensors`` of a checkpoint directory."""
    f = _require(Path(path), WEIGHTS_FILE)
    try:
        return load_file(str(f))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{f}: corrupt safetensors file ({e})") from None


def read_task(path: str | Path) -> dict[str, Any] | None:
    """``task.json`` of a checkpoint directory, or None for a pretrained-only checkpoint."""
    f = Path(path) / TASK_FILE
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{f}: corrupt JSON ({e})") from None


def load_state_dict_strict(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Load ``sd`` into ``model``: every key present, none extra, every shape equal (tied
    weights may be absent: they follow their source)."""
    tied = tied_weights(model)
    own = {k: v for k, v in model.state_dict().items() if k not in tied}
    sd = {k: v for k, v in sd.items() if k not in tied}
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"weights do not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for key, value in sd.items():
        if own[key].shape != value.shape:
            raise CheckpointError(
                f"weight {key!r}: shape {tuple(value.shape)}, the model expects "
                f"{tuple(own[key].shape)}"
            )
    model.load_state_dict(sd, strict=False)  # every untied key checked above
