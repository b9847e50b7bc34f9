"""``llmos recommend ...``: the recommendation app from the command line.

``train`` fits a catalog's recommender (EASE + popularity + the items' text vectors) and
writes it as a checkpoint the server lists (with the interactions file's rows in it);
``retrain`` fits such a checkpoint again from those rows and, with ``--from-store``, the
store's events of now; ``evaluate`` measures it on RecBole's protocol;
``recommend``, ``event``, ``onboard``, ``similar`` and ``search`` act for one store user
(``--user NAME``) as the server's routes do. The defaults are the packaged MovieLens-100K
(``llmos data prepare``) and ``runs/movielens/checkpoint``, which ``llmos setup`` builds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from llmos.cli.flags import Subcommands
from llmos.errors import LlmosError

DEFAULT_MODEL = "runs/movielens/checkpoint"
DEFAULT_ENCODER = "runs/e5-zh"


def _movielens(ext: str) -> Path:
    from llmos.paths import data_dir

    return data_dir() / "tasks" / "movielens" / f"ml-100k.{ext}"


def add_recommend(sub: Subcommands) -> None:
    """``llmos recommend ACTION``."""
    rp = sub.add_parser(
        "recommend", help="the recommendation app: train, evaluate, recommend for a user"
    ).add_subparsers(dest="action", required=True)

    p = rp.add_parser("train", help="fit a catalog's recommender and save it as a checkpoint")
    p.add_argument("--items", type=Path, help="catalog: JSONL or a RecBole .item file")
    p.add_argument("--inter", type=Path, help="interactions: a RecBole .inter file")
    p.add_argument("--from-store", action="store_true", help="also learn from the store's events")
    p.add_argument("--catalog", default="movielens", help="the catalog's name (events carry it)")
    p.add_argument("--out", type=Path, default=Path(DEFAULT_MODEL))
    p.add_argument("--reg", type=float, default=400.0, help="EASE's L2 weight (default 400)")
    p.add_argument(
        "--half-life-days",
        type=float,
        help="time-decayed popularity: an interaction's weight halves every this many days "
        "(default: 14 for MovieLens, measured by bench/recommend_popularity.py; no decay for "
        "--items)",
    )
    p.add_argument("--encoder", default=DEFAULT_ENCODER, help="embeds the items' text")
    p.add_argument("--no-encoder", action="store_true", help="no text vectors (no wishes)")
    p.add_argument(
        "--sasrec-steps",
        type=int,
        default=0,
        help="also train the sequential model (SASRec) for this many steps (1200: ~9 min)",
    )
    p.add_argument(
        "--mf-steps",
        type=int,
        default=0,
        help="also train a BPR-MF for this many steps (with --ranker, which it serves "
        "through): users are folded in from their events and its FAISS index adds "
        "candidates for the ranker (3000: under a minute)",
    )
    p.add_argument(
        "--mf-model",
        choices=("bpr", "lightgcn"),
        default="bpr",
        help="the collaborative model --mf-steps trains: BPR matrix factorisation (default) or "
        "LightGCN (2 graph layers; its propagated item vectors; ~5x BPR's time per step)",
    )
    p.add_argument(
        "--ranker",
        action="store_true",
        help="also train the learned ranker on each user's held-out next items (seconds)",
    )
    p.set_defaults(func=_train)

    p = rp.add_parser(
        "retrain",
        help="fit a recommender checkpoint again from the interactions it keeps (no file needed)",
    )
    p.add_argument("model", type=Path, nargs="?", default=Path(DEFAULT_MODEL))
    p.add_argument("--from-store", action="store_true", help="also learn from the store's events")
    p.add_argument("--items", type=Path, help="a new catalog (items it lacks lose their rows)")
    p.add_argument("--out", type=Path, help="where to write it (default: over the checkpoint)")
    p.add_argument("--reg", type=float, help="EASE's L2 weight (default: the checkpoint's)")
    p.add_argument("--half-life-days", type=float, help="default: the checkpoint's")
    p.add_argument(
        "--encoder", help="embeds the texts the checkpoint has no vector for (default: none)"
    )
    p.add_argument(
        "--sasrec-steps",
        type=int,
        help="also train the sequential model (SASRec) on the kept interactions for this many "
        "steps (1200: 6-9 min on 2 cores; a server trains it as a background job: POST "
        "/v1/apps/recommend/train with sasrec_steps)",
    )
    p.set_defaults(func=_retrain)

    p = rp.add_parser("evaluate", help="popularity and EASE on RecBole's protocol (8:1:1)")
    p.add_argument("--inter", type=Path, help="interactions (default: MovieLens-100K)")
    p.add_argument("--reg", type=float, nargs="+", default=[250.0, 400.0])
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--json", type=Path, help="also write the metrics here")
    p.set_defaults(func=_evaluate)

    def user_action(name: str, help: str) -> argparse.ArgumentParser:
        p = rp.add_parser(name, help=help)
        p.add_argument("--user", required=True, help="a store user (llmos users create NAME)")
        p.add_argument("--model", type=Path, default=Path(DEFAULT_MODEL))
        p.add_argument("--encoder", default=DEFAULT_ENCODER, help="embeds wishes")
        p.set_defaults(func=_user)
        return p

    p = user_action("recommend", "the user's next items, each with its reason")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--wish", help="free text, e.g. 想看轻松的喜剧 (this request only)")
    p.add_argument("--tags", nargs="*", default=[], help="only items with one of these tags")
    p.add_argument("--exclude", nargs="*", default=[], help="item ids to leave out")
    p.add_argument("--diversity", type=float, default=0.0, help="0-1, MMR over tags")
    p = user_action("event", "record one event: view, click, rate, like, dislike or hide")
    p.add_argument("kind")
    p.add_argument("item")
    p.add_argument("value", nargs="?", type=float, help="the rating of a rate event")
    p = user_action("onboard", "save the user's interests, wish and blocked tags")
    p.add_argument("--interests", nargs="*", default=[])
    p.add_argument("--wish", default="")
    p.add_argument("--blocked-tags", nargs="*", default=[])
    user_action("profile", "what the user's events show")
    for name, help in (("similar", "items like ITEM"), ("search", "catalog items matching")):
        p = rp.add_parser(name, help=help)
        p.add_argument("query")
        p.add_argument("--k", type=int, default=10)
        p.add_argument("--model", type=Path, default=Path(DEFAULT_MODEL))
        p.set_defaults(func=_catalog)


def _store_events(catalog: str) -> Any:
    from llmos.apps.recommend.train import store_acts
    from llmos.store.db import Store

    store = Store()
    try:
        return store_acts(store, catalog)
    finally:
        store.close()


def _train(args: argparse.Namespace) -> int:
    from llmos.apps.recommend.train import read_catalog, train_recommender
    from llmos.data.interactions import read_inter

    items_file = args.items or _movielens("item")
    inter_file = args.inter or (None if args.items else _movielens("inter"))
    items = read_catalog(items_file)
    inter = read_inter(inter_file) if inter_file else None
    store_events = _store_events(args.catalog) if args.from_store else None
    half_life = args.half_life_days
    if half_life is None and args.items is None:  # MovieLens: the demo's measured half-life
        from llmos.apps.recommend.demo import HALF_LIFE_DAYS

        half_life = HALF_LIFE_DAYS
    embed: Any = None
    digest = None
    if not args.no_encoder:
        if not (Path(args.encoder) / "config.json").is_file():
            raise LlmosError(
                f"{args.encoder}: no encoder checkpoint (build runs/e5-zh with `llmos setup`, "
                "pass --encoder, or --no-encoder)"
            )
        from llmos.apps.support.local import PipelineEmbedder

        embed = PipelineEmbedder(args.encoder)
        digest = embed.name
    out = train_recommender(
        items,
        args.out,
        inter=inter,
        store_events=store_events,
        catalog=args.catalog,
        reg=args.reg,
        half_life_days=half_life,
        embed=embed,
        encoder=None if args.no_encoder else Path(args.encoder).name,
        encoder_digest=digest,
        sasrec_steps=args.sasrec_steps,
        mf_steps=args.mf_steps,
        mf_model=args.mf_model,
        ranker=args.ranker,
    )
    if args.ranker:
        from llmos.checkpoint.recommender import read_task

        report = read_task(out)["ranker"]
        test = report["test"]
        print(
            f"ranker: {report['lists']} lists; next item on test, hit@10 / NDCG@10: "
            f"sum {test['sum']['hit@10']} / {test['sum']['ndcg@10']}, "
            f"ranker {test['ranker']['hit@10']} / {test['ranker']['ndcg@10']}"
        )
    print(f"saved the {args.catalog!r} recommender ({len(items)} items) to {out}")
    return 0


def _retrain(args: argparse.Namespace) -> int:
    from llmos.apps.recommend.sequential import check_steps
    from llmos.apps.recommend.train import read_catalog, retrain_recommender
    from llmos.checkpoint.recommender import read_recommender

    if args.sasrec_steps is not None:
        check_steps(args.sasrec_steps, "--sasrec-steps")
    ckpt = read_recommender(args.model)
    embed: Any = None
    if args.encoder:
        if not (Path(args.encoder) / "config.json").is_file():
            raise LlmosError(f"{args.encoder}: no encoder checkpoint")
        from llmos.apps.support.local import PipelineEmbedder

        embed = PipelineEmbedder(args.encoder)
    out = retrain_recommender(
        ckpt,
        args.out or args.model,
        items=read_catalog(args.items) if args.items else None,
        store_events=_store_events(ckpt.catalog) if args.from_store else None,
        reg=args.reg,
        half_life_days=args.half_life_days,
        embed=embed,
        encoder=Path(args.encoder).name if args.encoder else None,
        encoder_digest=embed.name if embed is not None else None,
        sasrec_steps=args.sasrec_steps or 0,
    )
    trained = read_recommender(out).meta["trained_on"]
    print(
        f"retrained the {ckpt.catalog!r} recommender ({trained['items']} items, "
        f"{trained['interactions']} interactions of {trained['users']} users) to {out}"
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from llmos.apps.recommend.train import evaluate
    from llmos.data.interactions import read_inter

    results = evaluate(read_inter(args.inter or _movielens("inter")), args.reg, args.k)
    cols = [c for c in next(iter(results.values())) if c != "users"]
    print(f"{'model':<16}" + "".join(f"{c:>14}" for c in cols))
    for name, m in results.items():
        print(f"{name:<16}" + "".join(f"{m[c]:>14.4f}" for c in cols))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


def _service(store: Any, model: Path, encoder: str | None) -> Any:
    from llmos.apps.recommend.service import RecommendService

    embed = None
    if encoder and (Path(encoder) / "config.json").is_file():
        from llmos.apps.support.local import PipelineEmbedder

        embed = PipelineEmbedder(encoder)
    digest = (lambda: embed.name) if embed is not None else None
    return RecommendService(store, lambda: model, embed, digest)


def _show(recs: list[Any]) -> None:
    for rank, r in enumerate(recs, 1):
        tags = ", ".join(r.item.tags)
        print(f"{rank:>2}. [{r.item.id}] {r.item.title} ({tags})  {r.score:.3f}  {r.reason}")


def _user(args: argparse.Namespace) -> int:
    from llmos.apps.recommend.service import Preferences
    from llmos.store.db import Store

    if not (args.model / "config.json").is_file():
        raise LlmosError(f"{args.model}: no recommender (build it with `llmos recommend train`)")
    store = Store()
    try:
        user = store.user(args.user)
        if user is None:
            raise LlmosError(f"no user named {args.user!r} (see `llmos users list`)")
        wants_encoder = args.action in ("recommend", "onboard") and (
            getattr(args, "wish", None) or args.action == "recommend"
        )
        svc = _service(store, args.model, args.encoder if wants_encoder else None)
        if args.action == "recommend":
            only = tuple(args.exclude), tuple(args.tags)
            _show(svc.recommend(user.id, args.k, *only, args.diversity, args.wish))
        elif args.action == "event":
            svc.add_events(user.id, [(args.kind, args.item, args.value)])
            print(f"recorded {args.kind} {args.item} for {args.user}")
        elif args.action == "onboard":
            prefs = Preferences(tuple(args.interests), args.wish, tuple(args.blocked_tags))
            print(json.dumps(svc.set_preferences(user.id, prefs).as_json(), ensure_ascii=False))
        else:
            view = svc.profile(user.id)
            for key in ("recent", "disliked", "hidden"):
                view[key] = [f"[{i.id}] {i.title}" for i in view[key]]
            print(json.dumps(view, ensure_ascii=False, indent=2))
    finally:
        store.close()
    return 0


def _catalog(args: argparse.Namespace) -> int:
    from llmos.apps.recommend.engine import Recommender
    from llmos.checkpoint.recommender import read_recommender

    model = Recommender(read_recommender(args.model))
    if args.action == "similar":
        if args.query not in model.index:
            raise LlmosError(f"the catalog {model.catalog!r} has no item {args.query!r}")
        _show(model.similar(args.query, args.k))
    else:
        for item in model.search(args.query, args.k):
            print(f"[{item.id}] {item.title} ({', '.join(item.tags)})")
    return 0
