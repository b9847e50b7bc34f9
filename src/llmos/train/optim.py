"""Optimizer and learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from llmos.config.run import OptimConfig


def param_groups(model: nn.Module, weight_decay: float, head_lr: float | None = None) -> list[dict]:
    """Decay for weight matrices, none for biases and LayerNorm weights (as BERT): two groups.

    With ``head_lr``, the parameters outside the encoder (names not under ``bert.``: a task's
    classifier, CRF or fresh pooler) form two more groups at that learning rate."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    norm_params = {
        id(p) for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()
    }
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decays = not (name.endswith("bias") or id(p) in norm_params)
        head = head_lr is not None and not name.removeprefix("module.").startswith("bert.")
        groups.setdefault((head, decays), []).append(p)
    out = [
        {"params": groups.get((False, True), []), "weight_decay": weight_decay},
        {"params": groups.get((False, False), []), "weight_decay": 0.0},
    ]
    if head_lr is not None:
        out += [
            {"params": groups.get((True, True), []), "weight_decay": weight_decay, "lr": head_lr},
            {"params": groups.get((True, False), []), "weight_decay": 0.0, "lr": head_lr},
        ]
    return out


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW over :func:`param_groups`. ``foreach`` keeps the step fast on CPU."""
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay, cfg.head_lr),
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        foreach=True,
    )


def lr_factor(step: int, cfg: OptimConfig, max_steps: int) -> float:
    """Multiplier of the peak lr at ``step``: linear warmup, then linear/cosine decay or flat."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    if cfg.schedule == "linear":
        decay = 1.0 - progress
    else:
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * decay


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, max_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg, max_steps))
