"""Knowledge-distillation losses: soft logits (Hinton), hidden states and attention (TinyBERT).

The student is trained by the shared loop (``llmos.train.loop.fit``); this module only says how
far it is from its teacher. Conventions, as everywhere in the loop: each function returns a
*sum* over examples, tokens or masked positions, and the caller divides by the step's global
count. Padded positions never count: ``attention_mask`` (B, T) marks the real tokens.

- Logits: ``KL(softmax(t / T) || softmax(s / T)) * T^2`` per row (Hinton et al., 2015,
  https://arxiv.org/abs/1503.02531: the T^2 keeps the gradient scale independent of T).
- Hidden states: squared error of the embeddings' output and of each mapped layer's output,
  averaged over the hidden size, summed over real tokens (TinyBERT, Jiao et al., 2020,
  https://arxiv.org/abs/1909.10351). Student and teacher need the same hidden size (TinyBERT
  learns a projection; here the student's width is the teacher's when this loss is on).
- Attention: squared error of the attention *probabilities* (after softmax, so padded keys are
  exactly 0 on both sides; TinyBERT compares pre-softmax scores), summed over keys, averaged
  over heads, summed over real query tokens, per mapped layer. Needs equal head counts.

Hidden states are captured with forward hooks on the encoder's layers, so the model code
stays as it is. Under ``torch.no_grad()`` a padded batch runs padding-free (``Packing``: layer
inputs and outputs are (N, C), real tokens only); the hooks scatter them back to (B, T, C).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmos.errors import ConfigError
from llmos.models.bert import BertModel, SelfAttention


def default_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Uniform map: student layer i learns from teacher layer (i + 1) * Lt // Ls - 1, so the
    last layers meet (2 of 4: [1, 3]; 3 of 12: [3, 7, 11]); never below layer 0 (a student
    deeper than its teacher)."""
    return [max((i + 1) * teacher_layers // student_layers - 1, 0) for i in range(student_layers)]


def check_layer_list(
    key: str, layers: list[int] | None, student_layers: int, teacher_layers: int
) -> list[int]:
    """``layers`` (or the default map when None) checked against both depths; a ConfigError
    names ``key`` and the bad entry."""
    if layers is None:
        return default_layer_map(student_layers, teacher_layers)
    if len(layers) != student_layers:
        raise ConfigError(
            f"{key} has {len(layers)} entries; it needs one per student layer ({student_layers})"
        )
    for i, j in enumerate(layers):
        if not 0 <= j < teacher_layers:
            raise ConfigError(
                f"{key}[{i}] = {j} is not a teacher layer: the teacher has {teacher_layers} "
                f"layers (0..{teacher_layers - 1})"
            )
    return list(layers)


def soft_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Sum over rows of KL(softmax(t / T) || softmax(s / T)) * T^2; logits (..., K)."""
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="sum") * temperature**2


def _repad(x: torch.Tensor, packing: object | None) -> torch.Tensor:
    """(N, C) real-token rows of a packed batch -> (B, T, C) with zeros at padding."""
    if packing is None:
        return x
    out = x.new_zeros(packing.B * packing.T, x.size(-1))  # type: ignore[attr-defined]
    out.index_copy_(0, packing.index, x)  # type: ignore[attr-defined]
    return out.view(packing.B, packing.T, -1)  # type: ignore[attr-defined]


@contextmanager
def capture_hidden(encoder: BertModel) -> Iterator[list[torch.Tensor]]:
    """Within the block, every forward of ``encoder`` fills the yielded list with num_layers + 1
    hidden states (B, T, C): the input of layer 0 (the embeddings' output), then each layer's
    output. Works on the padding-free path too."""
    states: list[torch.Tensor] = []

    def hook(_module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
        x = args[0] if args else kwargs["x"]
        packing = args[2] if len(args) > 2 else kwargs.get("packing")
        if not states:
            states.append(_repad(x, packing))
        states.append(_repad(output, packing))

    handles = [layer.register_forward_hook(hook, with_kwargs=True) for layer in encoder.layers]
    try:
        yield states
    finally:
        for h in handles:
            h.remove()


def layer_module(encoder: BertModel, i: int) -> nn.Module:
    """The module that runs as layer ``i`` (ALBERT-style sharing: the one stored layer)."""
    return encoder.layers[0 if encoder.cfg.share_layers else i]


def attention_probs(
    attn: SelfAttention, x: torch.Tensor, attention_mask: torch.Tensor | None
) -> torch.Tensor:
    """The attention probabilities (B, nh, T, T) that ``attn`` computes for its input x (B, T,
    C), from its own query/key projections; padded keys get probability 0."""
    B, T, _ = x.shape
    nh, hs = attn.nh, attn.hs
    qkv = attn.qkv(x)  # (B, T, 3 nh hs)
    q = qkv[..., : nh * hs].view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
    k = qkv[..., nh * hs : 2 * nh * hs].view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
    scores = (q @ k.transpose(-2, -1)).float() / math.sqrt(hs)  # (B, nh, T, T)
    if attention_mask is not None:
        keys = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        scores = scores.masked_fill(~keys, float("-inf"))
    return scores.softmax(dim=-1)


def hidden_mse(
    student: list[torch.Tensor],
    teacher: list[torch.Tensor],
    pairs: list[tuple[int, int]],
    attention_mask: torch.Tensor | None,
) -> torch.Tensor:
    """Sum over ``pairs`` (student state, teacher state) and over real tokens of the squared
    error averaged over the hidden size."""
    total = student[0].new_zeros((), dtype=torch.float32)
    for i, j in pairs:
        err = (student[i].float() - teacher[j].float()).pow(2).mean(-1)  # (B, T)
        total = total + (err[attention_mask.bool()] if attention_mask is not None else err).sum()
    return total


def attention_mse(
    student: list[torch.Tensor], teacher: list[torch.Tensor], attention_mask: torch.Tensor | None
) -> torch.Tensor:
    """Sum over layer pairs and real query tokens of the squared error of attention rows
    (B, nh, T, T) from :func:`attention_probs`, summed over keys (a padded key has probability
    0 on both sides) and averaged over heads."""
    total = student[0].new_zeros((), dtype=torch.float32)
    for s, t in zip(student, teacher, strict=True):
        err = (s.float() - t.float()).pow(2).sum(-1).mean(1)  # (B, nh, Tq, Tk) -> (B, Tq)
        total = total + (err[attention_mask.bool()] if attention_mask is not None else err).sum()
    return total


def layer_losses(
    student: BertModel,
    student_states: list[torch.Tensor],
    teacher: BertModel,
    teacher_states: list[torch.Tensor],
    layer_map: list[int],
    attention_mask: torch.Tensor | None,
    hidden: bool,
    attention: bool,
) -> dict[str, torch.Tensor]:
    """The hidden-state and attention sums (those asked for) between student layer i and
    teacher layer ``layer_map[i]``; hidden states also at the embeddings."""
    out: dict[str, torch.Tensor] = {}
    if hidden:
        pairs = [(0, 0)] + [(i + 1, j + 1) for i, j in enumerate(layer_map)]
        out["hidden"] = hidden_mse(student_states, teacher_states, pairs, attention_mask)
    if attention:
        s_probs = [
            attention_probs(layer_module(student, i).attn, student_states[i], attention_mask)
            for i in range(len(layer_map))
        ]
        with torch.no_grad():
            t_probs = [
                attention_probs(layer_module(teacher, j).attn, teacher_states[j], attention_mask)
                for j in layer_map
            ]
        out["attention"] = attention_mse(s_probs, t_probs, attention_mask)
    return out


def init_from_teacher(
    student: nn.Module,
    teacher_weights: dict[str, torch.Tensor],
    init_layers: list[int],
    teacher_shared: bool = False,
) -> list[str]:
    """DistilBERT-style start: student layer i takes the weights of teacher layer
    ``init_layers[i]``; every other student weight (embeddings, pooler, classifier, MLM/NSP
    heads) takes the teacher's weight of the same name. Returns the names left as they were
    (absent from the teacher).

    Raises:
        ConfigError: a weight's shape differs (the student is narrower than the teacher).
    """
    own = student.state_dict()
    shared = getattr(getattr(student, "cfg", None), "share_layers", False)
    new: dict[str, torch.Tensor] = {}
    kept: list[str] = []
    for key, value in own.items():
        source = key
        parts = key.split(".")
        if key.startswith("bert.layers."):
            i = 0 if shared else int(parts[2])
            j = 0 if teacher_shared else init_layers[i]
            source = ".".join(["bert", "layers", str(j), *parts[3:]])
        if source not in teacher_weights:
            kept.append(key)
            continue
        if teacher_weights[source].shape != value.shape:
            raise ConfigError(
                f"student_init.init_layers: the student's {key} has shape {tuple(value.shape)}, "
                f"the teacher's {source} {tuple(teacher_weights[source].shape)}; copying "
                "teacher layers needs the teacher's hidden and intermediate sizes (set "
                "student_init.init_layers: null to start from random weights)"
            )
        new[key] = teacher_weights[source]
    student.load_state_dict(new, strict=False)
    return kept


@dataclass
class Objective:
    """The whole distillation loss of a step: runs the frozen ``teacher`` beside the student and
    weighs soft KL, hard labels and the layer terms. Recipes compute the task-specific soft and
    hard sums from the two outputs and call :meth:`combine`."""

    teacher: nn.Module
    temperature: float
    alpha: float
    hidden_weight: float
    attention_weight: float
    layer_map: list[int]

    def forward(
        self, model: nn.Module, args: tuple, layers: bool = True
    ) -> tuple[Any, Any, dict[str, torch.Tensor]]:
        """Student and teacher (without grad) on the same inputs, and (with ``layers``) the
        sums of the hidden-state and attention errors when those losses are on."""
        student = getattr(model, "module", model)  # under DDP, the wrapped model
        want = layers and (self.hidden_weight > 0 or self.attention_weight > 0)
        self.teacher.to(args[0].device)
        with capture_hidden(student.bert) if want else nullcontext([]) as s_states:
            s_out = model(*args)
        t_capture = capture_hidden(self.teacher.bert) if want else nullcontext([])
        with torch.no_grad(), t_capture as t_states:
            t_out = self.teacher(*args)
        sums: dict[str, torch.Tensor] = {}
        if want:
            sums = layer_losses(
                student.bert,
                s_states,
                self.teacher.bert,  # type: ignore[arg-type]
                t_states,
                self.layer_map,
                args[2],
                hidden=self.hidden_weight > 0,
                attention=self.attention_weight > 0,
            )
        return s_out, t_out, sums

    def combine(
        self, soft: torch.Tensor, hard: torch.Tensor, layers: dict[str, torch.Tensor], tokens: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """alpha * soft + (1 - alpha) * hard + the weighted layer terms (per real token)."""
        loss = self.alpha * soft + (1.0 - self.alpha) * hard
        logs = {"kl": soft.item(), "ce": hard.item()}
        if "hidden" in layers:
            h = layers["hidden"] / max(tokens, 1.0)
            loss = loss + self.hidden_weight * h
            logs["hidden_mse"] = h.item()
        if "attention" in layers:
            a = layers["attention"] / max(tokens, 1.0)
            loss = loss + self.attention_weight * a
            logs["attention_mse"] = a.item()
        logs["loss"] = loss.item()
        return loss, logs
