"""Zero-shot sentiment by asking the instruction-tuned GPT (issue 20, item 1(c)):
``ZeroShotClassifier(method="instruct")`` on sentiment-zh, without and with the prior.

    python bench/instruct_zero.py --checkpoint runs/instruct-zh/checkpoint

Protocol (nothing chosen, so no valid split): a fixed random subset of ``--max-test`` rows of
the sentiment-zh test split (``random.Random(0)``); the instruction and the answers are the
ones the instruct-zh data phrases sentiment with (:data:`llmos.data.instructions.PHRASES`:
``判断下面这条评论的情感是正面还是负面。``, pos = 正面, neg = 负面). ``+ prior``: each
label's mean log-probability over ``--pool`` training texts drawn without their labels is
removed. Beside it, on the same rows: the majority-class rate, the same scoring on the GPT
before instruction tuning (``--base``, which reads the prompt as plain text), and the tuned
GPT's free greedy answer (right only when it is exactly the label's answer).

Not truly zero-shot for sentiment: the instruct-zh training data holds 400 sentiment-zh
*training* reviews asked with this very instruction and answered 正面 / 负面 (test reviews are
never in it), so the model was tuned on this task's format and labels.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

import llmos
from llmos.data.clm import format_prompt
from llmos.data.instructions import PHRASES
from llmos.inference.generator import GeneratorPipeline
from llmos.inference.zeroshot import ZeroShotClassifier

sys.path.insert(0, str(Path(__file__).parent))
from fewshot import read_split
from machine import machine


class CachedAnswers:
    """A GPT pipeline's ``answer_scores`` with each text's scores kept: the prior's pool and
    the test rows go through the model once, however many classifiers read them."""

    def __init__(self, pipe: GeneratorPipeline) -> None:
        self.pipe, self.spec = pipe, pipe.spec
        self.cache: dict[tuple[tuple[str, tuple[str, ...]], str], np.ndarray] = {}
        self.seconds, self.texts = 0.0, 0

    def describe(self) -> str:
        return self.pipe.describe()

    def answer_scores(
        self, instruction: str, texts: list[str], answers: Sequence[str], batch_size: int = 32
    ) -> np.ndarray:
        key = (instruction, tuple(answers))
        new = list(dict.fromkeys(t for t in texts if (key, t) not in self.cache))
        if new:
            t0 = time.perf_counter()
            rows = self.pipe.answer_scores(instruction, new, answers, batch_size)
            self.seconds += time.perf_counter() - t0
            self.texts += len(new)
            self.cache.update({(key, t): r for t, r in zip(new, rows, strict=True)})
        return np.stack([self.cache[key, t] for t in texts])


def accuracy(predicted: list[str], gold: list[str]) -> float:
    return sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)


def constrained(
    pipe: GeneratorPipeline, texts: list[str], gold: list[str], pool: list[str], batch_size: int
) -> dict[str, float]:
    """Accuracy of method instruct on ``texts``, without and with the prior, and its cost."""
    phrases = PHRASES["zh"]
    scorer = CachedAnswers(pipe)
    answers = {label: [word] for label, word in phrases["labels"].items()}
    out = {}
    for prior in (False, True):
        clf = ZeroShotClassifier(
            scorer,  # type: ignore[arg-type]
            answers,
            method="instruct",
            instruction=phrases["sentiment"],
            batch_size=batch_size,
            unlabelled=pool if prior else None,
        )
        got = [r["label"] for r in clf.classify(texts)]
        out["+ prior" if prior else "plain"] = accuracy(got, gold)
    out["texts_per_s"] = scorer.texts / scorer.seconds
    return out


def free_answers(pipe: GeneratorPipeline, texts: list[str], batch_size: int) -> list[str]:
    """The tuned GPT's own greedy answer to each prompt (plain greedy, as the instruct report's
    answer quality), mapped back to a label when it is exactly one label's answer."""
    by_answer = {word: label for label, word in PHRASES["zh"]["labels"].items()}
    prompts = [format_prompt(PHRASES["zh"]["sentiment"], t) for t in texts]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    labels = [""] * len(prompts)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        outs = pipe.generate(
            [prompts[i] for i in idx],
            raw=True,
            max_new_tokens=8,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
        )
        for i, text in zip(idx, outs, strict=True):
            labels[i] = by_answer.get(text.strip(), "(other)")
    return labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="runs/instruct-zh/checkpoint")
    ap.add_argument("--base", default="runs/gpt-zh/checkpoint", help="'' to skip")
    ap.add_argument("--max-test", type=int, default=600)
    ap.add_argument("--pool", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    texts, gold = read_split("sentiment-zh", "test")
    keep = sorted(random.Random(0).sample(range(len(texts)), min(args.max_test, len(texts))))
    texts, gold = [texts[i] for i in keep], [gold[i] for i in keep]
    train, _ = read_split("sentiment-zh", "train")
    pool = random.Random(0).sample(train, min(args.pool, len(train)))  # labels unused
    counts = Counter(gold)
    print(f"machine: {machine()}, {args.threads} thread(s), torch {torch.__version__}")
    print(f"sentiment-zh test: {len(texts)} rows {dict(counts)}; prior pool {len(pool)}")
    majority, n = counts.most_common(1)[0]
    print(f"  majority class ({majority})  {100 * n / len(texts):6.2f}")
    for name, path in (("instruct", args.checkpoint), ("base", args.base)):
        if not path:
            continue
        res = constrained(llmos.load(path), texts, gold, pool, args.batch_size)
        for what in ("plain", "+ prior"):
            print(f"  {name} {path} {what:<8} {100 * res[what]:6.2f}")
        print(f"    ({res['texts_per_s']:.1f} texts/s scored, both answers)")
    t0 = time.perf_counter()
    free = free_answers(llmos.load(args.checkpoint), texts, args.batch_size)
    seconds = time.perf_counter() - t0
    other = sum(a == "(other)" for a in free)
    print(
        f"  free greedy answer ({args.checkpoint})  {100 * accuracy(free, gold):6.2f}"
        f"  ({other} answers neither 正面 nor 负面; {len(texts) / seconds:.1f} texts/s)"
    )


if __name__ == "__main__":
    main()
