"""The recommendation app's learned ranker against the signals' plain sum, on MovieLens-100K's
next items (leave-one-out).

    python bench/recommend_ranker.py --threads 2                   # SASRec and MF: ~8 min
    python bench/recommend_ranker.py --threads 2 --sasrec-steps 0  # no SASRec: ~2 min

What it runs is ``llmos recommend train --ranker`` 's own step
(``llmos.apps.recommend.ranking.fit_app_ranker``): each user's interactions in time order, the
last held out for test and the one before for valid (RecBole's leave-one-out); EASE (reg 400)
and the 14-day popularity fitted on the rest, with the films' E5 text vectors (``--encoder``),
with ``--sasrec-steps`` a SASRec (``fit_sequential``) and with ``--mf-steps`` a BPR-MF (or,
``--mf-model lightgcn``, a LightGCN) whose users are folded in (``fit_mf``), both trained on
the same cut. The ranker learns from each user's valid item among their candidates (the sum's
best 200, plus MF's best 100 others from its FAISS index), and both rankings are measured on
the test items through ``Recommender.recommend`` itself (the user's train and valid films as
likes, in time order, and masked). Rows: a linear ranker and one with a hidden layer of 8, for
each set of generators."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from llmos.apps.recommend.demo import HALF_LIFE_DAYS, movielens_files
from llmos.apps.recommend.generators import fit_mf, fit_sequential
from llmos.apps.recommend.ranking import fit_app_ranker
from llmos.apps.recommend.train import in_catalog_order, item_text, read_catalog
from llmos.data.interactions import read_inter

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--sasrec-steps", type=int, default=1200)
    ap.add_argument("--mf-steps", type=int, default=3000, help="MF model steps (0: none)")
    ap.add_argument(
        "--mf-model", default="bpr", choices=("bpr", "lightgcn"), help="what --mf-steps trains"
    )
    ap.add_argument("--encoder", default="runs/e5-zh", help="'none': no text vectors")
    ap.add_argument("--reg", type=float, default=400.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    items_file, inter_file = movielens_files()
    items = read_catalog(items_file)
    ordered = in_catalog_order(items, read_inter(inter_file))
    print(f"# {machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}\n")
    content = None
    if args.encoder != "none":
        from llmos.apps.support.local import PipelineEmbedder

        t = time.perf_counter()
        embed = PipelineEmbedder(args.encoder)
        content = torch.as_tensor(embed([item_text(i) for i in items], "passage")).float()
        print(f"embedded {len(items)} films with {args.encoder} in {time.perf_counter() - t:.1f} s")
    sequential = None
    if args.sasrec_steps > 0:
        t = time.perf_counter()
        weights, config, valid = fit_sequential(ordered, args.sasrec_steps)
        sequential = (weights, config)
        print(
            f"SASRec: {args.sasrec_steps} steps in {time.perf_counter() - t:.0f} s, "
            f"valid hit@10 {valid.get('hit@10', float('nan')):.4f}"
        )
    mf = None
    if args.mf_steps > 0:
        t = time.perf_counter()
        vectors, report = fit_mf(ordered, args.mf_steps, model=args.mf_model)
        mf = (vectors, report)
        print(
            f"{args.mf_model}: {args.mf_steps} steps and the fold-in in "
            f"{time.perf_counter() - t:.0f} s; "
            f"valid NDCG@10 trained users {report['valid_trained'].get('ndcg@10', 0):.4f}, "
            f"folded in at reg {report['fold_in_reg']:g} {report['valid_folded']['ndcg@10']:.4f}"
        )
    print(
        "\n| generators | ranker | lists | hit@10 sum | hit@10 ranker | NDCG@10 sum "
        "| NDCG@10 ranker | NDCG gain (SE) | fit s | weights |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
    )
    mf_name = {"bpr": "MF", "lightgcn": "LightGCN"}[args.mf_model]
    setups = [("EASE", None, None)]
    if mf is not None:
        setups.append((f"EASE + {mf_name}", None, mf))
    if sequential is not None:
        setups.append(("EASE + SASRec", sequential, None))
    if sequential is not None and mf is not None:
        setups.append((f"EASE + SASRec + {mf_name}", sequential, mf))
    for name, seq, factors in setups:
        for hidden in (0, 8):
            t = time.perf_counter()
            _, _, r = fit_app_ranker(
                items,
                ordered,
                reg=args.reg,
                half_life_days=HALF_LIFE_DAYS,
                content=content,
                sasrec=seq,
                mf=factors,
                hidden=hidden,
            )
            took = time.perf_counter() - t
            s, k = r["test"]["sum"], r["test"]["ranker"]
            w = r["weights"]
            weights_text = ", ".join(f"{f} {v:g}" for f, v in w.items()) if w else "-"
            print(
                f"| {name} + pop + text + tags | {f'hidden {hidden}' if hidden else 'linear'} "
                f"| {r['lists']} "
                f"| {s['hit@10']:.4f} | {k['hit@10']:.4f} | {s['ndcg@10']:.4f} "
                f"| {k['ndcg@10']:.4f} | {r['ndcg_gain']:+.4f} ({r['ndcg_gain_se']:.4f}) "
                f"| {took:.1f} | {weights_text} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
