"""Knowledge distillation tasks: a student learns a BERT teacher's softened logits (and its
labels, hidden states and attention, as the :class:`~llmos.compress.distill.Objective` says),
on classification batches or on masked-LM batches of the pretraining pipeline; the scores
against the teacher; and the timing the distillation report compares teacher and student with.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmos.compress.distill import Objective, soft_kl
from llmos.data.batching import pad_batch
from llmos.inference.classify import batched_logits
from llmos.train.metrics import classification_metrics
from llmos.train.tasks.classify import ClassifyTask, Encoded
from llmos.train.tasks.mlm import PretrainTask

TIMING_SECONDS = 20.0  # timed passes (teacher and student in turns) add up to about this
TIMING_BATCH = 32


class DistillClassifyTask(ClassifyTask):
    """Classification batches (as fine-tuning) with the distillation loss; validation reports
    the student's accuracy and macro-F1, its agreement with the teacher and the soft KL."""

    def __init__(
        self,
        train: Encoded,
        valid: Encoded,
        labels: list[str],
        batch_size: int,
        seed: int,
        pad_id: int,
        objective: Objective,
    ) -> None:
        super().__init__(train, valid, labels, batch_size, seed, pad_id)
        self.objective = objective
        self.valid_teacher = batched_logits(objective.teacher, valid.ids, valid.types, pad_id)

    def counts(self, batch: dict[str, Any]) -> list[float]:
        return [float(batch["labels"].numel()), float(batch["num_tokens"])]

    def loss(
        self, model: nn.Module, batch: dict[str, Any], totals: list[float]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        args = (batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        s, t, layers = self.objective.forward(model, args)
        soft = soft_kl(s, t, self.objective.temperature) / totals[0]
        hard = F.cross_entropy(s.float(), batch["labels"], reduction="sum") / totals[0]
        return self.objective.combine(soft, hard, layers, totals[1])

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        logits = batched_logits(model, self.valid.ids, self.valid.types, self.pad_id)
        return score_against_teacher(
            logits, self.valid_teacher, self.valid.labels, self.labels, self.objective.temperature
        )[0]


def score_against_teacher(
    logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    gold: np.ndarray,
    labels: list[str],
    temperature: float,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Flat metrics (loss, accuracy, macro-F1, agreement with the teacher, soft KL per example)
    and the full classification report."""
    n = max(len(gold), 1)
    pred = logits.argmax(-1)
    report = classification_metrics(gold.tolist(), pred.tolist(), labels)
    flat = {
        "loss": F.cross_entropy(logits, torch.from_numpy(gold)).item(),
        "accuracy": report["accuracy"],
        "macro_f1": report["macro_f1"],
        "agreement": (pred == teacher_logits.argmax(-1)).float().mean().item(),
        "kl": soft_kl(logits, teacher_logits, temperature).item() / n,
    }
    return flat, report


class DistillMLMTask:
    """Masked-LM batches from the pretraining pipeline with the distillation loss."""

    def __init__(self, base: PretrainTask, objective: Objective) -> None:
        self.base, self.objective = base, objective

    def steps(self, info: Any, micro_batch: int) -> Any:
        return self.base.steps(info, micro_batch)

    def counts(self, batch: dict[str, Any]) -> list[float]:
        return [*self.base.counts(batch), float(batch["num_tokens"])]

    def _sums(self, model: nn.Module, batch: dict[str, Any], layers: bool = True) -> dict[str, Any]:
        """Soft and hard sums of the MLM (per masked token) and NSP (per pair) parts."""
        args = (
            batch["input_ids"],
            batch["token_type_ids"],
            batch["attention_mask"],
            batch["mlm_positions"],
        )
        s, t, sums = self.objective.forward(model, args, layers)
        T = self.objective.temperature
        out = {
            "mlm_kl": soft_kl(s.mlm_logits, t.mlm_logits, T),
            "mlm_ce": F.cross_entropy(s.mlm_logits.float(), batch["mlm_labels"], reduction="sum"),
            "mlm_hit": (s.mlm_logits.argmax(-1) == batch["mlm_labels"]).sum(),
            "mlm_agree": (s.mlm_logits.argmax(-1) == t.mlm_logits.argmax(-1)).sum(),
            "layers": sums,
        }
        if batch["nsp_labels"] is not None and s.nsp_logits is not None:
            if t.nsp_logits is not None:
                out["nsp_kl"] = soft_kl(s.nsp_logits, t.nsp_logits, T)
            out["nsp_ce"] = F.cross_entropy(
                s.nsp_logits.float(), batch["nsp_labels"], reduction="sum"
            )
        return out

    def loss(
        self, model: nn.Module, batch: dict[str, Any], totals: list[float]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        sums = self._sums(model, batch)
        masked, pairs = max(totals[0], 1.0), max(totals[1], 1.0)
        soft = sums["mlm_kl"] / masked + sums.get("nsp_kl", 0.0) / pairs
        hard = sums["mlm_ce"] / masked + sums.get("nsp_ce", 0.0) / pairs
        return self.objective.combine(soft, hard, sums["layers"], totals[2])

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """MLM loss, perplexity and accuracy of ``model`` on the validation batches, its top-1
        agreement with the teacher and the soft KL, per masked token."""
        device = next(model.parameters()).device
        s = dict.fromkeys(("kl", "ce", "hit", "agree", "n"), 0.0)
        with torch.no_grad():
            for batch in self.base.valid:
                batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
                sums = self._sums(model, batch, layers=False)
                s["kl"] += sums["mlm_kl"].item()
                s["ce"] += sums["mlm_ce"].item()
                s["hit"] += sums["mlm_hit"].item()
                s["agree"] += sums["mlm_agree"].item()
                s["n"] += batch["mlm_labels"].numel()
        n = max(s["n"], 1.0)
        return {
            "loss": s["ce"] / n,
            "perplexity": math.exp(min(s["ce"] / n, 50)),
            "mlm_accuracy": s["hit"] / n,
            "agreement": s["agree"] / n,
            "kl": s["kl"] / n,
        }

    def state(self) -> dict[str, int]:
        return self.base.state()

    def load_state(self, state: dict[str, int]) -> None:
        self.base.load_state(state)


def time_models(
    models: dict[str, nn.Module], run: Callable[[nn.Module], None], repeats: int | None = None
) -> tuple[dict[str, float], int]:
    """Median seconds of ``run(model)`` per model, the models taking turns (so a slower moment
    of a shared machine hits both), after a warm-up pass of each. By default enough passes for
    about TIMING_SECONDS of timing in all (3 to 20). Returns the medians and the pass count."""
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        warm = 0.0
        for model in models.values():
            t0 = time.perf_counter()
            run(model)
            warm += time.perf_counter() - t0
        if repeats is None:
            repeats = min(20, max(3, math.ceil(TIMING_SECONDS / max(warm, 1e-3))))
        for _ in range(repeats):
            for name, model in models.items():
                t0 = time.perf_counter()
                run(model)
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}, repeats


def length_batches(data: Encoded, pad_id: int, size: int = TIMING_BATCH) -> list[dict[str, Any]]:
    """The split in batches of similar length, as ``classify()`` forms them."""
    order = np.argsort([len(x) for x in data.ids], kind="stable")
    return [
        pad_batch([data.ids[i] for i in idx], [data.types[i] for i in idx], pad_id)
        for idx in (order[s : s + size] for s in range(0, len(order), size))
    ]
