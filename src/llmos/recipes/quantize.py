"""Recipe: ``llmos compress quantize`` — an int8 copy of an encoder checkpoint, with what it
costs and saves measured on the task's own data.

setup (the fp32 checkpoint, calibration and test texts) -> quantize (calibrate smoothing, rank
layer sensitivity, replace layers; or export + ONNX Runtime quantization) -> save (a normal
checkpoint directory) -> report (size, speed and the accuracy change on the test split, in
``quantization.json`` beside the weights).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmos.checkpoint.io import (
    TASK_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    atomic_directory,
    save_checkpoint,
    write_config,
    write_json_atomic,
)
from llmos.compress import quantize as Q
from llmos.data.batching import pad_batch
from llmos.data.datasets import dataset_files
from llmos.data.readers import read_classification, read_spans
from llmos.errors import CheckpointError, DataError, LlmosError
from llmos.inference.classify import encode_texts
from llmos.inference.embed import pool
from llmos.inference.onnx import ONNX_FILE
from llmos.inference.pipeline import Pipeline
from llmos.train.tasks.classify import score_classifier
from llmos.train.tasks.tag import score_tagger

log = logging.getLogger("llmos.recipes")

REPORT_FILE = "quantization.json"


class QuantizeReport(dict[str, Any]):
    """The report of a quantization (also written to ``quantization.json``): a dict, as the
    JSON file reads, with the text ``llmos compress quantize`` prints."""

    def format_report(self) -> str:
        """Size, speed and agreement of the int8 model against the fp32 one, and the quality
        change on the test split."""
        r = self
        mb = {k: v / 1e6 for k, v in r["size_bytes"].items() if k != "ratio"}
        ratio, tps = r["size_bytes"]["ratio"], r["texts_per_second"]
        lines = [
            f"quantized ({r['method']}): {r['quantized']}",
            f"size   {mb['fp32']:.1f} MB -> {mb['int8']:.1f} MB ({ratio:.2f}x smaller)",
            f"speed  {tps['fp32']:.0f} -> {tps['int8']:.0f} texts/s "
            f"({r['seconds']['speedup']:.2f}x, {r['test_texts']} test texts, "
            f"{r['threads']} threads)",
        ]
        lines += [f"{key:<16} {value:.4f}" for key, value in r["agreement"].items()]
        before, after = r["quality"]["fp32"], r["quality"]["int8"]
        for key in before:
            change = 100 * (after[key] - before[key])
            lines.append(f"{key:<16} {before[key]:.4f} -> {after[key]:.4f} ({change:+.2f} points)")
        lines.append(f"report: {Path(r['quantized']) / REPORT_FILE}")
        return "\n".join(lines)


@dataclasses.dataclass
class Texts:
    """Calibration texts, test texts, and the labelled test file (None for plain text)."""

    calibration: list[str]
    test: list[str]
    test_file: Path | None


def _kind(pipe: Pipeline) -> str:
    kind = (pipe.task or {}).get("task", "embedding")
    return kind if kind in ("classification", "tagging") else "embedding"


def read_texts(
    pipe: Pipeline, data: str | None, calibration: int, limit: int, label_key: str = "label"
) -> Texts:
    """Texts to calibrate on (the valid split) and to measure on (the test split), from a
    dataset name or directory (default: the one in ``task.json``) or a plain text file (one text
    per line: the first ``calibration`` calibrate, the rest are measured)."""
    data = data or (pipe.task or {}).get("dataset")
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
    task = pipe.task or {}

    def texts(f: Path) -> list[str]:
        if _kind(pipe) == "tagging":
            return [r.text for r in read_spans(f, view=task.get("view")).rows]
        return [r.text for r in read_classification(f, label_key=label_key).rows]

    return Texts(texts(files["valid"])[:calibration], texts(files["test"])[:limit], files["test"])


def _batches(pipe: Pipeline, texts: list[str], size: int = 32) -> list[dict[str, Any]]:
    max_length = int((pipe.task or {}).get("max_length", pipe.config.max_position))
    ids, types, _ = encode_texts(pipe.tokenizer, texts, None, max_length)
    pad = pipe._ids["pad"] or 0
    return [
        pad_batch(ids[i : i + size], types[i : i + size], pad) for i in range(0, len(ids), size)
    ]


@torch.inference_mode()
def _outputs(
    model: torch.nn.Module, batches: list[dict[str, Any]], kind: str, pooling: str = "mean"
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


def _relative_error(
    model: torch.nn.Module, batches: list, kind: str, ref: torch.Tensor, pooling: str
) -> float:
    y = _outputs(model, batches, kind, pooling)
    return float((y - ref).norm() / ref.norm().clamp(min=1e-12))


def _timed_predictions(pipe: Pipeline, kind: str, texts: list[str]) -> tuple[float, Any]:
    t = time.perf_counter()
    if kind == "classification":
        out: Any = [p["label"] for p in pipe.classify(texts)]
    elif kind == "tagging":
        out = [[(s["label"], s["start"], s["end"]) for s in row] for row in pipe.tag(texts)]
    else:
        out = pipe.embed(texts)
    return time.perf_counter() - t, out


def _quality(pipe: Pipeline, kind: str, test_file: Path | None, label_key: str) -> dict[str, float]:
    """Accuracy and macro-F1 (classifiers) or span F1 and token accuracy (taggers) on the
    labelled test file."""
    if test_file is None or kind == "embedding":
        return {}
    if kind == "tagging":
        r = score_tagger(pipe, test_file)
        return {"span_f1": r["f1"], "token_accuracy": r["accuracy"]}
    r = score_classifier(pipe, test_file, label_key=label_key)
    return {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"]}


def _weights_bytes(path: Path) -> int:
    for name in (WEIGHTS_FILE, ONNX_FILE):
        if (path / name).is_file():
            return (path / name).stat().st_size
    return 0


def quantize_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    *,
    method: str = "int8-dynamic",
    data: str | None = None,
    label_key: str | None = None,
    smooth: float | None = None,
    keep_fp32: int = 0,
    calibration: int = 256,
    limit: int = 2000,
    repeats: int = 2,
) -> QuantizeReport:
    """Quantize an encoder checkpoint to ``out`` and measure it against the original.

    Args:
        checkpoint: a fine-tuned classifier or tagger, or an encoder/embedding checkpoint.
        out: the quantized checkpoint directory to write (replaced if it exists).
        method: ``int8-dynamic`` (PyTorch, fbgemm int8 kernels) or ``onnx-int8`` (an ONNX
            export quantized by ONNX Runtime, which also runs it).
        data: calibration and test texts (see :func:`read_texts`).
        label_key: the label column of a classification dataset (default: task.json's, else
            ``label``).
        smooth: SmoothQuant's alpha (None: no smoothing); int8-dynamic only.
        keep_fp32: how many of the most sensitive linear layers stay fp32; int8-dynamic only.
        calibration: number of calibration texts; limit: most test texts measured.
        repeats: timing passes per side (best counts).

    Returns:
        The report also written to ``out/quantization.json``.
    """
    if method not in Q.METHODS:
        raise LlmosError(f"--method must be one of {', '.join(Q.METHODS)}, got {method!r}")
    if smooth is not None and not 0.0 < smooth < 1.0:
        raise LlmosError(f"--smooth must be in (0, 1) (SmoothQuant's alpha), got {smooth}")
    if keep_fp32 < 0:
        raise LlmosError(f"--keep-fp32 must be >= 0, got {keep_fp32}")
    checkpoint, out = Path(checkpoint), Path(out)
    if checkpoint.resolve() == out.resolve():
        raise LlmosError(
            f"{out}: write the quantized model to a new directory, not over its source"
        )
    fp32 = Pipeline.from_checkpoint(checkpoint)
    if fp32.config.model_type == "gpt":
        raise CheckpointError(f"{checkpoint}: quantization covers encoders; this is a GPT")
    if getattr(fp32.config, "quantization", None):
        raise CheckpointError(f"{checkpoint}: already quantized ({fp32.config.quantization})")
    kind = _kind(fp32)
    label_key = label_key or (fp32.task or {}).get("label_key", "label")
    texts = read_texts(fp32, data, calibration, limit, label_key)
    calib = _batches(fp32, texts.calibration)
    pooling = (fp32.task or {}).get("pooling", "mean")
    ref = _outputs(fp32.model, calib, kind, pooling)
    details: dict[str, Any] = {}
    task = (fp32.task or {}) | {"quantized_from": str(checkpoint)}
    if method == "int8-dynamic":
        model = copy.deepcopy(fp32.model)
        factors = None
        if smooth is not None:
            ranges = Q.activation_ranges(model, calib, Q.quantizable_linears(model))
            factors = Q.smoothing_factors(model, ranges, smooth)

        keep: list[str] = []
        if keep_fp32:

            def score(m: torch.nn.Module) -> float:
                return _relative_error(m, calib, kind, ref, pooling)

            scores = Q.sensitivity(model, score, factors)
            keep = sorted(scores, key=scores.__getitem__, reverse=True)[:keep_fp32]
            details["sensitivity"] = scores
        replaced = Q.quantize_model(model, keep=keep, smooth=factors)
        details |= {"int8_modules": replaced, "fp32_kept": keep, "smooth_alpha": smooth}
        config = dataclasses.replace(fp32.config, quantization="int8-dynamic")
        save_checkpoint(out, model, config, fp32.tokenizer, task)
    else:
        from llmos.inference.onnx_export import export_onnx

        with tempfile.TemporaryDirectory() as tmp:
            export_onnx(checkpoint, Path(tmp) / "fp32")

            def fill(d: Path) -> None:
                Q.quantize_onnx(str(Path(tmp) / "fp32" / ONNX_FILE), str(d / ONNX_FILE))
                write_config(d, dataclasses.replace(fp32.config, quantization="onnx-int8"))
                shutil.copyfile(checkpoint / TOKENIZER_FILE, d / TOKENIZER_FILE)
                write_json_atomic(d / TASK_FILE, task)

            atomic_directory(out, fill)
    int8 = Pipeline.from_checkpoint(out)
    error = _relative_error(int8.model, calib, kind, ref, pooling)

    # Speed: the same test texts through each pipeline, in turns; quality on the test split.
    times: list[list[float]] = [[], []]
    outs: list[Any] = [None, None]
    quiet = logging.getLogger("llmos.inference")  # truncation warnings: said once already
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        for _ in range(repeats):
            for i, pipe in enumerate((fp32, int8)):
                t, outs[i] = _timed_predictions(pipe, kind, texts.test)
                times[i].append(t)
    finally:
        quiet.setLevel(level)
    t32, t8 = min(times[0]), min(times[1])
    agreement: dict[str, float] = {}
    if kind == "embedding":
        cos = (np.asarray(outs[0]) * np.asarray(outs[1])).sum(1)
        if not (fp32.task or {}).get("normalize", True):
            cos = cos / (np.linalg.norm(outs[0], axis=1) * np.linalg.norm(outs[1], axis=1))
        agreement = {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())}
    else:
        same = sum(a == b for a, b in zip(outs[0], outs[1], strict=True))
        agreement = {"same_predictions": same / max(len(outs[0]), 1)}
    size32, size8 = _weights_bytes(checkpoint), _weights_bytes(out)
    report = QuantizeReport(
        {
            "method": method,
            "checkpoint": str(checkpoint),
            "quantized": str(out),
            "kind": kind,
            "threads": torch.get_num_threads(),
            "calibration_texts": len(texts.calibration),
            "test_texts": len(texts.test),
            "calibration_relative_error": error,
            "size_bytes": {"fp32": size32, "int8": size8, "ratio": size32 / max(size8, 1)},
            "seconds": {"fp32": t32, "int8": t8, "speedup": t32 / t8},
            "texts_per_second": {"fp32": len(texts.test) / t32, "int8": len(texts.test) / t8},
            "agreement": agreement,
            "quality": {"fp32": _quality(fp32, kind, texts.test_file, label_key)},
            **details,
        }
    )
    report["quality"]["int8"] = _quality(int8, kind, texts.test_file, label_key)
    write_json_atomic(out / REPORT_FILE, report)
    return report
