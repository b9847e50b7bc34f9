"""The llmos checkpoint format: a directory written atomically, read once into a typed
:class:`Checkpoint`.

::

    config.json         architecture and sizes (``model_type`` picks the class)
    model.safetensors   weights (safetensors only: nothing is ever unpickled)
    tokenizer.json      the tokenizer, so a checkpoint is self-contained
    task.json           fine-tuned models only: task type and label names (see
                        :mod:`llmos.checkpoint.task`)

A directory is first written as ``.tmp-<name>-<pid>`` beside its target and renamed into place,
so a crash mid-write never leaves a half checkpoint under the final name.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from llmos import __version__
from llmos.checkpoint.task import (
    DECODER_TASKS,
    ENCODER_TASKS,
    XLNET_TASKS,
    Generation,
    MaskedLM,
    TaskSpec,
    parse_task,
    task_json,
)
from llmos.config.loader import from_dict, to_dict
from llmos.config.model import UNSET_NOT_SAVED, BertConfig, GPTConfig, ModelConfig, XLNetConfig
from llmos.errors import CheckpointError, ConfigError
from llmos.files import atomic_directory
from llmos.text.tokenizer import load_tokenizer

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = [
    "CONFIG_FILE",
    "ONNX_FILE",
    "TASK_FILE",
    "TOKENIZER_FILE",
    "WEIGHTS_FILE",
    "Checkpoint",
    "load_state_dict_strict",
    "read_checkpoint",
    "read_config",
    "read_weights",
    "require_unquantized",
    "save_checkpoint",
    "tied_weights",
    "write_config",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
TASK_FILE = "task.json"


ONNX_FILE = "model.onnx"


def write_config(directory: Path, config: ModelConfig) -> None:
    """Write ``config.json`` (the architecture, and the llmos version that wrote it)."""
    meta = {k: v for k, v in to_dict(config).items() if v is not None or k not in UNSET_NOT_SAVED}
    meta["llmos_version"] = __version__
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def save_checkpoint(
    out_dir: str | Path,
    model: torch.nn.Module,
    config: ModelConfig,
    tokenizer: Any | None = None,
    task: TaskSpec | dict[str, Any] | None = None,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Save a model as an llmos checkpoint directory, atomically.

    Args:
        out_dir: the checkpoint directory to create (replaced if it exists).
        model: the (unwrapped) model; its ``state_dict`` is saved.
        config: the architecture config, saved as ``config.json``.
        tokenizer: a ``tokenizers.Tokenizer`` saved as ``tokenizer.json``.
        task: what the model does, saved as ``task.json``: a :data:`TaskSpec` (none is
            written for a pretrained one) or the ``task.json`` dict itself.
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
        meta = task if task is None or isinstance(task, dict) else task_json(task)
        if meta is not None:
            (tmp / TASK_FILE).write_text(
                json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
            )
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


MODEL_CONFIGS: dict[str, type] = {
    "bert": BertConfig,
    "roberta": BertConfig,
    "gpt": GPTConfig,
    "xlnet": XLNetConfig,
}


def tied_weights(model: torch.nn.Module) -> dict[str, str]:
    """``{tied weight name: the name it shares storage with}`` (GPT: the output projection and
    the token embeddings). safetensors refuses shared tensors, so only the source is saved."""
    return dict(getattr(model, "tied_weights", {}))


def read_config(path: str | Path) -> ModelConfig:
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


def require_unquantized(path: str | Path, config: ModelConfig, what: str) -> None:
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


def _read_task_json(path: Path) -> Any | None:
    f = path / TASK_FILE
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


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint directory, read once: its architecture, what it was trained to do, and
    the files behind them (weights and tokenizer are read on demand).

    ``task`` is never None: a checkpoint without ``task.json`` is a pretrained one,
    :class:`~llmos.checkpoint.task.MaskedLM` for an encoder and
    :class:`~llmos.checkpoint.task.Generation` for a GPT.
    """

    path: Path
    config: ModelConfig
    task: TaskSpec

    @functools.cached_property
    def tokenizer(self) -> Tokenizer:
        """``tokenizer.json``, loaded on first use.

        Lazy because a model scan (the server reads every checkpoint of its models directory)
        needs config and task only, and a large vocabulary takes a good part of a second and
        tens of MB to load. Loaded once per Checkpoint, then kept."""
        return load_tokenizer(self.path / TOKENIZER_FILE)  # CheckpointError naming the file

    def weights(self) -> dict[str, torch.Tensor]:
        """``model.safetensors``, read anew on every call (the caller owns the tensors)."""
        return read_weights(self.path)

    @property
    def task_json(self) -> dict[str, Any] | None:
        """The ``task.json`` dict (None for a pretrained checkpoint), for code that still
        reads plain dicts."""
        return task_json(self.task)

    @property
    def is_decoder(self) -> bool:
        return isinstance(self.config, GPTConfig)

    @property
    def onnx(self) -> Path | None:
        """``model.onnx`` when this is an ONNX export (no ``model.safetensors``), else None."""
        f = self.path / ONNX_FILE
        return f if f.is_file() and not (self.path / WEIGHTS_FILE).is_file() else None

    @property
    def max_length(self) -> int:
        """The longest input the task was trained on, else the model's context window."""
        return getattr(self.task, "max_length", None) or self.config.max_position


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read and validate ``config.json`` and ``task.json`` of a checkpoint directory.

    Raises:
        CheckpointError: naming the file and the field when the directory is not a checkpoint,
            a file is corrupt, a field is invalid, or the task does not fit the model (a GPT
            classifier, an instruction-tuned BERT).
    """
    path = Path(path)
    config = read_config(path)
    raw = _read_task_json(path)
    source = str(path / TASK_FILE)
    decoder = isinstance(config, GPTConfig)
    if raw is None:
        task: TaskSpec = Generation() if decoder else MaskedLM()
    else:
        task = parse_task(raw, source)
    allowed = (
        DECODER_TASKS
        if decoder
        else XLNET_TASKS
        if isinstance(config, XLNetConfig)
        else ENCODER_TASKS
    )
    if not isinstance(task, allowed):
        names = ", ".join(repr(c.kind) for c in allowed)
        raise CheckpointError(
            f"{source}: field 'task' is {task.kind!r}, which a {config.model_type} model cannot "
            f"do (a {config.model_type} checkpoint takes {names})"
        )
    return Checkpoint(path, config, task)
