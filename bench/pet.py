"""PET and iPET against the frozen encoder's few-shot baselines (and SetFit) on the same
examples: issue 20's 16-example targets on sentiment and on the intent sets.

    python bench/pet.py                                   # sentiment-zh, k = 16, 3 seeds
    python bench/pet.py --datasets sentiment-zh,sentiment-en --seeds 5 --generations 1
    python bench/pet.py --mlm-weight 1e-4                 # PET's auxiliary MLM loss (pet, ipet)
    python bench/pet.py --first-seed 3 --seeds 2          # seeds 3 and 4, beside an earlier 0-2
    python bench/pet.py --shots 8,32,64 --generations 1   # the issue's other k

Protocol (bench/fewshot.py's sampling: seed s shuffles each class's training texts, the first
k of each are the examples; every method gets the same ones; a fixed random subset of the
test split, --max-test). The unlabelled pool is the training split with its labels removed
(a seeded sample of --pool texts, the examples' own texts excluded), the issue's pool.

- ``centroid``, ``logreg``: the frozen sentence encoder (--encoder, ``runs/e5-zh``),
  ``ZeroShotClassifier``;
- ``setfit``: :func:`llmos.train.setfit.train_setfit` with its defaults (--setfit);
- ``zero-cloze``: the masked LM's zero-shot cloze scores (the same patterns averaged, each
  label's prior over the pool removed), no training;
- ``pet``: :func:`llmos.train.pet.train_pet` over --mlm (``runs/e5-zh-mlm/checkpoint``) with
  the patterns and verbalizers below, then its classifier reads the test texts through
  ``llmos.load(...).classify``;
- ``ipet``: the same with --generations rounds (when > 0); its first generation is PET's
  models (the same seeds, reused), so its seconds are those of the later rounds and its own
  final classifier.
- ``pet+mlm``, ``ipet+mlm`` (in their place with --mlm-weight): the same with PET's auxiliary
  masked-LM loss on the pool (``PetConfig.mlm_weight``).

Patterns and verbalizers were written before any run and not tuned on test: the three of
bench/cloze_zero.py per language, with 好/差 and great/terrible. The intent sets' patterns
were written before their first run too; their verbalizers are chosen from each seed's
examples (``llmos.inference.verbalizers``; ``--auto-verbalizers`` does the same on
sentiment), and zero-cloze, which needs words before any example, is left out there.

    python bench/pet.py --datasets intent-zh --seeds 5 --threads 1   # 300 / 500 steps at 1e-4

(PetConfig.for_labels sets the steps and the final classifier's rate by the number of labels:
the intent sets' were chosen on intent-zh's validation split.)
"""

from __future__ import annotations

import argparse
import itertools
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

import llmos
from llmos.config.pet import PetConfig
from llmos.inference.zeroshot import ZeroShotClassifier
from llmos.train.pet import train_pet
from llmos.train.setfit import SetFitConfig, train_setfit

sys.path.insert(0, str(Path(__file__).parent))
from fewshot import accuracy, by_label, cell, read_split, sample, test_rows
from machine import machine

PROMPTS = {
    "sentiment-zh": (
        ["{text}。总之很[MASK]。", "[MASK]评：{text}", "{text}。我觉得很[MASK]。"],
        {"pos": ["好"], "neg": ["差"]},
    ),
    "sentiment-en": (
        ["{text} All in all, it was [MASK].", "{text} It was [MASK].", "Just [MASK]! {text}"],
        {"pos": ["great"], "neg": ["terrible"]},
    ),
    # Forty-odd intents: no verbalizers written; they are chosen from each seed's examples
    # (llmos.inference.verbalizers). Topic patterns in the manner of PET's Yahoo Questions
    # ones, written before any run.
    "intent-zh": (["{text}。这句话是关于[MASK]的。", "[MASK]：{text}"], None),
    "intent-en": (["{text} This is about [MASK].", "[MASK]: {text}"], None),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="runs/e5-zh")
    ap.add_argument("--mlm", default="runs/e5-zh-mlm/checkpoint")
    ap.add_argument("--datasets", default="sentiment-zh")
    ap.add_argument(
        "--shots", default="16", help="examples per class, comma-separated (e.g. 8,32,64)"
    )
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="run seeds first-seed .. first-seed + seeds - 1 (to add seeds to an earlier run)",
    )
    ap.add_argument("--max-test", type=int, default=600)
    ap.add_argument("--pool", type=int, default=1000, help="unlabelled training texts")
    ap.add_argument("--steps", type=int, help="per pattern model (PetConfig.for_labels)")
    ap.add_argument("--lr", type=float, default=PetConfig.lr)
    ap.add_argument("--distill-steps", type=int, help="(PetConfig.for_labels)")
    ap.add_argument("--distill-lr", type=float, help="(PetConfig.for_labels)")
    ap.add_argument("--patterns", type=int, default=2, help="use the first N patterns")
    ap.add_argument(
        "--mlm-weight",
        type=float,
        default=PetConfig.mlm_weight,
        help="PET's auxiliary MLM loss weight for pet and ipet (the paper's 1e-4; 0: off)",
    )
    ap.add_argument("--generations", type=int, default=0, help="also run iPET with N rounds")
    ap.add_argument(
        "--auto-verbalizers",
        action="store_true",
        help="choose the sentiment sets' verbalizers from the examples too (the intent sets "
        "always do)",
    )
    ap.add_argument("--setfit", action="store_true", help="also train SetFit")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"# {machine()}, torch threads {args.threads}, pet mlm_weight {args.mlm_weight:g}\n",
        flush=True,
    )
    pipe = llmos.load(args.encoder)
    mlm = llmos.load(args.mlm)
    shots = [int(k) for k in args.shots.split(",")]
    results: dict[tuple[str, int, str], list[float]] = {}
    seconds: dict[tuple[str, int, str], list[float]] = {}
    for name in args.datasets.split(","):
        patterns, verbalizers = PROMPTS[name]
        patterns = patterns[: args.patterns]
        if args.auto_verbalizers:
            verbalizers = None
        texts, labels = read_split(name, "train")
        grouped = by_label(texts, labels)
        test, gold = test_rows(name, args.max_test)
        print(f"{name}: {len(grouped)} classes, {len(test)} test rows", flush=True)
        for k, s in itertools.product(shots, range(args.first_seed, args.first_seed + args.seeds)):
            examples = sample(grouped, k, s)
            used = {t for ts in examples.values() for t in ts}
            rest = [t for t in dict.fromkeys(texts) if t not in used]
            pool = random.Random(f"pool:{s}").sample(rest, min(args.pool, len(rest)))
            runs: list[tuple[str, list[str], float]] = []
            for method in ("centroid", "logreg"):
                t = time.perf_counter()
                clf = ZeroShotClassifier(pipe, {}, examples, method=method)
                got = [r["label"] for r in clf.classify(test)]
                runs.append((method, got, time.perf_counter() - t))
            if s == args.first_seed and k == shots[0] and verbalizers is not None:
                # deterministic and example-free: one run
                t = time.perf_counter()
                clf = ZeroShotClassifier(
                    mlm, verbalizers, method="cloze", patterns=patterns, unlabelled=pool
                )
                got = [r["label"] for r in clf.classify(test)]
                runs.append(("zero-cloze", got, time.perf_counter() - t))
            with tempfile.TemporaryDirectory(prefix="llmos-bench-pet-") as tmp:
                if args.setfit:
                    cfg = SetFitConfig(seed=s, progress=False, num_threads=args.threads)
                    run = train_setfit(args.encoder, examples, Path(tmp) / "setfit", cfg)
                    got = [r["label"] for r in llmos.load(run.checkpoint).classify(test)]
                    runs.append(("setfit", got, run.seconds))
                # iPET's first generation is PET's models (the same seeds): its run starts
                # from a copy of PET's with the final classifier removed.
                variants = [("pet", 0)] + ([("ipet", args.generations)] if args.generations else [])
                for method, gens in variants:
                    cfg = PetConfig(
                        steps=args.steps,
                        lr=args.lr,
                        distill_steps=args.distill_steps,
                        distill_lr=args.distill_lr,
                        generations=gens,
                        max_unlabelled=len(pool),
                        mlm_weight=args.mlm_weight,
                        seed=s,
                        progress=False,
                        num_threads=args.threads,
                    )
                    run_dir = Path(tmp) / f"{method}-run"
                    if method == "ipet":
                        shutil.copytree(Path(tmp) / "pet-run", run_dir)
                        shutil.rmtree(run_dir / "distill")
                    t = time.perf_counter()
                    result = train_pet(
                        args.mlm,
                        examples,
                        pool,
                        patterns,
                        verbalizers,
                        Path(tmp) / method,
                        cfg,
                        run_dir=run_dir,
                        resume=True,
                    )
                    got = [r["label"] for r in llmos.load(result.checkpoint).classify(test)]
                    label = f"{method}+mlm" if args.mlm_weight else method  # its own column
                    runs.append((label, got, time.perf_counter() - t))
                    agree = 100 * result.pool_agreement
                    print(f"  k={k} seed={s} {label}: pool agreement {agree:.1f} %", flush=True)
                    if result.verbalizers_found and method == "pet":
                        found = ", ".join(
                            f"{lab}={'/'.join(w)}" for lab, w in result.verbalizers.items()
                        )
                        print(f"  k={k} seed={s} verbalizers chosen: {found}", flush=True)
            for method, got, secs in runs:
                acc = accuracy(got, gold)
                results.setdefault((name, k, method), []).append(acc)
                seconds.setdefault((name, k, method), []).append(secs)
                print(f"  k={k} seed={s} {method}: {100 * acc:.2f} % ({secs:.1f} s)")
            sys.stdout.flush()
    methods = list(dict.fromkeys(m for _, _, m in results))
    print(f"\n| dataset | k | {' | '.join(methods)} |")
    print("|---|---:|" + "---:|" * len(methods))
    for name in args.datasets.split(","):
        for k in shots:
            cells = [cell(results.get((name, k, m))) for m in methods]
            print(f"| {name} | {k} | " + " | ".join(cells) + " |")
    print(
        "\nfit seconds (mean): "
        + ", ".join(f"{n} k={k} {m} {sum(v) / len(v):.1f}" for (n, k, m), v in seconds.items())
    )


if __name__ == "__main__":
    main()
