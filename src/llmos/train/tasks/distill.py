"""Knowledge distillation as library code: the teacher and the student (loaded, sized, checked,
initialised from the teacher's layers), the distillation tasks (a student learns a BERT
teacher's softened logits, and its labels, hidden states and attention as the
:class:`~llmos.compress.distill.Objective` says, on classification batches or on masked-LM
batches of the pretraining pipeline), the scores against the teacher, and the speed comparison
of the report. ``llmos compress distill`` (:mod:`llmos.recipes.distill`) wires them together.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmos.checkpoint.io import TOKENIZER_FILE, read_checkpoint
from llmos.checkpoint.task import Classification, MaskedLM, TaskSpec
from llmos.compress.distill import Objective, check_layer_list, init_from_teacher, soft_kl
from llmos.compress.timing import compare_speed
from llmos.config.distill import DistillConfig
from llmos.config.model import BertConfig
from llmos.config.run import DataConfig, PretrainConfig
from llmos.data.batching import length_sorted_batches, pad_batch
from llmos.data.datasets import dataset_files, warn_skipped
from llmos.data.readers import read_classification
from llmos.errors import ConfigError
from llmos.inference.classify import batched_logits
from llmos.inference.load import load_pipeline
from llmos.models.bert import BertForPreTraining, BertForSequenceClassification
from llmos.text.tokenizer import special_ids
from llmos.train.metrics import classification_metrics
from llmos.train.tasks.classify import ClassifyTask, Encoded, encode_split
from llmos.train.tasks.mlm import PretrainSetup, PretrainTask, setup_mlm_pretraining

log = logging.getLogger("llmos.train")

TIMING_SECONDS = 20.0  # timed passes (teacher and student in turns) add up to about this
TIMING_BATCH = 32


# -- teacher and student ------------------------------------------------------------------------


@dataclass
class Teacher:
    """The frozen teacher: its checkpoint, model (eval mode, no grad), config and task."""

    path: Path
    model: nn.Module
    config: BertConfig
    tokenizer: Any
    task: TaskSpec


def load_teacher(cfg: DistillConfig) -> Teacher:
    """The teacher checkpoint, checked against the task: a classifier for ``classification``,
    a pretrained encoder with an MLM head for ``mlm``."""
    path = Path(cfg.teacher).expanduser()
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt.config, BertConfig):
        raise ConfigError(f"teacher {path}: a GPT decoder; distillation needs a BERT encoder")
    spec = ckpt.task
    pretrained = isinstance(spec, MaskedLM)
    if cfg.task == "classification" and not isinstance(spec, Classification):
        raise ConfigError(
            f"teacher {path}: task classification needs a fine-tuned classifier checkpoint "
            f"(task.json with labels); this one is "
            f"{'a pretrained encoder' if pretrained else spec.kind} "
            "(use task: mlm to distill a pretrained encoder)"
        )
    if cfg.task == "mlm" and (not pretrained or ckpt.config.heads == "none"):
        raise ConfigError(
            f"teacher {path}: task mlm needs a pretrained encoder with an MLM head; this one is "
            f"{'an encoder without one' if pretrained else spec.kind}"
        )
    pipe = load_pipeline(ckpt)
    model = pipe.model.eval().requires_grad_(False)
    return Teacher(path, model, ckpt.config, pipe.tokenizer, spec)


def student_config(cfg: DistillConfig, teacher: BertConfig) -> BertConfig:
    """The teacher's architecture with the sizes ``cfg.student`` sets."""
    s = cfg.student
    if s.vocab_size is not None and s.vocab_size != teacher.vocab_size:
        raise ConfigError(
            f"student.vocab_size ({s.vocab_size}) must equal the teacher's ({teacher.vocab_size}):"
            " the student reads the teacher's token ids (leave it null)"
        )
    changes = {
        f.name: getattr(s, f.name)
        for f in fields(s)
        if f.name != "vocab_size" and getattr(s, f.name) is not None
    }
    try:
        return replace(teacher, **changes)
    except ConfigError as e:
        raise ConfigError(str(e).replace("model.", "student.")) from None


def check_setup(
    cfg: DistillConfig, teacher: BertConfig, student: BertConfig
) -> tuple[list[int], list[int] | None]:
    """The layer map and init layers, checked against both depths, and the losses that need
    equal sizes."""
    Ls, Lt = student.num_layers, teacher.num_layers
    layer_map = check_layer_list("layer_map", cfg.layer_map, Ls, Lt)
    init = cfg.student_init.init_layers
    if init is not None:
        init = check_layer_list("student_init.init_layers", init, Ls, Lt)
    if cfg.hidden_mse > 0 and student.hidden_size != teacher.hidden_size:
        raise ConfigError(
            f"hidden_mse compares hidden states, which needs student.hidden_size "
            f"({student.hidden_size}) equal to the teacher's ({teacher.hidden_size}); set "
            "hidden_mse: 0 or leave student.hidden_size null"
        )
    if cfg.attention_mse > 0 and student.num_heads != teacher.num_heads:
        raise ConfigError(
            f"attention_mse compares attention heads one to one, which needs student.num_heads "
            f"({student.num_heads}) equal to the teacher's ({teacher.num_heads}); set "
            "attention_mse: 0 or leave student.num_heads null"
        )
    return layer_map, init


def build_student(
    teacher: Teacher, student_cfg: BertConfig, init: list[int] | None, num_labels: int | None
) -> nn.Module:
    """The student (a classifier when ``num_labels`` is given, else pretraining heads) from
    random weights (seeded by the caller), or DistilBERT-style from the teacher's layers
    ``init`` (:func:`~llmos.compress.distill.init_from_teacher`)."""
    if num_labels is not None:  # the teacher's head: its task.json carries over to the student
        pooling = teacher.task.pooling if isinstance(teacher.task, Classification) else "cls"
        student: nn.Module = BertForSequenceClassification(student_cfg, num_labels, pooling)
    else:
        student = BertForPreTraining(student_cfg)
    if init is not None:
        weights = read_checkpoint(teacher.path).weights()
        kept = init_from_teacher(student, weights, init, teacher.config.share_layers)
        if kept:
            log.warning("student weights not in the teacher (left random): %s", kept[:5])
        log.info("student initialised from teacher layers %s", init)
    return student


# -- data ---------------------------------------------------------------------------------------


def classification_data(
    cfg: DistillConfig, teacher: Teacher, student_cfg: BertConfig
) -> tuple[list[str], dict[str, Encoded], int, int]:
    """The teacher's labels, the splits encoded with its tokenizer, max_length, the pad id."""
    assert isinstance(teacher.task, Classification)
    labels = list(teacher.task.labels)
    dataset = cfg.data.dataset or teacher.task.extra.get("dataset")
    if not dataset:
        raise ConfigError("data.dataset: not set, and the teacher's task.json names no dataset")
    files = dataset_files(dataset)
    read = {
        s: read_classification(
            f, label_key=cfg.data.label_key, skip_bad_rows=cfg.data.skip_bad_rows
        )
        for s, f in files.items()
    }
    warn_skipped(files, read)
    max_length = cfg.data.max_length or teacher.task.max_length or 128
    max_length = min(max_length, student_cfg.max_position)
    enc = {
        # The teacher's text_prefix: it was trained on prefixed texts, and the student, whose
        # task.json copies the teacher's, is read with it too.
        s: encode_split(
            teacher.tokenizer, r.rows, labels, max_length, str(files[s]), teacher.task.text_prefix
        )
        for s, r in read.items()
    }
    return labels, enc, max_length, special_ids(teacher.tokenizer)["pad"] or 0


def mlm_data(
    cfg: DistillConfig, teacher: Teacher, student_cfg: BertConfig
) -> tuple[PretrainSetup, str]:
    """The pretraining pipeline over ``cfg.data.corpus``, tokenized with the teacher's
    tokenizer, and its objective (``mlm+nsp`` when the teacher has both heads, unless set)."""
    objective = cfg.data.objective or ("mlm+nsp" if teacher.config.heads == "mlm+nsp" else "mlm")
    data = DataConfig(
        corpus=cfg.data.corpus,
        tokenizer=str(teacher.path / TOKENIZER_FILE),
        max_length=cfg.data.max_length or 128,
        objective=objective,
        mask_prob=cfg.data.mask_prob,
        short_seq_prob=cfg.data.short_seq_prob,
        max_valid_examples=cfg.data.max_valid_examples,
        max_train_documents=cfg.data.max_train_documents,
    )
    try:
        pcfg = PretrainConfig(
            name=cfg.name, out_dir=cfg.out_dir, model=student_cfg, data=data, train=cfg.train
        )
    except ConfigError as e:  # objective vs heads, max_length vs positions
        raise ConfigError(str(e).replace("model.", "teacher's ")) from None
    return setup_mlm_pretraining(pcfg), objective


def padded_batches(data: Encoded, pad_id: int, size: int = TIMING_BATCH) -> list[dict[str, Any]]:
    """The split in batches of similar length, as ``classify()`` forms them."""
    return [
        pad_batch([data.ids[i] for i in idx], [data.types[i] for i in idx], pad_id)
        for idx in length_sorted_batches([len(x) for x in data.ids], size)
    ]


# -- tasks --------------------------------------------------------------------------------------


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


# -- the report ---------------------------------------------------------------------------------


def side(config: BertConfig, model: nn.Module, metrics: dict[str, float]) -> dict[str, Any]:
    """One side of the report: depth, width, parameters and the metrics."""
    return {
        "layers": config.num_layers,
        "hidden_size": config.hidden_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        **metrics,
    }


def speed_report(
    teacher: nn.Module,
    student: nn.Module,
    run: Callable[[nn.Module], None],
    batches: int,
    examples: int,
    tokens: int,
    rounds: int | None = None,
) -> dict[str, Any]:
    """Seconds of ``run(model)`` for teacher and student and the speed-up: the median over
    interleaved rounds (teacher and student in turns, after a warm-up pass each; by default
    as many rounds as fit about TIMING_SECONDS, 3 to 20), by
    :func:`~llmos.compress.timing.compare_speed`, in inference mode."""
    with torch.inference_mode():
        timed = compare_speed(
            {"teacher": lambda: run(teacher), "student": lambda: run(student)},
            rounds=rounds,
            min_seconds=TIMING_SECONDS,
        )
    return {
        "threads": torch.get_num_threads(),
        "precision": "fp32",
        "batches": batches,
        "examples": examples,
        "tokens": tokens,
        "repeats": timed.rounds,
        "teacher_seconds": timed.seconds["teacher"],
        "student_seconds": timed.seconds["student"],
        "speedup": timed.speedup,
    }
