"""Cloze zero-shot sentiment on a masked LM (issue 20, item 1(a)) against the E5 similarity
baseline, measured in the same run.

    python bench/cloze_zero.py --mlm runs/e5-zh-mlm/checkpoint --e5 runs/e5-zh

Protocol, on sentiment-zh and sentiment-en (the prepared splits):

- Candidates: a few patterns and verbalizer pairs per language (:data:`PATTERNS`,
  :data:`VERBALIZERS`, written once before any scoring), each pattern alone and all of a
  language's patterns averaged, each without and with the prior removal (each label's mean
  log-probability over ``--pool`` training texts drawn without their labels).
- Choice: the candidate with the best accuracy on the *valid* split (ties: the first
  listed). Every candidate's valid accuracy is printed.
- Test: the chosen candidate on the *test* split, beside bench/fewshot.py's baselines on the
  same rows: ``similarity`` (E5 cosines to one plain description per class) and
  ``similarity+prior`` (2,000 unlabelled training texts), which choose nothing.

Every (pattern, text) pair goes through the MLM once: the log-probabilities of all the
candidate verbalizers are kept and reused (:class:`CachedScorer`).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

import llmos
from llmos.inference.encoder import EncoderPipeline
from llmos.inference.zeroshot import ZeroShotClassifier

sys.path.insert(0, str(Path(__file__).parent))
from fewshot import DESCRIPTIONS, POOL, read_split
from machine import machine

DATASETS = ("sentiment-zh", "sentiment-en")
# Written once, before any scoring; chosen among on the valid split only.
PATTERNS = {
    "sentiment-zh": ["{text}。总之很[MASK]。", "[MASK]评：{text}", "{text}。我觉得很[MASK]。"],
    "sentiment-en": [
        "{text} All in all, it was [MASK].",
        "{text} It was [MASK].",
        "Just [MASK]! {text}",
    ],
}
VERBALIZERS = {
    "sentiment-zh": [{"pos": "好", "neg": "差"}, {"pos": "好", "neg": "坏"}],
    "sentiment-en": [{"pos": "great", "neg": "terrible"}, {"pos": "good", "neg": "bad"}],
}


class CachedScorer:
    """A pipeline's ``mask_scores`` for the union of every candidate verbalizer: each filled
    pattern goes through the model once, and any subset of those pieces is read back."""

    def __init__(self, pipe: EncoderPipeline, words: list[str]) -> None:
        self.pipe, self.has_mlm_head, self.mask_token = pipe, pipe.has_mlm_head, pipe.mask_token
        self.ids = sorted({i for w in words if (i := pipe.word_piece(w)) is not None})
        self.cache: dict[str, np.ndarray] = {}
        self.seconds, self.texts = 0.0, 0

    def word_piece(self, word: str) -> int | None:
        return self.pipe.word_piece(word)

    def mask_scores(
        self, texts: list[str], token_ids: Sequence[int], batch_size: int = 32
    ) -> np.ndarray:
        new = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if new:
            t0 = time.perf_counter()
            rows = self.pipe.mask_scores(new, self.ids, batch_size=64)
            self.cache.update(zip(new, rows, strict=True))
            self.seconds += time.perf_counter() - t0
            self.texts += len(new)
        cols = [self.ids.index(i) for i in token_ids]
        return np.stack([self.cache[t] for t in texts])[:, cols]


def accuracy(clf: ZeroShotClassifier, texts: list[str], gold: list[str]) -> float:
    got = [r["label"] for r in clf.classify(texts, batch_size=64)]
    return sum(p == g for p, g in zip(got, gold, strict=True)) / len(gold)


def candidates(name: str) -> list[tuple[str, list[str], dict[str, str]]]:
    """(description, patterns, verbalizers) of every candidate, in the order ties go by."""
    patterns = PATTERNS[name]
    out = []
    for verbalizers in VERBALIZERS[name]:
        words = "/".join(verbalizers.values())
        out += [(f"{p!r} {words}", [p], verbalizers) for p in patterns]
        out.append((f"all {len(patterns)} patterns averaged, {words}", patterns, verbalizers))
    return out


def subset(texts: list[str], gold: list[str], n: int | None) -> tuple[list[str], list[str]]:
    """A fixed random subset of n rows (all of them for None)."""
    if not n or n >= len(texts):
        return texts, gold
    keep = sorted(random.Random(0).sample(range(len(texts)), n))
    return [texts[i] for i in keep], [gold[i] for i in keep]


def choose_and_test(
    name: str, scorer: CachedScorer, pool: list[str], valid: tuple, test: tuple
) -> dict:
    """Every candidate on valid (printed), the best one on test."""
    rows = []
    for what, patterns, verbalizers in candidates(name):
        for prior in (False, True):
            clf = ZeroShotClassifier(
                scorer,
                verbalizers,
                method="cloze",
                patterns=patterns,
                unlabelled=pool if prior else None,
            )
            rows.append((accuracy(clf, *valid), what, prior, clf))
            print(f"  valid {100 * rows[-1][0]:5.2f}  {what}{' + prior' if prior else ''}")
    best = max(rows, key=lambda r: r[0])  # max keeps the first of equals
    return {
        "chosen": f"{best[1]}{' + prior' if best[2] else ''}",
        "valid": best[0],
        "test": accuracy(best[3], *test),
    }


def run_dataset(
    name: str, scorers: dict[str, CachedScorer], e5: EncoderPipeline, args: argparse.Namespace
) -> dict:
    """Per MLM checkpoint its chosen cloze candidate (valid) and test accuracy; the E5
    similarity baselines on the same test rows."""
    train, _ = read_split(name, "train")
    valid = subset(*read_split(name, "valid"), args.max_valid)
    test = subset(*read_split(name, "test"), args.max_test)
    pool = random.Random(0).sample(train, min(args.pool, len(train)))  # labels unused
    print(f"\n{name}: {len(valid[0])} valid / {len(test[0])} test rows; prior pool {len(pool)}")
    out: dict[str, dict] = {"cloze": {}}
    for path, scorer in scorers.items():
        print(f" {path}")
        out["cloze"][path] = choose_and_test(name, scorer, pool, valid, test)
    desc = DESCRIPTIONS[name]
    e5_pool = random.Random(0).sample(train, min(args.e5_pool, len(train)))
    sim = ZeroShotClassifier(e5, desc, method="similarity")
    sim_prior = ZeroShotClassifier(e5, desc, method="similarity", unlabelled=e5_pool)
    out["similarity"] = accuracy(sim, *test)
    out["similarity+prior"] = accuracy(sim_prior, *test)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--mlm", nargs="+", default=["runs/e5-zh-mlm/checkpoint"], help="encoders with MLM heads"
    )
    ap.add_argument("--e5", default="runs/e5-zh", help="E5 encoder for the similarity baseline")
    ap.add_argument("--data", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--pool", type=int, default=1000, help="unlabelled texts for cloze's prior")
    ap.add_argument("--e5-pool", type=int, default=POOL, help="unlabelled texts for E5's prior")
    ap.add_argument("--max-valid", type=int, help="a fixed random subset of N valid rows")
    ap.add_argument("--max-test", type=int, help="a fixed random subset of N test rows")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    words = [w for name in args.data for v in VERBALIZERS[name] for w in v.values()]
    scorers = {path: CachedScorer(llmos.load(path), words) for path in args.mlm}
    e5 = llmos.load(args.e5)
    results = {name: run_dataset(name, scorers, e5, args) for name in args.data}
    print(f"\ne5: {args.e5}; machine: {machine()}, {args.threads} torch threads")
    for path, scorer in scorers.items():
        print(f"{path}: {scorer.texts} filled patterns scored in {scorer.seconds:.0f} s")
    print(f"whole run {time.perf_counter() - start:.0f} s\n")
    print("| dataset | checkpoint | cloze, chosen on valid | valid | test |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        for path, c in r["cloze"].items():
            print(
                f"| {name} | {path} | {c['chosen']} | {100 * c['valid']:.2f} | "
                f"{100 * c['test']:.2f} |"
            )
        print(f"| {name} | {args.e5} | similarity (baseline) | — | {100 * r['similarity']:.2f} |")
        sp = 100 * r["similarity+prior"]
        print(f"| {name} | {args.e5} | similarity+prior (baseline) | — | {sp:.2f} |")


if __name__ == "__main__":
    main()
