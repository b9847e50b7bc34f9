"""What a quantization costs and saves, measured on the task's own data: the texts to calibrate
and measure on, the model's outputs on calibration batches and their relative error, the
predictions and their agreement, the quality on the labelled test split, speed and file size.

The quantization itself is :mod:`llmos.compress.quantize`; ``llmos compress quantize``
(:mod:`llmos.recipes.quantize`) wires the two together.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from llmos.checkpoint.io import WEIGHTS_FILE
from llmos.checkpoint.task import Classification, Embedding, Tagging
from llmos.compress.timing import compare_speed
from llmos.data.batching import length_sorted_batches, pad_batch
from llmos.data.datasets import dataset_files
from llmos.data.readers import read_classification, read_spans
from llmos.errors import CheckpointError, DataError
from llmos.inference.classify import encode_texts
from llmos.inference.embed import pool
from llmos.inference.encoder import EncoderPipeline
from llmos.inference.onnx import ONNX_FILE
from llmos.train.tasks.classify import score_classifier
from llmos.train.tasks.tag import score_tagger

Kind = Literal["classification", "tagging", "embedding"]
CALIBRATION_BATCH = 32


@dataclass
class Texts:
    """Calibration texts, test texts, and the labelled test file (None for plain text)."""

    calibration: list[str]
    test: list[str]
    test_file: Path | None


def output_kind(pipe: EncoderPipeline) -> Kind:
    """What the measurements compare: a classifier's or tagger's predictions, else sentence
    vectors (an embedding model, or a pretrained encoder used as one)."""
    if isinstance(pipe.spec, Classification):
        return "classification"
    if isinstance(pipe.spec, Tagging):
        if pipe.spec.char_tags:
            raise CheckpointError(
                f"{pipe.checkpoint.path}: quantization covers token taggers; this one tags "
                "characters from the tokenizer's pieces (task.json char_tags: true)"
            )
        return "tagging"
    return "embedding"


def read_texts(
    pipe: EncoderPipeline, data: str | None, calibration: int, limit: int, label_key: str = "label"
) -> Texts:
    """Texts to calibrate on (the valid split) and to measure on (the test split), from a
    dataset name or directory (default: the one in ``task.json``) or a plain text file (one text
    per line: the first ``calibration`` calibrate, the rest are measured)."""
    data = data or pipe.spec.extra.get("dataset")
    if data is None:
        raise DataError(
            "no data to calibrate and measure on: pass --data DATASET (a name under the data "
            "directory or a directory with valid and test splits) or --data FILE.txt (one text "
            "per line)"
        )
    path = Path(data).expanduser()
    if path.is_file():
        lines = [x.strip() for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
        if len(lines) < 2:
            raise DataError(f"{path}: needs at least 2 non-empty lines (one text per line)")
        cut = min(calibration, len(lines) // 2)
        return Texts(lines[:cut], lines[cut : cut + limit], None)
    files = dataset_files(data)
    if "test" not in files:
        raise DataError(f"{data}: no test split to measure the quantized model on")
    spec = pipe.spec

    def texts(f: Path) -> list[str]:
        if isinstance(spec, Tagging):
            return [r.text for r in read_spans(f, view=spec.view).rows]
        return [r.text for r in read_classification(f, label_key=label_key).rows]

    return Texts(texts(files["valid"])[:calibration], texts(files["test"])[:limit], files["test"])


def calibration_batches(
    pipe: EncoderPipeline, texts: list[str], size: int = CALIBRATION_BATCH
) -> list[dict[str, Any]]:
    """``texts`` tokenized as the pipeline does (a classifier's text_prefix before each,
    truncated to the task's max_length), in batches of similar length. Every model is run on
    the same batches, so outputs compare row for row."""
    prefix = pipe.spec.text_prefix if isinstance(pipe.spec, Classification) else None
    ids, types, _ = encode_texts(pipe.tokenizer, texts, None, pipe.checkpoint.max_length, prefix)
    pad = pipe._pad()
    return [
        pad_batch([ids[i] for i in idx], [types[i] for i in idx], pad)
        for idx in length_sorted_batches([len(x) for x in ids], size)
    ]


@torch.inference_mode()
def outputs(
    model: torch.nn.Module, batches: list[dict[str, Any]], kind: Kind, pooling: str = "mean"
) -> torch.Tensor:
    """The model's outputs on calibration batches, real positions only: logits for
    classifiers and taggers, unit-length sentence vectors for encoders."""
    out = []
    for b in batches:
        y = model(b["input_ids"], b["token_type_ids"], b["attention_mask"])
        mask = b["attention_mask"]
        if kind == "embedding" and not isinstance(y, torch.Tensor):  # an ONNX graph pools
            y = torch.nn.functional.normalize(pool(y.hidden, mask, pooling), dim=-1)
        elif kind == "tagging":
            y = y[mask.bool()] if mask is not None else y.reshape(-1, y.size(-1))
        out.append(y.float())
    return torch.cat(out)


def relative_error(
    model: torch.nn.Module, batches: list, kind: Kind, ref: torch.Tensor, pooling: str
) -> float:
    """``|outputs - ref| / |ref|`` (Frobenius norms) on the calibration batches."""
    y = outputs(model, batches, kind, pooling)
    return float((y - ref).norm() / ref.norm().clamp(min=1e-12))


def predict(pipe: EncoderPipeline, kind: Kind, texts: list[str]) -> Any:
    """What the pipeline answers for ``texts``, in a form that compares with ``==``: labels,
    (label, start, end) spans, or the embedding matrix."""
    if kind == "classification":
        return [p["label"] for p in pipe.classify(texts)]
    if kind == "tagging":
        return [[(s["label"], s["start"], s["end"]) for s in row] for row in pipe.tag(texts)]
    return pipe.embed(texts)


@contextmanager
def _quiet_inference() -> Iterator[None]:
    # Truncation warnings: said once already, on the calibration texts.
    quiet = logging.getLogger("llmos.inference")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        yield
    finally:
        quiet.setLevel(level)


def timed_predictions(
    pipes: dict[str, EncoderPipeline], kind: Kind, texts: list[str], rounds: int
) -> tuple[dict[str, float], dict[str, Any]]:
    """Seconds per pass of ``texts`` through each pipeline (the median of ``rounds``
    interleaved rounds after a warm-up pass, :func:`~llmos.compress.timing.compare_speed`),
    and each pipeline's predictions."""
    predictions: dict[str, Any] = {}

    def run(name: str) -> Callable[[], None]:
        def once() -> None:
            predictions[name] = predict(pipes[name], kind, texts)

        return once

    with _quiet_inference():
        timed = compare_speed({name: run(name) for name in pipes}, rounds=rounds)
    return timed.seconds, predictions


def agreement(
    kind: Kind, reference: Any, candidate: Any, normalized: bool = True
) -> dict[str, float]:
    """How close the candidate's predictions are to the reference's: the share of equal
    predictions, or for embeddings the mean and lowest cosine similarity (``normalized``: the
    vectors have unit length already)."""
    if kind == "embedding":
        a, b = np.asarray(reference), np.asarray(candidate)
        cos = (a * b).sum(1)
        if not normalized:
            cos = cos / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())}
    same = sum(x == y for x, y in zip(reference, candidate, strict=True))
    return {"same_predictions": same / max(len(reference), 1)}


def quality(
    pipe: EncoderPipeline, kind: Kind, test_file: Path | None, label_key: str
) -> dict[str, float]:
    """Accuracy and macro-F1 (classifiers) or span F1 and token accuracy (taggers) on the
    labelled test file; nothing for embeddings or plain text."""
    if test_file is None or kind == "embedding":
        return {}
    if kind == "tagging":
        r = score_tagger(pipe, test_file)
        return {"span_f1": r["f1"], "token_accuracy": r["accuracy"]}
    r = score_classifier(pipe, test_file, label_key=label_key)
    return {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"]}


def pooling_of(pipe: EncoderPipeline) -> tuple[str, bool]:
    """The checkpoint's pooling and normalization (mean, normalized, unless an embedding
    model's task.json says otherwise)."""
    spec = pipe.spec if isinstance(pipe.spec, Embedding) else Embedding()
    return spec.pooling, spec.normalize


def weights_bytes(path: Path) -> int:
    """Size of the checkpoint's weights file (safetensors, or the ONNX graph of an export)."""
    for name in (WEIGHTS_FILE, ONNX_FILE):
        if (path / name).is_file():
            return (path / name).stat().st_size
    return 0
