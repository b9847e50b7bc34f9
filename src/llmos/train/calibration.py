"""Confidence calibration of a classifier by temperature scaling (Guo et al., 2017).

A fine-tuned classifier's argmax can be right while its probabilities are off: a model trained
briefly, with balanced class weights, spreads its mass (its top class at 0.3 when it is right
nine times in ten), and one trained long is sure of everything. Anything that thresholds the
probability (the customer-service policy starts a form at an intent probability of 0.4 and
escalates above a negativity of 0.95) then behaves differently from one checkpoint to the next.
Temperature scaling fits one number ``T`` on held-out data, the one that minimises the negative
log-likelihood of the true labels under ``softmax(logits / T)``; it changes no prediction, only
how sure each is. ``T > 1`` softens an over-confident model, ``T < 1`` sharpens a timid one.

The NLL is convex in ``1 / T`` (a log-sum-exp minus a linear term), so a bounded scalar search
finds the one minimum (:func:`fit_temperature`). Log-probabilities serve as well as logits: a
softmax is unchanged by a constant added to a row, and ``log softmax(z)`` is ``z`` less its
row's log-sum-exp. :func:`expected_calibration_error` is the usual 15-bin ECE (the mean gap
between confidence and accuracy, bins weighted by their size).

:func:`calibrate_checkpoint` (``llmos calibrate``, and ``calibrate: true`` in a fine-tuning
config) applies it to a checkpoint. A classifier (or each classification head of a multi-task
model) reads a labelled file, by default the validation split of the dataset it was trained on
(``dataset`` in its task.json); :func:`fit_temperature` finds the temperature that makes its
probabilities honest there, and the checkpoint's ``task.json`` records it (``temperature``;
a head's under ``heads.<name>``), written atomically. From then on ``classify()``,
``analyze()`` and the server divide the logits by it before the softmax: the labels are the
same, the probabilities are calibrated. Calibrating again starts from the current temperature
and multiplies it by the new fit, so it converges rather than compounds. A fit that runs to
its bound (0.01 or 100 times the current temperature) leaves the temperature as it was, with a
warning: the classifier is then at chance on the data, or right on every row by a margin (its
NLL keeps falling as it sharpens), and neither says how sure it should be on new text. A
reliability diagram before and after goes beside the checkpoint (``calibration/``).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from llmos.checkpoint.task import Classification, MultiTask, parse_task
from llmos.data.datasets import dataset_files
from llmos.data.readers import read_classification
from llmos.errors import DataError, LlmosError
from llmos.files import atomic_path, atomic_write_json
from llmos.inference.encoder import EncoderPipeline
from llmos.inference.load import load_pipeline

log = logging.getLogger("llmos.train")

# 1/T is searched in [1/MAX_T, 1/MIN_T]: wider than any real classifier's fit.
MIN_T, MAX_T = 0.01, 100.0
BINS = 15


def _check(log_probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(log_probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if z.ndim != 2 or y.shape != (len(z),) or not len(z):
        raise DataError(
            f"calibration needs (N, K) scores and N labels, N > 0; got {z.shape} and {y.shape}"
        )
    if y.min() < 0 or y.max() >= z.shape[1]:
        raise DataError(f"labels must be in [0, {z.shape[1]}), got {y.min()}..{y.max()}")
    if not np.isfinite(z).all():
        raise DataError("calibration needs finite scores (log-probabilities or logits)")
    return z, y


def nll(log_probs: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(log_probs / temperature)``."""
    z, y = _check(log_probs, labels)
    return float(-log_softmax(z / temperature, axis=1)[np.arange(len(y)), y].mean())


def fit_temperature(log_probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises :func:`nll` on these rows (in [0.01, 100]).

    Args:
        log_probs: (N, K) logits or log-probabilities of N held-out examples.
        labels: (N,) their true classes.
    """
    z, y = _check(log_probs, labels)
    rows = np.arange(len(y))

    def loss(beta: float) -> float:  # beta = 1 / T: convex here
        return float(-log_softmax(z * beta, axis=1)[rows, y].mean())

    found = minimize_scalar(
        loss, bounds=(1.0 / MAX_T, 1.0 / MIN_T), method="bounded", options={"xatol": 1e-6}
    )
    return float(1.0 / found.x)


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, bins: int = BINS
) -> tuple[float, list[dict[str, float]]]:
    """The ECE of top-class probabilities, and its bins (``lo``, ``hi``, ``count``,
    ``confidence``: the bin's mean top probability, ``accuracy``: how often that top class is
    the true one). Bins are equal-width over (0, 1]; empty ones are left out."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    top, pred = p.max(axis=1), p.argmax(axis=1)
    right = pred == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    where = np.clip(np.searchsorted(edges, top, side="left") - 1, 0, bins - 1)
    out, ece = [], 0.0
    for b in range(bins):
        sel = where == b
        n = int(sel.sum())
        if not n:
            continue
        conf, acc = float(top[sel].mean()), float(right[sel].mean())
        ece += n / len(y) * abs(conf - acc)
        out.append(
            {"lo": edges[b], "hi": edges[b + 1], "count": n, "confidence": conf, "accuracy": acc}
        )
    return float(ece), out


def plot_reliability(
    before: list[dict[str, float]],
    after: list[dict[str, float]],
    out_png: Path,
    title: str = "",
) -> Path:
    """A reliability diagram (accuracy against confidence per bin, the diagonal being a
    calibrated model) before and after scaling, as a PNG written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), sharey=True)
    for ax, bins, name in zip(axes, (before, after), ("before", "after"), strict=True):
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        if bins:
            mid = [(b["lo"] + b["hi"]) / 2 for b in bins]
            width = bins[0]["hi"] - bins[0]["lo"]
            ax.bar(
                mid, [b["accuracy"] for b in bins], width=width * 0.9, alpha=0.7, label="accuracy"
            )
            ax.plot(
                [b["confidence"] for b in bins],
                [b["accuracy"] for b in bins],
                marker="o",
                color="tab:red",
                label="(confidence, accuracy)",
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("top-class probability")
        ax.set_title(name)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle(title or "reliability")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return out_png


TINY = 1e-45  # the smallest float32 probability: a 0 from the softmax is read as this


@dataclass(frozen=True)
class HeadCalibration:
    """One classifier's fit: the data, the temperature before and after, and what it did."""

    head: str | None  # None: a single-task classifier
    data: str
    examples: int
    unseen_labels: dict[str, int]
    accuracy: float
    temperature_before: float
    temperature: float
    at_bound: bool  # the fit ran to its bound: the temperature was left as it was
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    plot: str

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _targets(
    pipe: EncoderPipeline, heads: list[str] | None
) -> list[tuple[str | None, EncoderPipeline, Classification]]:
    spec = pipe.spec
    if isinstance(spec, Classification):
        if heads:
            raise LlmosError(f"{pipe.path}: a single-task classifier has no heads ({heads})")
        return [(None, pipe, spec)]
    if isinstance(spec, MultiTask):
        names = [n for n, h in spec.heads.items() if isinstance(h, Classification)]
        for name in heads or []:
            if name not in names:
                raise LlmosError(
                    f"{pipe.path}: no classification head {name!r} (those it has: "
                    f"{', '.join(names) or 'none'})"
                )
        chosen = heads or names
        if not chosen:
            raise LlmosError(f"{pipe.path}: this multi-task model has no classification head")
        return [(n, pipe.head(n), spec.heads[n]) for n in chosen]  # type: ignore[misc]
    raise LlmosError(
        f"{pipe.path}: calibrate needs a classifier or a multi-task model, got a {spec.kind} "
        "checkpoint"
    )


def _held_out(spec: Classification, data: str | Path | None, where: str) -> Path:
    if data is not None:
        return Path(data)
    name = spec.extra.get("dataset")
    if not isinstance(name, str):
        raise DataError(f"{where}: task.json names no dataset: give --data FILE")
    files = dataset_files(name)
    if "valid" not in files:
        raise DataError(f"{where}: the dataset {name!r} has no valid split: give --data FILE")
    return files["valid"]


def calibrate_checkpoint(
    checkpoint: str | Path,
    *,
    data: str | Path | None = None,
    label_key: str | None = None,
    heads: list[str] | None = None,
    out_dir: str | Path | None = None,
    write: bool = True,
    batch_size: int = 64,
) -> list[HeadCalibration]:
    """Fit the temperature of ``checkpoint``'s classifier, or of each classification head
    (``heads``: some of them), and record it in its ``task.json`` (unless not ``write``).

    Args:
        data: the labelled file (default: the valid split of the dataset it was trained on);
            rows whose label the classifier does not know are left out and counted.
        label_key: the file's label column (default: the one it was trained with).

    Raises:
        LlmosError: not a classifier, an unknown head, or no held-out data to read.
    """
    pipe = load_pipeline(checkpoint)
    if not isinstance(pipe, EncoderPipeline):
        raise LlmosError(f"{checkpoint}: calibrate needs a classifier, got a GPT checkpoint")
    out = Path(out_dir) if out_dir else pipe.path.parent / "calibration"
    results: list[HeadCalibration] = []
    for name, head_pipe, spec in _targets(pipe, heads):
        where = f"{pipe.path}" + (f" (head {name})" if name else "")
        file = _held_out(spec, data, where)
        read = read_classification(file, label_key=label_key or spec.label_key or "label")
        labels = list(spec.labels)
        unseen = Counter(r.label for r in read.rows if r.label not in labels)
        rows = [r for r in read.rows if r.label in labels]
        if not rows:
            raise DataError(f"{file}: no row has a label {where} knows ({', '.join(labels)})")
        got = head_pipe.classify(
            [r.text for r in rows],
            [r.text_b for r in rows] if rows[0].text_b else None,
            batch_size=batch_size,
        )
        probs = np.array([[g["scores"][x] for x in labels] for g in got], dtype=np.float64)
        log_probs = np.log(np.maximum(probs, TINY))
        y = np.array([labels.index(r.label) for r in rows])
        fitted = fit_temperature(log_probs, y)
        before = spec.temperature or 1.0
        at_bound = not MIN_T * 1.01 < fitted < MAX_T * 0.99  # fit_temperature's own bounds
        if at_bound:
            log.warning(
                "%s: nothing to calibrate on %s: the classifier is %s there (the fit ran to "
                "its bound, %.3g times the temperature); the temperature stays %.3g",
                where,
                file,
                "no better than chance" if fitted > 1 else "right on every row, by a margin",
                fitted,
                before,
            )
            fitted = 1.0
        total = before * fitted
        ece_before, bins_before = expected_calibration_error(probs, y)
        ece_after, bins_after = expected_calibration_error(softmax(log_probs / fitted, 1), y)
        png = plot_reliability(
            bins_before,
            bins_after,
            out / f"reliability{'-' + name if name else ''}.png",
            f"{pipe.path.parent.name}{' ' + name if name else ''}: T {before:.3g} -> "
            f"{before * fitted:.3g} on {file.name}",
        )
        results.append(
            HeadCalibration(
                head=name,
                data=str(file),
                examples=len(rows),
                unseen_labels=dict(unseen),
                accuracy=float((probs.argmax(1) == y).mean()),
                temperature_before=before,
                temperature=round(total, 6),
                at_bound=at_bound,
                nll_before=nll(log_probs, y),
                nll_after=nll(log_probs, y, fitted),
                ece_before=ece_before,
                ece_after=ece_after,
                plot=str(png),
            )
        )
    if write:
        _record(pipe.path, {r.head: r.temperature for r in results})
    atomic_write_json(out / "calibration.json", [r.as_json() for r in results])
    return results


def _record(path: Path, temperatures: dict[str | None, float]) -> None:
    """Write the temperatures into ``path/task.json`` (checked by parsing it back)."""
    f = path / "task.json"
    task = json.loads(f.read_text(encoding="utf-8"))
    for head, t in temperatures.items():
        (task if head is None else task["heads"][head])["temperature"] = t
    atomic_write_json(f, parse_task(task, str(f)).to_json())


def format_calibration(results: list[HeadCalibration]) -> str:
    lines = []
    for r in results:
        lines.append(
            f"{r.head or 'classifier'}: temperature {r.temperature_before:.4g} -> "
            f"{r.temperature:.4g}  NLL {r.nll_before:.4f} -> {r.nll_after:.4f}  ECE "
            f"{r.ece_before:.4f} -> {r.ece_after:.4f}  (accuracy {r.accuracy:.4f}, "
            f"{r.examples} examples of {Path(r.data).name})"
        )
        if r.at_bound:
            lines.append("  the fit ran to its bound: temperature left as it was (see the log)")
        if r.unseen_labels:
            lines.append(f"  left out, labels it does not know: {r.unseen_labels}")
        lines.append(f"  reliability diagram: {r.plot}")
    return "\n".join(lines)
