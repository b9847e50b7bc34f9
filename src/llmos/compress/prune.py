"""Structured pruning of BERT encoders: attention heads and feed-forward neurons.

Importance is the first-order score of Michel et al., "Are Sixteen Heads Really Better than
One?" (NeurIPS 2019, https://arxiv.org/abs/1905.10650): every head's output is multiplied by a
gate xi_h = 1 and

    I_h = E_x | dL(x) / d xi_h |

over labelled examples x with the task loss L. The expectation is taken per example, as the
formula reads: each example gets its own copy of the gates, so one backward pass over a batch
gives every example's gradient exactly (dL_b/dxi_b touches example b only). Scores are then
divided by their layer's L2 norm, as in the authors' code, so that layers compare on one scale.
Feed-forward neurons get the same score with a gate on each intermediate activation a_n, which
equals E_x |sum over tokens of a_n * dL/da_n| (the first-order Taylor score of Molchanov et al.,
2017, per example).

Removal is physical: the q/k/v rows and the output-projection columns of a removed head (the
up-projection rows and down-projection columns of a removed neuron) are sliced away, so the
model equals the original with those gates at 0 (tested) and is really smaller and faster.
Everything here acts on a model holding a :class:`~llmos.models.bert.BertModel` as ``.bert``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from llmos.config.model import BertConfig
from llmos.errors import ConfigError
from llmos.files import atomic_path
from llmos.models.bert import linear

log = logging.getLogger("llmos.compress")

Batch = dict[str, Any]
# Per-example task losses (B,) of a batch: the model is called by the function.
LossFn = Callable[[nn.Module, Batch], torch.Tensor]
# Units to remove per layer: {layer: [head or neuron indices in that layer's numbering]}.
Selection = dict[int, list[int]]


@dataclass
class Importance:
    """Per layer, E_x |dL(x)/dxi| of each head (and neuron), unnormalized; over ``examples``."""

    heads: list[torch.Tensor]  # (nh_l,) per layer
    neurons: list[torch.Tensor] | None  # (I_l,) per layer, when asked for
    examples: int


def _encoder_layers(model: nn.Module) -> nn.ModuleList:
    cfg = model.bert.cfg
    if cfg.share_layers:
        raise ConfigError(
            "pruning needs one set of weights per layer; this encoder shares them (share_layers)"
        )
    return model.bert.layers


def importance(
    model: nn.Module, batches: Iterable[Batch], loss_fn: LossFn, *, neurons: bool = False
) -> Importance:
    """Gradient-based importance of every head (and, with ``neurons``, every feed-forward
    neuron), accumulated over ``batches`` with the model in eval mode (no dropout).

    Args:
        model: a BERT task model (``model.bert`` is the encoder).
        batches: model inputs plus targets, e.g. ``input_ids``, ``token_type_ids``,
            ``attention_mask``, ``labels``.
        loss_fn: ``(model, batch) -> (B,)`` per-example task losses.
        neurons: also score feed-forward neurons.
    """
    layers = _encoder_layers(model)
    device = next(model.parameters()).device
    heads = [torch.zeros(layer.attn.nh, dtype=torch.float64) for layer in layers]
    units = [torch.zeros(layer.ffn.up.out_features, dtype=torch.float64) for layer in layers]
    n = 0
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            B = batch["input_ids"].size(0)
            gates = []
            for layer in layers:  # one gate per example: (B, nh) and (B, I), all ones
                layer.attn.head_mask = torch.ones(B, layer.attn.nh, device=device).requires_grad_()
                gates.append(layer.attn.head_mask)
                if neurons:
                    width = layer.ffn.up.out_features
                    layer.ffn.neuron_mask = torch.ones(B, width, device=device).requires_grad_()
                    gates.append(layer.ffn.neuron_mask)
            with torch.enable_grad():
                losses = loss_fn(model, batch)  # (B,)
                assert losses.shape == (B,), f"loss_fn must return (B,) losses, got {losses.shape}"
                grads = torch.autograd.grad(losses.sum(), gates, allow_unused=True)
            per_layer = 2 if neurons else 1
            for i in range(len(layers)):
                g = grads[i * per_layer]
                if g is not None:  # None: a layer without heads
                    heads[i] += g.abs().sum(0).double().cpu()
                if neurons:
                    g = grads[i * per_layer + 1]
                    if g is not None:
                        units[i] += g.abs().sum(0).double().cpu()
            n += B
    finally:
        for layer in layers:
            layer.attn.head_mask = None
            layer.ffn.neuron_mask = None
        model.train(was_training)
    if n == 0:
        raise ValueError("importance needs at least one batch")
    return Importance(
        heads=[h / n for h in heads],
        neurons=[u / n for u in units] if neurons else None,
        examples=n,
    )


def head_importance(
    model: nn.Module, batches: Iterable[Batch], loss_fn: LossFn, *, normalize: bool = True
) -> list[torch.Tensor]:
    """Michel et al.'s head importance per layer, divided by the layer's L2 norm if
    ``normalize`` (see :func:`importance`)."""
    heads = importance(model, batches, loss_fn).heads
    return normalize_by_layer(heads) if normalize else heads


def normalize_by_layer(scores: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each layer's scores divided by their L2 norm (+1e-20, as Michel et al.'s code)."""
    return [s / (s.norm() + 1e-20) for s in scores]


def count_to_remove(total: int, fraction: float) -> int:
    """``fraction`` of ``total`` units rounded to the nearest (halves up), and at least one
    unit kept: 0.4 of 16 heads is 6 (6.4), 0.5 of 9 is 5."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"the fraction to prune must be in [0, 1), got {fraction}")
    return min(int(fraction * total + 0.5), max(total - 1, 0))


def lowest(scores: list[torch.Tensor], count: int) -> Selection:
    """The ``count`` lowest-scoring units over all layers (global ranking; ties go to the
    lower layer, then the lower index). A layer may lose every unit."""
    ranked = sorted(
        (float(s), layer, i) for layer, row in enumerate(scores) for i, s in enumerate(row)
    )
    chosen: Selection = {}
    for _, layer, i in ranked[:count]:
        chosen.setdefault(layer, []).append(i)
    return {layer: sorted(units) for layer, units in sorted(chosen.items())}


def count_removed(selection: Selection) -> int:
    """How many units ``selection`` removes, over all layers."""
    return sum(map(len, selection.values()))


def choose(
    scores: Importance, heads: float, ffn: float, normalize: bool = True
) -> tuple[list[torch.Tensor], Selection, Selection]:
    """Head scores as ranked (normalized per layer unless ``normalize`` is off), and the heads
    and neurons to remove: the lowest-ranked ``heads`` / ``ffn`` fractions of all."""
    head_scores = normalize_by_layer(scores.heads) if normalize else scores.heads
    chosen = lowest(head_scores, count_to_remove(sum(map(len, head_scores)), heads))
    neurons: Selection = {}
    if scores.neurons is not None:
        units = normalize_by_layer(scores.neurons) if normalize else scores.neurons
        neurons = lowest(units, count_to_remove(sum(map(len, units)), ffn))
    return head_scores, chosen, neurons


def _sliced(old: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A copy of ``old`` keeping the output rows (dim 0) or input columns (dim 1) at ``index``."""
    n_out, n_in = old.out_features, old.in_features
    new = linear(n_in if dim == 0 else len(index), len(index) if dim == 0 else n_out)
    new.to(device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(old.weight.index_select(dim, index))
        new.bias.copy_(old.bias if dim == 1 else old.bias.index_select(0, index))
    return new


def _kept(n: int, remove: list[int], what: str, layer: int) -> list[int]:
    bad = [i for i in remove if not 0 <= i < n]
    if bad or len(set(remove)) != len(remove):
        raise ValueError(f"layer {layer}: cannot remove {what} {remove} of {n}")
    return [i for i in range(n) if i not in set(remove)]


def _set_config(model: nn.Module, cfg: BertConfig) -> None:
    model.bert.cfg = cfg
    if hasattr(model, "cfg"):
        model.cfg = cfg


def prune_heads(
    model: nn.Module, cfg: BertConfig, heads: Selection
) -> tuple[nn.Module, BertConfig]:
    """Remove attention heads, in place: ``heads`` maps a layer to the head indices it loses
    (in that layer's current numbering). The fused qkv keeps the rows of the remaining heads
    in each of its q, k and v thirds; the output projection keeps their columns.

    Returns:
        The same model, and a copy of ``cfg`` whose ``layer_heads`` records the heads left
        (``cfg`` itself when nothing is removed).
    """
    layers = _encoder_layers(model)
    if not heads:
        return model, cfg
    for i, remove in heads.items():
        if not 0 <= i < len(layers):
            raise ValueError(f"no layer {i}: the encoder has {len(layers)}")
        attn = layers[i].attn
        keep = _kept(attn.nh, remove, "heads", i)
        hs, width = attn.hs, attn.nh * attn.hs
        cols = torch.tensor([h * hs + j for h in keep for j in range(hs)], dtype=torch.long)
        rows = torch.cat([part * width + cols for part in range(3)])  # in q, k and v
        attn.qkv = _sliced(attn.qkv, rows.to(attn.qkv.weight.device), dim=0)
        attn.proj = _sliced(attn.proj, cols.to(attn.proj.weight.device), dim=1)
        attn.nh = len(keep)
    new = replace(cfg, layer_heads=[layer.attn.nh for layer in layers])
    _set_config(model, new)
    return model, new


def prune_neurons(
    model: nn.Module, cfg: BertConfig, neurons: Selection
) -> tuple[nn.Module, BertConfig]:
    """Remove feed-forward neurons, in place: rows of ``up`` and columns of ``down``.

    Returns:
        The same model, and a copy of ``cfg`` whose ``layer_intermediate`` records the widths
        (``cfg`` itself when nothing is removed).
    """
    layers = _encoder_layers(model)
    if not neurons:
        return model, cfg
    for i, remove in neurons.items():
        if not 0 <= i < len(layers):
            raise ValueError(f"no layer {i}: the encoder has {len(layers)}")
        ffn = layers[i].ffn
        keep = torch.tensor(_kept(ffn.up.out_features, remove, "neurons", i), dtype=torch.long)
        ffn.up = _sliced(ffn.up, keep.to(ffn.up.weight.device), dim=0)
        ffn.down = _sliced(ffn.down, keep.to(ffn.down.weight.device), dim=1)
    new = replace(cfg, layer_intermediate=[layer.ffn.up.out_features for layer in layers])
    _set_config(model, new)
    return model, new


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def plot_head_importance(
    scores: list[torch.Tensor], removed: Selection, num_heads: int, out_png: Path, title: str = ""
) -> Path:
    """Heatmap of head importance (layers x heads), each removed head crossed out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.full((len(scores), num_heads), np.nan)
    for layer, row in enumerate(scores):
        grid[layer, : len(row)] = row.numpy()
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * num_heads, 1.2 + 0.6 * len(scores)))
    im = ax.imshow(grid, cmap="viridis", aspect="auto")
    for layer, row in enumerate(scores):
        for h in range(len(row)):
            gone = h in removed.get(layer, [])
            ax.text(
                h,
                layer,
                f"{grid[layer, h]:.2f}" + ("\n×" if gone else ""),
                ha="center",
                va="center",
                fontsize=8,
                color="red" if gone else "white",
                fontweight="bold" if gone else "normal",
            )
    ax.set_xticks(range(num_heads))
    ax.set_yticks(range(len(scores)))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title or "head importance", fontsize=9)
    fig.colorbar(im, ax=ax, label="importance (× = removed)")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return out_png
