"""The Python API end to end, for comparing two versions of llmos on the same checkpoints.

    python bench/api_throughput.py --models runs --json after.json
    PYTHONPATH=old/src python bench/api_throughput.py --models runs --json before.json

Times what a user's script does, through the public API only (``llmos.load`` and the pipeline
methods), so the same file runs against any version that has them: load a checkpoint (median of
--repeats loads), classify the sentiment-zh test texts, tag the PKU test sentences with the NER
model, embed the English QA questions with MiniLM, and greedy-generate from a few prompts with
gpt-zh (repetition penalty and n-gram ban off, the same decoding in every version). Each
measurement is the median of --repeats runs after one warm-up; texts/s or tokens/s are printed
with the checkpoint and the answers' digest, so two versions can be checked to give the same
answers as well as compared for speed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import llmos

PROMPTS = ["今天天气", "却说曹操", "中国", "我们"]


def median_seconds(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    out = fn()  # warm-up (and the answers)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, ensure_ascii=False, default=str).encode()).hexdigest()[
        :12
    ]


def read_texts(path: Path, limit: int, column: int = 0) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = [ln.split("\t")[column] for ln in lines[1:] if ln.strip()]  # header line first
    return rows[:limit]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="runs", help="the directory llmos setup built")
    ap.add_argument("--data", default=str(Path.home() / ".llmos" / "data" / "tasks"))
    ap.add_argument("--texts", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models, data = Path(args.models), Path(args.data)
    results: dict[str, Any] = {
        "llmos": str(Path(llmos.__file__).parent),
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
    }

    ckpt = models / "sentiment-zh" / "checkpoint"
    load_s, clf = median_seconds(lambda: llmos.load(ckpt), args.repeats)
    results["load sentiment-zh (s)"] = round(load_s, 4)
    texts = read_texts(data / "sentiment-zh" / "test.tsv", args.texts)
    s, out = median_seconds(lambda: clf.classify(texts, batch_size=32), args.repeats)
    results["classify texts/s"] = round(len(texts) / s, 1)
    results["classify answers"] = digest([(r["label"], round(r["score"], 4)) for r in out])

    ner = llmos.load(models / "ner-zh" / "checkpoint")
    sents = [
        "".join(tok.rsplit("/", 1)[0] for tok in line.split())
        for line in (data / "pku" / "test.txt").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ][: args.texts // 2]
    s, out = median_seconds(lambda: ner.tag(sents, batch_size=32), args.repeats)
    results["tag sentences/s"] = round(len(sents) / s, 1)
    results["tag answers"] = digest([[(x["label"], x["start"], x["end"]) for x in r] for r in out])

    minilm = llmos.load(models / "minilm")
    questions = [
        json.loads(line)["question"]
        for line in (data / "qa-en.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ][: args.texts]
    s, out = median_seconds(lambda: minilm.embed(questions, batch_size=32), args.repeats)
    results["embed texts/s"] = round(len(questions) / s, 1)
    results["embed answers"] = digest(out.round(4).tolist())

    gpt = llmos.load(models / "gpt-zh" / "checkpoint")
    options = dict(max_new_tokens=32, repetition_penalty=1.0, no_repeat_ngram_size=0)
    s, out = median_seconds(lambda: gpt.generate(PROMPTS, **options), args.repeats)
    results["generate prompts/s (batch 4, <= 32 new tokens)"] = round(len(PROMPTS) / s, 2)
    results["generate answers"] = digest(out)

    for k, v in results.items():
        print(f"{k:34} {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
