"""SetFit-style few-shot classifiers against head fine-tuning and the frozen encoder's nearest
centroid, on the same examples (issue 20's 16-example target).

    python bench/setfit.py --checkpoint runs/e5-zh                              # the issue's
    python bench/setfit.py --datasets sentiment-zh --shots 16 --seeds 2 --max-test 400

Protocol (bench/fewshot.py's sampling: seed s shuffles each class's training texts, k
examples are the first k; every method gets the same examples; test split scored):

- ``centroid``: nearest normalised class mean of the frozen encoder's vectors
  (``ZeroShotClassifier(method="centroid")``), the issue's frozen baseline;
- ``logreg``: logistic regression on the frozen vectors (``method="logreg"``);
- ``head-ft``: ordinary fine-tuning of a classifier on the k examples, ``llmos finetune``
  itself (task classification, the encoder's query prefix, mean pooling, encoder lr 8e-5 and
  head lr 1e-3 as configs/finetune/sentiment-zh-e5.yaml), for as many texts as SetFit reads
  (its steps x its batch), in batches of 16;
- ``setfit``: :func:`llmos.train.setfit.train_setfit` with its defaults, then the checkpoint
  it writes classifies the test split through ``llmos.load(...).classify``.

Prints a table (mean ± sample std over seeds) and each fit's seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import llmos
from llmos.config.loader import from_dict
from llmos.config.run import FinetuneConfig
from llmos.inference.zeroshot import ZeroShotClassifier
from llmos.recipes.finetune import finetune
from llmos.train.setfit import SetFitConfig, train_setfit

sys.path.insert(0, str(Path(__file__).parent))
from fewshot import accuracy, by_label, cell, read_split, sample, test_rows
from machine import machine

METHODS = ("centroid", "logreg", "head-ft", "setfit")


def head_finetune(
    encoder: str, examples: dict[str, list[str]], texts: int, seed: int, out: Path
) -> Path:
    """``llmos finetune`` on the examples alone (they are also its valid split, never used:
    no validation), for ``texts`` examples read in batches of 16; returns the checkpoint."""
    data = out / "data"
    data.mkdir(parents=True)
    rows = [
        json.dumps({"text": t, "label": y}, ensure_ascii=False)
        for y, ts in examples.items()
        for t in ts
    ]
    for split in ("train", "valid"):
        (data / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    steps = max(texts // 16, 1)
    cfg = from_dict(
        FinetuneConfig,
        {
            "name": "head-ft",
            "out_dir": str(out),
            "init": encoder,
            "data": {"dataset": str(data), "max_length": 64},
            "optim": {"lr": 8e-5, "head_lr": 1e-3, "warmup_steps": max(steps // 10, 1)},
            "train": {
                "max_steps": steps,
                "batch_size": 16,
                "eval_every": 0,
                "save_every": steps,
                "log_every": max(steps // 5, 1),
                "seed": seed,
                "progress": False,
            },
            "pooling": "mean",
        },
    )
    return Path(finetune(cfg).checkpoint)


def run_seed(
    args: argparse.Namespace,
    methods: list[str],
    pipe: object,
    examples: dict[str, list[str]],
    test: list[str],
    seed: int,
) -> list[tuple[str, list[str], float]]:
    """(method, predicted labels, fit seconds) of each method on one seed's examples."""
    out = []
    for method in ("centroid", "logreg"):
        if method in methods:
            t = time.perf_counter()
            clf = ZeroShotClassifier(pipe, {}, examples, method=method)
            out.append((method, [r["label"] for r in clf.classify(test)], time.perf_counter() - t))
    cfg = SetFitConfig(steps=args.steps, seed=seed, progress=False, num_threads=args.threads)
    with tempfile.TemporaryDirectory(prefix="llmos-bench-setfit-") as tmp:
        if "head-ft" in methods:
            t = time.perf_counter()
            texts = args.steps * cfg.labels_per_batch * cfg.per_label
            ckpt = head_finetune(args.checkpoint, examples, texts, seed, Path(tmp) / "ft")
            fit_s = time.perf_counter() - t
            out.append(("head-ft", [r["label"] for r in llmos.load(ckpt).classify(test)], fit_s))
        if "setfit" in methods:
            run = train_setfit(args.checkpoint, examples, Path(tmp) / "setfit", cfg)
            got = [r["label"] for r in llmos.load(run.checkpoint).classify(test)]
            out.append(("setfit", got, run.seconds))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="runs/e5-zh")
    ap.add_argument("--datasets", default="sentiment-zh,intent-zh")
    ap.add_argument("--shots", default="16", help="examples per class, comma-separated")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--max-test", type=int, default=0, help="a fixed random subset of the test")
    ap.add_argument("--steps", type=int, default=SetFitConfig.steps)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    shots = [int(k) for k in args.shots.split(",")]
    print(f"# {machine()}, torch threads {args.threads}\n")
    pipe = llmos.load(args.checkpoint)
    results: dict[tuple[str, str, int], list[float]] = {}
    seconds: dict[tuple[str, str, int], list[float]] = {}
    for name in args.datasets.split(","):
        texts, labels = read_split(name, "train")
        grouped = by_label(texts, labels)
        test, gold = test_rows(name, args.max_test)
        print(f"{name}: {len(grouped)} classes, {len(test)} test rows", flush=True)
        for k in shots:
            for s in range(args.seeds):
                examples = sample(grouped, k, s)
                for method, predicted, secs in run_seed(args, methods, pipe, examples, test, s):
                    acc = accuracy(predicted, gold)
                    results.setdefault((name, method, k), []).append(acc)
                    seconds.setdefault((name, method, k), []).append(secs)
                    print(
                        f"  k={k} seed={s} {method}: {100 * acc:.2f} % ({secs:.1f} s)", flush=True
                    )
    print("\n| dataset | k | " + " | ".join(methods) + " |")
    print("|---|---:|" + "---:|" * len(methods))
    for name in args.datasets.split(","):
        for k in shots:
            cells = [cell(results.get((name, m, k))) for m in methods]
            print(f"| {name} | {k} | " + " | ".join(cells) + " |")
    print(
        "\nfit seconds (mean): "
        + ", ".join(f"{n} k={k} {m} {sum(v) / len(v):.1f}" for (n, m, k), v in seconds.items())
    )


if __name__ == "__main__":
    main()
