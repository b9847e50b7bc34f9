"""Recipe: fine-tune a classification head on a pretrained encoder checkpoint.

setup (checkpoint, data, head) -> train (the shared loop, best checkpoint by a validation
metric, early stopping) -> save -> report (test-split metrics and a confusion-matrix PNG).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from llmos.checkpoint.io import (
    TOKENIZER_FILE,
    read_config,
    read_weights,
    require_unquantized,
    write_json_atomic,
)
from llmos.config.model import BertConfig
from llmos.config.run import FinetuneConfig
from llmos.data.batching import EpochBatches, pad_batch
from llmos.data.readers import Example, ReadResult, read_classification
from llmos.errors import CheckpointError, DataError
from llmos.inference.classify import batched_logits, encode_texts
from llmos.inference.pipeline import Pipeline
from llmos.models.bert import BertForSequenceClassification
from llmos.paths import data_dir
from llmos.recipes.runs import start_run
from llmos.text.tokenizer import load_tokenizer, special_ids
from llmos.train.loop import FitResult, fit
from llmos.train.metrics import classification_metrics, plot_confusion

log = logging.getLogger("llmos.recipes")

SUFFIXES = (".tsv", ".csv", ".jsonl", ".conll", ".bio", ".txt")


def dataset_files(name: str) -> dict[str, Path]:
    """``{split: file}`` of a dataset name under ``$LLMOS_HOME/data/tasks`` or a directory."""
    root = Path(name).expanduser()
    if not root.is_dir():
        root = data_dir() / "tasks" / name
    files = {}
    for split in ("train", "valid", "test"):
        found = [root / f"{split}{s}" for s in SUFFIXES if (root / f"{split}{s}").is_file()]
        if found:
            files[split] = found[0]
    missing = [s for s in ("train", "valid") if s not in files]
    if missing:
        raise DataError(
            f"{root}: no {' or '.join(missing)} file (expected train/valid[/test] with a suffix of "
            f"{', '.join(SUFFIXES)}; `llmos data prepare` makes the packaged datasets)"
        )
    return files


def warn_skipped(files: dict[str, Path], read: dict[str, ReadResult]) -> None:
    """Log, per split, how many bad rows ``--skip-bad-rows`` skipped and where the first was."""
    for split, res in read.items():
        if res.skipped:
            first = res.skipped_at[0]
            log.warning("%s: skipped %d bad rows (first at %s)", files[split], res.skipped, first)


@dataclass
class Encoded:
    """Token ids, token types and label indices of a split."""

    ids: list[np.ndarray]
    types: list[np.ndarray]
    labels: np.ndarray


def encode_split(
    tokenizer: Any, rows: list[Example], labels: list[str], max_length: int, name: str
) -> Encoded:
    index = {label: i for i, label in enumerate(labels)}
    unseen = Counter(r.label for r in rows if r.label not in index)
    if unseen:
        log.warning("%s: labels unseen in training (rows skipped): %s", name, dict(unseen))
    rows = [r for r in rows if r.label in index]
    ids, types, truncated = encode_texts(
        tokenizer, [r.text for r in rows], [r.text_b for r in rows], max_length
    )
    if truncated:
        log.warning(
            "%s: %d of %d texts truncated to %d tokens", name, truncated, len(rows), max_length
        )
    return Encoded(ids, types, np.array([index[r.label] for r in rows], dtype=np.int64))


class ClassifyTask(EpochBatches):
    """Sequence classification for the shared training loop."""

    def __init__(
        self,
        train: Encoded,
        valid: Encoded,
        labels: list[str],
        batch_size: int,
        seed: int,
        pad_id: int,
        class_weights: torch.Tensor | None = None,
    ) -> None:
        self.train, self.valid, self.labels = train, valid, labels
        self.batch_size, self.seed, self.pad_id = batch_size, seed, pad_id
        self.class_weights = class_weights
        self.lengths = np.array([len(x) for x in train.ids])
        self.position = {"epoch": 0, "batch": 0}

    def collate(self, idx: np.ndarray) -> dict[str, Any]:
        b = pad_batch(
            [self.train.ids[i] for i in idx], [self.train.types[i] for i in idx], self.pad_id
        )
        b["labels"] = torch.from_numpy(self.train.labels[idx])
        return b

    def counts(self, batch: dict[str, Any]) -> list[float]:
        return [float(batch["labels"].numel())]

    def loss(
        self, model: nn.Module, batch: dict[str, Any], totals: list[float]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        weight = self.class_weights.to(logits.device) if self.class_weights is not None else None
        loss = (
            F.cross_entropy(logits.float(), batch["labels"], weight=weight, reduction="sum")
            / totals[0]
        )
        return loss, {"loss": loss.item()}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return evaluate_encoded(model, self.valid, self.labels, self.pad_id)[0]


def evaluate_encoded(
    model: nn.Module, data: Encoded, labels: list[str], pad_id: int
) -> tuple[dict[str, float], dict[str, Any]]:
    """Loss, accuracy and macro-F1 (flat), and the full report with per-class numbers."""
    logits = batched_logits(model, data.ids, data.types, pad_id)
    target = torch.from_numpy(data.labels)
    loss = F.cross_entropy(logits, target).item() if len(target) else float("nan")
    pred = logits.argmax(-1).tolist()
    report = classification_metrics(data.labels.tolist(), pred, labels)
    flat = {"loss": loss, "accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}
    return flat, report


def load_encoder(model: nn.Module, weights: dict[str, torch.Tensor], path: Path) -> None:
    """Copy the ``bert.*`` weights of a checkpoint into a new task model; the head stays fresh.

    A model without a pooler (token classification) leaves the checkpoint's pooler out.
    """
    has_pooler = any(k.startswith("bert.pooler.") for k in model.state_dict())
    encoder = {
        k: v
        for k, v in weights.items()
        if k.startswith("bert.") and (has_pooler or not k.startswith("bert.pooler."))
    }
    missing, unexpected = model.load_state_dict(encoder, strict=False)
    if unexpected or any(not k.startswith(("classifier.", "bert.pooler.")) for k in missing):
        raise CheckpointError(
            f"{path}: not a BERT encoder checkpoint "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    if any(k.startswith("bert.pooler.") for k in missing):
        log.warning("%s has no pooler weights: the pooler starts from random weights", path)


@dataclass
class Init:
    """The encoder checkpoint a fine-tuning run starts from."""

    path: Path
    config: BertConfig
    weights: dict[str, torch.Tensor]
    tokenizer: Tokenizer


def load_init(cfg: FinetuneConfig) -> Init:
    path = Path(cfg.init).expanduser()
    config = read_config(path)
    require_unquantized(path, config, "fine-tuning")
    return Init(path, config, read_weights(path), load_tokenizer(path / TOKENIZER_FILE))


def train_head(
    cfg: FinetuneConfig,
    init: Init,
    build: Callable[[], nn.Module],
    task: Any,
    meta: dict[str, Any],
    resume: bool,
    load: Callable[[nn.Module, dict[str, torch.Tensor], Path], None] = load_encoder,
) -> FitResult:
    """Build the task model (seeded), copy in the initial weights (``load``: by default the
    encoder of a BERT checkpoint, the head stays fresh), save the run config and train it with
    the shared loop; ``task.json`` gets ``meta`` plus where the run started from."""
    run_dir = start_run(cfg)
    model = build()
    load(model, init.weights, init.path)
    return fit(
        model,
        task,
        cfg.train,
        cfg.optim,
        run_dir,
        model_config=init.config,
        tokenizer=init.tokenizer,
        task_meta=meta | {"init": str(init.path), "dataset": cfg.data.dataset},
        resume=resume,
        title=cfg.name,
        select=cfg.select,
        patience=cfg.patience,
    )


def finetune(cfg: FinetuneConfig, resume: bool = False) -> FitResult:
    """Fine-tune a classifier or tagger, or instruction-tune a GPT; returns where the run and
    its best checkpoint are."""
    if cfg.task == "tagging":
        from llmos.recipes.tagging import finetune_tagging

        return finetune_tagging(cfg, resume)
    if cfg.task == "instruct":
        from llmos.recipes.instruct import finetune_instruct

        return finetune_instruct(cfg, resume)
    init = load_init(cfg)
    files = dataset_files(cfg.data.dataset)
    read = {
        s: read_classification(
            f, label_key=cfg.data.label_key, skip_bad_rows=cfg.data.skip_bad_rows
        )
        for s, f in files.items()
    }
    warn_skipped(files, read)
    labels = sorted({r.label for r in read["train"].rows})
    if len(labels) < 2:
        raise DataError(f"{files['train']}: needs at least two labels, found {labels}")
    max_length = min(cfg.data.max_length, init.config.max_position)
    enc = {
        s: encode_split(init.tokenizer, r.rows, labels, max_length, str(files[s]))
        for s, r in read.items()
    }
    weights_t = None
    if cfg.class_weights == "balanced":  # n / (k * count), as scikit-learn's "balanced"
        counts = np.bincount(enc["train"].labels, minlength=len(labels)).astype(np.float64)
        weights_t = torch.tensor(
            len(enc["train"].labels) / (len(labels) * np.maximum(counts, 1)), dtype=torch.float32
        )
    pad_id = special_ids(init.tokenizer)["pad"] or 0
    task = ClassifyTask(
        enc["train"], enc["valid"], labels, cfg.train.batch_size, cfg.train.seed, pad_id, weights_t
    )
    meta = {
        "task": "classification",
        "labels": labels,
        "max_length": max_length,
        "label_key": cfg.data.label_key,
    }
    result = train_head(
        cfg,
        init,
        lambda: BertForSequenceClassification(init.config, len(labels)),
        task,
        meta,
        resume,
    )
    if not result.is_main:
        return result
    report: dict[str, Any] = {
        "best": result.best,
        "labels": labels,
        "train_examples": len(enc["train"].labels),
    }
    if "test" in enc:
        best = Pipeline.from_checkpoint(result.checkpoint)
        flat, full = evaluate_encoded(best.model, enc["test"], labels, pad_id)
        report["test"] = full | {"loss": flat["loss"]}
        plot_confusion(
            full["confusion"], labels, result.run_dir / "confusion_test.png", f"{cfg.name} (test)"
        )
    write_json_atomic(result.run_dir / "report.json", report)
    return result
