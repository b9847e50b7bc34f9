"""Zero-shot self-training against its own teacher (llmos.train.selftrain): a classifier from
two label descriptions and unlabelled training texts, no label read.

    python bench/zero_selftrain.py                                   # both, 10-25 min of CPU
    python bench/zero_selftrain.py --data sentiment-en --steps 300
    python bench/zero_selftrain.py --max-pool 200 --max-test 100 --steps 5   # a smoke run

Protocol: for sentiment-zh and sentiment-en (the prepared splits), the pool is
``random.Random(0).sample`` of min(--max-pool, 5,000) training-split positions (in split
order), the texts only. The descriptions are bench/fewshot.py's (正面评价 / 负面评价; "a positive
review" / "a negative review"), written once and not tuned.

- ``teacher``: zero-shot ``similarity+prior`` over runs/e5-zh
  (``ZeroShotClassifier(..., unlabelled=pool)``), the teacher the trainer starts from.
- ``student``: :func:`llmos.train.selftrain.train_self_training` with its defaults (fraction
  0.5, one round, seed 0) and 400 steps on sentiment-zh, 300 on sentiment-en (--steps
  overrides both), read through ``llmos.load(...).classify``.

Accuracy on the valid and test splits (--max-test N: a fixed random N rows of each). The
selected texts' pseudo-labels are checked against the pool's real labels (the trainer never
sees them). Seconds are the trainer's (its teacher pass over the pool included).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import llmos
from llmos.config.selftrain import SelfTrainConfig
from llmos.inference.zeroshot import ZeroShotClassifier
from llmos.train.selftrain import select_confident, train_self_training

sys.path.insert(0, str(Path(__file__).parent))
from fewshot import DESCRIPTIONS, accuracy, read_split
from machine import machine

DATASETS = ("sentiment-zh", "sentiment-en")
STEPS = {"sentiment-zh": 400, "sentiment-en": 300}  # the measured runs'
POOL = 5000


def rows(name: str, split: str, limit: int) -> tuple[list[str], list[str]]:
    """A split, or a fixed random ``limit`` of its rows (``random.Random(0)``)."""
    texts, gold = read_split(name, split)
    if limit and limit < len(texts):
        keep = sorted(random.Random(0).sample(range(len(texts)), limit))
        texts, gold = [texts[i] for i in keep], [gold[i] for i in keep]
    return texts, gold


def run_dataset(name: str, args: argparse.Namespace, pipe: object) -> dict[str, float | int]:
    train, train_gold = read_split(name, "train")
    keep = sorted(random.Random(0).sample(range(len(train)), min(args.max_pool, len(train))))
    pool, pool_gold = [train[i] for i in keep], np.array([train_gold[i] for i in keep])
    descriptions = DESCRIPTIONS[name]
    splits = {s: rows(name, s, args.max_test) for s in ("valid", "test")}
    out: dict[str, float | int] = {"pool": len(pool)}
    t = time.perf_counter()
    teacher = ZeroShotClassifier(pipe, descriptions, unlabelled=pool)  # type: ignore[arg-type]
    for split, (texts, gold) in splits.items():
        out[f"teacher {split}"] = accuracy([r["label"] for r in teacher.classify(texts)], gold)
    print(f"{name}: teacher scored in {time.perf_counter() - t:.1f} s", flush=True)
    cfg = SelfTrainConfig(
        fraction=args.fraction,
        rounds=args.rounds,
        steps=args.steps or STEPS[name],
        num_threads=args.threads,
        progress=False,
    )
    with tempfile.TemporaryDirectory(prefix="llmos-bench-selftrain-") as tmp:
        run = Path(tmp) / "run"
        result = train_self_training(
            args.checkpoint, descriptions, pool, Path(tmp) / "student", cfg, run_dir=run
        )
        # The last round's training texts, chosen again from the scores it chose them by.
        last = run / "teacher.npy" if cfg.rounds == 1 else run / f"round-{cfg.rounds - 1}/pool.npy"
        chosen, y = select_confident(np.load(last), cfg.fraction)
        labels = np.array(result.labels)
        out["selected"] = len(chosen)
        out["right"] = float((labels[y] == pool_gold[chosen]).mean())
        out["agreement"] = result.teacher_agreement
        out["seconds"] = result.seconds
        student = llmos.load(result.checkpoint)
        for split, (texts, gold) in splits.items():
            out[f"student {split}"] = accuracy([r["label"] for r in student.classify(texts)], gold)
    out["steps"] = cfg.steps
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="runs/e5-zh", help="E5 encoder checkpoint")
    ap.add_argument("--data", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--steps", type=int, help="student steps (default: 400 zh, 300 en)")
    ap.add_argument("--fraction", type=float, default=SelfTrainConfig.fraction)
    ap.add_argument("--rounds", type=int, default=SelfTrainConfig.rounds)
    ap.add_argument("--max-pool", type=int, default=POOL, help=f"pool size ({POOL})")
    ap.add_argument("--max-test", type=int, default=0, help="valid/test rows (0: all)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {machine()}, torch threads {args.threads}\n", flush=True)
    pipe = llmos.load(args.checkpoint)
    results = {name: run_dataset(name, args, pipe) for name in args.data}
    print(
        "\n| dataset | pool | steps | selected (pseudo-labels right) | teacher valid | "
        "student valid | teacher test | student test | student/teacher agreement | seconds |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(
            f"| {name} | {r['pool']:,} | {r['steps']} | {r['selected']:,} "
            f"({100 * r['right']:.1f} %) | {100 * r['teacher valid']:.2f} | "
            f"{100 * r['student valid']:.2f} | {100 * r['teacher test']:.2f} | "
            f"{100 * r['student test']:.2f} | {100 * r['agreement']:.1f} % | {r['seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
