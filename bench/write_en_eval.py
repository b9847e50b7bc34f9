"""The writing assistant's English spelling correction on held-out text with synthetic typos:
SymSpell candidates ranked by frequency alone (what a symspellpy user gets) and in context by
n-gram LMs, in the same run.

    python bench/write_en_eval.py                       # the defaults below
    python bench/write_en_eval.py --order 5 --min-count 2 --skip-acronyms

Data: the prepared English corpus (``llmos data prepare``), ``corpus/en/{train,valid,test}.txt``
(OANC, WSJ and Pang & Lee review sentences, split by document). The word-frequency list (words
seen ``--min-count`` times or more are the dictionary), the character LM (order ``--order``) and
the word LM (``--word-order``) come from train; no other word list is read.

- **Typos**: :func:`make_pairs` on each valid and test sentence, ``--copies`` times with
  different draws (``--rate`` typos per sentence on average, some sentences clean): one
  deletion, insertion, keyboard substitution or transposition per misspelled word, redrawn
  while it is a word of train (non-word errors only, whatever ``--min-count``).
- **Frequency-only**: symspellpy's own order (least edits, then most frequent).
- **Context** (``llmos.apps.write.english``), weights fitted on the valid pairs: the same
  candidates scored by the char LM, + the word LM, + the keyboard channel, each changing every
  checked word that has a candidate as the baseline does (``keep=None``: only the ranking
  differs); then the full ranking with ``keep`` fitted too (a word the LMs like stays: far
  fewer false alarms, fewer typos fixed). The keyboard channel knows the QWERTY neighbours
  that the synthetic substitutions and insertions are drawn from, so its share of the gain is
  an upper bound for real typing; the rows without it are the fair comparison.
- Scored on the test pairs: word accuracy (share of typos restored exactly, case included),
  false alarms per 1,000 correct words (a correct word changed), sentence accuracy (the output
  equals the clean sentence), and words/s (all words of the noisy text, one sentence at a time).
  ``candidate_recall`` is the share of typos whose word is among the candidates at all.

Prints one JSON object (``--out`` writes it too) and markdown rows for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine

from llmos.apps.write.edits import apply_edits
from llmos.apps.write.english import (
    WORD,
    EnglishSpeller,
    build_frequencies,
    make_pairs,
)
from llmos.models.ngram import CharNgramLM
from llmos.paths import data_dir


def corpus_sentences(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def evaluate(name: str, speller: EnglishSpeller, pairs: list) -> dict:
    typos = restored = words = false_alarms = sentences_right = reachable = 0
    t = time.perf_counter()
    runs = [speller.correct(noisy) for noisy, _, _ in pairs]
    seconds = time.perf_counter() - t
    for (noisy, clean, spans), edits in zip(pairs, runs, strict=True):
        at = {(e.start, e.end): e.suggestion for e in edits}
        gold = {(s, e): right for s, e, _, right in spans}
        typos += len(gold)
        restored += sum(at.get(span) == right for span, right in gold.items())
        reachable += sum(
            right.lower() in {t for t, _, _ in speller.candidates(wrong.lower())}
            for _, _, wrong, right in spans
        )
        words += len(WORD.findall(noisy)) - len(gold)
        false_alarms += sum(span not in gold for span in at)
        sentences_right += apply_edits(noisy, edits) == clean
    total_words = sum(len(WORD.findall(noisy)) for noisy, _, _ in pairs)
    return {
        "name": name,
        "word_accuracy": round(restored / typos, 4),
        "false_alarms_per_1k": round(1000 * false_alarms / words, 2),
        "sentence_accuracy": round(sentences_right / len(pairs), 4),
        "words_per_s": round(total_words / seconds),
        "candidate_recall": round(reachable / typos, 4),
        "typos": typos,
        "correct_words": words,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--order", type=int, default=6, help="the character LM's order")
    ap.add_argument("--word-order", type=int, default=3, help="the word LM's order")
    ap.add_argument("--min-count", type=int, default=1, help="least count of a dictionary word")
    ap.add_argument("--max-edit", type=int, default=2)
    ap.add_argument("--skip-acronyms", action="store_true", help="never check NBC, NATO")
    ap.add_argument("--copies", type=int, default=3, help="noisy draws of each sentence")
    ap.add_argument("--rate", type=float, default=1.0, help="typos per sentence on average")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    corpus = data_dir() / "corpus" / "en"
    train = corpus_sentences(corpus / "train.txt")
    frequencies = build_frequencies(train)
    known = set(frequencies)  # typos are non-words of train at any --min-count

    def pairs(split: str, seed: int) -> list:
        sentences = corpus_sentences(corpus / f"{split}.txt") * args.copies
        return make_pairs(sentences, random.Random(seed), args.rate, known)

    valid, test = pairs("valid", args.seed), pairs("test", args.seed + 1)
    options = {
        "max_edit": args.max_edit,
        "min_count": args.min_count,
        "skip_acronyms": args.skip_acronyms,
    }
    out: dict = {
        "machine": machine(),
        "options": options | {"order": args.order, "copies": args.copies, "rate": args.rate},
        "train_words": sum(frequencies.values()),
        "test_pairs": len(test),
    }

    t = time.perf_counter()
    baseline = EnglishSpeller(frequencies, None, **options)
    out["dictionary_words"] = len(baseline.words)
    out["dictionary_s"] = round(time.perf_counter() - t, 2)
    out["baseline"] = evaluate("symspellpy, frequency-only", baseline, test)

    t = time.perf_counter()
    lm = CharNgramLM.train(train, order=args.order, progress=False)
    out["lm_train_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    word_lm = EnglishSpeller(frequencies, lm, **options).train_word_lm(train, args.word_order)
    out["word_lm_train_s"] = round(time.perf_counter() - t, 1)
    char, words = f"{args.order}-gram char LM", f"{args.word_order}-gram word LM"
    always = {"keep": (None,)}  # same detection as the baseline: only the ranking differs
    variants = {  # key: (name, word LM, grid restriction)
        "char_lm": (char, None, always | {"word": (0.0,), "keyboard": (0.0,)}),
        "char_word_lm": (f"{char} + {words}", word_lm, always | {"keyboard": (0.0,)}),
        "context": (f"{char} + {words} + keyboard", word_lm, always),
        "context_keep": (f"{char} + {words} + keyboard, keep fitted", word_lm, {}),
    }
    for key, (name, wlm, grid) in variants.items():
        speller = EnglishSpeller(frequencies, lm, **options)
        speller.word_lm = wlm  # the same dictionary, so the same word codes
        t = time.perf_counter()
        ranking = speller.fit(valid, grid)
        fit_s = time.perf_counter() - t
        out[key] = evaluate(f"symspellpy + {name}", speller, test)
        out[key] |= {"fit_s": round(fit_s, 1), "ranking": vars(ranking)}
        out[key]["accuracy_gain_over_baseline"] = round(
            out[key]["word_accuracy"] - out["baseline"]["word_accuracy"], 4
        )
    print(json.dumps(out, ensure_ascii=False, indent=1))
    if args.out:
        args.out.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")
    print("\n| speller | word accuracy | false alarms / 1k words | sentence accuracy | words/s |")
    print("|---|---:|---:|---:|---:|")
    for key in ("baseline", *variants):
        row = out[key]
        print(
            f"| {row['name']} | **{row['word_accuracy']:.3f}** | {row['false_alarms_per_1k']} | "
            f"{row['sentence_accuracy']:.3f} | {row['words_per_s']} |"
        )


if __name__ == "__main__":
    main()
