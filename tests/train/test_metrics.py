"""Metrics against hand-computed answers, scikit-learn and seqeval."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from seqeval.metrics import accuracy_score as seqeval_accuracy
from seqeval.metrics import classification_report as seqeval_report
from seqeval.metrics import f1_score as seqeval_f1
from seqeval.metrics import precision_score as seqeval_precision
from seqeval.metrics import recall_score as seqeval_recall
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from llmos.train.metrics import (
    classification_metrics,
    plot_confusion,
    segmentation_f1,
    span_metrics,
)


def test_classification_known_answer() -> None:
    out = classification_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["a", "b", "c"])
    assert out["accuracy"] == pytest.approx(3 / 5)
    assert out["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert out["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert out["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert out["per_class"]["b"]["f1"] == pytest.approx(0.8)
    assert out["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert out["macro_f1"] == pytest.approx((0.5 + 0.8 + 0) / 3)
    assert out["weighted_f1"] == pytest.approx((2 * 0.5 + 2 * 0.8) / 5)


def test_classification_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="equally long"):
        classification_metrics([0], [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="must lie in"):
        classification_metrics([0, 2], [0, 1], ["a", "b"])


def test_classification_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        K = int(rng.integers(2, 7))
        n = int(rng.integers(1, 40))
        y_true = rng.integers(0, K, n).tolist()
        y_pred = rng.integers(0, K, n).tolist()
        labels = [f"c{k}" for k in range(K)]
        out = classification_metrics(y_true, y_pred, labels)
        assert out["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
        for avg in ("macro", "weighted"):
            ref = f1_score(y_true, y_pred, average=avg, zero_division=0)
            assert out[f"{avg}_f1"] == pytest.approx(ref)
        p, r, f, s = precision_recall_fscore_support(
            y_true, y_pred, labels=list(range(K)), zero_division=0
        )
        got = [out["per_class"][name] for name in labels]
        assert [c["precision"] for c in got] == pytest.approx(p.tolist())
        assert [c["recall"] for c in got] == pytest.approx(r.tolist())
        assert [c["f1"] for c in got] == pytest.approx(f.tolist())
        assert [c["support"] for c in got] == s.tolist()
        ref_cm = confusion_matrix(y_true, y_pred, labels=list(range(K))).tolist()
        assert out["confusion"] == ref_cm


def test_span_metrics_known_answer() -> None:
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["O", "B-LOC"]]
    out = span_metrics(true, pred, "bio")
    # gold: PER, LOC, ORG; predicted: PER, LOC(wrong place) -> tp = 1
    assert out["precision"] == pytest.approx(1 / 2)
    assert out["recall"] == pytest.approx(1 / 3)
    assert out["f1"] == pytest.approx(0.4)
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["per_type"]["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert out["per_type"]["LOC"]["support"] == 1 and out["per_type"]["LOC"]["f1"] == 0.0


def test_span_metrics_bmes_segmentation_tags() -> None:
    out = span_metrics([["B", "E", "S"]], [["B", "M", "E"]], "bmes")
    assert out["per_type"][""]["support"] == 2
    assert (out["precision"], out["recall"]) == (0.0, 0.0)


def random_tags(rng: random.Random, labels: list[str], n_sent: int) -> list[list[str]]:
    return [[rng.choice(labels) for _ in range(rng.randint(1, 10))] for _ in range(n_sent)]


def perturb(rng: random.Random, tags: list[list[str]], labels: list[str]) -> list[list[str]]:
    return [[t if rng.random() < 0.7 else rng.choice(labels) for t in sent] for sent in tags]


def as_iobes(tags: list[list[str]]) -> list[list[str]]:
    return [["I" + t[1:] if t.startswith("M") else t for t in sent] for sent in tags]


# seqeval's macro average over zero entity types is a mean of an empty slice.
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize(
    ("labels", "scheme"),
    [
        (["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG"], "bio"),
        (["O", "B-PER", "M-PER", "E-PER", "S-PER", "B-LOC", "E-LOC", "S-LOC"], "bmes"),
        (["B", "M", "E", "S"], "bmes"),
    ],
)
def test_span_metrics_match_seqeval(labels: list[str], scheme: str) -> None:
    rng = random.Random(0)
    for _ in range(200):
        ours_true = random_tags(rng, labels, rng.randint(1, 5))
        ours_pred = perturb(rng, ours_true, labels)
        out = span_metrics(ours_true, ours_pred, scheme)
        true, pred = as_iobes(ours_true), as_iobes(ours_pred)
        assert out["precision"] == pytest.approx(seqeval_precision(true, pred, zero_division=0))
        assert out["recall"] == pytest.approx(seqeval_recall(true, pred, zero_division=0))
        assert out["f1"] == pytest.approx(seqeval_f1(true, pred, zero_division=0))
        assert out["accuracy"] == pytest.approx(seqeval_accuracy(true, pred))
        report = seqeval_report(true, pred, output_dict=True, zero_division=0)
        # seqeval names the type of bare labels "_", llmos "".
        per_type = {k.strip("_"): v for k, v in report.items() if not k.endswith(" avg")}
        assert set(per_type) == set(out["per_type"])
        for name, ref in per_type.items():
            got = out["per_type"][name]
            assert got["precision"] == pytest.approx(ref["precision"])
            assert got["recall"] == pytest.approx(ref["recall"])
            assert got["f1"] == pytest.approx(ref["f1-score"])
            assert got["support"] == ref["support"]
        if per_type:
            assert out["macro_f1"] == pytest.approx(report["macro avg"]["f1-score"])
            assert out["weighted_f1"] == pytest.approx(report["weighted avg"]["f1-score"])


def test_segmentation_f1_known_answer() -> None:
    out = segmentation_f1([["我", "爱", "北京"]], [["我爱", "北京"]])
    assert out["precision"] == pytest.approx(1 / 2)
    # Only 北京 is shared: 1 of 2 predicted words, 1 of 3 gold words.
    assert out["recall"] == pytest.approx(1 / 3)
    assert out["f1"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    assert (out["n_true"], out["n_pred"], out["n_correct"]) == (3, 2, 1)


def test_segmentation_f1_counts_offsets_not_strings() -> None:
    # The second "的" is predicted at the wrong offset: equal strings, different words.
    out = segmentation_f1([["的", "的的"], ["好"]], [["的的", "的"], ["好"]])
    assert (out["n_true"], out["n_pred"], out["n_correct"]) == (3, 3, 1)
    with pytest.raises(ValueError, match="different text"):
        segmentation_f1([["我"]], [["你"]])


def test_plot_confusion_writes_png(tmp_path: Path) -> None:
    out = plot_confusion(
        [[5, 1, 0], [2, 3, 0], [0, 0, 0]], ["打开", "关闭", "other"], tmp_path / "cm.png", "意图"
    )
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert [p.name for p in tmp_path.iterdir()] == ["cm.png"]
