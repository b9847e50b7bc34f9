"""Zero- and few-shot classification from a frozen E5's vectors (issue 20, first part): the
issue's evaluation protocol for the baselines of llmos.inference.zeroshot.

    python bench/fewshot.py --checkpoint runs/e5-zh
    python bench/fewshot.py --checkpoint runs/e5-zh --max-test 300   # quicker, noisier

Protocol: on sentiment-zh, sentiment-en, intent-zh and intent-en (the prepared splits; test
scored, nothing tuned), with k = 0, 8, 16, 32 and 64 training examples per class and 5 seeds:

- k = 0, ``similarity``: one plain description per class, written once and not tuned
  (:data:`DESCRIPTIONS`; an intent's is its name in words, ``HassTurnOn`` -> "turn on", in
  English for the Chinese intents too: multilingual E5 matches across languages). The texts
  are E5 queries, the descriptions passages. Deterministic: one number, no seeds.
  ``similarity+prior``: the same, each label's cosine less its mean over POOL (2,000)
  training texts drawn without their labels (the issue's unlabelled pool;
  ``ZeroShotClassifier(unlabelled=...)``).
- k > 0, ``centroid`` (nearest class mean of the examples' unit vectors) and ``logreg``
  (scikit-learn's logistic regression on the same vectors, the library's C = 10, chosen on the
  valid splits: llmos.inference.zeroshot.LOGREG_C), both through
  :class:`~llmos.inference.zeroshot.ZeroShotClassifier`; and a classical baseline on the same
  examples, ``tfidf-lr`` (TF-IDF of character 1-3-grams for Chinese, word 1-2-grams for
  English, + logistic regression, C = 10, fixed: the few examples leave no held-out rows to
  choose it on).
- Seeds: seed s shuffles each class's training texts once (``random.Random(s)``); k examples
  are the first k of that order (so the 8 are among the 16, and the 16 among the 32), and
  every method gets the same examples. A class with fewer than k training texts gives all it
  has (intent-en: a few intents have fewer than 32; printed).
- Classes: every label of the training split (40 intents in Chinese, 42 in English), also
  those the test split never asks for.

Accuracy on the test split (``--max-test N``: a fixed random subset of N rows), as mean ± sample
standard deviation over the seeds. Every text is embedded once (vectors cached by text and
kind), so the whole run is the cost of embedding the test splits and the sampled examples.
Writes a plot of accuracy against k (``--plot``).
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

import llmos
from llmos.data.datasets import dataset_files
from llmos.data.readers import read_classification
from llmos.inference.zeroshot import ZeroShotClassifier

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine

DATASETS = ("sentiment-zh", "sentiment-en", "intent-zh", "intent-en")
SHOTS = (0, 8, 16, 32, 64)
METHODS = ("similarity", "similarity+prior", "centroid", "logreg", "tfidf-lr")
POOL = 2000  # unlabelled training texts whose mean cosine per label is each label's prior

# One plain description per sentiment class, written once, not tuned on any split.
DESCRIPTIONS = {
    "sentiment-zh": {"pos": "正面评价", "neg": "负面评价"},
    "sentiment-en": {"pos": "a positive review", "neg": "a negative review"},
}


def intent_description(name: str) -> str:
    """An intent's name in words: ``HassTurnOn`` -> ``turn on``, ``HassGetCurrentTime`` ->
    ``get current time`` (Home Assistant's intents all start with ``Hass``)."""
    words = re.findall(r"[A-Z][a-z]*|[a-z]+|\d+", name.removeprefix("Hass"))
    return " ".join(w.lower() for w in words)


class CachedEmbedder:
    """An encoder pipeline's ``embed`` with every vector kept by (kind, text): each text is
    embedded once, however many seeds, k and methods use it."""

    def __init__(self, pipe: object) -> None:
        self.pipe, self.cache = pipe, {}
        self.seconds, self.texts = 0.0, 0

    def embed(self, texts: list[str], *, kind: str | None = None, batch_size: int = 64):
        missing = list(dict.fromkeys(t for t in texts if (kind, t) not in self.cache))
        if missing:
            start = time.perf_counter()
            vectors = self.pipe.embed(missing, kind=kind, batch_size=batch_size)
            self.seconds += time.perf_counter() - start
            self.texts += len(missing)
            self.cache.update({(kind, t): v for t, v in zip(missing, vectors, strict=True)})
        return np.stack([self.cache[kind, t] for t in texts])


def read_split(name: str, split: str) -> tuple[list[str], list[str]]:
    """(texts, labels) of a prepared dataset's split; intents are the ``intent`` key."""
    key = "intent" if name.startswith("intent") else "label"
    rows = read_classification(dataset_files(name)[split], label_key=key).rows
    return [r.text for r in rows], [r.label for r in rows]


def by_label(texts: list[str], labels: list[str]) -> dict[str, list[str]]:
    """``{label: [texts]}`` in order of first appearance."""
    out: dict[str, list[str]] = {}
    for t, y in zip(texts, labels, strict=True):
        out.setdefault(y, []).append(t)
    return out


def test_rows(name: str, max_test: int = 0) -> tuple[list[str], list[str]]:
    """The test split, or a fixed random ``max_test`` of its rows (``random.Random(0)``: the
    same rows in every bench that asks for as many)."""
    test, gold = read_split(name, "test")
    if max_test and max_test < len(test):
        keep = sorted(random.Random(0).sample(range(len(test)), max_test))
        test, gold = [test[i] for i in keep], [gold[i] for i in keep]
    return test, gold


def sample(grouped: dict[str, list[str]], k: int, seed: int) -> dict[str, list[str]]:
    """The first k of each class's texts in seed's shuffled order (nested across k)."""
    out = {}
    for label, texts in grouped.items():
        order = list(texts)
        random.Random(f"{seed}:{label}").shuffle(order)
        out[label] = order[:k]
    return out


def tfidf_lr(examples: dict[str, list[str]], test: list[str], lang: str) -> list[str]:
    """The classical baseline on the same few examples."""
    if lang == "zh":
        vec = TfidfVectorizer(sublinear_tf=True, analyzer="char", ngram_range=(1, 3))
    else:
        vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2))
    texts = [t for ts in examples.values() for t in ts]
    labels = [label for label, ts in examples.items() for _ in ts]
    model = LogisticRegression(C=10.0, max_iter=2000).fit(vec.fit_transform(texts), labels)
    return list(model.predict(vec.transform(test)))


def accuracy(predicted: list[str], gold: list[str]) -> float:
    return sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)


def run_dataset(
    name: str, embedder: CachedEmbedder, shots: tuple[int, ...], seeds: int, max_test: int | None
) -> dict[tuple[str, int], list[float]]:
    """Accuracy per (method, k), one value per seed (one in all for k = 0)."""
    texts, labels = read_split(name, "train")
    grouped = by_label(texts, labels)
    test, gold = test_rows(name, max_test or 0)
    lang = name.rsplit("-", 1)[1]
    descriptions = DESCRIPTIONS.get(name) or {y: intent_description(y) for y in grouped}
    few = [k for k in shots if k > 0]
    short = {y: len(ts) for y, ts in grouped.items() if few and len(ts) < max(few)}
    print(
        f"{name}: {len(grouped)} classes, {len(texts)} train / {len(test)} test rows"
        + (f"; fewer than {max(few)} training texts: {short}" if short else "")
    )
    # Embed everything this dataset needs in a few big calls (length-sorted batches).
    embedder.embed(test, kind="query")
    if few:
        needed = [
            t for s in range(seeds) for ts in sample(grouped, max(few), s).values() for t in ts
        ]
        embedder.embed(needed, kind="query")
    results: dict[tuple[str, int], list[float]] = {}

    def score(clf: ZeroShotClassifier) -> float:
        return accuracy([r["label"] for r in clf.classify(test)], gold)

    if 0 in shots:
        clf = ZeroShotClassifier(embedder, descriptions, method="similarity")
        results["similarity", 0] = [score(clf)]
        pool = random.Random(0).sample(texts, min(POOL, len(texts)))  # labels unused
        clf = ZeroShotClassifier(embedder, descriptions, method="similarity", unlabelled=pool)
        results["similarity+prior", 0] = [score(clf)]
    for k in few:
        for s in range(seeds):
            examples = sample(grouped, k, s)
            for method in ("centroid", "logreg"):
                clf = ZeroShotClassifier(embedder, {}, examples, method=method)
                results.setdefault((method, k), []).append(score(clf))
            results.setdefault(("tfidf-lr", k), []).append(
                accuracy(tfidf_lr(examples, test, lang), gold)
            )
    return results


def std(values: list[float]) -> float:
    """The sample standard deviation over the seeds (0 for a single value)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def cell(values: list[float] | None) -> str:
    if not values:
        return "—"
    mean = 100 * statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {100 * std(values):.2f}"


def table(all_results: dict[str, dict], shots: tuple[int, ...]) -> str:
    head = "| dataset | method | " + " | ".join(f"k = {k}" for k in shots) + " |"
    lines = [head, "|" + "---|" * (len(shots) + 2)]
    for name, res in all_results.items():
        for method in METHODS:
            if any((method, k) in res for k in shots):
                row = " | ".join(cell(res.get((method, k))) for k in shots)
                lines.append(f"| {name} | {method} | {row} |")
    return "\n".join(lines)


def plot(all_results: dict[str, dict], shots: tuple[int, ...], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(all_results), figsize=(4 * len(all_results), 3.6))
    for ax, (name, res) in zip(np.atleast_1d(axes), all_results.items(), strict=True):
        for method in METHODS[2:]:
            ks = [k for k in shots if (method, k) in res]
            if not ks:
                continue
            means = [100 * statistics.fmean(res[method, k]) for k in ks]
            stds = [100 * std(res[method, k]) for k in ks]
            ax.errorbar(ks, means, yerr=stds, marker="o", capsize=3, label=method)
        if ("similarity", 0) in res:
            zero = 100 * res["similarity", 0][0]
            ax.axhline(zero, color="gray", linestyle="--", label="zero-shot similarity")
        if ("similarity+prior", 0) in res:
            zero = 100 * res["similarity+prior", 0][0]
            ax.axhline(zero, color="black", linestyle=":", label="zero-shot, prior removed")
        ax.set_title(name)
        ax.set_xlabel("examples per class (k)")
        ax.set_xticks(list(shots))
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("test accuracy (%)")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="runs/e5-zh", help="E5 encoder checkpoint")
    ap.add_argument("--data", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--shots", nargs="+", type=int, default=list(SHOTS))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--max-test", type=int, help="score a fixed random subset of N test rows")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--plot", default="docs/images/fewshot-e5.png", help="PNG to write")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    embedder = CachedEmbedder(llmos.load(args.checkpoint))
    shots = tuple(sorted(set(args.shots)))
    all_results: dict[str, dict] = {}
    for name in args.data:
        t0 = time.perf_counter()
        all_results[name] = run_dataset(name, embedder, shots, args.seeds, args.max_test)
        print(f"  {time.perf_counter() - t0:.0f} s")
    print(
        f"\nencoder: {args.checkpoint}; machine: {machine()}, "
        f"{torch.get_num_threads()} torch threads"
    )
    took = time.perf_counter() - start
    print(
        f"{embedder.texts} texts embedded in {embedder.seconds:.0f} s; whole run {took:.0f} s; "
        f"{args.seeds} seeds" + (f"; test subset of {args.max_test}" if args.max_test else "")
    )
    print("\ntest accuracy (%), mean ± std over the seeds\n")
    print(table(all_results, shots))
    plot(all_results, shots, Path(args.plot))
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
