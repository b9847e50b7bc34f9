"""The training run of a recommender (BPR-MF, LightGCN, SASRec) through :func:`fit`: one set
of RecBole's optimiser defaults, validation selection and the reload of the chosen weights."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from llmos.checkpoint.io import load_state_dict_strict, read_weights
from llmos.config.run import OptimConfig, TrainConfig
from llmos.train.loop import FitResult, fit


def fit_recommender(
    model: nn.Module,
    task: Any,
    run_dir: str | Path,
    *,
    title: str,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    eval_every: int,
    resume: bool,
    select: str | None,
    patience: int | None,
    device: str,
    num_threads: int | None,
    progress: bool,
    on_step: Callable[[int, int], None] | None = None,
) -> FitResult:
    """Train ``model`` on ``task`` for ``steps`` optimizer steps and load the selected weights
    back into it.

    RecBole's training for its recommenders: Adam at ``lr`` (AdamW with ``weight_decay`` 0 and
    eps 1e-8 is torch's Adam; above 0 it is AdamW's decoupled decay, not RecBole's L2 term), a
    constant rate, no gradient clipping, fp32 (bf16 dot products would blur the close scores a
    ranking compares). Validation every ``eval_every`` steps; with ``select`` the best
    validated model becomes ``run_dir/checkpoint``. Checkpoints for resume are written at each
    validation. ``model.config`` is saved as ``config.json``. ``on_step(step, steps)`` is
    :func:`fit`'s (a job's progress; what it raises stops training at that step)."""
    train_cfg = TrainConfig(
        max_steps=steps,
        batch_size=batch_size,
        precision="fp32",
        eval_every=eval_every,
        save_every=eval_every or steps,
        seed=seed,
        device=device,
        num_threads=num_threads,
        progress=progress,
    )
    optim_cfg = OptimConfig(
        lr=lr,
        weight_decay=weight_decay,
        eps=1e-8,
        schedule="constant",
        warmup_steps=0,
        grad_clip=math.inf,  # RecBole clips nothing; inf leaves every gradient as it is
    )
    result = fit(
        model,
        task,
        train_cfg,
        optim_cfg,
        run_dir,
        model_config=model.config,
        resume=resume,
        title=title,
        select=select if eval_every else None,
        patience=patience,
        on_step=on_step,
    )
    load_state_dict_strict(model, read_weights(result.checkpoint))
    return result
