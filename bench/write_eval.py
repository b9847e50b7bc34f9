"""The writing assistant's Chinese spelling correction measured on held-out data, against the
classic method a pycorrector user would otherwise run, in the same run.

    python bench/write_eval.py --model runs/csc-zh                 # everything below
    python bench/write_eval.py --model runs/csc-zh --test 1000     # a quicker look
    python bench/write_eval.py --model none                        # the classic rows only

Data: ``tasks/csc-zh`` (``llmos data prepare``): People's Daily and 三国演义 sentences with
synthetic typos from pycorrector's confusion sets, split by document. The reserved SIGHAN-15
file is never read.

- **Spelling model**: the checkpoint alone at its own detection threshold (fitted on valid when
  it was trained), its replacements restricted to the confusion sets it keeps; with its n-gram
  LM as it decodes by default when ``llmos write lm`` fitted one (a row of its own); and
  alone again, free to put any character it knows.
- **Classic baseline** (pycorrector's classic method): confusion-set candidates (same pinyin,
  similar shape) ranked by a character n-gram LM (interpolated modified Kneser-Ney, order
  ``--order``) trained on the prepared Chinese corpus's train split; its gain threshold is
  fitted on ``--valid`` validation pairs by sentence-level F1.
- **Classic + noisy-channel prior** (the app's default without a spelling model): the same
  search with :mod:`llmos.inference.csc_channel`'s prior added to every gain, its weights
  fitted on the validation pairs after the first ``--valid`` (logistic regression), its
  threshold on the first ``--valid``; and again with the weights the app ships
  (``CLASSIC_CHANNEL``), to show they are these.
- Both are scored on the test split: sentence-level correction P/R/F1 (the output equals the
  gold sentence), character-level P/R/F1, and the share of clean sentences changed.
- **bf16**: the spelling model again with bf16 weights (``llmos write correct --precision
  bf16``), decoded as the checkpoint decodes: its scores, the share of test sentences given
  the same edits as in fp32, and its throughput (``--no-bf16`` skips it: bf16 is emulated,
  and slow, on CPUs without AVX512-BF16 or AMX).
- **Throughput**: 50-character sentences (test sources cut to 50), batch 32, sentences/s.
- **User dictionary overhead**: 10^4 and 10^5 entries (corpus words of 2-4 characters, one in
  ten a wrong form with a confusion-set typo) applied to the model's edits of every test
  sentence (``--model none``: the classic + prior's): build time, automaton memory, time per
  sentence.

Prints one JSON object (``--out`` writes it too) and markdown rows for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine

from llmos.apps.write.classic import ClassicCorrector
from llmos.apps.write.corrector import (
    CLASSIC_CHANNEL,
    CLASSIC_CHANNEL_THRESHOLD,
    Corrector,
)
from llmos.apps.write.dictionary import UserDictionary
from llmos.apps.write.edits import apply_edits
from llmos.data.spelling import ConfusionSet, read_confusion, read_corrections
from llmos.inference.correct import apply_corrections
from llmos.inference.csc_channel import ChannelPrior, channel_features, fit_channel
from llmos.inference.csc_lm import best_decoding, sweep_decoding, usable_candidates
from llmos.models.ngram import CharNgramLM
from llmos.models.precision import bf16_supported
from llmos.paths import data_dir
from llmos.text.csc_metrics import sentence_scores

GRID = tuple(0.25 * k for k in range(0, 57))  # scores (gain + prior) 0..14 nats
KEYS = ("sentence_precision", "sentence_recall", "sentence_f1", "char_precision")
KEYS += ("char_recall", "char_f1", "fpr")


def corpus_sentences(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def score(name: str, sources: list[str], predictions: list[str], targets: list[str]) -> dict:
    s = sentence_scores(sources, predictions, targets)
    return {"name": name} | {k: round(s[k], 4) for k in KEYS}


def throughput(corrector: Corrector, texts: list[str], repeats: int = 3, lm: bool = True) -> float:
    """Sentences/s of the best of ``repeats`` runs; ``lm=False``: the model alone."""
    pipe = corrector.model
    corrector.correct(texts[:32])  # warm-up (and the LM read)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        if lm:
            corrector.correct(texts, batch_size=32)
        else:
            pipe.correct(texts, batch_size=32, lm=False)
        best = min(best, time.perf_counter() - t)
    return len(texts) / best


def dictionary_overhead(
    words: list[str], size: int, texts: list[str], edits: list, confusion, seed: int = 0
) -> dict:
    rng = random.Random(seed)
    chosen = rng.sample(words, size)
    protect, pairs = set(), {}
    for w in chosen:
        options = [(i, c) for i, ch in enumerate(w) for c in confusion.candidates(ch)[:3]]
        if rng.random() < 0.1 and options:
            i, c = rng.choice(options)
            pairs[w[:i] + c + w[i + 1 :]] = w
        else:
            protect.add(w)
    protect -= pairs.keys()
    t = time.perf_counter()
    d = UserDictionary(frozenset(protect), pairs)
    auto = d.automaton
    build = time.perf_counter() - t
    t = time.perf_counter()
    changed = 0
    for text, e in zip(texts, edits, strict=True):
        changed += d.apply(text, e) != e
    per = (time.perf_counter() - t) / len(texts)
    return {
        "entries": len(d),
        "build_s": round(build, 3),
        "automaton_mb": round(auto.get_stats()["total_size"] / 2**20, 1),
        "ms_per_sentence": round(per * 1e3, 4),
        "sentences_changed": changed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="runs/csc-zh", help="a spelling checkpoint, or none")
    ap.add_argument("--order", type=int, default=4, help="the baseline's n-gram order")
    ap.add_argument("--valid", type=int, default=1000, help="valid pairs the baseline fits on")
    ap.add_argument("--test", type=int, default=None, help="test pairs (default: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--no-bf16",
        dest="bf16",
        action="store_false",
        help="skip the rows of the model with bf16 weights (slow on CPUs without AVX512-BF16)",
    )
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    home = data_dir()
    task = home / "tasks" / "csc-zh"
    all_valid = read_corrections(task / "valid.jsonl")
    valid, rest = all_valid[: args.valid], all_valid[args.valid :]
    test = read_corrections(task / "test.jsonl")[: args.test]
    sources, targets = [s for s, _ in test], [t for _, t in test]
    confusion = read_confusion(task / "confusion")
    out: dict = {"machine": machine(), "threads": args.threads, "test_pairs": len(test)}

    t = time.perf_counter()
    corpus = corpus_sentences(home / "corpus" / "zh" / "train.txt")
    lm = CharNgramLM.train(corpus, order=args.order)
    # One sweep of the thresholds: the best for F1 alone, and the best under the cap `llmos
    # write lm` fits the model's decoding with (at most 5 % of clean validation sentences).
    tried = sweep_decoding(lm, valid, usable_candidates(confusion.candidates), GRID)
    threshold = best_decoding(tried).threshold
    classic = ClassicCorrector(lm, confusion.candidates, threshold)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    base_pred = [classic.correct_text(s) for s in sources]
    base_s = time.perf_counter() - t
    out["baseline"] = score(f"confusion sets + {args.order}-gram LM", sources, base_pred, targets)
    out["baseline"] |= {
        "threshold": threshold,
        "train_and_fit_s": round(fit_s, 1),
        "sentences_per_s": round(len(sources) / base_s, 1),
    }

    capped = best_decoding(tried, max_fpr=0.05)
    t = time.perf_counter()
    quiet = ClassicCorrector(lm, confusion.candidates, capped.threshold)
    capped_pred = [quiet.correct_text(s) for s in sources]
    capped_s = time.perf_counter() - t
    out["baseline_capped"] = score(
        f"confusion sets + {args.order}-gram LM, threshold under a 5 % clean-change cap",
        sources,
        capped_pred,
        targets,
    )
    out["baseline_capped"] |= {
        "threshold": capped.threshold,
        "sentences_per_s": round(len(sources) / capped_s, 1),
    }

    rows = ["baseline", "baseline_capped"]
    t = time.perf_counter()
    features = channel_features(task / "confusion", lm)
    weights = fit_channel(lm, rest, usable_candidates(confusion.candidates), features)
    prior = ChannelPrior(features, weights)
    tried = sweep_decoding(lm, valid, usable_candidates(confusion.candidates), GRID, prior=prior)
    fit_s = time.perf_counter() - t
    shipped = ChannelPrior(features, CLASSIC_CHANNEL)
    for row, how, thr in (
        ("channel", prior, best_decoding(tried).threshold),
        ("channel_capped", prior, best_decoding(tried, max_fpr=0.05).threshold),
        ("channel_shipped", shipped, CLASSIC_CHANNEL_THRESHOLD),
    ):
        fix = ClassicCorrector(lm, confusion.candidates, thr, how)
        t = time.perf_counter()
        pred = [fix.correct_text(s) for s in sources]
        took = time.perf_counter() - t
        what = {
            "channel": "fitted here, threshold for F1 alone",
            "channel_capped": "fitted here, threshold under the 5 % cap",
            "channel_shipped": "the app's default: CLASSIC_CHANNEL",
        }[row]
        out[row] = score(
            f"confusion sets + {args.order}-gram LM + channel prior ({what})",
            sources,
            pred,
            targets,
        )
        out[row] |= {"threshold": thr, "sentences_per_s": round(len(sources) / took, 1)}
        rows.append(row)
    out["channel_fit"] = weights.to_json() | {
        "fit_pairs": len(rest),
        "fit_s": round(fit_s, 1),
        "max_abs_diff_from_shipped": round(
            max(abs(weights.weights[k] - CLASSIC_CHANNEL.weights[k]) for k in weights.weights), 4
        ),
    }
    shipped_fix = ClassicCorrector(lm, confusion.candidates, CLASSIC_CHANNEL_THRESHOLD, shipped)
    fifty = [s[:50] for s in sources if len(s) >= 50][:640]
    t = time.perf_counter()
    for s in fifty:
        shipped_fix.correct(s)
    out["channel_shipped"]["sentences_per_s_50_chars"] = round(
        len(fifty) / (time.perf_counter() - t), 1
    )
    if args.model.lower() == "none":
        edits = [shipped_fix.correct(s) for s in sources]
        finish(args, out, rows, corpus, sources, edits, confusion)
        return
    model = Corrector.load(args.model)
    spec = model.model.spec
    rows.append("model")
    t = time.perf_counter()
    alone = model.model.correct(sources, lm=False)
    model_s = time.perf_counter() - t
    pred = [apply_corrections(s, c) for s, c in zip(sources, alone, strict=True)]
    out["model"] = score(f"spelling model {args.model}", sources, pred, targets)
    out["model"] |= {
        "threshold": spec.threshold,
        "sentences_per_s": round(len(sources) / model_s, 1),
    }
    if spec.lm is not None:  # the checkpoint's own decoding: `llmos write lm`
        t = time.perf_counter()
        edits = model.correct(sources)
        lm_s = time.perf_counter() - t
        pred = [apply_edits(s, e) for s, e in zip(sources, edits, strict=True)]
        name = f"spelling model {args.model} + its n-gram LM"
        out["model_lm"] = score(name, sources, pred, targets)
        out["model_lm"] |= {
            "alpha": spec.lm.alpha,
            "beta": spec.lm.beta,
            "threshold": spec.lm.threshold,
            "sentences_per_s": round(len(sources) / lm_s, 1),
        }
        rows.append("model_lm")
    else:
        edits = model.correct(sources)
    bf16 = None
    if args.bf16:  # the same checkpoint with bf16 weights (llmos write correct --precision)
        bf16 = Corrector.load(args.model, precision="bf16")
        t = time.perf_counter()
        bf16_edits = bf16.correct(sources)
        bf16_s = time.perf_counter() - t
        pred = [apply_edits(s, e) for s, e in zip(sources, bf16_edits, strict=True)]
        name = f"spelling model {args.model}" + (" + its n-gram LM" if spec.lm else "")
        out["model_bf16"] = score(f"{name}, bf16 weights", sources, pred, targets)
        out["model_bf16"] |= {
            "sentences_per_s": round(len(sources) / bf16_s, 1),
            "same_edits_as_fp32": round(  # places and suggestions; the scores differ a little
                sum(
                    [(e.start, e.suggestion) for e in a] == [(e.start, e.suggestion) for e in b]
                    for a, b in zip(edits, bf16_edits, strict=True)
                )
                / len(sources),
                4,
            ),
            "native_bf16": bf16_supported("cpu"),
        }
        rows.append("model_bf16")
    free = Corrector.load(args.model, confusion=None)
    t = time.perf_counter()
    free_edits = free.correct(sources)
    free_s = time.perf_counter() - t
    free_pred = [apply_edits(s, e) for s, e in zip(sources, free_edits, strict=True)]
    out["model_any_character"] = score(
        f"spelling model {args.model}, any character", sources, free_pred, targets
    )
    out["model_any_character"]["sentences_per_s"] = round(len(sources) / free_s, 1)
    rows.append("model_any_character")

    out["throughput_50_chars"] = {
        "sentences": len(fifty),
        "batch": 32,
        "sentences_per_s": round(throughput(model, fifty), 1),  # as the checkpoint decodes
    }
    if spec.lm is not None:
        out["throughput_50_chars"]["model_alone_sentences_per_s"] = round(
            throughput(model, fifty, lm=False), 1
        )
    if bf16 is not None:
        out["throughput_50_chars"]["bf16_sentences_per_s"] = round(throughput(bf16, fifty), 1)
        if spec.lm is not None:
            out["throughput_50_chars"]["bf16_model_alone_sentences_per_s"] = round(
                throughput(bf16, fifty, lm=False), 1
            )
    finish(args, out, rows, corpus, sources, edits, confusion)


def finish(
    args: argparse.Namespace,
    out: dict,
    rows: list[str],
    corpus: list[str],
    sources: list[str],
    edits: list,
    confusion: ConfusionSet,
) -> None:
    """The dictionary overhead on ``edits``, each row's gain over the baseline; print, write."""
    for row in rows[1:]:
        out[row]["f1_gain_over_baseline"] = round(
            out[row]["sentence_f1"] - out["baseline"]["sentence_f1"], 4
        )
    words = sorted(
        {s[i : i + n] for s in corpus[:40000] for n in (2, 3, 4) for i in range(len(s) - n + 1)}
    )
    words = [w for w in words if all("\u4e00" <= c <= "\u9fff" for c in w)]
    out["dictionary"] = [
        dictionary_overhead(words, n, sources, edits, confusion) for n in (10_000, 100_000)
    ]
    print(json.dumps(out, ensure_ascii=False, indent=1))
    if args.out:
        args.out.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")
    print("\n| corrector | sentence P / R / F1 | char P / R / F1 | clean changed | sent/s |")
    print("|---|---|---|---|---:|")
    for row in (out[r] for r in rows):
        print(
            f"| {row['name']} | {row['sentence_precision']:.3f} / {row['sentence_recall']:.3f}"
            f" / **{row['sentence_f1']:.3f}** | {row['char_precision']:.3f} / "
            f"{row['char_recall']:.3f} / {row['char_f1']:.3f} | {row['fpr']:.1%} | "
            f"{row['sentences_per_s']} |"
        )


if __name__ == "__main__":
    main()
