"""A fine-tuned llmos tagger against classical baselines, on the same test split.

    python bench/tagging_vs_baseline.py --checkpoint runs/seg-zh/checkpoint \
        --dataset pku --view segmentation
    python bench/tagging_vs_baseline.py --checkpoint runs/pos-zh/checkpoint --dataset pku --view pos
    python bench/tagging_vs_baseline.py --checkpoint runs/ner-zh/checkpoint --dataset pku --view ner
    python bench/tagging_vs_baseline.py --checkpoint runs/slots-zh/checkpoint \
        --dataset intent-zh --spans-key slots
    python bench/tagging_vs_baseline.py --checkpoint runs/slots-en/checkpoint \
        --dataset intent-en --spans-key slots

For the pos view every system also gets a breakdown of its typed-word F1 (``pos_breakdown``):
its segmentation F1 with the tags ignored, its tag accuracy on the words it cut right, and the
same for the test words never seen in training.

Leave out --checkpoint to score the baselines only; --limit N keeps the first N sentences of
every split (quick checks); --json OUT writes the numbers.

Every split is read with llmos's own reader (``read_spans``), so all systems see the same gold
character spans, and every system is scored here, on the test split, by the same code: exact-match
span precision / recall / F1 (micro, ``llmos.train.metrics.span_scores``) and character tag
accuracy (the spans of a sentence encoded as one tag per character with ``spans_to_tags``: BMES
for the segmentation and pos views, BIO otherwise). Seconds: a baseline's train time covers feature
extraction and training; test time covers tagging the test split (llmos: plus loading the
checkpoint).

Baselines, trained on the train split in this run:
  crf: a linear-chain CRF (sklearn-crfsuite, L-BFGS, c1=c2=0.1, 100 iterations; --tune picks
    c1/c2 from three settings on the valid split) over characters, with the labels being the
    character tags above. Features: the character, the characters at offsets -2..+2, the bigrams
    (-1,0) and (0,+1), the character type (CJK / digit / latin / punct / other) and
    first/last-in-sentence flags. English text (intent-en) is tagged over characters too, not
    over words: some English slots end inside a whitespace token (``60`` in ``60-hour``).
    Used for the segmentation, ner and slot tasks.
  jieba (segmentation view only): ``jieba.lcut(text, HMM=True)`` with jieba 0.42.1's default
    dictionary, words turned into spans. That dictionary does not follow the PKU segmentation
    standard, so part of jieba's gap is a mismatch of conventions rather than of quality; its
    "train" time is the dictionary load.
  CRF seg + most-frequent tag (pos view only): a BMES-POS CRF would have ~170 labels, too slow
    here, so the CRF segmenter above (trained on the segmentation view of the same train file)
    cuts the words and each word gets its most frequent POS in the train split (words not seen
    in training: the most frequent POS overall).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import sklearn_crfsuite

import llmos
from llmos.data.datasets import dataset_files
from llmos.data.readers import SpanExample, read_spans
from llmos.data.tagging import spans_to_tags, tags_to_spans
from llmos.train.metrics import span_scores

Span = tuple[str, int, int]
CRF_SETTINGS = ((0.1, 0.1), (0.05, 0.01), (0.3, 0.05))  # (c1, c2) tried with --tune


def char_type(c: str) -> str:
    if unicodedata.category(c) == "Nd":  # ASCII and full-width digits
        return "digit"
    if "\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf" or "\uf900" <= c <= "\ufaff":
        return "cjk"
    if c.isalpha() and "LATIN" in unicodedata.name(c, ""):  # incl. full-width and accented
        return "latin"
    if unicodedata.category(c)[0] in "PS":
        return "punct"
    return "space" if c.isspace() else "other"


def char_features(text: str) -> list[list[str]]:
    """python-crfsuite features of each character (strings, each with weight 1)."""
    pad = ["<s2>", "<s1>", *text, "</s1>", "</s2>"]
    out = []
    for i, c in enumerate(text):
        j = i + 2
        out.append(
            [
                "bias",
                f"c0={c}",
                f"c-1={pad[j - 1]}",
                f"c-2={pad[j - 2]}",
                f"c+1={pad[j + 1]}",
                f"c+2={pad[j + 2]}",
                f"b-1={pad[j - 1]}{c}",
                f"b+1={c}{pad[j + 1]}",
                f"t={char_type(c)}",
                *(["first"] if i == 0 else []),
                *(["last"] if i == len(text) - 1 else []),
            ]
        )
    return out


def non_overlapping(spans: list[Span]) -> tuple[list[Span], int]:
    """The spans in order, without any that overlaps an earlier one; and how many were dropped."""
    kept: list[Span] = []
    taken: set[int] = set()
    for span in spans:
        chars = set(range(span[1], span[2]))
        if chars & taken:
            continue
        kept.append(span)
        taken |= chars
    return kept, len(spans) - len(kept)


def char_tags(rows: list[SpanExample], scheme: str) -> list[list[str]]:
    return [spans_to_tags(non_overlapping(r.spans)[0], len(r.text), scheme) for r in rows]


def score(gold: list[SpanExample], pred: list[list[Span]], scheme: str) -> dict:
    """Span P/R/F1 and character tag accuracy of predicted spans against the gold rows."""
    scores = span_scores([r.spans for r in gold], pred)
    dropped = right = total = 0
    for row, spans in zip(gold, pred, strict=True):
        kept, n = non_overlapping(spans)
        dropped += n
        true = spans_to_tags(non_overlapping(row.spans)[0], len(row.text), scheme)
        guess = spans_to_tags(kept, len(row.text), scheme)
        right += sum(a == b for a, b in zip(true, guess, strict=True))
        total += len(true)
    if dropped:
        print(f"warning: dropped {dropped} overlapping predicted spans", file=sys.stderr)
    return {
        "precision": scores["precision"],
        "recall": scores["recall"],
        "f1": scores["f1"],
        "macro_f1": scores["macro_f1"],
        "char_accuracy": right / max(total, 1),
    }


def pos_breakdown(
    gold: list[SpanExample], pred: list[list[Span]], known: set[str]
) -> dict[str, float]:
    """Where a joint segmentation + POS system loses its typed-word F1: its segmentation
    alone (word P/R/F1, tags ignored), the tag accuracy on the words it cut right (all of
    them, and those never seen in the train split), and its recall of unseen words. Typed
    F1 = segmentation F1 x that tag accuracy, so the two parts bound each other."""
    seg = span_scores(
        [[("", s, e) for _, s, e in r.spans] for r in gold],
        [[("", s, e) for _, s, e in spans] for spans in pred],
    )
    cut = tagged = oov = oov_cut = oov_tagged = 0
    for row, spans in zip(gold, pred, strict=True):
        guess = {(s, e): tag for tag, s, e in spans}
        for tag, s, e in row.spans:
            unseen = row.text[s:e] not in known
            oov += unseen
            if (s, e) in guess:
                cut += 1
                tagged += guess[(s, e)] == tag
                oov_cut += unseen
                oov_tagged += unseen and guess[(s, e)] == tag
    return {
        "seg_f1": seg["f1"],
        "tag_accuracy_on_cut_words": tagged / max(cut, 1),
        "unseen_words": oov,
        "unseen_recall_cut": oov_cut / max(oov, 1),
        "tag_accuracy_on_cut_unseen": oov_tagged / max(oov_cut, 1),
    }


def train_crf(
    train: list[SpanExample], valid: list[SpanExample], scheme: str, iters: int, tune: bool
) -> tuple[sklearn_crfsuite.CRF, str]:
    """A character CRF on ``train``; with ``tune``, c1/c2 chosen by span F1 on ``valid``."""

    def feats(rows: list[SpanExample]) -> Iterator[list[list[str]]]:
        return (char_features(r.text) for r in rows)  # a generator: CRFsuite copies each one

    best, best_f1, name = None, -1.0, ""
    for c1, c2 in CRF_SETTINGS if tune else CRF_SETTINGS[:1]:
        crf = sklearn_crfsuite.CRF(algorithm="lbfgs", c1=c1, c2=c2, max_iterations=iters)
        crf.fit(feats(train), char_tags(train, scheme))
        if not tune:
            return crf, f"crf (c1={c1:g} c2={c2:g})"
        f1 = span_scores([r.spans for r in valid], crf_spans(crf, valid, scheme))["f1"]
        print(f"  crf c1={c1:g} c2={c2:g}: valid F1 {100 * f1:.2f}", file=sys.stderr)
        if f1 > best_f1:
            best, best_f1, name = crf, f1, f"crf (c1={c1:g} c2={c2:g})"
    assert best is not None
    return best, name


def crf_spans(crf: sklearn_crfsuite.CRF, rows: list[SpanExample], scheme: str) -> list[list[Span]]:
    return [tags_to_spans(crf.predict_single(char_features(r.text)), scheme) for r in rows]


def jieba_spans(texts: list[str]) -> list[list[Span]]:
    import jieba

    out = []
    for text in texts:
        spans, start = [], 0
        for word in jieba.lcut(text, HMM=True):
            if not word.isspace():
                spans.append(("", start, start + len(word)))
            start += len(word)
        assert start == len(text), "jieba lost characters"
        out.append(spans)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="llmos tagging checkpoint; leave out for baselines only")
    p.add_argument("--dataset", required=True)
    p.add_argument("--view", help="People's Daily view: segmentation, pos or ner")
    p.add_argument("--spans-key", default="spans", help="JSONL key of the spans (intent: slots)")
    p.add_argument("--limit", type=int, help="use only the first N sentences of each split")
    p.add_argument("--tune", action="store_true", help="choose CRF c1/c2 on the valid split")
    p.add_argument("--max-iterations", type=int, default=100, help="CRF L-BFGS iterations")
    p.add_argument("--batch-size", type=int, default=64, help="llmos tagging batch size")
    p.add_argument("--json", type=Path, help="write the numbers to this file")
    args = p.parse_args()

    files = dataset_files(args.dataset)
    if "test" not in files:
        p.error(f"{args.dataset}: no test split")
    split = {
        s: read_spans(f, view=args.view, spans_key=args.spans_key).rows[: args.limit]
        for s, f in files.items()
    }
    train, test = split["train"], split["test"]
    scheme = "bmes" if args.view in ("segmentation", "pos") else "bio"
    texts = [r.text for r in test]
    results: dict[str, dict] = {}
    predictions: dict[str, list[list[Span]]] = {}

    def add(name: str, pred: list[list[Span]], train_s: float | None, test_s: float) -> None:
        times = {"train_seconds": train_s, "test_seconds": test_s}
        results[name] = score(test, pred, scheme) | times
        predictions[name] = pred

    if args.view == "pos":
        t = time.perf_counter()
        seg_train = [SpanExample(r.text, [("", s, e) for _, s, e in r.spans]) for r in train]
        seg_valid = [
            SpanExample(r.text, [("", s, e) for _, s, e in r.spans]) for r in split["valid"]
        ]
        crf, _ = train_crf(seg_train, seg_valid, "bmes", args.max_iterations, args.tune)
        by_word: dict[str, Counter] = defaultdict(Counter)
        for r in train:
            for tag, s, e in r.spans:
                by_word[r.text[s:e]][tag] += 1
        overall = sum(by_word.values(), Counter()).most_common(1)[0][0]
        best_tag = {w: c.most_common(1)[0][0] for w, c in by_word.items()}
        train_s = time.perf_counter() - t
        t = time.perf_counter()
        pred = [
            [(best_tag.get(text[s:e], overall), s, e) for _, s, e in spans]
            for text, spans in zip(texts, crf_spans(crf, test, "bmes"), strict=True)
        ]
        add("CRF seg + most-frequent tag", pred, train_s, time.perf_counter() - t)
    else:
        t = time.perf_counter()
        crf, name = train_crf(train, split["valid"], scheme, args.max_iterations, args.tune)
        train_s = time.perf_counter() - t
        t = time.perf_counter()
        pred = crf_spans(crf, test, scheme)
        add(name, pred, train_s, time.perf_counter() - t)
    if args.view == "segmentation":
        import jieba

        jieba.setLogLevel(logging.WARNING)
        t = time.perf_counter()
        jieba.initialize()
        train_s = time.perf_counter() - t
        t = time.perf_counter()
        pred = jieba_spans(texts)
        add("jieba (default dict)", pred, train_s, time.perf_counter() - t)

    if args.checkpoint:
        t = time.perf_counter()
        model = llmos.load(args.checkpoint)
        spec = model.spec
        trained = {"dataset": spec.extra.get("dataset"), "view": getattr(spec, "view", None)}
        for key, ours in (("dataset", args.dataset), ("view", args.view)):
            if trained[key] is not None and trained[key] != ours:
                print(f"warning: checkpoint trained on {key} {trained[key]!r}", file=sys.stderr)
        tagged = model.tag(texts, batch_size=args.batch_size)
        pred = [[(d["label"], d["start"], d["end"]) for d in spans] for spans in tagged]
        add("llmos", pred, None, time.perf_counter() - t)

    print(
        f"dataset {args.dataset}"
        + (f" ({args.view})" if args.view else f" ({args.spans_key})")
        + f": {len(train)} train, {len(test)} test sentences, {sum(map(len, texts))} test chars"
    )
    width = max(len(n) for n in results) + 2
    print(
        f"{'system':<{width}}{'precision':>10}{'recall':>8}{'F1':>8}{'char acc':>10}"
        f"{'train s':>9}{'test s':>8}"
    )
    for name, r in results.items():
        train_col = "-" if r["train_seconds"] is None else f"{r['train_seconds']:.1f}"
        print(
            f"{name:<{width}}{100 * r['precision']:>10.2f}{100 * r['recall']:>8.2f}"
            f"{100 * r['f1']:>8.2f}{100 * r['char_accuracy']:>10.2f}{train_col:>9}"
            f"{r['test_seconds']:>8.1f}"
        )
    if args.view == "pos":
        known = {r.text[s:e] for r in train for _, s, e in r.spans}
        print(
            f"\n{'where typed F1 goes':<{width}}{'seg F1':>8}{'tag acc':>9}"
            f"{'unseen':>8}{'cut':>8}{'tag acc':>9}"
        )
        for name, pred in predictions.items():
            b = pos_breakdown(test, pred, known)
            results[name]["pos_breakdown"] = b
            print(
                f"{name:<{width}}{100 * b['seg_f1']:>8.2f}"
                f"{100 * b['tag_accuracy_on_cut_words']:>9.2f}{b['unseen_words']:>8}"
                f"{100 * b['unseen_recall_cut']:>8.2f}{100 * b['tag_accuracy_on_cut_unseen']:>9.2f}"
            )
        print("(seg F1: words cut right, tags ignored; tag acc: on the words cut right;")
        print(" unseen: gold words absent from the train split, the share of them cut right,")
        print(" their tag acc)")
    gap = None
    if "llmos" in results:
        best = max(r["f1"] for n, r in results.items() if n != "llmos")
        gap = 100 * (results["llmos"]["f1"] - best)
        print(f"llmos F1 - best baseline F1: {gap:+.2f} points")
    if args.json:
        report = {
            "dataset": args.dataset,
            "view": args.view,
            "spans_key": args.spans_key,
            "scheme": scheme,
            "limit": args.limit,
            "checkpoint": args.checkpoint,
            "train_sentences": len(train),
            "test_sentences": len(test),
            "systems": results,
            "llmos_minus_best_baseline_f1_points": gap,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
