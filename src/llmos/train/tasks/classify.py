"""Sequence classification (intent, sentiment, sentence pairs): encoding, batches, loss,
evaluation, and the fine-tuning setup built from a :class:`~llmos.config.run.FinetuneConfig`."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmos.config.model import XLNetConfig
from llmos.config.run import FinetuneConfig
from llmos.data.batching import EpochBatches, pad_batch
from llmos.data.datasets import dataset_files, warn_skipped
from llmos.data.readers import Example, read_classification
from llmos.errors import ConfigError, DataError
from llmos.inference.classify import batched_logits, encode_texts
from llmos.inference.encoder import EncoderPipeline
from llmos.inference.load import load_pipeline
from llmos.models.bert import BertForSequenceClassification
from llmos.models.xlnet import XLNetForSequenceClassification
from llmos.text.tokenizer import special_ids
from llmos.train.loop import FitResult
from llmos.train.metrics import classification_metrics, plot_confusion
from llmos.train.runs import FinetuneSetup, Init

log = logging.getLogger("llmos.train")


@dataclass
class Encoded:
    """Token ids, token types and label indices of a split."""

    ids: list[np.ndarray]
    types: list[np.ndarray]
    labels: np.ndarray


def encode_split(
    tokenizer: Any,
    rows: list[Example],
    labels: list[str],
    max_length: int,
    name: str,
    prefix: str | None = None,
) -> Encoded:
    """Tokenize a split's texts (pairs too) and index its labels; rows whose label is not in
    ``labels`` are skipped with a warning naming ``name``. ``prefix`` (the classifier's
    ``text_prefix``) is put before each text (the first of a pair), inside ``max_length``."""
    index = {label: i for i, label in enumerate(labels)}
    unseen = Counter(r.label for r in rows if r.label not in index)
    if unseen:
        log.warning("%s: labels unseen in training (rows skipped): %s", name, dict(unseen))
    rows = [r for r in rows if r.label in index]
    ids, types, truncated = encode_texts(
        tokenizer, [r.text for r in rows], [r.text_b for r in rows], max_length, prefix
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


def score_classifier(
    pipe: EncoderPipeline,
    data: str | Path,
    *,
    label_key: str = "label",
    skip_bad_rows: bool = False,
) -> dict[str, Any]:
    """A fine-tuned classifier on a labelled file, predicting as ``classify()`` does: accuracy,
    macro-F1, per-class P/R/F1 and the confusion matrix, plus ``examples``, ``skipped_rows``
    and ``unseen_labels`` (rows whose label the model was not trained on: left out, since no
    prediction could match them)."""
    labels = pipe.require_task("classification")
    read = read_classification(data, label_key=label_key, skip_bad_rows=skip_bad_rows)
    rows = read.rows
    unseen = Counter(r.label for r in rows if r.label not in labels)
    if unseen:
        log.warning("%s: labels the model was not trained on (left out): %s", data, dict(unseen))
    rows = [r for r in rows if r.label in labels]
    if not rows:
        raise DataError(f"{data}: no rows with a label this model knows ({labels})")
    preds = pipe.classify(
        [r.text for r in rows], [r.text_b for r in rows] if rows[0].text_b else None
    )
    index = {label: i for i, label in enumerate(labels)}
    report = classification_metrics(
        [index[r.label] for r in rows], [index[p["label"]] for p in preds], labels
    )
    return report | {
        "examples": len(rows),
        "skipped_rows": read.skipped,
        "unseen_labels": dict(unseen),
    }


# How many training texts per label task.json keeps (``examples``).
EXAMPLES_PER_LABEL = 8


def label_examples(rows: list[Example], labels: list[str], k: int = EXAMPLES_PER_LABEL) -> dict:
    """Up to ``k`` training texts per label, spread over the label's rows in file order (the
    intents' files are ordered by template, so the spread covers several templates). Kept in
    task.json as ``examples``, so a few-shot layer can tell a message that looks like a
    trained label from one that looks like a new label (:mod:`llmos.apps.support.fewshot`),
    whatever encoder it embeds them with."""
    by: dict[str, list[str]] = {label: [] for label in labels}
    for r in rows:
        if r.label in by and r.text_b is None:
            by[r.label].append(r.text)
    return {label: ts[:: max(1, len(ts) // k)][:k] for label, ts in by.items() if ts}


def setup_classification(cfg: FinetuneConfig, init: Init) -> FinetuneSetup:
    """Labels from the training split, the splits encoded with the encoder's tokenizer, the
    task (balanced class weights on request), and a report scoring the best checkpoint on the
    test split (with ``confusion_test.png``)."""
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
        s: encode_split(
            init.tokenizer, r.rows, labels, max_length, str(files[s]), cfg.data.text_prefix
        )
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
    if cfg.pooling != "cls":
        meta["pooling"] = cfg.pooling
    if cfg.data.text_prefix:  # written only when set: task.json without one is unchanged
        meta["text_prefix"] = cfg.data.text_prefix
    if examples := label_examples(read["train"].rows, labels):
        meta["examples"] = examples

    def report(result: FitResult) -> dict[str, Any]:
        out: dict[str, Any] = {
            "best": result.best,
            "labels": labels,
            "train_examples": len(enc["train"].labels),
        }
        if "test" in enc:
            best = load_pipeline(result.checkpoint)
            flat, full = evaluate_encoded(best.model, enc["test"], labels, pad_id)
            out["test"] = full | {"loss": flat["loss"]}
            png = result.run_dir / "confusion_test.png"
            plot_confusion(full["confusion"], labels, png, f"{cfg.name} (test)")
        return out

    config = init.config
    if isinstance(config, XLNetConfig) and cfg.pooling != "cls":
        raise ConfigError(
            f"pooling {cfg.pooling!r}: an XLNet classifier reads its sequence summary (the last "
            "token), set pooling: cls"
        )

    def build() -> nn.Module:
        if isinstance(config, XLNetConfig):
            return XLNetForSequenceClassification(config, len(labels))
        return BertForSequenceClassification(config, len(labels), cfg.pooling)

    return FinetuneSetup(task, build, meta, report)
