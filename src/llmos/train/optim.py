"""Optimizer and learning-rate schedule."""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from llmos.config.run import OptimConfig

_LAYER = re.compile(r"^bert\.layers\.(\d+)\.")


def layer_scale(name: str, num_layers: int, layer_decay: float | None) -> float:
    """The encoder parameter ``name``'s learning-rate multiplier under layer-wise decay: 1 for
    the top layer (and the pooler above it), ``layer_decay`` for the one below, and so on down;
    the embeddings are one step below the first layer (ELECTRA's rule, Clark et al., 2020)."""
    if layer_decay is None:
        return 1.0
    m = _LAYER.match(name)
    if m:
        return layer_decay ** (num_layers - 1 - int(m.group(1)))
    if name.startswith("bert.embeddings."):
        return layer_decay**num_layers
    return 1.0


def param_groups(
    model: nn.Module,
    weight_decay: float,
    head_lr: float | None = None,
    lr: float | None = None,
    layer_decay: float | None = None,
) -> list[dict]:
    """Decay for weight matrices, none for biases, LayerNorm weights (as BERT) and scalars (as
    CLIP's temperature): two groups.

    With ``head_lr``, the parameters outside the encoder (names not under ``bert.``: a task's
    classifier, CRF or fresh pooler) form two more groups at that learning rate. With
    ``layer_decay`` (and the peak ``lr``), the encoder's two groups split by layer, each at
    ``lr`` times :func:`layer_scale`, top layer first."""
    if layer_decay is not None and lr is None:
        raise ValueError("layer_decay needs the peak lr")
    groups: dict[tuple[bool, bool, float], list[nn.Parameter]] = {}
    norm_params = {
        id(p) for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()
    }
    named = [(n.removeprefix("module."), p) for n, p in model.named_parameters()]
    layers = {int(m.group(1)) for n, _ in named if (m := _LAYER.match(n))}
    num_layers = max(layers) + 1 if layers else 0
    for name, p in named:
        if not p.requires_grad:
            continue
        # A scalar (CLIP's learned temperature) is not a weight to shrink toward zero either.
        decays = not (name.endswith("bias") or id(p) in norm_params or p.ndim == 0)
        head = head_lr is not None and not name.startswith("bert.")
        scale = 1.0 if head else layer_scale(name, num_layers, layer_decay)
        groups.setdefault((head, decays, scale), []).append(p)
    out = []
    scales = sorted({k[2] for k in groups if not k[0]} | {1.0}, reverse=True)
    for scale in scales:
        for decays in (True, False):
            if scale != 1.0 and (False, decays, scale) not in groups:  # 1.0: always two
                continue
            group = {
                "params": groups.get((False, decays, scale), []),
                "weight_decay": weight_decay if decays else 0.0,
            }
            if layer_decay is not None:
                group["lr"] = lr * scale
            out.append(group)
    if head_lr is not None:
        out += [
            {
                "params": groups.get((True, True, 1.0), []),
                "weight_decay": weight_decay,
                "lr": head_lr,
            },
            {"params": groups.get((True, False, 1.0), []), "weight_decay": 0.0, "lr": head_lr},
        ]
    return out


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW over :func:`param_groups`. ``foreach`` keeps the step fast on CPU."""
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay, cfg.head_lr, cfg.lr, cfg.layer_decay),
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
