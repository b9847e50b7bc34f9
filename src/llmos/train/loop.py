"""The one training loop every recipe calls (pretraining, fine-tuning, distillation, ...).

A recipe hands it a model and a :class:`TrainTask` (the data stream and the loss); the loop owns
everything else: AdamW and the schedule, gradient accumulation and clipping, bf16 autocast, DDP,
periodic validation, atomic checkpoints with exact resume, metrics.jsonl, the loss plot and the
progress bar.

Loss normalisation: a task's loss for a micro-batch is a *sum* divided by the step's *global*
count of targets (summed over micro-batches and ranks before any backward). So one step gives the
same gradient whether its batch runs in one piece, in accumulation steps or across DDP ranks.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from llmos.checkpoint.io import load_state_dict_strict, read_weights, save_checkpoint
from llmos.config.run import OptimConfig, TrainConfig
from llmos.errors import ConfigError
from llmos.files import atomic_directory, atomic_write
from llmos.models.precision import bf16_supported
from llmos.train import dist as D
from llmos.train.optim import build_optimizer, build_scheduler
from llmos.train.plots import plot_losses
from llmos.train.state import STATE_DIR, load_state, save_state

log = logging.getLogger("llmos.train")

Batch = dict[str, Any]


class TrainTask(Protocol):
    """What a recipe gives the loop."""

    def steps(self, info: D.DistInfo, micro_batch: int) -> Iterator[list[Batch]]:
        """Per optimizer step, this rank's micro-batches (endless, from the current position)."""

    def counts(self, batch: Batch) -> list[float]:
        """Target counts of a micro-batch used to normalise the loss (e.g. [masked, pairs])."""

    def loss(
        self, model: nn.Module, batch: Batch, totals: list[float]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of a micro-batch normalised by the step's global ``totals``, plus sums to log."""

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation metrics (called on the main rank, in eval mode, without grad)."""

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any]) -> None: ...


class Weights(Protocol):
    """What a checkpoint keeps of the model when it is not the whole model (a LoRA adapter
    over a frozen base): ``save`` writes it into a checkpoint directory, ``load`` reads it
    back into the model on resume."""

    def save(self, directory: Path) -> None: ...

    def load(self, directory: Path) -> None: ...


@dataclass
class FitResult:
    run_dir: Path
    checkpoint: Path
    step: int
    last_valid: dict[str, float]
    best: dict[str, Any] | None = None
    is_main: bool = True  # False on the other DDP ranks: they do not report


def _autocast(device: torch.device, precision: str) -> Callable[[], Any]:
    use_bf16 = precision == "bf16" or (precision == "auto" and bf16_supported(device))
    if not use_bf16:
        return nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _checkpoints(run_dir: Path) -> list[Path]:
    """Complete step checkpoints (those renamed into place), oldest first."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [
        p for p in root.iterdir() if re.fullmatch(r"step-\d+", p.name) and (p / STATE_DIR).is_dir()
    ]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _copy_files(src: Path, dst: Path) -> None:
    for f in src.iterdir():
        if f.is_file():
            shutil.copy2(f, dst / f.name)


def _to_device(batch: Batch, device: torch.device) -> Batch:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


class _Metrics:
    """metrics.jsonl: appended as training goes; cut back to the resume step on resume."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    def truncate_after(self, step: int) -> None:
        if not (self.enabled and self.path.is_file()):
            return
        keep = [
            ln
            for ln in self.path.read_text().splitlines()
            if ln.strip() and json.loads(ln)["step"] <= step
        ]
        atomic_write(self.path, "".join(ln + "\n" for ln in keep))

    def write(self, row: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(row) + "\n")


def fit(
    model: nn.Module,
    task: TrainTask,
    train_cfg: TrainConfig,
    optim_cfg: OptimConfig,
    run_dir: str | Path,
    *,
    model_config: Any,
    tokenizer: Any = None,
    task_meta: dict[str, Any] | None = None,
    resume: bool = False,
    title: str = "",
    select: str | None = None,
    patience: int | None = None,
    weights: Weights | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> FitResult:
    """Train ``model`` on ``task`` until ``train_cfg.max_steps``.

    Writes ``run_dir/checkpoints/step-N/`` (with ``state/`` for resume) every ``save_every``
    steps keeping the last ``keep_last``, ``run_dir/checkpoint/`` at the end, and
    ``metrics.jsonl`` + ``loss.png``. With ``resume=True`` it continues from the newest complete
    step checkpoint, so a killed run ends exactly where an uninterrupted one would.

    With ``select`` (a validation metric; names ending in ``loss`` are minimised, others
    maximised) the best model so far is kept in ``run_dir/best/`` and becomes the final
    ``checkpoint/``; with ``patience`` too, training stops after that many validations without
    improvement (early stopping). ``train_cfg.eval_every`` 0 never validates: the final
    checkpoint is the last step's model. With ``weights``, checkpoints hold what it saves
    (an adapter) instead of the whole model, and resume loads it back. ``on_step(step,
    max_steps)`` is called after every step (a job's progress); an exception it raises stops
    training there (a cancelled job), leaving the last checkpoint to resume from.
    """
    run_dir = Path(run_dir)
    info = D.init_distributed(train_cfg.device)
    if train_cfg.num_threads:
        torch.set_num_threads(train_cfg.num_threads)
    torch.manual_seed(train_cfg.seed + info.rank)
    run_dir.mkdir(parents=True, exist_ok=True)
    model.to(info.device)
    optimizer = build_optimizer(model, optim_cfg)
    scheduler = build_scheduler(optimizer, optim_cfg, train_cfg.max_steps)
    metrics = _Metrics(run_dir / "metrics.jsonl", info.is_main)

    step = 0
    history: dict[str, Any] = {}
    found = _checkpoints(run_dir) if resume else []
    if found:
        if weights is not None:
            weights.load(found[-1])
        else:
            load_state_dict_strict(model, read_weights(found[-1]))
        trainer_state = load_state(found[-1], optimizer, scheduler)
        step = int(trainer_state["step"])
        task.load_state(trainer_state["data"])
        history = trainer_state.get("history", {})
        if info.rank:  # only rank 0's generator is saved; the others reseed deterministically
            torch.manual_seed(train_cfg.seed + info.rank + 7919 * step)
        log.info("resumed from %s at step %d", found[-1], step)
    elif resume:
        log.info("no checkpoint to resume in %s; starting from scratch", run_dir)
    for old in ("checkpoints", "best"):
        if not found and info.is_main and (run_dir / old).is_dir():
            # A fresh run must not mix its checkpoints with an older run's of the same name.
            log.warning("starting afresh: removing %s", run_dir / old)
            shutil.rmtree(run_dir / old)
    metrics.truncate_after(step)

    ddp_model: nn.Module = model
    if info.world > 1:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None
        )
    autocast = _autocast(info.device, train_cfg.precision)
    micro = train_cfg.micro_batch_size or train_cfg.batch_size // info.world
    if train_cfg.batch_size % (info.world * micro):
        raise ConfigError(
            f"train.batch_size ({train_cfg.batch_size}) must be a multiple of "
            f"world size ({info.world}) x train.micro_batch_size ({micro})"
        )

    def save_model(path: Path, extra: Callable[[Path], None] | None = None) -> None:
        if weights is None:
            save_checkpoint(path, model, model_config, tokenizer, task_meta, extra=extra)
            return

        def fill(tmp: Path) -> None:
            weights.save(tmp)
            if extra is not None:
                extra(tmp)

        atomic_directory(path, fill)

    def checkpoint(at: int) -> Path:
        path = run_dir / "checkpoints" / f"step-{at:07d}"
        trainer_state = {"step": at, "data": task.state(), "history": history}
        if info.is_main:
            save_model(path, lambda tmp: save_state(tmp, optimizer, scheduler, trainer_state))
            for old in _checkpoints(run_dir)[: -train_cfg.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        D.barrier(info)
        return path

    def validate(at: int) -> dict[str, float]:
        out: dict[str, float] = {}
        if info.is_main:
            model.eval()
            with torch.no_grad(), autocast():
                out = task.evaluate(model)
            model.train()
            metrics.write({"step": at, "split": "valid", **out})
            history["last_valid"] = out
            if select is not None:
                track_best(at, out)
            plot_losses(run_dir / "metrics.jsonl", run_dir / "loss.png", title)
        D.barrier(info)
        return out

    def track_best(at: int, out: dict[str, float]) -> None:
        if select not in out:
            raise ConfigError(f"cannot select on {select!r}: validation reports {sorted(out)}")
        sign = -1.0 if select.endswith("loss") else 1.0
        best = history.get("best")
        if best is None or sign * out[select] > sign * best["value"]:
            history["best"] = {"step": at, "value": out[select], "metrics": out}
            history["bad_evals"] = 0
            save_model(run_dir / "best")
        else:
            history["bad_evals"] = history.get("bad_evals", 0) + 1

    def should_stop() -> bool:
        tired = patience is not None and history.get("bad_evals", 0) >= patience
        return D.all_reduce_sum([float(tired and info.is_main)], info)[0] > 0

    progress = None
    if train_cfg.progress and info.is_main:
        from tqdm import tqdm

        progress = tqdm(
            total=train_cfg.max_steps,
            initial=step,
            unit="step",
            dynamic_ncols=True,
            desc=title or "train",
        )

    model.train()
    stream = task.steps(info, micro)
    t_last, tokens_since, window = time.perf_counter(), 0.0, 0.0
    sums: dict[str, float] = {}
    while step < train_cfg.max_steps:
        batches = next(stream)
        local = [sum(col) for col in zip(*(task.counts(b) for b in batches), strict=True)]
        totals = D.all_reduce_sum(local, info)
        for i, batch in enumerate(batches):
            batch = _to_device(batch, info.device)
            sync = i == len(batches) - 1 or info.world == 1
            ctx = nullcontext() if sync else ddp_model.no_sync()  # type: ignore[operator]
            with ctx:
                with autocast():
                    loss, logs = task.loss(ddp_model, batch, totals)
                (loss * info.world).backward()  # DDP averages over ranks; undo that
            tokens_since += float(batch.get("num_tokens", 0)) * info.world
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), optim_cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        window += 1
        if step % train_cfg.log_every == 0 or step == train_cfg.max_steps:
            now = time.perf_counter()
            rate = tokens_since / max(now - t_last, 1e-9)
            keys = sorted(sums)
            sums = dict(zip(keys, D.all_reduce_sum([sums[k] for k in keys], info), strict=True))
            row = {
                "step": step,
                "split": "train",
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": float(grad_norm),
                "tokens_per_s": rate,
                **{k: v / window for k, v in sums.items()},
            }
            metrics.write(row)
            if progress is not None:
                progress.set_postfix(loss=f"{row.get('loss', 0):.3f}", tok_s=f"{rate:,.0f}")
            t_last, tokens_since, window, sums = now, 0.0, 0.0, {}
        if progress is not None:
            progress.update(1)
        evaluated = train_cfg.eval_every > 0 and (
            step % train_cfg.eval_every == 0 or step == train_cfg.max_steps
        )
        if evaluated:
            validate(step)
        stop = evaluated and should_stop()
        if step % train_cfg.save_every == 0 or step == train_cfg.max_steps or stop:
            checkpoint(step)
        if on_step is not None:
            on_step(step, train_cfg.max_steps)
        if stop:
            log.info(
                "early stopping at step %d: no better %s in %d validations", step, select, patience
            )
            break
    if progress is not None:
        progress.close()

    final = run_dir / "checkpoint"
    if info.is_main:
        if train_cfg.eval_every == 0:  # validation drew it so far
            plot_losses(run_dir / "metrics.jsonl", run_dir / "loss.png", title)
        if select is not None and (run_dir / "best").is_dir():
            atomic_directory(final, lambda tmp: _copy_files(run_dir / "best", tmp))
        else:
            save_model(final)
    D.barrier(info)
    D.cleanup(info)
    return FitResult(
        run_dir=run_dir,
        checkpoint=final,
        step=step,
        last_valid=history.get("last_valid", {}),
        best=history.get("best"),
        is_main=info.is_main,
    )
