"""Next-item recommendation on ML-100K, leave-one-out: SASRec on llmos's GPT against BPR-MF,
EASE and popularity.

    python bench/recommend_sequential.py --threads 1          # about 11 minutes on 1 core
    python bench/recommend_sequential.py --threads 1 --sasrec-steps 300 --dropout 0.2

The protocol (RecBole's for sequential models, ``eval_args``: ``order: TO``, ``split: {LS:
valid_and_test}``): each user's interactions in time order (ties in file order), the last one
held out for test, the one before for validation, the rest to train
(``llmos.data.interactions.split_leave_one_out``). Full ranking over all items; hit, NDCG and
MRR at 10 averaged over the 943 test users (one held-out item each, so hit@10 = recall@10).

Every model is trained on the train split and chooses its hyper-parameters or its checkpoint
on valid; on test its input is the user's train + valid history, and that history is removed
from the ranking, the same for every model (the general models' protocol of RecBole).
RecBole masks nothing for sequential models (``FullSortEvalDataLoader`` passes no history
index for them); SASRec is also reported that way, as a second row.

- ``popularity``: interaction counts on train;
- ``EASE``: the closed form at the ``reg`` of a small grid best on valid NDCG@10, its input
  the user's row of train (RecBole's EASE reads its training matrix) and, a second row, of
  train + valid (the row of the whole history, no refit);
- ``BPR-MF``: ``llmos.train.tasks.bpr.train_bpr`` at RecBole's defaults (dim 64, batch 2048,
  Adam 1e-3), the checkpoint best on valid NDCG@10 every ``--bpr-eval`` steps;
- ``SASRec``: ``llmos.train.tasks.sasrec.train_sasrec`` at RecBole's SASRec defaults (2
  layers of 64, 2 heads, inner 256, dropout 0.5, max_len 50, Adam 1e-3, full-softmax CE), a
  batch of ``--sasrec-batch`` windows, the checkpoint best on valid NDCG@10 (history masked)
  every ``--sasrec-eval`` steps.

Train seconds include the validations; "s/epoch" for the trained models is the training
alone (the measured time of one validation taken off once per validation).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import scipy.sparse as sp
import torch

from llmos.data.interactions import read_inter, split_leave_one_out
from llmos.models.itemitem import EASE, Popularity
from llmos.paths import data_dir
from llmos.train.ranking import full_ranking
from llmos.train.tasks.bpr import train_bpr
from llmos.train.tasks.sasrec import SequenceTask, sequence_scorer, train_sasrec

sys.path.insert(0, str(Path(__file__).parent))
from recommend_eval import cpu_name, index_scorer, scorer

COLS = ("hit@10", "ndcg@10", "mrr@10")


def evaluations(run_dir: Path) -> int:
    """How many validations a run wrote to its metrics.jsonl."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return sum('"split": "valid"' in ln for ln in lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--sasrec-steps", type=int, default=1200, help="SASRec steps (~63 epochs)")
    ap.add_argument("--sasrec-batch", type=int, default=128, help="SASRec windows per step")
    ap.add_argument("--sasrec-eval", type=int, default=60, help="SASRec validation interval")
    ap.add_argument("--dropout", type=float, default=0.5, help="SASRec dropout (both kinds)")
    ap.add_argument("--bpr-steps", type=int, default=12000, help="BPR steps (250 epochs of 2048)")
    ap.add_argument("--bpr-eval", type=int, default=400, help="BPR validation interval")
    ap.add_argument("--seed", type=int, default=2020)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    inter = read_inter(data_dir() / "tasks" / "movielens" / "ml-100k.inter")
    train, valid, test = split_leave_one_out(inter)
    print(
        f"# {cpu_name()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}\n\n"
        f"ML-100K: {inter.num_users} users, {inter.num_items} items, {len(inter)} interactions;"
        f" leave-one-out by time: train {len(train)}, valid {len(valid)}, test {len(test)}\n",
        flush=True,
    )
    x_tr, x_va, x_te = train.matrix(), valid.matrix(), test.matrix()
    history = x_tr + x_va
    nothing = sp.csr_matrix(x_te.shape)
    # name -> (test metrics, train seconds, s/epoch, note)
    rows: dict[str, tuple[dict[str, float], float, float | None, str]] = {}

    t = time.perf_counter()
    pop = Popularity.fit(x_tr)
    secs = time.perf_counter() - t
    rows["popularity"] = (full_ranking(scorer(pop, x_tr), history, x_te), secs, None, "")

    grid = (50.0, 100.0, 200.0, 250.0, 400.0, 600.0, 1000.0)
    t = time.perf_counter()
    by_reg = {r: EASE.fit(x_tr, reg=r) for r in grid}
    on_valid = {r: full_ranking(scorer(m, x_tr), x_tr, x_va)["ndcg@10"] for r, m in by_reg.items()}
    reg = max(on_valid, key=on_valid.get)
    secs = time.perf_counter() - t
    note = f"reg {reg:g}, best on valid of {', '.join(f'{r:g}' for r in grid)}"
    ease = by_reg[reg]
    rows["EASE, input train"] = (
        full_ranking(scorer(ease, x_tr), history, x_te),
        secs,
        None,
        note,
    )
    rows["EASE, input train + valid"] = (
        full_ranking(scorer(ease, history), history, x_te),
        secs,
        None,
        "same fit, the history row as input",
    )
    print(f"EASE valid NDCG@10 by reg: { ({f'{r:g}': round(v, 4) for r, v in on_valid.items()}) }")

    with tempfile.TemporaryDirectory(prefix="llmos-seq-") as tmp:
        run = Path(tmp) / "bpr"
        t = time.perf_counter()
        bpr, result = train_bpr(
            train,
            valid,
            run,
            steps=args.bpr_steps,
            eval_every=args.bpr_eval,
            seed=args.seed,
            num_threads=args.threads,
        )
        secs = time.perf_counter() - t
        t = time.perf_counter()
        full_ranking(index_scorer(bpr), x_tr, x_va)
        per_eval = time.perf_counter() - t
        epochs = args.bpr_steps / math.ceil(x_tr.nnz / 2048)  # BPRTask's epoch: every pair
        per_epoch = (secs - evaluations(run) * per_eval) / epochs
        best = result.best["step"] if result.best else args.bpr_steps
        note = f"{args.bpr_steps} steps of 2048 ({epochs:.0f} epochs), best at step {best}"
        rows["BPR-MF"] = (full_ranking(index_scorer(bpr), history, x_te), secs, per_epoch, note)
        print(f"BPR-MF: {secs:.0f} s, valid {result.best}", flush=True)

        run = Path(tmp) / "sasrec"
        t = time.perf_counter()
        sasrec, result = train_sasrec(
            train,
            valid,
            run,
            steps=args.sasrec_steps,
            batch_size=args.sasrec_batch,
            eval_every=args.sasrec_eval,
            dropout=args.dropout,
            attention_dropout=args.dropout,
            mask_history=True,
            seed=args.seed,
            num_threads=args.threads,
        )
        secs = time.perf_counter() - t
        task = SequenceTask(train, valid, args.sasrec_batch, args.seed, sasrec.config.max_len)
        t = time.perf_counter()
        full_ranking(sequence_scorer(sasrec, train), x_tr, x_va)
        per_eval = time.perf_counter() - t
        epochs = args.sasrec_steps / task.batches_per_epoch
        per_epoch = (secs - evaluations(run) * per_eval) / epochs
        best = result.best["step"] if result.best else args.sasrec_steps
        note = (
            f"{args.sasrec_steps} steps of {args.sasrec_batch} windows ({epochs:.0f} epochs), "
            f"best at step {best}"
        )
        print(f"SASRec: {secs:.0f} s, valid {result.best}", flush=True)
    score = sequence_scorer(sasrec, train, valid)
    rows["SASRec"] = (full_ranking(score, history, x_te), secs, per_epoch, note)
    rows["SASRec, nothing masked"] = (
        full_ranking(score, nothing, x_te),
        secs,
        per_epoch,
        "same model; RecBole's sequential protocol",
    )

    print("\n## Test split, full ranking, history (train + valid) masked\n")
    print("| model | " + " | ".join(COLS) + " | train s | s/epoch | note |")
    print("|---|" + "---:|" * (len(COLS) + 2) + "---|")
    for name, (m, secs, per_epoch, note) in rows.items():
        cells = " | ".join(f"{m[c]:.4f}" for c in COLS)
        epoch = f"{per_epoch:.2f}" if per_epoch is not None else "-"
        print(f"| {name} | {cells} | {secs:.1f} | {epoch} | {note} |")
    seq, bpr_m = rows["SASRec"][0]["hit@10"], rows["BPR-MF"][0]["hit@10"]
    verdict = "met" if seq >= bpr_m else "not met"
    print(f"\nSASRec hit@10 {seq:.4f} vs BPR-MF {bpr_m:.4f}: target 'sequential >= BPR' {verdict}")


if __name__ == "__main__":
    sys.exit(main())
