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
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from llmos.checkpoint.io import (
    TASK_FILE,
    TOKENIZER_FILE,
    read_checkpoint,
    save_checkpoint,
    write_config,
)
from llmos.checkpoint.task import Classification
from llmos.compress import quantize as Q
from llmos.compress import quantize_eval as M
from llmos.errors import CheckpointError, LlmosError
from llmos.files import atomic_directory, atomic_write_json
from llmos.inference.encoder import EncoderPipeline
from llmos.inference.load import load_pipeline
from llmos.inference.onnx import ONNX_FILE

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
        data: calibration and test texts (see
            :func:`~llmos.compress.quantize_eval.read_texts`).
        label_key: the label column of a classification dataset (default: task.json's, else
            ``label``).
        smooth: SmoothQuant's alpha (None: no smoothing); int8-dynamic only.
        keep_fp32: how many of the most sensitive linear layers stay fp32; int8-dynamic only.
        calibration: number of calibration texts; limit: most test texts measured.
        repeats: timed rounds per side, after a warm-up pass; the report's seconds and
            speed-up are the median over these interleaved rounds (fp32 and int8 in turns).

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
    ckpt = read_checkpoint(checkpoint)
    if ckpt.is_decoder:
        raise CheckpointError(f"{checkpoint}: quantization covers encoders; this is a GPT")
    if getattr(ckpt.config, "quantization", None):
        raise CheckpointError(f"{checkpoint}: already quantized ({ckpt.config.quantization})")
    fp32 = load_pipeline(ckpt)
    assert isinstance(fp32, EncoderPipeline)
    spec, kind = ckpt.task, M.output_kind(fp32)
    if label_key is None:
        own = spec.label_key if isinstance(spec, Classification) else None
        label_key = own or "label"
    texts = M.read_texts(fp32, data, calibration, limit, label_key)
    calib = M.calibration_batches(fp32, texts.calibration)
    pooling, normalized = M.pooling_of(fp32)
    ref = M.outputs(fp32.model, calib, kind, pooling)
    details: dict[str, Any] = {}
    task = dataclasses.replace(spec, extra={**spec.extra, "quantized_from": str(checkpoint)})
    if method == "int8-dynamic":
        model = copy.deepcopy(fp32.model)
        factors = None
        if smooth is not None:
            ranges = Q.activation_ranges(model, calib, Q.quantizable_linears(model))
            factors = Q.smoothing_factors(model, ranges, smooth)

        keep: list[str] = []
        if keep_fp32:

            def score(m: torch.nn.Module) -> float:
                return M.relative_error(m, calib, kind, ref, pooling)

            scores = Q.sensitivity(model, score, factors)
            keep = sorted(scores, key=scores.__getitem__, reverse=True)[:keep_fp32]
            details["sensitivity"] = scores
        replaced = Q.quantize_model(model, keep=keep, smooth=factors)
        details |= {"int8_modules": replaced, "fp32_kept": keep, "smooth_alpha": smooth}
        config = dataclasses.replace(ckpt.config, quantization="int8-dynamic")
        save_checkpoint(out, model, config, fp32.tokenizer, task)
    else:
        from llmos.inference.onnx_export import export_onnx

        with tempfile.TemporaryDirectory() as tmp:
            export_onnx(checkpoint, Path(tmp) / "fp32")

            def fill(d: Path) -> None:
                Q.quantize_onnx(str(Path(tmp) / "fp32" / ONNX_FILE), str(d / ONNX_FILE))
                write_config(d, dataclasses.replace(ckpt.config, quantization="onnx-int8"))
                shutil.copyfile(checkpoint / TOKENIZER_FILE, d / TOKENIZER_FILE)
                atomic_write_json(d / TASK_FILE, task.to_json())

            atomic_directory(out, fill)
    int8 = load_pipeline(out)
    assert isinstance(int8, EncoderPipeline)
    error = M.relative_error(int8.model, calib, kind, ref, pooling)

    # Speed: the same test texts through each pipeline, in turns; quality on the test split.
    seconds, predicted = M.timed_predictions(
        {"fp32": fp32, "int8": int8}, kind, texts.test, repeats
    )
    t32, t8 = seconds["fp32"], seconds["int8"]
    size32, size8 = M.weights_bytes(checkpoint), M.weights_bytes(out)
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
            "agreement": M.agreement(kind, predicted["fp32"], predicted["int8"], normalized),
            "quality": {"fp32": M.quality(fp32, kind, texts.test_file, label_key)},
            **details,
        }
    )
    report["quality"]["int8"] = M.quality(int8, kind, texts.test_file, label_key)
    atomic_write_json(out / REPORT_FILE, report)
    return report
