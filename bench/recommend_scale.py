"""Candidate retrieval over a large catalog: exact search against the calibrated IVF index
(``llmos.models.candidates.ItemIndex``), 1 M synthetic items.

    python bench/recommend_scale.py                              # 1 M items, 64 dimensions
    python bench/recommend_scale.py --items 200000 --dim 128 --queries 500

Item vectors (``--dim``, the size of an MF or SASRec item embedding) are drawn two ways:
*clustered* (``--clusters`` Gaussian centres, each item a centre plus noise of half its scale:
items that come in kinds, as a catalog's do) and *uniform* (independent Gaussian vectors: no
structure at all, the hard case for any cell-based index). Queries are held-out "users": an
item's vector plus noise of the data's scale, drawn with another seed than the calibration's.

Per kind: the build time; the index's serialised size and the process's peak RSS; each query
searched alone (one request) for its top 10, p50/p95 latency over --queries queries; recall@10
against exact search. Target (issue 18): p95 <= 20 ms at recall >= 0.95 against exact.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np

from llmos.models.candidates import ItemIndex, timed_search


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def catalog(kind: str, n: int, d: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.standard_normal((n, d), dtype=np.float32)
    centres = rng.standard_normal((clusters, d), dtype=np.float32)
    x = centres[rng.integers(0, clusters, n)]
    x += 0.5 * rng.standard_normal((n, d), dtype=np.float32)
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="FAISS threads (a request's share)")
    ap.add_argument("--kinds", default="clustered,uniform")
    args = ap.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.threads)
    print(
        f"# {cpu_name()}, {os.cpu_count()} cores, FAISS {faiss.__version__}, "
        f"{args.threads} thread(s); {args.items:,} items x {args.dim} dims, top {args.k}\n"
    )
    print("| data | index | build s | size MiB | nprobe / nlist | p50 ms | p95 ms | recall@10 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for data in args.kinds.split(","):
        x = catalog(data, args.items, args.dim, args.clusters, seed=0)
        rng = np.random.default_rng(1)
        picks = x[rng.choice(len(x), args.queries, replace=False)]
        queries = picks + rng.normal(0, float(x.std()), picks.shape).astype(np.float32)
        truth = None
        for kind in ("exact", "ivf"):
            start = time.perf_counter()
            index = ItemIndex.build(x, kind=kind, k=args.k)
            build = time.perf_counter() - start
            ids, secs = timed_search(index, queries, args.k)
            if truth is None:
                truth = ids
            recall = np.mean(
                [len(set(a) & set(b)) / args.k for a, b in zip(ids, truth, strict=True)]
            )
            ms = np.asarray(secs) * 1000
            cells = f"{index.nprobe} / {index.calibration['nlist']}" if kind == "ivf" else "-"
            print(
                f"| {data} | {kind} | {build:.1f} | {index.nbytes / 2**20:.0f} | {cells} | "
                f"{np.percentile(ms, 50):.2f} | {np.percentile(ms, 95):.2f} | {recall:.4f} |"
            )
            del index
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\npeak RSS of the process: {peak:.0f} MiB (the vectors alone: "
        f"{args.items * args.dim * 4 / 2**20:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
