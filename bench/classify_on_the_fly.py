"""On-the-fly classifiers over HTTP: ``POST /v1/classify`` with an encoder plus 8 examples per
label, first call (the classifier is built) and cached, against a trained classifier of the
same encoder (issue 20's latency row).

    python bench/classify_on_the_fly.py                      # intent-zh, 40 labels x 8
    python bench/classify_on_the_fly.py --dataset sentiment-zh --requests 100

One ``llmos serve`` subprocess (bench/serve_load.py's: SQLite store, rate limit off) serves
``e5`` (the encoder, runs/e5-zh) and ``trained``: a SetFit classifier
(:func:`llmos.train.setfit.train_setfit`) trained here on the same examples, so both sides run
the same 12-layer encoder. Each request classifies one test text; requests are sequential
(one client). Rows:

- ``trained``: ``{"model": "trained", "texts": [t]}``;
- ``on the fly, first call``: ``{"model": "e5", "texts": [t], "examples": ...}`` with a fresh
  sample of examples each time (seeds 100, 101, ...), so every call embeds its examples and
  fits its classifier;
- ``on the fly, cached``: the same request body's examples as one earlier call (the server
  keeps built classifiers under a hash of encoder, method, labels and examples).

Method ``logreg`` by default (``--method``), the stronger few-shot rule of bench/fewshot.py.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from fewshot import read_split, sample
from machine import machine
from serve_load import http, live_server

from llmos.train.setfit import SetFitConfig, train_setfit


def timed(url: str, body: dict, key: str) -> tuple[float, dict]:
    t = time.perf_counter()
    status, raw = http(url, body, key)
    ms = 1000 * (time.perf_counter() - t)
    if status != 200:
        raise SystemExit(f"{url} answered {status}: {raw[:300]!r}")
    return ms, json.loads(raw)


def percentiles(ms: list[float]) -> str:
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"{statistics.median(ms):.1f} | {p95:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="runs/e5-zh")
    ap.add_argument("--dataset", default="intent-zh")
    ap.add_argument("--k", type=int, default=8, help="examples per label")
    ap.add_argument("--method", default="logreg", choices=("centroid", "logreg"))
    ap.add_argument("--requests", type=int, default=60, help="timed requests per cached row")
    ap.add_argument("--builds", type=int, default=8, help="timed first calls")
    ap.add_argument("--setfit-steps", type=int, default=30)
    args = ap.parse_args()
    print(f"# {machine()}\n")
    texts, labels = read_split(args.dataset, "train")
    by_label: dict[str, list[str]] = {}
    for t, y in zip(texts, labels, strict=True):
        by_label.setdefault(y, []).append(t)
    test, _ = read_split(args.dataset, "test")
    queries = random.Random(0).sample(test, min(len(test), args.requests))
    examples = sample(by_label, args.k, 0)
    n_examples = sum(len(v) for v in examples.values())
    with tempfile.TemporaryDirectory(prefix="llmos-bench-otf-") as tmp:
        models = Path(tmp) / "models"
        models.mkdir()
        (models / "e5").symlink_to(Path(args.encoder).resolve())
        cfg = SetFitConfig(steps=args.setfit_steps, progress=False)
        run = train_setfit(args.encoder, examples, models / "trained", cfg)
        print(
            f"{args.dataset}: {len(examples)} labels x {args.k} examples ({n_examples}); "
            f"SetFit classifier trained in {run.seconds:.0f} s\n"
        )
        ns = argparse.Namespace(server_threads=0, max_batch=32, max_wait_ms=2)
        with live_server("otf", models, "trained", Path(tmp), ns, batch=True) as srv:
            url = f"{srv.url}/v1/classify"
            body = {"model": "e5", "examples": examples, "method": args.method}
            build_ms = []
            for i in range(args.builds):
                fresh = sample(by_label, args.k, 100 + i)
                ms, out = timed(url, {**body, "examples": fresh, "texts": [queries[i]]}, srv.key)
                assert out["cached"] is False
                build_ms.append(ms)
            timed(url, {**body, "texts": [queries[0]]}, srv.key)  # build the cached one
            rows: dict[str, list[float]] = {"trained": [], "cached": []}
            for q in queries:  # interleaved, so both see the same machine
                rows["trained"].append(timed(url, {"model": "trained", "texts": [q]}, srv.key)[0])
                ms, out = timed(url, {**body, "texts": [q]}, srv.key)
                assert out["cached"] is True
                rows["cached"].append(ms)
    print("| request (one text) | p50 ms | p95 ms |")
    print("|---|---:|---:|")
    print(f"| trained classifier (SetFit, same encoder) | {percentiles(rows['trained'])} |")
    first = f"on the fly, first call ({n_examples} examples, {args.method})"
    print(f"| {first} | {percentiles(build_ms)} |")
    print(f"| on the fly, cached | {percentiles(rows['cached'])} |")
    p50 = statistics.median(rows["cached"]) / statistics.median(rows["trained"])
    s = sorted(rows["cached"]), sorted(rows["trained"])
    i95 = round(0.95 * (len(s[0]) - 1))
    print(f"\ncached / trained: p50 {p50:.2f}x, p95 {s[0][i95] / s[1][i95]:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
