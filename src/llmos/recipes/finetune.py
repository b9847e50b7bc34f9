"""Recipe: fine-tune a pretrained checkpoint for a task (``llmos finetune``).

config -> the init checkpoint -> the task family's setup (``FINETUNE_SETUPS``: data, task,
model, report; each lives in ``llmos.train.tasks``) -> train (the shared loop, best checkpoint
by a validation metric, early stopping) -> save -> report (``report.json``: test-split scores,
with a plot) -> with ``calibrate``, the classifiers' temperatures fitted on the validation split
(``llmos.train.calibration``).

Task families: ``classification`` (a classifier head on a BERT encoder), ``tagging`` (a token
classifier: segmentation, POS, NER, slots), ``multitask`` (several classifier and tagger heads
on one encoder, read from one pass), ``embedding`` (a retrieval encoder), ``spelling`` (a
MacBERT4CSC-style spelling corrector) and ``instruct`` (instruction tuning of a GPT).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmos.config.run import FinetuneConfig
from llmos.files import atomic_write_json
from llmos.train.loop import FitResult
from llmos.train.runs import FinetuneSetup, Init, load_init, train_head
from llmos.train.tasks.classify import setup_classification
from llmos.train.tasks.embed import setup_embedding
from llmos.train.tasks.instruct import setup_instruct
from llmos.train.tasks.multitask import setup_multitask
from llmos.train.tasks.spelling import setup_spelling
from llmos.train.tasks.tag import setup_tagging

# cfg.task -> the setup of that task family: the one place a task type is dispatched on.
FINETUNE_SETUPS: dict[str, Callable[[FinetuneConfig, Init], FinetuneSetup]] = {
    "classification": setup_classification,
    "tagging": setup_tagging,
    "instruct": setup_instruct,
    "multitask": setup_multitask,
    "embedding": setup_embedding,
    "spelling": setup_spelling,
}
# The plot each task family's report writes beside report.json (instruct writes none).
TEST_PLOTS = {
    "classification": "confusion_test.png",
    "tagging": "span_scores_test.png",
    "embedding": "retrieval_test.png",
    "spelling": "thresholds_valid.png",
}


@dataclass
class FinetuneResult(FitResult):
    """Where the run and its best checkpoint are, and its report (empty on other DDP ranks)."""

    task: str = "classification"
    report: dict[str, Any] = field(default_factory=dict)

    def format_report(self) -> str:
        """What ``llmos finetune`` prints: checkpoint, plots, report and best validation."""
        plots = [TEST_PLOTS.get(self.task, "span_scores_test.png")]
        if self.task == "multitask":  # one plot per head
            plots = [f"{h}_test.png" for h in self.report.get("heads", {})]
        lines = [
            f"checkpoint: {self.checkpoint}",
            "plots:      " + ", ".join(str(self.run_dir / p) for p in ["loss.png", *plots]),
            f"report:     {self.run_dir / 'report.json'}",
        ]
        if self.best:
            best = ", ".join(f"{k}={v:.4g}" for k, v in self.best["metrics"].items())
            lines.append(f"best validation (step {self.best['step']}): {best}")
        return "\n".join(lines)


def finetune(cfg: FinetuneConfig, resume: bool = False) -> FinetuneResult:
    """Fine-tune a classifier or tagger, or instruction-tune a GPT; returns where the run and
    its best checkpoint are, with the report also written to ``report.json``."""
    init = load_init(cfg)
    setup = FINETUNE_SETUPS[cfg.task](cfg, init)
    fitted = train_head(cfg, init, setup.build, setup.task, setup.meta, resume, setup.load)
    result = FinetuneResult(**vars(fitted), task=cfg.task)
    if not result.is_main:
        return result
    result.report = setup.report(fitted)
    heads = [h.name for h in cfg.heads if h.calibrate]
    if cfg.calibrate or heads:  # labels unchanged: the test scores above still hold
        from llmos.train.calibration import calibrate_checkpoint

        fits = calibrate_checkpoint(fitted.checkpoint, heads=heads or None)
        result.report["calibration"] = [f.as_json() for f in fits]
    atomic_write_json(result.run_dir / "report.json", result.report)
    return result
