"""Recipe: knowledge distillation of a BERT teacher into a smaller student.

setup (teacher checkpoint, student config and initial weights, data tokenized with the teacher's
tokenizer) -> train (the shared loop: the student learns the teacher's softened logits, its
labels, and optionally its hidden states and attention) -> save (an ordinary llmos checkpoint,
``task.json`` = the teacher's plus ``distilled_from``) -> report (teacher vs student on the test
split: quality, parameters and inference time on the same batches).

Two tasks: ``classification`` (a fine-tuned classifier teacher, labelled data) and ``mlm`` (a
pretrained encoder teacher, the pretraining corpus masked by the pretraining collator; the
teacher's MLM logits at the masked positions are the soft targets, and its NSP logits too when
both have that head).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmos.checkpoint.io import TOKENIZER_FILE, read_weights, write_json_atomic
from llmos.compress.distill import Objective, check_layer_list, init_from_teacher
from llmos.config.model import BertConfig
from llmos.config.run import DataConfig, DistillConfig, PretrainConfig
from llmos.data.datasets import dataset_files, warn_skipped
from llmos.data.readers import read_classification
from llmos.errors import ConfigError
from llmos.inference.classify import batched_logits
from llmos.inference.pipeline import Pipeline
from llmos.models.bert import BertForPreTraining, BertForSequenceClassification
from llmos.text.tokenizer import special_ids
from llmos.train.loop import FitResult, fit
from llmos.train.metrics import plot_confusion
from llmos.train.runs import start_run
from llmos.train.tasks.classify import Encoded, encode_split
from llmos.train.tasks.distill import (
    DistillClassifyTask,
    DistillMLMTask,
    length_batches,
    score_against_teacher,
    time_models,
)
from llmos.train.tasks.mlm import setup_mlm_pretraining

log = logging.getLogger("llmos.recipes")


@dataclass
class DistillResult(FitResult):
    """Where the run and its best checkpoint are, and its report (empty on other DDP ranks)."""

    report: dict[str, Any] = field(default_factory=dict)

    def format_report(self) -> str:
        """What ``llmos compress distill`` prints: checkpoint, plots, report, and teacher vs
        student (quality, size, time)."""
        report = self.report
        plots = [self.run_dir / "loss.png"]
        if report["task"] == "classification":
            plots.append(self.run_dir / f"confusion_{report['split']}.png")
        lines = [
            f"checkpoint: {self.checkpoint}",
            f"plots:      {', '.join(map(str, plots))}",
            f"report:     {self.run_dir / 'report.json'}",
        ]
        metric = "accuracy" if report["task"] == "classification" else "mlm_accuracy"
        s, speed = report["student"], report["speed"]
        for who in ("teacher", "student"):
            side = report[who]
            lines.append(
                f"{who}:    {report['split']} {metric} {side[metric]:.4f}  {side['layers']} "
                f"layers, {side['parameters'] / 1e6:.2f}M parameters, "
                f"{speed[who + '_seconds']:.2f} s"
            )
        lines.append(
            f"student/teacher: {report[metric + '_ratio']:.1%} of the {metric}, "
            f"{speed['speedup']:.2f}x faster ({speed['threads']} threads), agreement "
            f"{s['agreement']:.4f}"
        )
        return "\n".join(lines)


@dataclass
class Teacher:
    path: Path
    model: nn.Module  # eval mode, frozen
    config: BertConfig
    tokenizer: Any
    task: dict[str, Any] | None


def load_teacher(cfg: DistillConfig) -> Teacher:
    """The teacher checkpoint, checked against the task: a classifier for ``classification``,
    a pretrained encoder with an MLM head for ``mlm``."""
    path = Path(cfg.teacher).expanduser()
    pipe = Pipeline.from_checkpoint(path)
    if not isinstance(pipe.config, BertConfig):
        raise ConfigError(f"teacher {path}: a GPT decoder; distillation needs a BERT encoder")
    kind = (pipe.task or {}).get("task")
    if cfg.task == "classification" and kind != "classification":
        raise ConfigError(
            f"teacher {path}: task classification needs a fine-tuned classifier checkpoint "
            f"(task.json with labels); this one is {kind or 'a pretrained encoder'} "
            "(use task: mlm to distill a pretrained encoder)"
        )
    if cfg.task == "mlm" and (pipe.task is not None or pipe.config.heads == "none"):
        raise ConfigError(
            f"teacher {path}: task mlm needs a pretrained encoder with an MLM head; this one is "
            f"{kind or 'an encoder without one'}"
        )
    model = pipe.model.eval().requires_grad_(False)
    return Teacher(path, model, pipe.config, pipe.tokenizer, pipe.task)


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


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _speed(
    timed: tuple[dict[str, float], int], batches: int, examples: int, tokens: int
) -> dict[str, Any]:
    seconds, repeats = timed
    return {
        "threads": torch.get_num_threads(),
        "precision": "fp32",
        "batches": batches,
        "examples": examples,
        "tokens": tokens,
        "repeats": repeats,
        "teacher_seconds": seconds["teacher"],
        "student_seconds": seconds["student"],
        "speedup": seconds["teacher"] / max(seconds["student"], 1e-9),
    }


def build_student(
    teacher: Teacher, student_cfg: BertConfig, init: list[int] | None, num_labels: int | None
) -> nn.Module:
    """The student (a classifier when ``num_labels`` is given, else pretraining heads) from
    random weights (seeded by ``start_run``), or from the teacher's layers ``init``."""
    if num_labels is not None:
        student: nn.Module = BertForSequenceClassification(student_cfg, num_labels)
    else:
        student = BertForPreTraining(student_cfg)
    if init is not None:
        kept = init_from_teacher(
            student, read_weights(teacher.path), init, teacher.config.share_layers
        )
        if kept:
            log.warning("student weights not in the teacher (left random): %s", kept[:5])
        log.info("student initialised from teacher layers %s", init)
    return student


def distill(cfg: DistillConfig, resume: bool = False) -> DistillResult:
    """Distill ``cfg.teacher`` into the student ``cfg.student``; returns where the run and its
    best checkpoint are (``report.json`` beside them)."""
    teacher = load_teacher(cfg)
    student_cfg = student_config(cfg, teacher.config)
    layer_map, init = check_setup(cfg, teacher.config, student_cfg)
    objective = Objective(
        teacher.model,
        cfg.temperature,
        cfg.alpha,
        cfg.hidden_mse,
        cfg.attention_mse,
        layer_map,
    )
    if cfg.task == "mlm":
        return _distill_mlm(cfg, teacher, student_cfg, objective, init, resume)
    return _distill_classifier(cfg, teacher, student_cfg, objective, init, resume)


def _distill_classifier(
    cfg: DistillConfig,
    teacher: Teacher,
    student_cfg: BertConfig,
    objective: Objective,
    init: list[int] | None,
    resume: bool,
) -> DistillResult:
    labels, enc, max_length, pad_id = _classification_data(cfg, teacher, student_cfg)
    task = DistillClassifyTask(
        enc["train"], enc["valid"], labels, cfg.train.batch_size, cfg.train.seed, pad_id, objective
    )
    split = "test" if "test" in enc else "valid"
    test = enc[split]
    teacher_logits = batched_logits(teacher.model, test.ids, test.types, pad_id)

    run_dir = start_run(cfg)
    student = build_student(teacher, student_cfg, init, len(labels))
    student.eval()
    before = score_against_teacher(
        batched_logits(student, test.ids, test.types, pad_id),
        teacher_logits,
        test.labels,
        labels,
        cfg.temperature,
    )[0]
    assert teacher.task is not None
    meta = {**teacher.task, "max_length": max_length, "distilled_from": str(teacher.path)}
    fitted = fit(
        student,
        task,
        cfg.train,
        cfg.optim,
        run_dir,
        model_config=student_cfg,
        tokenizer=teacher.tokenizer,
        task_meta=meta,
        resume=resume,
        title=cfg.name,
        select=cfg.select,
        patience=cfg.patience,
    )
    result = DistillResult(**vars(fitted))
    if not result.is_main:
        return result
    report = _classification_report(cfg, teacher, fitted, test, split, teacher_logits, pad_id)
    result.report = report | {
        "student_before": before,
        "layer_map": objective.layer_map,
        "init_layers": init,
        "train_examples": len(enc["train"].labels),
    }
    write_json_atomic(result.run_dir / "report.json", result.report)
    return result


def _classification_data(
    cfg: DistillConfig, teacher: Teacher, student_cfg: BertConfig
) -> tuple[list[str], dict[str, Encoded], int, int]:
    """The teacher's labels, the splits encoded with its tokenizer, max_length, the pad id."""
    assert teacher.task is not None
    labels: list[str] = teacher.task["labels"]
    dataset = cfg.data.dataset or teacher.task.get("dataset")
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
    max_length = cfg.data.max_length or int(teacher.task.get("max_length", 128))
    max_length = min(max_length, student_cfg.max_position)
    enc = {
        s: encode_split(teacher.tokenizer, r.rows, labels, max_length, str(files[s]))
        for s, r in read.items()
    }
    return labels, enc, max_length, special_ids(teacher.tokenizer)["pad"] or 0


def _classification_report(
    cfg: DistillConfig,
    teacher: Teacher,
    result: FitResult,
    test: Encoded,
    split: str,
    teacher_logits: torch.Tensor,
    pad_id: int,
) -> dict[str, Any]:
    """Teacher vs the final student on ``test``: quality, parameters, speed (and the
    student's confusion matrix as a PNG)."""
    assert teacher.task is not None
    labels: list[str] = teacher.task["labels"]
    teacher.model.cpu()  # the report compares both on the CPU, where Pipeline loads the student
    final = Pipeline.from_checkpoint(result.checkpoint)
    t_flat, _ = score_against_teacher(
        teacher_logits, teacher_logits, test.labels, labels, cfg.temperature
    )
    s_flat, s_full = score_against_teacher(
        batched_logits(final.model, test.ids, test.types, pad_id),
        teacher_logits,
        test.labels,
        labels,
        cfg.temperature,
    )
    batches = length_batches(test, pad_id)

    def run(model: nn.Module) -> None:
        for b in batches:
            model(b["input_ids"], b["token_type_ids"], b["attention_mask"])

    timed = time_models({"teacher": teacher.model, "student": final.model}, run)
    plot_confusion(s_full["confusion"], labels, result.run_dir / f"confusion_{split}.png", cfg.name)
    return {
        "task": "classification",
        "split": split,
        "distilled_from": str(teacher.path),
        "labels": labels,
        "teacher": _side(teacher.config, teacher.model, t_flat),
        "student": _side(final.config, final.model, s_flat),
        "accuracy_ratio": s_flat["accuracy"] / max(t_flat["accuracy"], 1e-9),
        "macro_f1_ratio": s_flat["macro_f1"] / max(t_flat["macro_f1"], 1e-9),
        "speed": _speed(timed, len(batches), len(test.ids), int(sum(len(x) for x in test.ids))),
        "best": result.best,
        split: s_full,
    }


def _side(config: BertConfig, model: nn.Module, metrics: dict[str, float]) -> dict[str, Any]:
    return {
        "layers": config.num_layers,
        "hidden_size": config.hidden_size,
        "parameters": parameters(model),
        **metrics,
    }


def _distill_mlm(
    cfg: DistillConfig,
    teacher: Teacher,
    student_cfg: BertConfig,
    objective: Objective,
    init: list[int] | None,
    resume: bool,
) -> DistillResult:
    objective_name = cfg.data.objective or (
        "mlm+nsp" if teacher.config.heads == "mlm+nsp" else "mlm"
    )
    data = DataConfig(
        corpus=cfg.data.corpus,
        tokenizer=str(teacher.path / TOKENIZER_FILE),
        max_length=cfg.data.max_length or 128,
        objective=objective_name,
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
    pretraining = setup_mlm_pretraining(pcfg)
    base, train_corpus = pretraining.task, pretraining.train
    task = DistillMLMTask(base, objective)

    run_dir = start_run(cfg)
    student = build_student(teacher, student_cfg, init, None)
    student.eval()
    before = task.evaluate(student)
    fitted = fit(
        student,
        task,
        cfg.train,
        cfg.optim,
        run_dir,
        model_config=student_cfg,
        tokenizer=teacher.tokenizer,
        resume=resume,
        title=cfg.name,
        select=cfg.select,
        patience=cfg.patience,
    )
    result = DistillResult(**vars(fitted))
    if not result.is_main:
        return result
    teacher.model.cpu()  # the report compares both on the CPU, where Pipeline loads the student
    final = Pipeline.from_checkpoint(result.checkpoint).model
    final.eval()
    valid = base.valid

    def run(model: nn.Module) -> None:
        for b in valid:
            model(b["input_ids"], b["token_type_ids"], b["attention_mask"], b["mlm_positions"])

    timed = time_models({"teacher": teacher.model, "student": final}, run)
    t_flat, s_flat = task.evaluate(teacher.model), task.evaluate(final)
    result.report = {
        "task": "mlm",
        "split": "valid",
        "distilled_from": str(teacher.path),
        "objective": objective_name,
        "teacher": _side(teacher.config, teacher.model, t_flat),
        "student": _side(student_cfg, final, s_flat),
        "student_before": before,
        "mlm_accuracy_ratio": s_flat["mlm_accuracy"] / max(t_flat["mlm_accuracy"], 1e-9),
        "speed": _speed(
            timed,
            len(valid),
            sum(int(b["input_ids"].shape[0]) for b in valid),
            sum(int(b["num_tokens"]) for b in valid),
        ),
        "layer_map": objective.layer_map,
        "init_layers": init,
        "best": result.best,
        "train_tokens": train_corpus.num_tokens,
    }
    write_json_atomic(result.run_dir / "report.json", result.report)
    return result
