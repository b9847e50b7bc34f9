"""Recipe: knowledge distillation of a BERT teacher into a smaller student.

setup (teacher checkpoint, student config and initial weights, data tokenized with the teacher's
tokenizer) -> train (the shared loop: the student learns the teacher's softened logits, its
labels, and optionally its hidden states and attention) -> save (an ordinary llmos checkpoint,
``task.json`` = the teacher's plus ``distilled_from``) -> report (teacher vs student on the test
split: quality, parameters and inference time on the same batches, the median over rounds in
which teacher and student take turns).

Two tasks: ``classification`` (a fine-tuned classifier teacher, labelled data) and ``mlm`` (a
pretrained encoder teacher, the pretraining corpus masked by the pretraining collator; the
teacher's MLM logits at the masked positions are the soft targets, and its NSP logits too when
both have that head).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from llmos.compress.distill import Objective
from llmos.config.distill import DistillConfig
from llmos.config.model import BertConfig
from llmos.files import atomic_write_json
from llmos.inference.classify import batched_logits
from llmos.inference.load import load_pipeline
from llmos.train.loop import FitResult, fit
from llmos.train.metrics import plot_confusion
from llmos.train.runs import start_run
from llmos.train.tasks.classify import Encoded
from llmos.train.tasks.distill import (
    DistillClassifyTask,
    DistillMLMTask,
    Teacher,
    build_student,
    check_setup,
    classification_data,
    load_teacher,
    mlm_data,
    padded_batches,
    score_against_teacher,
    side,
    speed_report,
    student_config,
)


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
    labels, enc, max_length, pad_id = classification_data(cfg, teacher, student_cfg)
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
    # task.json: the teacher's, with the student's max_length and where it was distilled from.
    meta = teacher.task.to_json() | {
        "max_length": max_length,
        "distilled_from": str(teacher.path),
    }
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
    atomic_write_json(result.run_dir / "report.json", result.report)
    return result


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
    labels = list(teacher.task.labels)  # type: ignore[union-attr]
    teacher.model.cpu()  # the report compares both on the CPU, where load_pipeline loads it
    final = load_pipeline(result.checkpoint)
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
    batches = padded_batches(test, pad_id)

    def run(model: nn.Module) -> None:
        for b in batches:
            model(b["input_ids"], b["token_type_ids"], b["attention_mask"])

    tokens = int(sum(len(x) for x in test.ids))
    speed = speed_report(teacher.model, final.model, run, len(batches), len(test.ids), tokens)
    plot_confusion(s_full["confusion"], labels, result.run_dir / f"confusion_{split}.png", cfg.name)
    return {
        "task": "classification",
        "split": split,
        "distilled_from": str(teacher.path),
        "labels": labels,
        "teacher": side(teacher.config, teacher.model, t_flat),
        "student": side(final.config, final.model, s_flat),
        "accuracy_ratio": s_flat["accuracy"] / max(t_flat["accuracy"], 1e-9),
        "macro_f1_ratio": s_flat["macro_f1"] / max(t_flat["macro_f1"], 1e-9),
        "speed": speed,
        "best": result.best,
        split: s_full,
    }


def _distill_mlm(
    cfg: DistillConfig,
    teacher: Teacher,
    student_cfg: BertConfig,
    objective: Objective,
    init: list[int] | None,
    resume: bool,
) -> DistillResult:
    pretraining, objective_name = mlm_data(cfg, teacher, student_cfg)
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
    teacher.model.cpu()  # the report compares both on the CPU, where load_pipeline loads it
    final = load_pipeline(result.checkpoint).model
    final.eval()
    valid = base.valid

    def run(model: nn.Module) -> None:
        for b in valid:
            model(b["input_ids"], b["token_type_ids"], b["attention_mask"], b["mlm_positions"])

    speed = speed_report(
        teacher.model,
        final,
        run,
        len(valid),
        sum(int(b["input_ids"].shape[0]) for b in valid),
        sum(int(b["num_tokens"]) for b in valid),
    )
    t_flat, s_flat = task.evaluate(teacher.model), task.evaluate(final)
    result.report = {
        "task": "mlm",
        "split": "valid",
        "distilled_from": str(teacher.path),
        "objective": objective_name,
        "teacher": side(teacher.config, teacher.model, t_flat),
        "student": side(student_cfg, final, s_flat),
        "student_before": before,
        "mlm_accuracy_ratio": s_flat["mlm_accuracy"] / max(t_flat["mlm_accuracy"], 1e-9),
        "speed": speed,
        "layer_map": objective.layer_map,
        "init_layers": init,
        "best": result.best,
        "train_tokens": train_corpus.num_tokens,
    }
    atomic_write_json(result.run_dir / "report.json", result.report)
    return result
