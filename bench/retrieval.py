"""Question -> answer retrieval on the chatterbot QA pairs: an llmos encoder (dense, FAISS)
against BM25 in the same run.

    python bench/retrieval.py --checkpoint runs/minilm --lang en
    python bench/retrieval.py --checkpoint runs/bert-zh/checkpoint --lang zh
    python bench/retrieval.py --checkpoint runs/e5 --lang zh      # multilingual-e5-small

The corpus is every distinct answer of ``tasks/qa-{lang}.jsonl``; each question is a query
whose relevant documents are its own answers. Answers are embedded as passages and questions as
queries (``embed(kind=...)``: E5's ``passage: `` / ``query: `` prefixes; no-ops for a model
without prefixes). Reported: accuracy@1, accuracy@5 (a relevant
answer among the top k) and MRR over all questions, for both retrievers. BM25 is Okapi BM25
(k1 = 1.5, b = 0.75) over lower-cased words (English) or jieba words (Chinese).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from collections import Counter

import numpy as np

from llmos.inference.load import load_pipeline
from llmos.paths import data_dir
from llmos.store.vectors import VectorIndex


def words(text: str, lang: str) -> list[str]:
    if lang == "zh":
        import jieba

        return [w for w in jieba.lcut(text.lower()) if w.strip() and re.search(r"\w", w)]
    return re.findall(r"[a-z0-9]+", text.lower())


class BM25:
    def __init__(self, docs: list[list[str]], k1: float = 1.5, b: float = 0.75) -> None:
        self.docs, self.k1, self.b = [Counter(d) for d in docs], k1, b
        self.lengths = np.array([len(d) for d in docs], dtype=np.float64)
        self.avg = self.lengths.mean()
        df = Counter(w for d in docs for w in set(d))
        n = len(docs)
        self.idf = {w: math.log(1 + (n - f + 0.5) / (f + 0.5)) for w, f in df.items()}

    def scores(self, query: list[str]) -> np.ndarray:
        out = np.zeros(len(self.docs))
        for i, (d, length) in enumerate(zip(self.docs, self.lengths, strict=True)):
            norm = self.k1 * (1 - self.b + self.b * length / self.avg)
            out[i] = sum(
                self.idf[w] * d[w] * (self.k1 + 1) / (d[w] + norm) for w in query if w in d
            )
        return out


def metrics(ranked: list[list[int]], relevant: list[set[int]]) -> dict[str, float]:
    at1 = at5 = rr = 0.0
    for order, rel in zip(ranked, relevant, strict=True):
        ranks = [r for r, doc in enumerate(order) if doc in rel]
        first = ranks[0] + 1 if ranks else None
        at1 += first == 1
        at5 += first is not None and first <= 5
        rr += 1 / first if first else 0.0
    n = len(relevant)
    return {"acc@1": at1 / n, "acc@5": at5 / n, "mrr": rr / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True, help="encoder checkpoint")
    ap.add_argument("--lang", choices=["zh", "en"], default="en")
    args = ap.parse_args()
    rows = [
        json.loads(line)
        for line in (data_dir() / "tasks" / f"qa-{args.lang}.jsonl").read_text().splitlines()
    ]
    answers = sorted({a for r in rows for a in r["answers"]})
    index_of = {a: i for i, a in enumerate(answers)}
    questions = [r["question"] for r in rows]
    relevant = [{index_of[a] for a in r["answers"]} for r in rows]

    t = time.perf_counter()
    pipe = load_pipeline(args.checkpoint)
    ids = [str(i) for i in range(len(answers))]
    index = VectorIndex.build(pipe.embed(answers, kind="passage"), ids, {})
    hits = index.search(pipe.embed(questions, kind="query"), len(answers))
    dense = metrics([[int(i) for i, _ in row] for row in hits], relevant)
    t_dense = time.perf_counter() - t

    t = time.perf_counter()
    bm25 = BM25([words(a, args.lang) for a in answers])
    ranked = [list(np.argsort(-bm25.scores(words(q, args.lang)), kind="stable")) for q in questions]
    sparse = metrics(ranked, relevant)
    t_sparse = time.perf_counter() - t

    print(f"qa-{args.lang}: {len(questions)} questions, {len(answers)} distinct answers")
    print(f"{'retriever':<40} {'acc@1':>7} {'acc@5':>7} {'MRR':>7} {'seconds':>8}")
    for name, m, secs in (
        (f"llmos dense ({args.checkpoint})", dense, t_dense),
        ("BM25", sparse, t_sparse),
    ):
        print(f"{name:<40} {m['acc@1']:>7.4f} {m['acc@5']:>7.4f} {m['mrr']:>7.4f} {secs:>8.1f}")
    print(f"dense / BM25 MRR: {dense['mrr'] / max(sparse['mrr'], 1e-9):.2f}x")


if __name__ == "__main__":
    main()
