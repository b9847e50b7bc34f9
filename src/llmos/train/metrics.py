"""Evaluation metrics: classification, entity spans (CoNLL), word segmentation (SIGHAN).

Each metric follows a reference implementation and is tested against it:

- :func:`classification_metrics` equals scikit-learn with ``zero_division=0``.
- :func:`span_metrics` equals seqeval's default (CoNLL, lenient) mode; spans come from
  :func:`llmos.data.tagging.tags_to_spans`, which decodes ill-formed tags as seqeval does.
- :func:`segmentation_f1` is the SIGHAN bakeoff scorer: a predicted word is correct when its
  character offsets equal those of a gold word.
- :func:`unigram_perplexity` is the baseline a language model (masked or causal) must beat.
- :func:`retrieval_metrics` ranks a corpus per query as ``bench/retrieval.py`` does (stable
  sort of the scores, so ties go to the earlier document): MRR, accuracy@k.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from llmos.data.tagging import tags_to_spans
from llmos.files import atomic_path

logger = logging.getLogger(__name__)

# File-name fragments of fonts that cover CJK, most preferred first.
CJK_FONT_HINTS = (
    "notosanscjk",
    "notoserifcjk",
    "sourcehansans",
    "wqy",
    "wenquanyi",
    "droidsansfallback",
    "simhei",
    "msyh",
    "pingfang",
)


def unigram_perplexity(train_ids: np.ndarray, targets: np.ndarray, vocab_size: int) -> float:
    """Perplexity on ``targets`` of an add-one smoothed unigram model of ``train_ids``.

    Args:
        train_ids: every training token id (a tokenized corpus's flat ids).
        targets: the validation targets a model is scored on (masked-LM labels, next-token
            labels); negative ids (``IGNORE``: no target) are left out.
        vocab_size: the tokenizer's vocabulary size (every id gets a count of at least one).
    """
    counts = np.bincount(train_ids, minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    targets = np.asarray(targets).ravel()
    targets = targets[targets >= 0]
    if targets.size == 0:
        return float("nan")
    return math.exp(-logp[targets].mean())


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` elementwise, 0.0 where ``den == 0`` (scikit-learn's ``zero_division=0``)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


def _prf(
    tp: np.ndarray, pred: np.ndarray, true: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 from counts; F1 = 2tp / (pred + true) as scikit-learn writes it."""
    return _safe_div(tp, pred), _safe_div(tp, true), _safe_div(2 * tp, pred + true)


def _per_class(
    names: list[str], p: np.ndarray, r: np.ndarray, f: np.ndarray, support: np.ndarray
) -> dict[str, dict[str, float | int]]:
    return {
        name: {
            "precision": float(p[k]),
            "recall": float(r[k]),
            "f1": float(f[k]),
            "support": int(support[k]),
        }
        for k, name in enumerate(names)
    }


def _weighted(values: np.ndarray, support: np.ndarray) -> float:
    return float(_safe_div(np.sum(values * support), np.sum(support)))


def classification_metrics(y_true: list[int], y_pred: list[int], labels: list[str]) -> dict:
    """Accuracy, macro/weighted F1, per-class scores and the confusion matrix.

    Macro and weighted F1 average over the classes that occur in ``y_true`` or ``y_pred``, as
    ``sklearn.metrics.f1_score(average=..., zero_division=0)`` does without ``labels=``; a class
    absent from both would otherwise count as F1 = 0. Per-class scores cover every label.

    Args:
        y_true: Gold class indices into ``labels``.
        y_pred: Predicted class indices, same length.
        labels: Class names.

    Returns:
        ``{"accuracy", "macro_f1", "weighted_f1", "per_class": {name: {"precision",
        "recall", "f1", "support"}}, "confusion": K x K list of lists, rows = true}``.

    Raises:
        ValueError: for empty or mismatched inputs, or an index outside ``labels``.
    """
    true, pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    K = len(labels)
    if true.shape != pred.shape or true.ndim != 1 or true.size == 0:
        raise ValueError(
            f"y_true and y_pred must be non-empty and equally long, got {true.shape} "
            f"and {pred.shape}"
        )
    if min(true.min(), pred.min()) < 0 or max(true.max(), pred.max()) >= K:
        raise ValueError(f"class indices must lie in [0, {K}) for {K} labels")
    confusion = np.zeros((K, K), dtype=np.int64)
    np.add.at(confusion, (true, pred), 1)
    tp, support, predicted = np.diag(confusion), confusion.sum(axis=1), confusion.sum(axis=0)
    p, r, f = _prf(tp, predicted, support)
    present = (support + predicted) > 0
    return {
        "accuracy": float(tp.sum() / true.size),
        "macro_f1": float(f[present].mean()),
        "weighted_f1": _weighted(f, support),
        "per_class": _per_class(labels, p, r, f, support),
        "confusion": confusion.tolist(),
    }


def span_metrics(true_tags: list[list[str]], pred_tags: list[list[str]], scheme: str) -> dict:
    """Entity-level scores as CoNLL's ``conlleval`` and seqeval (default mode) compute them.

    A predicted span counts when type, start and end all equal a gold span's. Types are those
    seen in either side; bare labels (word segmentation) have type ``""``.

    Args:
        true_tags: Gold tags, one list per sentence.
        pred_tags: Predicted tags, same shape.
        scheme: ``"bio"`` or ``"bmes"``.

    Returns:
        ``{"precision", "recall", "f1"}`` (micro), ``"macro_f1"``, ``"weighted_f1"``,
        ``"accuracy"`` (token level) and ``"per_type": {type: {"precision", "recall", "f1",
        "support"}}``.

    Raises:
        ValueError: if the two sides differ in the number or length of sentences.
    """
    if len(true_tags) != len(pred_tags) or any(
        len(t) != len(p) for t, p in zip(true_tags, pred_tags, strict=True)
    ):
        raise ValueError("true_tags and pred_tags must have the same sentences and lengths")
    scores = span_scores(
        [tags_to_spans(tags, scheme) for tags in true_tags],
        [tags_to_spans(tags, scheme) for tags in pred_tags],
    )
    n_tokens = sum(len(t) for t in true_tags)
    n_correct = sum(
        a == b for t, q in zip(true_tags, pred_tags, strict=True) for a, b in zip(t, q, strict=True)
    )
    return scores | {"accuracy": n_correct / n_tokens if n_tokens else 0.0}


def span_scores(
    true_spans: list[list[tuple[str, int, int]]], pred_spans: list[list[tuple[str, int, int]]]
) -> dict:
    """Exact-match span scores over ``(type, start, end)`` spans, one list per sentence.

    The spans may index tokens or characters; a prediction counts when type, start and end all
    equal a gold span's in the same sentence (CoNLL / seqeval definition).

    Returns:
        ``{"precision", "recall", "f1"}`` (micro), ``"macro_f1"``, ``"weighted_f1"`` and
        ``"per_type": {type: {"precision", "recall", "f1", "support"}}``.
    """
    if len(true_spans) != len(pred_spans):
        raise ValueError(f"{len(true_spans)} gold sentences but {len(pred_spans)} predicted")
    gold = {(i, *s) for i, spans in enumerate(true_spans) for s in spans}
    found = {(i, *s) for i, spans in enumerate(pred_spans) for s in spans}
    types = sorted({s[1] for s in gold | found})
    count = (
        Counter(s[1] for s in gold),
        Counter(s[1] for s in found),
        Counter(s[1] for s in gold & found),
    )
    true_n, pred_n, tp = (np.array([c[t] for t in types], dtype=np.int64) for c in count)
    p, r, f = _prf(tp, pred_n, true_n)
    micro_p, micro_r, micro_f = _prf(tp.sum(), pred_n.sum(), true_n.sum())
    return {
        "precision": float(micro_p),
        "recall": float(micro_r),
        "f1": float(micro_f),
        "macro_f1": float(f.mean()) if types else 0.0,
        "weighted_f1": _weighted(f, true_n),
        "per_type": _per_class(types, p, r, f, true_n),
    }


def _word_offsets(words: list[str]) -> set[tuple[int, int]]:
    offsets, start = set(), 0
    for word in words:
        offsets.add((start, start + len(word)))
        start += len(word)
    return offsets


def segmentation_f1(true_words: list[list[str]], pred_words: list[list[str]]) -> dict:
    """Word-level precision, recall and F1 of a segmentation, as the SIGHAN scorer defines them.

    Args:
        true_words: Gold words, one list per sentence.
        pred_words: Predicted words; each sentence must join to the same text as the gold one.

    Returns:
        ``{"precision", "recall", "f1", "n_true", "n_pred", "n_correct"}``.

    Raises:
        ValueError: if the sentences differ in number or in their characters.
    """
    if len(true_words) != len(pred_words):
        raise ValueError(f"{len(true_words)} gold sentences but {len(pred_words)} predicted")
    n_true = n_pred = n_correct = 0
    for i, (gold, pred) in enumerate(zip(true_words, pred_words, strict=True)):
        if "".join(gold) != "".join(pred):
            raise ValueError(f"sentence {i}: the segmentations cover different text")
        gold_set, pred_set = _word_offsets(gold), _word_offsets(pred)
        n_true, n_pred = n_true + len(gold_set), n_pred + len(pred_set)
        n_correct += len(gold_set & pred_set)
    p, r, f = _prf(np.array(n_correct), np.array(n_pred), np.array(n_true))
    return {
        "precision": float(p),
        "recall": float(r),
        "f1": float(f),
        "n_true": n_true,
        "n_pred": n_pred,
        "n_correct": n_correct,
    }


@functools.lru_cache(maxsize=1)
def find_cjk_font() -> str | None:
    """Family name of an installed font that covers Chinese, or None when there is none."""
    from matplotlib import font_manager

    paths = font_manager.findSystemFonts()
    for hint in CJK_FONT_HINTS:
        for path in sorted(paths):
            if hint in Path(path).name.lower().replace(" ", "").replace("-", ""):
                try:
                    font_manager.fontManager.addfont(path)
                    return font_manager.FontProperties(fname=path).get_name()
                except (OSError, RuntimeError, ValueError):
                    logger.debug("cannot load font %s", path, exc_info=True)
    return None


def plot_confusion(
    matrix: list[list[int]], labels: list[str], out_png: Path, title: str = ""
) -> Path:
    """Draw a confusion matrix as a PNG: counts written in cells, colour = row-normalised rate.

    Chinese label names render when a CJK font is installed (:func:`find_cjk_font`); otherwise
    the default font is used and missing glyphs show as boxes. The file is written atomically.

    Args:
        matrix: K x K counts, rows = true class.
        labels: K class names.
        out_png: Destination path.
        title: Figure title.

    Returns:
        ``out_png``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(matrix, dtype=np.int64)
    rates = _safe_div(counts, counts.sum(axis=1, keepdims=True))
    font = find_cjk_font()
    rc = {"font.family": [font, "DejaVu Sans"]} if font else {}
    size = max(4.0, 0.5 * len(labels) + 2.0)
    with plt.rc_context(rc), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        fig, ax = plt.subplots(figsize=(size + 1.0, size))
        image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
        ticks = np.arange(len(labels))
        ax.set_xticks(ticks, labels, rotation=45, ha="right")
        ax.set_yticks(ticks, labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title or "confusion matrix")
        for (i, j), n in np.ndenumerate(counts):
            colour = "white" if rates[i, j] > 0.5 else "black"
            ax.text(j, i, str(n), ha="center", va="center", color=colour, fontsize=8)
        fig.tight_layout()
        with atomic_path(out_png) as tmp:  # the temp keeps .png: savefig picks the format
            fig.savefig(tmp, dpi=100)
        plt.close(fig)
    return out_png


def plot_span_scores(per_type: dict[str, dict], out_png: Path, title: str = "") -> Path:
    """Bar chart of precision, recall and F1 per span type (``""`` drawn as ``word``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [t or "word" for t in per_type]
    values = np.array([[m["precision"], m["recall"], m["f1"]] for m in per_type.values()])
    values = values.reshape(len(names), 3)
    font = find_cjk_font()
    rc = {"font.family": [font, "DejaVu Sans"]} if font else {}
    with plt.rc_context(rc):
        fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(names) + 2.0), 4.0))
        x = np.arange(len(names))
        for k, (what, colour) in enumerate(
            [("precision", "#9ecae1"), ("recall", "#4292c6"), ("F1", "#08519c")]
        ):
            ax.bar(x + (k - 1) * 0.27, values[:, k], width=0.27, label=what, color=colour)
        ax.set_xticks(x, names, rotation=45 if len(names) > 8 else 0, ha="right")
        ax.set_ylim(0, 1.0)
        ax.set_ylabel("score")
        ax.set_title(title or "span scores by type")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        with atomic_path(out_png) as tmp:  # the temp keeps .png: savefig picks the format
            fig.savefig(tmp, dpi=100)
        plt.close(fig)
    return out_png


def answer_units(text: str) -> list[str]:
    """What answer overlap is counted in: CJK characters one by one, other text as lower-cased
    words (punctuation dropped), as in the SQuAD and CMRC answer-F1 scripts."""
    units: list[str] = []
    word = []
    for ch in text.lower():
        if "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff":
            if word:
                units.append("".join(word))
                word = []
            units.append(ch)
        elif ch.isalnum():
            word.append(ch)
        elif word:
            units.append("".join(word))
            word = []
    if word:
        units.append("".join(word))
    return units


def answer_f1(prediction: str, reference: str) -> float:
    """Bag-of-units F1 between a generated answer and the reference (1.0 for two empties)."""
    pred, ref = answer_units(prediction), answer_units(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    p, r = common / len(pred), common / len(ref)
    return 2 * p * r / (p + r)


def exact_match(prediction: str, reference: str) -> bool:
    """Equal after lower-casing and dropping punctuation and spaces."""
    return answer_units(prediction) == answer_units(reference)


RETRIEVAL_KS = (1, 5, 10)


def retrieval_metrics(
    scores: np.ndarray, relevant: list[frozenset[int]] | list[set[int]]
) -> dict[str, float]:
    """MRR and accuracy@k (a relevant document among the first k, k in :data:`RETRIEVAL_KS`)
    of queries ranking a corpus: ``scores`` (queries, documents), higher first, ties broken
    by document order (a stable sort); ``relevant`` the documents that answer each query. A
    query whose relevant documents are all missing counts as a miss."""
    scores = np.asarray(scores)
    if scores.shape[0] != len(relevant):
        raise ValueError(f"{scores.shape[0]} score rows for {len(relevant)} queries")
    firsts = []
    for row, rel in zip(scores, relevant, strict=True):
        order = np.argsort(-row, kind="stable")
        hit = np.flatnonzero(np.isin(order, list(rel))) if rel else np.array([], dtype=np.int64)
        firsts.append(int(hit[0]) + 1 if hit.size else 0)
    ranks = np.array(firsts, dtype=np.float64)
    n = max(len(ranks), 1)
    out = {"mrr": float(np.where(ranks > 0, 1 / np.maximum(ranks, 1), 0).sum() / n)}
    for k in RETRIEVAL_KS:
        out[f"acc@{k}"] = float(((ranks > 0) & (ranks <= k)).sum() / n)
    return out


def plot_retrieval(runs: dict[str, dict[str, float]], out_png: Path, title: str = "") -> Path:
    """Bar chart of MRR and accuracy@k, one bar group per metric and one bar per model
    (``runs``: name -> :func:`retrieval_metrics`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["mrr", *(f"acc@{k}" for k in RETRIEVAL_KS)]
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    x = np.arange(len(names))
    width = 0.8 / max(len(runs), 1)
    for k, (run, m) in enumerate(runs.items()):
        offset = (k - (len(runs) - 1) / 2) * width
        bars = ax.bar(x + offset, [m[n] for n in names], width=width, label=run)
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xticks(x, ["MRR", *(f"acc@{k}" for k in RETRIEVAL_KS)])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.set_title(title or "retrieval")
    ax.legend(loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return out_png
