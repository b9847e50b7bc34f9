"""The writing assistant's material suggestions on held-out paragraphs: is the paragraph's own
document among the top 5 suggestions? Hybrid search against BM25 alone and dense alone, in the
same run, over the same index.

    python bench/write_suggest_eval.py --encoder runs/e5-zh      # the run in docs/BENCHMARKS.md

Data: the shared corpus (``llmos write materials build`` prepares it: 三国演义 chapters, People's
Daily articles, Tang poems and Song ci). A sample of its documents is indexed (embedding every
passage of all 82k documents takes hours on two cores): ``--sanguo`` chapters, ``--articles``
articles and ``--poems`` poems, drawn by a salted hash, so the sample is the same in every run.
Queries are passages of documents that have at least two, drawn the same way: each is held out
(removed from the index, its document's other passages stay) and searched for; a hit is its
document among the top ``--k`` suggested documents. Valid queries choose the fusion's BM25
weight; test queries, other passages, measure. ``--units`` says what the index's BM25 reads
(jieba ``words`` or Chinese ``chars`` and bigrams); the baseline, BM25 over jieba words, is in
every run.

Also: the index build time (embedding included) and a query's latency (embedding + search).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine

from llmos.apps.support.local import PipelineEmbedder
from llmos.apps.write.materials import (
    BM25_WEIGHTS,
    LEXICAL_UNITS,
    MaterialIndex,
    chunk,
    search,
)
from llmos.data.materials import DOCUMENTS_FILE, MATERIALS_DIR, read_documents
from llmos.paths import data_dir
from llmos.text.words import UNITS

SALT = "llmos-write-suggest-v1"
WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
GROUPS = {"sanguo": "sanguo", "peoples_daily": "peoples_daily", "tang": "poetry"}
GROUPS["songci"] = "poetry"


def key(*parts: object) -> str:
    return hashlib.sha1("\x00".join(map(str, (SALT, *parts))).encode()).hexdigest()


class Cached:
    """An embedder that answers from vectors computed once (and saved to ``--cache``)."""

    def __init__(self, embed: PipelineEmbedder, cache: Path | None) -> None:
        self.embed, self.name, self.cache = embed, embed.name, cache
        self.table: dict[tuple[str, str], np.ndarray] = {}
        if cache is not None and cache.is_file():
            data = json.loads(cache.read_text(encoding="utf-8"))
            if data["encoder"] == self.name:
                for kind, text, v in data["rows"]:
                    self.table[(kind, text)] = np.asarray(v, dtype=np.float32)
        self.seconds = 0.0  # spent embedding (not answering from the table)

    def __call__(self, texts: list[str], kind: str) -> np.ndarray:
        todo = list(dict.fromkeys(t for t in texts if (kind, t) not in self.table))
        if todo:
            start = time.perf_counter()
            vectors = self.embed(todo, kind)
            self.seconds += time.perf_counter() - start
            self.table.update({(kind, t): v for t, v in zip(todo, vectors, strict=True)})
        return np.stack([self.table[(kind, t)] for t in texts])

    def save(self) -> None:
        if self.cache is not None:
            rows = [[k, t, [round(x, 6) for x in v.tolist()]] for (k, t), v in self.table.items()]
            self.cache.write_text(json.dumps({"encoder": self.name, "rows": rows}))


def sample(args: argparse.Namespace) -> list:
    docs = read_documents(data_dir() / MATERIALS_DIR / DOCUMENTS_FILE)
    by = {"sanguo": [], "peoples_daily": [], "poetry": []}
    for d in docs:
        by[GROUPS.get(d.corpus, "poetry")].append(d)
    # Poems with several passages (long ones) are the poetry's only queries: a third of the
    # sampled poems are drawn from them.
    poems = sorted(by["poetry"], key=lambda d: key(d.doc))
    long = [d for d in poems if len(chunk(d.paragraphs)) >= 2][: args.poems // 3]
    taken = {d.doc for d in long}
    short = [d for d in poems if d.doc not in taken][: args.poems - len(long)]
    return (
        sorted(by["sanguo"], key=lambda d: key(d.doc))[: args.sanguo]
        + sorted(by["peoples_daily"], key=lambda d: key(d.doc))[: args.articles]
        + long
        + short
    )


def queries(index: MaterialIndex, valid: int, test: int) -> tuple[list[int], list[int]]:
    """Held-out rows per corpus group, from documents that have another passage, at most one
    a document, drawn by hash: ``valid`` and ``test`` of them, from different documents (a
    group with fewer documents gives a third of them to valid)."""
    by_doc: dict[int, list[int]] = {}
    for r, row in index.rows.items():
        by_doc.setdefault(row.entry, []).append(r)
    picks: dict[str, list[int]] = {}
    for entry in sorted(by_doc, key=lambda e: key(index.documents[e]["doc"])):
        rows = by_doc[entry]
        if len(rows) < 2:
            continue
        group = GROUPS[index.documents[entry]["corpus"]]
        row = min(rows, key=lambda r: key(index.documents[entry]["doc"], index.rows[r].offset))
        picks.setdefault(group, []).append(row)
    out: tuple[list[int], list[int]] = ([], [])
    for g in sorted(picks):
        n_valid = min(valid, len(picks[g]) // 3)
        out[0].extend(picks[g][:n_valid])
        out[1].extend(picks[g][n_valid : n_valid + test])
    return out


def evaluate(index: MaterialIndex, held: list, vectors: np.ndarray, k: int, mode: str, w: float):
    hits, reciprocal = [], []
    for (text, entry), v in zip(held, vectors, strict=True):
        found = search([index], text, v, k, mode, w)
        docs = [s.doc for s in found]
        target = index.documents[entry]["doc"]
        hits.append(target in docs)
        reciprocal.append(1 / (docs.index(target) + 1) if target in docs else 0.0)
    return float(np.mean(hits)), float(np.mean(reciprocal)), np.asarray(hits)


def parser() -> argparse.ArgumentParser:
    """The bench's options (``bench/materials_pairs.py`` reads the sample sizes from it)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoder", default="runs/e5-zh")
    ap.add_argument("--sanguo", type=int, default=24, help="chapters indexed")
    ap.add_argument("--articles", type=int, default=240, help="People's Daily articles indexed")
    ap.add_argument("--poems", type=int, default=900, help="poems indexed (a third long ones)")
    ap.add_argument("--valid", type=int, default=30, help="valid queries per corpus group")
    ap.add_argument("--test", type=int, default=70, help="test queries per corpus group")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, help="a JSON file keeping the vectors between runs")
    ap.add_argument(
        "--units",
        choices=UNITS,
        default=LEXICAL_UNITS,
        help="what the index's BM25 reads (the baseline row, BM25 over jieba words, is "
        "measured in the same run either way)",
    )
    ap.add_argument("--out", type=Path)
    return ap


def main() -> None:
    args = parser().parse_args()
    torch.set_num_threads(args.threads)

    embed = Cached(PipelineEmbedder(args.encoder), args.cache)
    docs = sample(args)
    start = time.perf_counter()
    full = MaterialIndex(embed.name)
    full.sync(docs, embed)
    build_s = time.perf_counter() - start
    embed.save()
    valid_rows, test_rows = queries(full, args.valid, args.test)
    report: dict = {
        "machine": machine(),
        "threads": args.threads,
        "documents": len(full.documents),
        "passages": len(full),
        "build_s": round(build_s, 1),
        "embed_s": round(embed.seconds, 1),
        "k": args.k,
    }

    def built(units: str = args.units) -> MaterialIndex:
        index = MaterialIndex(embed.name, units=units)
        index.sync(docs, embed)  # from the table: no embedding
        return index

    def held_out(rows: list[int]) -> tuple[MaterialIndex, list, dict[str, np.ndarray]]:
        index = built()
        held = [(index.rows[r].text, index.rows[r].entry) for r in rows]
        index.drop(rows)
        # The paragraph embedded as a query (E5's asymmetric use, "query: ") and as a passage
        # like the rows it is compared with (symmetric: the held-out passage's own vector).
        texts = [t for t, _ in held]
        return index, held, {kind: embed(texts, kind) for kind in ("query", "passage")}

    index, held, vectors = held_out(valid_rows)
    report["valid"] = {"queries": len(held)}
    chosen = {}
    for kind in vectors:
        valid = {w: evaluate(index, held, vectors[kind], args.k, "hybrid", w)[:2] for w in WEIGHTS}
        chosen[kind] = max(WEIGHTS, key=lambda w: valid[w])
        report["valid"][f"hybrid, paragraph as {kind}"] = {str(w): v for w, v in valid.items()}
    report["chosen_weight"] = chosen
    report["units"] = args.units

    index, held, vectors = held_out(test_rows)
    groups = np.asarray([GROUPS[index.documents[e]["corpus"]] for _, e in held])
    test = {}
    if args.units != "words":  # the baseline, BM25 over jieba words, in the same run
        words_index = built("words")
        words_index.drop(test_rows)
        hit5, mrr, hits = evaluate(words_index, held, vectors["query"], args.k, "bm25", 1.0)
        per = {g: round(float(hits[groups == g].mean()), 4) for g in sorted(set(groups))}
        test["bm25 (words)"] = {"hit@k": round(hit5, 4), "mrr": round(mrr, 4), "by_group": per}
    runs = [("bm25", "query", 1.0)]
    for kind in vectors:
        runs += [("dense", kind, 1.0), ("hybrid", kind, chosen[kind])]
        if chosen[kind] != BM25_WEIGHTS[args.units]:  # the app's weight for these units
            runs.append(("hybrid", kind, BM25_WEIGHTS[args.units]))
    for mode, kind, w in runs:
        name = f"bm25 ({args.units})" if mode == "bm25" else f"{mode}, as {kind}"
        name += f", w={w:g}" if mode == "hybrid" else ""
        hit5, mrr, hits = evaluate(index, held, vectors[kind], args.k, mode, w)
        per = {g: round(float(hits[groups == g].mean()), 4) for g in sorted(set(groups))}
        test[name] = {"hit@k": round(hit5, 4), "mrr": round(mrr, 4), "by_group": per}
    report["test"] = {"queries": len(held), **test}
    weight, kind = chosen["query"], "query"

    # latency: embed the paragraph + search the index, one at a time (the table not used)
    times = []
    for text, _ in held[:50]:
        t = time.perf_counter()
        v = embed.embed([text], kind)[0]
        search([index], text, v, args.k, "hybrid", weight)
        times.append(time.perf_counter() - t)
    search_times = []
    for (text, _), v in zip(held[:50], vectors[kind], strict=False):
        t = time.perf_counter()
        search([index], text, v, args.k, "hybrid", weight)
        search_times.append(time.perf_counter() - t)
    report["query_ms"] = {
        "embed+search p50": round(1000 * float(np.percentile(times, 50)), 1),
        "embed+search p95": round(1000 * float(np.percentile(times, 95)), 1),
        "search p50": round(1000 * float(np.percentile(search_times, 50)), 1),
        "search p95": round(1000 * float(np.percentile(search_times, 95)), 1),
    }
    print(json.dumps(report, ensure_ascii=False, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    bm25 = test["bm25 (words)"]["hit@k"]
    print(
        f"\n{machine()}, {args.threads} threads; {report['passages']:,} passages of "
        f"{report['documents']:,} documents; {len(held)} test paragraphs"
    )
    groups_n = {g: int((groups == g).sum()) for g in sorted(set(groups))}
    print(
        f"test paragraphs by group: {groups_n}; BM25 over {args.units}; valid weights "
        f"chosen: {chosen}; vs BM25: against BM25 over jieba words"
    )
    print(f"| method | top-{args.k} hit | MRR | sanguo | peoples_daily | poetry | vs BM25 |")
    print("|---|---|---|---|---|---|---|")
    for name, r in test.items():
        g = r["by_group"]
        print(
            f"| {name} | {r['hit@k']:.3f} | {r['mrr']:.3f} | {g.get('sanguo', 0):.3f} | "
            f"{g.get('peoples_daily', 0):.3f} | {g.get('poetry', 0):.3f} | "
            f"{100 * (r['hit@k'] - bm25):+.1f} pts ({r['hit@k'] / bm25:.2f}x) |"
        )


if __name__ == "__main__":
    main()
