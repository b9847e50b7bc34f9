"""The recommendation app live: adaptation to new events without retraining, and top-10 over
HTTP.

    python bench/recommend_live.py                          # runs/movielens (llmos setup)
    python bench/recommend_live.py --users 300 --clients 1,16 --seconds 15

**Live adaptation** (in process, ML-100K, the app's own engine): for --users users drawn with
a seed among those with at least 30 ratings, their last 6 ratings by time are held out and
EASE (reg 400, as the app) is fitted on every other rating. Each user's 6th held-out film is
the target; *before*: the list from their earlier ratings only; *after*: the same model, the
user's first 5 held-out ratings added as ``like`` events (folded in as the server does, no
refit). Reported: hit@10 and NDCG@10 of the target, before and after, and the lift. The same
for a popularity list as a floor.

**Onboarding** (cold start): --users new users with no events name their favourite genre
(simulated: the genre they rated most). The list from that interest, and from a Chinese wish
"想看<genre>片" (the genre's Chinese name, embedded by --encoder as an E5 query), against
popularity: hit@10 and precision@10 over every film the user rated, and the share of the list
in the genre named (does the list follow what was asked). The model is the app's
(fitted on every rating); only its popularity counts and text vectors are used here.

**Diversity**: the app's own lists (the engine, as the server makes them) for every test user
of RecBole's 8:1:1 split, EASE fitted on train, each user's train items as likes and valid
items excluded, at each ``--diversities`` value (MMR over genres): recall and NDCG@10 on test,
intra-list genre diversity and catalog coverage (``llmos.train.ranking.beyond_accuracy``).
At 0 the lists are EASE's full ranking, so the metrics must equal ``bench/recommend_eval.py``'s.

**A wish beside a history**: on the same split, each test user asks for the genre most of
their held-out films carry ("想看<genre>片", embedded by --encoder; the films' text vectors are
--model's) at each ``--wish-weights`` value: the recall@10 of the held-out films of that genre
(what they asked for and went on to rate), of all their held-out films, and the share of the
list in the genre. Valid chooses the weight, test measures; the app's
``WISH_WEIGHT_WITH_HISTORY`` is printed beside. ``--only wish`` runs this alone.

**Serving** (``llmos serve`` in a subprocess, its own SQLite store, rate limit off; a models
directory of links to the recommender and its encoder): --http-users users each record 20
random likes over HTTP, then wrk (as bench/serve_load.py: one C thread, keep-alive, closed
loop) sends ``GET /v1/apps/recommend?k=10`` cycling through the users' keys, at each client
count; then ``GET /v1/apps/recommend/similar/{item}``; first, as the floor of any route,
``GET /v1/me`` (authentication and a JSON answer). Reported: requests/s and p50/p95/p99.
Target (issue 18): p95 <= 30 ms at 1 client.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from serve_load import WRK_SCRIPT, LiveServer, _wait_ready, http, run_wrk, stop

import llmos
from llmos.apps.recommend.demo import movielens_files
from llmos.apps.recommend.engine import Recommender
from llmos.apps.recommend.events import Act, fold
from llmos.apps.recommend.train import in_catalog_order, read_catalog
from llmos.checkpoint.recommender import RecommenderCheckpoint
from llmos.data.interactions import read_inter
from llmos.models.itemitem import EASE
from llmos.serve.testing import free_port
from llmos.store.db import Store

GET_SCRIPT = WRK_SCRIPT.replace(
    'return wrk.format("POST", "/v1/classify", nil, bodies[next_body])',
    'local key, path = bodies[next_body]:match("(%S+) (%S+)")\n'
    '  return wrk.format("GET", path, {Authorization = "Bearer " .. key})',
)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def adaptation(args: argparse.Namespace) -> None:
    items_file, inter_file = movielens_files()
    items, inter = read_catalog(items_file), read_inter(inter_file)
    col = in_catalog_order(items, inter).item
    by_user: dict[int, list[int]] = {}
    for row in np.lexsort((inter.timestamp, inter.user)):
        by_user.setdefault(int(inter.user[row]), []).append(row)
    eligible = sorted(u for u, rows in by_user.items() if len(rows) >= 30)
    users = random.Random(args.seed).sample(eligible, min(args.users, len(eligible)))
    held = {u: by_user[u][-6:] for u in users}
    keep = np.ones(len(inter), bool)
    for rows in held.values():
        keep[rows] = False
    import scipy.sparse as sp

    x = sp.csr_matrix(
        (np.ones(int(keep.sum()), np.float32), (inter.user[keep], col[keep])),
        shape=(inter.num_users, len(items)),
    )
    x.data[:] = 1
    started = time.perf_counter()
    weights = {
        "ease.weight": EASE.fit(x, reg=400.0).weight,
        "popularity.counts": torch.from_numpy(np.asarray(x.sum(0)).ravel()).float(),
    }
    fit_s = time.perf_counter() - started
    recs = {"EASE, events folded in": Recommender(_ckpt(items, weights, None))}
    if args.sasrec_steps:
        from dataclasses import replace

        from llmos.apps.recommend.generators import fit_sequential

        kept = replace(
            inter,
            user=inter.user[keep],
            item=inter.item[keep],
            rating=inter.rating[keep],
            timestamp=inter.timestamp[keep],
        )
        started = time.perf_counter()
        seq, config, valid = fit_sequential(in_catalog_order(items, kept), args.sasrec_steps)
        seq_s = time.perf_counter() - started
        print(f"SASRec: {args.sasrec_steps} steps in {seq_s:.0f} s, valid {valid}")
        both = {**weights, **seq}
        alone = {**both, "ease.weight": torch.zeros_like(weights["ease.weight"])}
        recs["SASRec alone, events read in order"] = Recommender(_ckpt(items, alone, config))
        recs["EASE + SASRec"] = Recommender(_ckpt(items, both, config))
    pop_rank = torch.argsort(weights["popularity.counts"], descending=True).tolist()
    out: dict[str, dict[str, list[int]]] = {n: {"before": [], "after": []} for n in recs}
    out["popularity"] = {"before": [], "after": []}
    for u in users:
        history = [Act("like", items[col[r]].id) for r in by_user[u][:-6]]
        session = [Act("like", items[col[r]].id) for r in held[u][:5]]
        target = items[col[held[u][5]]].id
        for when, acts in (("before", history), ("after", history + session)):
            taste = fold(acts)
            for name, rec in recs.items():
                top = [r.item.id for r in rec.recommend(taste, 10)]
                out[name][when].append(top.index(target) + 1 if target in top else 0)
            pop = [items[i].id for i in pop_rank if items[i].id not in taste.seen][:10]
            out["popularity"][when].append(pop.index(target) + 1 if target in pop else 0)

    def hit(ranks: list[int]) -> float:
        return float(np.mean([r > 0 for r in ranks]))

    def ndcg(ranks: list[int]) -> float:
        return float(np.mean([1 / np.log2(r + 1) if r else 0.0 for r in ranks]))

    print(f"\n## Live adaptation: {len(users)} users, EASE fitted in {fit_s:.1f} s\n")
    print("| list | hit@10 before | hit@10 after 5 events | lift | NDCG@10 before | after |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, ranks in out.items():
        hb, ha = hit(ranks["before"]), hit(ranks["after"])
        lift = f"{(ha / hb - 1) * 100:+.1f} %" if hb else "-"
        print(
            f"| {label} | {hb:.4f} | {ha:.4f} | {lift} | {ndcg(ranks['before']):.4f} | "
            f"{ndcg(ranks['after']):.4f} |"
        )


def _ckpt(items: list, weights: dict, sasrec: dict | None) -> RecommenderCheckpoint:
    return RecommenderCheckpoint(Path("."), tuple(items), weights, {}, sasrec)


ZH_GENRES = {
    "Action": "动作", "Adventure": "冒险", "Animation": "动画", "Children's": "儿童",
    "Comedy": "喜剧", "Crime": "犯罪", "Documentary": "纪录", "Drama": "剧情", "Fantasy": "奇幻",
    "Film-Noir": "黑色", "Horror": "恐怖", "Musical": "歌舞", "Mystery": "悬疑",
    "Romance": "爱情", "Sci-Fi": "科幻", "Thriller": "惊悚", "War": "战争", "Western": "西部",
}  # fmt: skip


def onboarding(args: argparse.Namespace) -> None:
    """New users with no events, who name their favourite genre at onboarding (simulated:
    the genre they rated most): the app's list from that interest, and from a Chinese wish
    "想看<genre>片" embedded by the encoder, against popularity; hit@10 and precision@10 over
    all the films the user rated."""
    from llmos.apps.recommend.events import Taste
    from llmos.checkpoint.recommender import read_recommender

    rec = Recommender(read_recommender(args.model))
    inter = read_inter(movielens_files()[1])
    rng = random.Random(args.seed)
    users = rng.sample(range(inter.num_users), min(args.users, inter.num_users))
    rated: dict[int, set[str]] = {}
    for u, i in zip(inter.user.tolist(), inter.item.tolist(), strict=True):
        rated.setdefault(u, set()).add(inter.items[i])
    encoder = llmos.load(args.encoder) if Path(args.encoder).is_dir() else None
    scores: dict[str, list[tuple[float, ...]]] = {"popularity": [], "interest": [], "wish": []}
    for u in users:
        genres: dict[str, int] = {}
        for x in rated[u]:
            for t in rec.items[rec.index[x]].tags:
                genres[t] = genres.get(t, 0) + 1
        top = max(sorted(genres), key=lambda g: genres[g])
        lists = {
            "popularity": rec.recommend(Taste(), 10),
            "interest": rec.recommend(Taste(), 10, interests=[top]),
        }
        if encoder is not None and top in ZH_GENRES:
            vec = torch.from_numpy(encoder.embed([f"想看{ZH_GENRES[top]}片"], kind="query")[0])
            lists["wish"] = rec.recommend(Taste(), 10, wish=vec)
        for name, got in lists.items():
            hits = sum(r.item.id in rated[u] for r in got)
            asked = sum(top in r.item.tags for r in got) / max(len(got), 1)
            scores[name].append((float(hits > 0), hits / 10, asked))
    print(f"\n## Onboarding: {len(users)} new users name their most-rated genre\n")
    print("| list | hit@10 | precision@10 | share of the list in the named genre |")
    print("|---|---:|---:|---:|")
    for name, rows in scores.items():
        if rows:
            hit, precision, asked = np.mean(rows, axis=0)
            print(f"| {name} | {hit:.4f} | {precision:.4f} | {asked:.3f} |")


def recbole_split() -> tuple[list, dict[str, int], Any, Any, Any, Any]:
    """ML-100K's items, their index, RecBole's 8:1:1 split as 0/1 user x item matrices
    (train, valid, test) in the catalog's order, and the train part itself."""
    import scipy.sparse as sp

    from llmos.data.interactions import split_by_ratio

    items_file, inter_file = movielens_files()
    items, inter = read_catalog(items_file), read_inter(inter_file)
    index = {item.id: i for i, item in enumerate(items)}
    # The same split as bench/recommend_eval.py's: it depends on users, not item numbering.
    parts = split_by_ratio(in_catalog_order(items, inter))

    def matrix(part: Any) -> sp.csr_matrix:
        m = sp.csr_matrix(
            (np.ones(len(part), np.float32), (part.user, part.item)),
            shape=(inter.num_users, len(items)),
        )
        m.data[:] = 1
        return m

    x_tr, x_va, x_te = (matrix(p) for p in parts)
    return items, index, x_tr, x_va, x_te, parts[0]


def diversity_tradeoff(args: argparse.Namespace) -> None:
    """The app's lists on RecBole's split (8:1:1; EASE reg 400 fitted on train, each user's
    train items as their likes, valid items excluded) at several ``diversity`` values:
    recall/NDCG@10 on test against intra-list genre diversity and coverage."""
    from llmos.train.ranking import beyond_accuracy

    items, index, x_tr, x_va, x_te, _ = recbole_split()
    num_users = x_tr.shape[0]
    weights = {
        "ease.weight": EASE.fit(x_tr, reg=400.0).weight,
        "popularity.counts": torch.from_numpy(np.asarray(x_tr.sum(0)).ravel()).float(),
    }
    rec = Recommender(RecommenderCheckpoint(Path("."), tuple(items), weights, {}))
    users = np.flatnonzero(np.diff(x_te.indptr))
    discount = 1 / np.log2(np.arange(2, 12))
    tags = [frozenset(i.tags) for i in items]
    counts = np.asarray(x_tr.sum(0)).ravel()
    print("\n## Diversity (MMR over genres) on RecBole's split, EASE reg 400\n")
    print("| diversity | recall@10 | NDCG@10 | genre diversity | coverage | ms per list |")
    print("|---:|---:|---:|---:|---:|---:|")
    for diversity in args.diversities:
        recall, ndcg, tops, seconds = [], [], [], 0.0
        for u in users:
            taste = fold(Act("like", items[i].id) for i in x_tr[u].indices)
            valid_ids = [items[i].id for i in x_va[u].indices]
            start = time.perf_counter()
            top = rec.recommend(taste, 10, exclude=valid_ids, diversity=diversity)
            seconds += time.perf_counter() - start
            got = [index[r.item.id] for r in top]
            truth = set(x_te[u].indices)
            hits = np.array([i in truth for i in got], float)
            recall.append(hits.sum() / len(truth))
            ideal = discount[: min(len(truth), 10)].sum()
            ndcg.append((hits * discount[: len(hits)]).sum() / ideal)
            tops.append(got)
        extra = beyond_accuracy(np.array(tops), counts, num_users, tags)
        print(
            f"| {diversity:.1f} | {np.mean(recall):.4f} | {np.mean(ndcg):.4f} | "
            f"{extra['diversity']:.3f} | {extra['coverage']:.3f} | "
            f"{1000 * seconds / len(users):.2f} |"
        )


def wish_with_history(args: argparse.Namespace) -> None:
    """A request's wish from a user with history, at several wish weights, on RecBole's split
    (EASE reg 400 on train, the app's text vectors from --model): each user asks for the genre
    most of their held-out films carry ("想看<genre>片", embedded by --encoder). Reported: the
    recall@10 of the held-out films of that genre (what they asked for and went on to rate),
    the recall@10 of all their held-out films, and the share of the list in the genre. Valid
    (train as likes, test excluded) chooses the weight; test (valid excluded) measures."""
    import llmos.apps.recommend.engine as engine
    from llmos.checkpoint.recommender import read_recommender

    items, index, x_tr, x_va, x_te, train = recbole_split()
    app = read_recommender(args.model)
    if [i.id for i in app.items] != [i.id for i in items] or "content.vectors" not in app.weights:
        raise SystemExit(f"{args.model}: not the MovieLens catalog with text vectors")
    weights = {
        "ease.weight": EASE.fit(x_tr, reg=400.0).weight,
        "popularity.counts": torch.from_numpy(np.asarray(x_tr.sum(0)).ravel()).float(),
        "content.vectors": app.weights["content.vectors"],
    }
    sasrec = None
    if args.sasrec_steps:  # the make-run model's second signal, trained on the same train part
        from llmos.apps.recommend.generators import fit_sequential

        started = time.perf_counter()
        seq, sasrec, valid_metrics = fit_sequential(train, args.sasrec_steps)
        weights |= seq
        took = time.perf_counter() - started
        print(f"SASRec: {args.sasrec_steps} steps in {took:.0f} s, valid {valid_metrics}")
    rec = Recommender(RecommenderCheckpoint(Path("."), tuple(items), weights, {}, sasrec))
    # each user's train films in the order they rated them (the sequence signal reads it)
    by_time: dict[int, list[int]] = {}
    for row in np.lexsort((train.timestamp, train.user)):
        by_time.setdefault(int(train.user[row]), []).append(int(train.item[row]))
    encoder = llmos.load(args.encoder)
    asks = {
        g: torch.from_numpy(encoder.embed([f"想看{zh}片"], kind="query")[0])
        for g, zh in ZH_GENRES.items()
    }
    app_weight = engine.WISH_WEIGHT_WITH_HISTORY
    rows: dict[str, dict[float, tuple[float, ...]]] = {}
    try:
        for split, (held, other) in {"valid": (x_va, x_te), "test": (x_te, x_va)}.items():
            rows[split] = {}
            for w in args.wish_weights:
                engine.WISH_WEIGHT_WITH_HISTORY = w
                got_rows = []
                for u in np.flatnonzero(np.diff(held.indptr)):
                    truth = set(held[u].indices)
                    genres = Counter(t for i in truth for t in items[i].tags)
                    genre = max(sorted(genres), key=lambda g: genres[g])
                    taste = fold(Act("like", items[i].id) for i in by_time.get(u, []))
                    skip = [items[i].id for i in other[u].indices]
                    top = rec.recommend(taste, 10, exclude=skip, wish=asks[genre] if w else None)
                    got = {index[r.item.id] for r in top}
                    asked = {i for i in truth if genre in items[i].tags}
                    share = np.mean([genre in items[i].tags for i in got]) if got else 0.0
                    got_rows.append(
                        (len(asked & got) / len(asked), len(truth & got) / len(truth), share)
                    )
                rows[split][w] = tuple(np.mean(got_rows, axis=0))
    finally:
        engine.WISH_WEIGHT_WITH_HISTORY = app_weight
    best = max(args.wish_weights, key=lambda w: rows["valid"][w][0])
    what = f"EASE reg 400 + SASRec {args.sasrec_steps} steps" if sasrec else "EASE reg 400"
    print(f"\n## A wish beside a history (RecBole's split, {what})\n")
    print(f"chosen on valid: {best:g}; the app's WISH_WEIGHT_WITH_HISTORY: {app_weight:g}\n")
    print(
        "| wish weight | valid: recall@10 of the genre asked | all | share | "
        "test: recall@10 of the genre asked | all | share in the genre |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for w in args.wish_weights:
        v, t = rows["valid"][w], rows["test"][w]
        print(
            f"| {w:g} | {v[0]:.4f} | {v[1]:.4f} | {v[2]:.3f} | {t[0]:.4f} | {t[1]:.4f} | "
            f"{t[2]:.3f} |"
        )


@contextlib.contextmanager
def server(work: Path, models: Path) -> Iterator[LiveServer]:
    env = dict(os.environ, LLMOS_DATABASE_URL=f"sqlite:///{work / 'store.db'}")
    port = free_port()
    cmd = [sys.executable, "-m", "llmos", "serve", "--models", str(models), "--port", str(port)]
    cmd += ["--rate-limit", "0", "--apps-dir", str(work / "apps")]
    log_path = work / "serve.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    srv = LiveServer("recommend", proc, port, "", log_path)
    try:
        _wait_ready(srv, timeout=120)
        yield srv
    finally:
        stop(proc)


def serving(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="rec-bench-") as tmp:
        work = Path(tmp)
        models = work / "models"
        models.mkdir()
        (models / "movielens").symlink_to(Path(args.model).resolve())
        if Path(args.encoder).is_dir():
            (models / "e5-zh").symlink_to(Path(args.encoder).resolve())
        store = Store(f"sqlite:///{work / 'store.db'}")
        keys = [store.create_user(f"u{i}")[1] for i in range(args.http_users)]
        store.close()
        ids = [
            json.loads(line)["id"]
            for line in (Path(args.model) / "items.jsonl").read_text().splitlines()
        ]
        rng = random.Random(args.seed)
        with server(work, models) as srv:
            for key in keys:
                events = [{"kind": "like", "item": i} for i in rng.sample(ids, 20)]
                status, raw = http(f"{srv.url}/v1/apps/recommend/events", {"events": events}, key)
                assert status == 201, raw
            script = work / "get.lua"
            script.write_text(GET_SCRIPT)
            print(f"\n## Serving: {args.http_users} users, {args.seconds} s per row\n")
            print("| route | clients | req/s | p50 ms | p95 ms | p99 ms | errors |")
            print("|---|---:|---:|---:|---:|---:|---:|")
            routes = {
                "GET /v1/me (the server's floor)": lambda k, i: "/v1/me",
                "GET /v1/apps/recommend?k=10": lambda k, i: "/v1/apps/recommend?k=10",
                "GET /v1/apps/recommend/similar/{item}": lambda k, i: (
                    f"/v1/apps/recommend/similar/{ids[i % len(ids)]}?k=10"
                ),
            }
            for route, path in routes.items():
                lines = work / "paths.txt"
                lines.write_text("".join(f"{k} {path(k, i)}\n" for i, k in enumerate(keys)))
                for clients in args.clients:
                    r = run_wrk(srv, clients, args.seconds, script, lines)
                    secs = r["duration_us"] / 1e6
                    errors = r["non2xx"] + r["socket_errors"] + r["timeouts"]
                    print(
                        f"| {route} | {clients} | {(r['requests'] - r['non2xx']) / secs:.0f} | "
                        f"{r['p50_us'] / 1000:.1f} | {r['p95_us'] / 1000:.1f} | "
                        f"{r['p99_us'] / 1000:.1f} | {errors} |"
                    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="runs/movielens/checkpoint")
    ap.add_argument("--encoder", default="runs/e5-zh")
    ap.add_argument("--users", type=int, default=300, help="users of the adaptation measure")
    ap.add_argument("--http-users", type=int, default=32)
    ap.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16])
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (adaptation)")
    ap.add_argument("--skip-serving", action="store_true")
    ap.add_argument(
        "--sasrec-steps",
        type=int,
        default=0,
        help="also train SASRec for adaptation and the wish (1200, as make run)",
    )
    ap.add_argument(
        "--diversities",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[0.0, 0.2, 0.4, 0.6],
    )
    ap.add_argument(
        "--wish-weights",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 1.0],
        help="a wish's weight beside a history (0: no wish)",
    )
    ap.add_argument(
        "--only",
        choices=["adaptation", "onboarding", "diversity", "wish"],
        help="run that measure alone (no serving)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"# llmos {llmos.__version__}, torch {torch.__version__}, {cpu_name()}, "
        f"{os.cpu_count()} cores"
    )
    parts = {
        "adaptation": adaptation,
        "onboarding": onboarding,
        "diversity": diversity_tradeoff,
        "wish": wish_with_history,
    }
    for name, part in parts.items():
        if args.only in (None, name):
            part(args)
    if not args.skip_serving and args.only is None:
        serving(args)


if __name__ == "__main__":
    main()
