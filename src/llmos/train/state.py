"""Training state for exact resume, saved without pickle.

``state/`` inside a checkpoint holds ``optimizer.safetensors`` + ``optimizer.json`` (tensors and
the rest of the optimizer's state dict), ``scheduler.json``, ``rng.safetensors`` (torch CPU and
CUDA generator states) and ``trainer.json`` (step, data position, metric history).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from llmos.errors import CheckpointError

STATE_DIR = "state"


def _flatten_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for idx, entry in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_state(
    ckpt_dir: Path,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    trainer: dict[str, Any],
) -> None:
    """Write ``ckpt_dir/state/`` (called inside the checkpoint's temp directory)."""
    d = Path(ckpt_dir) / STATE_DIR
    d.mkdir(parents=True, exist_ok=True)
    tensors, meta = _flatten_optimizer(optimizer.state_dict())
    save_file(tensors, str(d / "optimizer.safetensors"))
    (d / "optimizer.json").write_text(json.dumps(meta))
    (d / "scheduler.json").write_text(json.dumps(scheduler.state_dict()))
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"cuda.{i}"] = s
    save_file(rng, str(d / "rng.safetensors"))
    (d / "trainer.json").write_text(json.dumps(trainer, indent=1))


def load_state(
    ckpt_dir: Path,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict[str, Any]:
    """Restore optimizer, scheduler and RNG from ``ckpt_dir/state/``; return the trainer dict."""
    d = Path(ckpt_dir) / STATE_DIR
    try:
        tensors = load_file(str(d / "optimizer.safetensors"))
        meta = json.loads((d / "optimizer.json").read_text())
        optimizer.load_state_dict(_unflatten_optimizer(tensors, meta))
        scheduler.load_state_dict(json.loads((d / "scheduler.json").read_text()))
        rng = load_file(str(d / "rng.safetensors"))
        trainer = json.loads((d / "trainer.json").read_text())
    except (OSError, SafetensorError, json.JSONDecodeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{d}: training state is missing or corrupt ({e})") from None
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available():
        states = [rng[k] for k in sorted(rng) if k.startswith("cuda.")]
        if states:
            torch.cuda.set_rng_state_all(states)
    return trainer
