"""Question -> answer retrieval on the chatterbot QA pairs: an llmos encoder (dense, FAISS)
against BM25 in the same run.

    python bench/retrieval.py --checkpoint runs/minilm --lang en
    python bench/retrieval.py --checkpoint runs/bert-zh/checkpoint --lang zh
    python bench/retrieval.py --checkpoint runs/e5 --lang zh      # multilingual-e5-small

    # the same encoder fine-tuned on the other questions' pairs, 5-fold cross-validation:
    python bench/retrieval.py --checkpoint runs/e5-zh --lang zh \
        --tune configs/finetune/embed-qa-zh.yaml --folds 5

The corpus is every distinct answer of ``tasks/qa-{lang}.jsonl``; each question is a query
whose relevant documents are its own answers. With ``--tune CONFIG`` the questions are cut
into ``--folds`` folds (seeded); for each fold, ``llmos finetune`` runs CONFIG (``task:
embedding``, ``init`` the checkpoint) on the pairs of the other folds (a tenth of them held
for validation and best-checkpoint selection), and the fold's questions search the whole
corpus with the fine-tuned encoder. Every question is then scored once, by a model that never
saw it or, unless another question shares it, its answer. Answers are embedded as passages
and questions as queries (``embed(kind=...)``: E5's ``passage: `` / ``query: `` prefixes;
no-ops for a model without prefixes). Reported: accuracy@1, accuracy@5 (a relevant answer
among the top k) and MRR over all questions, for both retrievers. BM25 is Okapi BM25
(k1 = 1.5, b = 0.75) over lower-cased words (English) or jieba words (Chinese).

"hybrid" rows fuse each dense ranking with BM25's as the customer-service app's knowledge
base does (``llmos.apps.support.index.fuse_ranks``: 1/(60 + dense rank) + w/(60 + BM25 rank),
BM25 ranking only the answers sharing a word with the question) at the app's weight for a
base of answers only, 0.5: such a base has no stored questions to choose another weight on.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from llmos.apps.support.index import BM25_WEIGHT, fuse_ranks
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


def hybrid(
    dense: list[list[int]], bm25: list[np.ndarray], weight: float = BM25_WEIGHT
) -> list[list[int]]:
    """Each question's answers ranked by reciprocal-rank fusion of its dense ranking and its
    BM25 ranking (the answers with a positive BM25 score), ties by answer index."""
    out = []
    for order, scores in zip(dense, bm25, strict=True):
        lexical = [int(i) for i in np.argsort(-scores, kind="stable") if scores[i] > 0]
        fused = fuse_ranks(
            {int(doc): r for r, doc in enumerate(order, 1)},
            {doc: r for r, doc in enumerate(lexical, 1)},
            weight,
        )
        out.append(sorted(fused, key=lambda e: (-fused[e], e)))
    return out


def tuned_cv(
    checkpoint: str,
    config: str,
    overrides: list[str],
    folds: int,
    rows: list[dict],
    answers: list[str],
    work: Path,
) -> tuple[list[list[int]], list[float]]:
    """Each question's ranking of ``answers`` by an encoder fine-tuned (``config`` with
    ``overrides``) on the other folds' pairs, and each fold's training seconds."""
    from llmos.config import FinetuneConfig, load_config
    from llmos.recipes.finetune import finetune

    fold = np.random.default_rng(0).permutation(len(rows)) % folds
    ranked: list[list[int]] = [[] for _ in rows]
    seconds = []
    for k in range(folds):
        held = [i for i in range(len(rows)) if fold[i] == k]
        rest = [i for i in range(len(rows)) if fold[i] != k]
        data = work / f"fold{k}"
        data.mkdir(parents=True, exist_ok=True)
        for split, idx in (("train", rest[len(rest) // 10 :]), ("valid", rest[: len(rest) // 10])):
            lines = [json.dumps(rows[i], ensure_ascii=False) for i in idx]
            (data / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        cfg = load_config(
            FinetuneConfig,
            config,
            [
                *overrides,
                f"init={checkpoint}",
                f"data.dataset={data}",
                f"out_dir={work}",
                f"name=run{k}",
            ],
        )
        t = time.perf_counter()
        result = finetune(cfg)
        seconds.append(time.perf_counter() - t)
        pipe = load_pipeline(result.checkpoint)
        scores = (
            pipe.embed([rows[i]["question"] for i in held], kind="query")
            @ pipe.embed(answers, kind="passage").T
        )
        for row, i in enumerate(held):
            ranked[i] = list(np.argsort(-scores[row], kind="stable"))
        print(
            f"fold {k}: {len(rest)} pairs -> best step {result.best and result.best['step']},"
            f" {seconds[-1]:.0f} s",
            flush=True,
        )
    return ranked, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True, help="encoder checkpoint")
    ap.add_argument("--lang", choices=["zh", "en"], default="en")
    ap.add_argument("--tune", help="a task: embedding config, run per fold (cross-validation)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--set", nargs="*", default=[], help="overrides of the --tune config")
    ap.add_argument("--work", default=None, help="where the folds' runs go (default: a temp dir)")
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
    dense_ranked = [[int(i) for i, _ in row] for row in hits]
    dense = metrics(dense_ranked, relevant)
    t_dense = time.perf_counter() - t

    t = time.perf_counter()
    bm25 = BM25([words(a, args.lang) for a in answers])
    bm25_scores = [bm25.scores(words(q, args.lang)) for q in questions]
    ranked = [list(np.argsort(-s, kind="stable")) for s in bm25_scores]
    sparse = metrics(ranked, relevant)
    t_sparse = time.perf_counter() - t

    runs = [
        (f"llmos dense ({args.checkpoint})", dense, t_dense),
        ("llmos hybrid, dense + BM25", metrics(hybrid(dense_ranked, bm25_scores), relevant), None),
        ("BM25", sparse, t_sparse),
    ]
    if args.tune:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(args.work or tmp)
            ranked, secs = tuned_cv(
                args.checkpoint, args.tune, args.set, args.folds, rows, answers, work
            )
        runs[:0] = [
            (f"llmos dense, fine-tuned ({args.folds}-fold)", metrics(ranked, relevant), sum(secs)),
            (
                "llmos hybrid, fine-tuned dense + BM25",
                metrics(hybrid(ranked, bm25_scores), relevant),
                None,
            ),
        ]

    print(f"qa-{args.lang}: {len(questions)} questions, {len(answers)} distinct answers")
    print(f"{'retriever':<44} {'acc@1':>7} {'acc@5':>7} {'MRR':>7} {'seconds':>8}")
    for name, m, secs in runs:
        took = "-" if secs is None else f"{secs:.1f}"
        print(f"{name:<44} {m['acc@1']:>7.4f} {m['acc@5']:>7.4f} {m['mrr']:>7.4f} {took:>8}")
    for name, m, _ in runs[:-1]:
        print(f"{name} / BM25 MRR: {m['mrr'] / max(sparse['mrr'], 1e-9):.2f}x")


if __name__ == "__main__":
    main()
