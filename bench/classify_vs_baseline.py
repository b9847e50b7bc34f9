"""A fine-tuned llmos classifier against a classical baseline, on the same test split.

    python bench/classify_vs_baseline.py --checkpoint runs/sentiment-zh/checkpoint \
        --dataset sentiment-zh

Baseline: TF-IDF over character 1-3-grams (word 1-2-grams with --words) + logistic regression
(scikit-learn), trained on the same train split, C chosen on the valid split. Both are scored on
the test split in this run: accuracy and macro-F1.
"""

from __future__ import annotations

import argparse
import time

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

import llmos
from llmos.data.datasets import dataset_files
from llmos.data.readers import read_classification


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--label-key", default="label")
    p.add_argument("--words", action="store_true", help="word n-grams instead of characters")
    args = p.parse_args()
    files = dataset_files(args.dataset)
    split = {s: read_classification(f, label_key=args.label_key).rows for s, f in files.items()}
    x = {
        s: [r.text + (" " + r.text_b if r.text_b else "") for r in rows]
        for s, rows in split.items()
    }
    y = {s: [r.label for r in rows] for s, rows in split.items()}

    t = time.perf_counter()
    analyzer = (
        dict(analyzer="word", ngram_range=(1, 2))
        if args.words
        else dict(analyzer="char", ngram_range=(1, 3))
    )
    vec = TfidfVectorizer(sublinear_tf=True, min_df=2, **analyzer)
    train_x = vec.fit_transform(x["train"])
    best = max(
        (
            LogisticRegression(C=c, max_iter=2000).fit(train_x, y["train"])
            for c in (0.3, 1.0, 3.0, 10.0)
        ),
        key=lambda m: f1_score(y["valid"], m.predict(vec.transform(x["valid"])), average="macro"),
    )
    base_pred = best.predict(vec.transform(x["test"]))
    base_s = time.perf_counter() - t

    t = time.perf_counter()
    model = llmos.load(args.checkpoint)
    test = split["test"]
    pairs = [r.text_b for r in test] if test[0].text_b else None
    ours = [r["label"] for r in model.classify([r.text for r in test], pairs)]
    ours_s = time.perf_counter() - t

    rows = [(f"tfidf+lr (C={best.C:g})", base_pred, base_s), ("llmos", ours, ours_s)]
    print(f"dataset {args.dataset}: {len(y['train'])} train, {len(y['test'])} test")
    print(f"{'model':<18}{'accuracy':>10}{'macro-F1':>10}{'seconds':>9}")
    scores = {}
    for name, pred, secs in rows:
        acc, f1 = accuracy_score(y["test"], pred), f1_score(y["test"], pred, average="macro")
        scores[name] = acc
        print(f"{name:<18}{acc:>10.4f}{f1:>10.4f}{secs:>9.1f}")
    base_acc = scores[rows[0][0]]
    print(f"llmos - baseline: {100 * (scores['llmos'] - base_acc):+.2f} accuracy points")


if __name__ == "__main__":
    main()
