"""The customer-service app's NLU (a multitask checkpoint: intent, slots, sentiment and the
retrieval vector from one encoder pass) on held-out data, against the classical baselines a
user would otherwise run, in the same run.

    python bench/support_nlu.py --checkpoint runs/support-zh/checkpoint
    python bench/support_nlu.py --checkpoint runs/support-en/checkpoint

Reported (test splits; every number from this run):

- intent accuracy on unseen templates (intent-zh or intent-en test, the intents the model was
  trained on) vs TF-IDF (character 1-3-grams for Chinese, word 1-2-grams for English) +
  logistic regression trained on the same rows, C chosen
  on the valid split;
- slot span F1 (exact character offsets) vs a character CRF (bench/tagging_vs_baseline.py's
  features, c1/c2 chosen on valid);
- sentiment accuracy (sentiment-zh or sentiment-en test) vs TF-IDF + LR;
- new intents from 8 examples each, without retraining: the intents the checkpoint's
  ``exclude`` left out of training get a centroid of 8 of their training utterances'
  vectors (llmos.apps.support.fewshot, combined with the trained head as the app does);
  accuracy on their test utterances, and how often the other intents' test utterances are
  taken for one of them; baseline: retraining the head (logistic regression over the same
  vectors, on the trained intents' training rows plus the 8 examples per new intent);
- per-message cost on one thread-pool (the machine's cores), one message at a time: the
  one-pass ``analyze`` vs one plain classify call of the same model (its intent head) vs the
  four calls the heads would need apart (intent, slots, sentiment, embed).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

sys.path.insert(0, str(Path(__file__).parent))
from tagging_vs_baseline import crf_spans, train_crf

import llmos
from llmos.apps.support.dialogue import Decision, PolicyConfig, decide
from llmos.apps.support.domain import Domain, demo_domain
from llmos.apps.support.fewshot import FewShotConfig, FewShotIntents, combine
from llmos.checkpoint.task import MultiTask
from llmos.data.datasets import dataset_files
from llmos.data.readers import read_classification, read_spans
from llmos.train.metrics import span_scores

SHOTS = 8
# FewShotConfig.reference_margin candidates, chosen on valid with the thresholds.
MARGINS = (0.0, 0.005, 0.01, 0.02, 0.03)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def tfidf_lr(
    train: tuple[list, list], valid: tuple[list, list], test_x: list[str], lang: str = "zh"
) -> list:
    """TF-IDF + logistic regression, C chosen on valid: character 1-3-grams for Chinese, word
    1-2-grams for English (each language's usual choice)."""
    if lang == "en":
        vec = TfidfVectorizer(sublinear_tf=True, min_df=2, ngram_range=(1, 2))
    else:
        vec = TfidfVectorizer(sublinear_tf=True, min_df=2, analyzer="char", ngram_range=(1, 3))
    x = vec.fit_transform(train[0])
    best = max(
        (LogisticRegression(C=c, max_iter=3000).fit(x, train[1]) for c in (1.0, 3.0, 10.0, 30.0)),
        key=lambda m: f1_score(valid[1], m.predict(vec.transform(valid[0])), average="macro"),
    )
    return list(best.predict(vec.transform(test_x)))


def jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


class Reader:
    """The NLU model's reading of each text, computed once."""

    def __init__(self, pipe: Any) -> None:
        self.pipe, self.cache = pipe, {}

    def __call__(self, text: str) -> dict[str, Any]:
        if text not in self.cache:
            (self.cache[text],), _ = self.pipe.analyze([text])
        return self.cache[text]


def run_script(
    read: Reader, domain: Domain, turns: list[str], policy: PolicyConfig, lang: str = "zh"
) -> list[Decision]:
    """The policy's decisions over a scripted conversation, each message read by the NLU
    model (an empty knowledge base: only forms and hand-offs can succeed)."""
    state: dict[str, Any] = {}
    out = []
    for text in turns:
        res = read(text)
        slots = [{"name": x["label"], "value": x["text"]} for x in res["slots"]]
        d = decide(
            text,
            lang,
            None,
            [],
            state,
            policy,
            intent=res["intent"],
            slots=slots,
            domain=domain,
            profile={},
        )
        state = d.state
        out.append(d)
    return out


def form_scripts(
    read: Reader, rows: list[dict], policy: PolicyConfig, lang: str = "zh"
) -> tuple[list[bool], list[bool]]:
    """Scripted multi-turn dialogues on the demo domain's forms, from intent utterances: for
    each utterance of a form intent that tags one of the form's required slots, (a) the
    utterance as it is must complete the form in one turn (after a yes when the form
    confirms) with that slot's gold value; (b) the utterance with the slot's text cut out must
    get the slot's question, and the slot's text as the second message must complete the form
    with it (skipped when another value of the same requirement stays in the message, as a
    timer's minutes when its hours are cut: then nothing is missing). Success needs the right
    form and the exact value."""
    domain = demo_domain()
    complete, missing = [], []
    for row in rows:
        spec = domain.form(row["intent"])
        if spec is None:
            continue
        required = {n for s in spec.slots if s.required for n in (s.name, *s.alternatives)}
        gold = next((x for x in row["slots"] if x["name"] in required), None)
        if gold is None:
            continue
        yes = [{"zh": "是", "en": "yes"}[lang]] if spec.confirm is not None else []
        last = run_script(read, domain, [row["text"], *yes], policy, lang)[-1]
        complete.append(
            last.action == "answer"
            and last.form == spec.name
            and last.slots.get(gold["name"]) == gold["value"]
        )
        cut = " ".join((row["text"][: gold["start"]] + row["text"][gold["end"] :]).split())
        # The slot's requirement: itself or an alternative (a timer's hours, minutes or
        # seconds). When another of those stays in the message, nothing is missing after the
        # cut, so the case does not test a missing slot.
        group = next(
            {s.name, *s.alternatives}
            for s in spec.slots
            if s.required and gold["name"] in (s.name, *s.alternatives)
        )
        still = any(x is not gold and x["name"] in group for x in row["slots"])
        if not cut or still:
            continue
        got = run_script(read, domain, [cut, gold["value"], *yes], policy, lang)
        first, last = got[0], got[-1]
        missing.append(
            first.action == "ask"
            and first.form == spec.name
            and last.action == "answer"
            and last.form == spec.name
            and gold["value"] in last.slots.values()
        )
    return complete, missing


def form_dialogues(pipe: Any, valid: list[dict], test: list[dict], lang: str = "zh") -> None:
    """:func:`form_scripts` on the test utterances, at the policy's default intent threshold
    and at the one chosen on the valid utterances."""
    read = Reader(pipe)

    def success(policy: PolicyConfig, rows: list[dict]) -> float:
        a, b = form_scripts(read, rows, policy, lang)
        return (sum(a) + sum(b)) / max(len(a) + len(b), 1)

    grid = [PolicyConfig(intent_confidence=c) for c in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)]
    chosen = max(grid, key=lambda p: success(p, valid))
    print("## scripted form dialogues (the demo domain's forms, from the test utterances)")
    print("| intent threshold | the request whole | its required slot cut out, then given | all |")
    print("|---|---:|---:|---:|")
    for name, policy in (
        (f"{PolicyConfig().intent_confidence} (default)", PolicyConfig()),
        (f"{chosen.intent_confidence} (chosen on valid)", chosen),
    ):
        a, b = form_scripts(read, test, policy, lang)
        print(
            f"| {name} | {pct(float(np.mean(a)))} ({len(a)}) | {pct(float(np.mean(b)))} "
            f"({len(b)}) | {pct((sum(a) + sum(b)) / max(len(a) + len(b), 1))} |"
        )
    print("(target: >= 95 %)\n")


def spread(texts: list[str], k: int = SHOTS) -> list[str]:
    """``k`` texts spread over the list (which is ordered by template)."""
    return texts[:: max(1, len(texts) // k)][:k]


def few_shot_eval(
    pipe: Any,
    rows: dict[str, list[dict]],
    known: dict[str, list[dict]],
    held: set[str],
    test: list[dict],
    results: list[dict],
    vectors: np.ndarray,
    encoder: str | None,
) -> None:
    """New intents from SHOTS training utterances each, recognised without retraining, two
    ways: the few-shot centroids alone (thresholds decide against the head), and with the
    head's own intents' centroids as references (SHOTS training utterances each, what a
    classifier's task.json keeps as ``examples``): a message nearest a known intent is the
    head's. Thresholds chosen on the valid split; the retrained head is the baseline."""
    if encoder:
        other = llmos.load(encoder)

        def few_vectors(texts: list[str]) -> np.ndarray:
            return other.embed(texts, kind="query")
    else:

        def few_vectors(texts: list[str]) -> np.ndarray:
            return pipe.analyze(texts)[1]

    train_by: dict[str, list[str]] = {}
    for r in rows["train"]:
        train_by.setdefault(r["intent"], []).append(r["text"])
    shots = {n: spread(train_by[n]) for n in sorted(held)}
    refs = {n: spread(ts) for n, ts in sorted(train_by.items()) if n not in held}
    new_test = [r for r in rows["test"] if r["intent"] in held]
    new_texts = [r["text"] for r in new_test]
    new_res, new_vec = pipe.analyze(new_texts)[0], few_vectors(new_texts)
    valid = rows["valid"]
    v_res, v_vec = (
        pipe.analyze([r["text"] for r in valid])[0],
        few_vectors([r["text"] for r in valid]),
    )
    known_vec = few_vectors([r["text"] for r in test]) if encoder else vectors

    # Baseline: retrain the head (logistic regression on the NLU model's vectors).
    tr_texts = [r["text"] for r in known["train"]] + [t for n in shots for t in shots[n]]
    tr_labels = [r["intent"] for r in known["train"]] + [n for n in shots for _ in shots[n]]
    _, tr_vec = pipe.analyze(tr_texts)
    t = time.perf_counter()
    lr = LogisticRegression(C=10.0, max_iter=3000, class_weight="balanced").fit(tr_vec, tr_labels)
    retrain_s = time.perf_counter() - t
    base_new = lr.predict(pipe.analyze(new_texts)[1])
    base_false = lr.predict(vectors)
    names = ", ".join(sorted(held))
    print(f"## new intents from {SHOTS} examples ({names}; {len(new_test)} test utterances)")
    print(f"few-shot vectors: {encoder or 'the NLU model'}")
    print(
        "| method | accuracy on the new intents | other intents taken for a new one "
        "| accuracy on every intent |"
    )
    print("|---|---:|---:|---:|")
    base_hit = base_new == np.array([g["intent"] for g in new_test])
    base_right = base_hit.sum() + (base_false == np.array([r["intent"] for r in test])).sum()
    print(
        f"| retrained head (logistic regression, {retrain_s:.1f} s) | "
        f"{pct(float(np.mean(base_hit)))} | "
        f"{pct(float(np.mean([p in held for p in base_false])))} | "
        f"{pct(base_right / (len(new_test) + len(test)))} |"
    )
    grid = [
        FewShotConfig(similarity=a / 100, head_confidence=h, sure_similarity=max(a, b) / 100)
        for a in range(50, 99, 2)
        for h in (0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
        for b in range(80, 101, 2)
    ]
    variants = {
        "few-shot centroids + head": FewShotIntents.from_embedder(shots, few_vectors),
        "few-shot and reference centroids + head": FewShotIntents.from_embedder(
            shots | refs, few_vectors, reference=refs
        ),
    }
    for name, few in variants.items():
        # The reference margin matters only with references; its grid is chosen on valid too.
        margins = MARGINS if few.reference else (0.0,)
        v_few = {m: [few.best(v, m) for v in v_vec] for m in margins}

        def accuracy(cfg: FewShotConfig, v_few: dict = v_few) -> float:
            pairs = zip(v_res, v_few[cfg.reference_margin], strict=True)
            got = [combine(r["intent"], f, cfg)["label"] for r, f in pairs]
            return float(np.mean([g == r["intent"] for g, r in zip(got, valid, strict=True)]))

        chosen = max((replace(c, reference_margin=m) for m in margins for c in grid), key=accuracy)

        def rates(cfg: FewShotConfig, few: FewShotIntents = few) -> tuple[float, float, float]:
            def decide(res: dict, vec: np.ndarray) -> str:
                return combine(res["intent"], few.best(vec, cfg.reference_margin), cfg)["label"]

            hit = [
                decide(r, v) == g["intent"]
                for r, v, g in zip(new_res, new_vec, new_test, strict=True)
            ]
            known_got = [decide(r, v) for r, v in zip(results, known_vec, strict=True)]
            false = [g in held for g in known_got]
            right = sum(hit) + sum(g == r["intent"] for g, r in zip(known_got, test, strict=True))
            return float(np.mean(hit)), float(np.mean(false)), right / (len(hit) + len(test))

        for label, cfg in ((f"chosen on valid: {chosen}", chosen), ("defaults", FewShotConfig())):
            hit, false, overall = rates(cfg)
            print(
                f"| {name}, no retraining ({label}) | {pct(hit)} | {pct(false)} | {pct(overall)} |"
            )
    print("(target: >= 90 % without retraining)\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="runs/support-zh/checkpoint")
    ap.add_argument("--timing-messages", type=int, default=200)
    ap.add_argument("--skip-crf", action="store_true", help="no CRF baseline (minutes)")
    ap.add_argument(
        "--fewshot-encoder",
        default=None,
        help="embed the few-shot examples and messages with this encoder (kind query) "
        "instead of the NLU model's own vector (the desk's --support-fewshot-encoder)",
    )
    args = ap.parse_args()
    pipe = llmos.load(args.checkpoint)
    spec = pipe.spec
    if not isinstance(spec, MultiTask):
        raise SystemExit(f"{args.checkpoint}: not a multitask checkpoint")
    intent_spec = spec.heads["intent"]
    print(f"# {cpu_name()}, checkpoint {args.checkpoint}\n")

    # --- intents --------------------------------------------------------------------------
    files = dataset_files(intent_spec.extra["dataset"])
    lang = "en" if intent_spec.extra["dataset"].endswith("-en") else "zh"
    rows = {s: jsonl(f) for s, f in files.items()}
    held = set(intent_spec.extra.get("exclude", {}).get("intent", []))
    known = {s: [r for r in rs if r["intent"] not in held] for s, rs in rows.items()}
    test = known["test"]
    t = time.perf_counter()
    results, vectors = pipe.analyze([r["text"] for r in test])
    ours_s = time.perf_counter() - t
    ours = [r["intent"]["label"] for r in results]
    base = tfidf_lr(
        ([r["text"] for r in known["train"]], [r["intent"] for r in known["train"]]),
        ([r["text"] for r in known["valid"]], [r["intent"] for r in known["valid"]]),
        [r["text"] for r in test],
        lang,
    )
    gold = [r["intent"] for r in test]
    acc = float(np.mean([a == b for a, b in zip(ours, gold, strict=True)]))
    base_acc = float(np.mean([a == b for a, b in zip(base, gold, strict=True)]))
    print(f"## intents, unseen templates ({len(test)} test utterances, {len(set(gold))} intents)")
    print("| model | accuracy | macro-F1 |\n|---|---:|---:|")
    print(f"| tf-idf + lr | {pct(base_acc)} | {pct(f1_score(gold, base, average='macro'))} |")
    print(f"| llmos multitask | {pct(acc)} | {pct(f1_score(gold, ours, average='macro'))} |")
    target = {"zh": 97, "en": 98}[lang]
    print(f"llmos - baseline: {100 * (acc - base_acc):+.2f} points (target: >= {target} %)\n")

    # --- slots ----------------------------------------------------------------------------
    slots_spec = spec.heads["slots"]
    span_rows = {
        s: [
            r
            for r in read_spans(f, spans_key=slots_spec.spans_key or "slots").rows
            if r.text in {x["text"] for x in known[s]}
        ]
        for s, f in files.items()
    }
    pred = [[(x["label"], x["start"], x["end"]) for x in r["slots"]] for r in results]
    by_text = {r["text"]: p for r, p in zip(test, pred, strict=True)}
    gold_spans = [r.spans for r in span_rows["test"]]
    ours_f1 = span_scores(gold_spans, [by_text[r.text] for r in span_rows["test"]])["f1"]
    print(f"## slots ({len(span_rows['test'])} test utterances)")
    print("| model | span F1 |\n|---|---:|")
    if not args.skip_crf:
        crf, name = train_crf(span_rows["train"], span_rows["valid"], "bio", 100, tune=True)
        base_f1 = span_scores(gold_spans, crf_spans(crf, span_rows["test"], "bio"))["f1"]
        print(f"| {name} | {100 * base_f1:.2f} |")
    print(f"| llmos multitask | {100 * ours_f1:.2f} |")
    print("(target: >= 95)\n")

    # --- sentiment ------------------------------------------------------------------------
    sent_spec = spec.heads["sentiment"]
    sfiles = dataset_files(sent_spec.extra["dataset"])
    srows = {s: read_classification(f).rows for s, f in sfiles.items()}
    stest = srows["test"]
    sres, _ = pipe.analyze([r.text for r in stest])
    s_ours = [r["sentiment"]["label"] for r in sres]
    s_base = tfidf_lr(
        ([r.text for r in srows["train"]], [r.label for r in srows["train"]]),
        ([r.text for r in srows["valid"]], [r.label for r in srows["valid"]]),
        [r.text for r in stest],
        lang,
    )
    s_gold = [r.label for r in stest]
    s_acc = float(np.mean([a == b for a, b in zip(s_ours, s_gold, strict=True)]))
    s_base_acc = float(np.mean([a == b for a, b in zip(s_base, s_gold, strict=True)]))
    print(f"## sentiment ({len(stest)} test rows of {sent_spec.extra['dataset']})")
    print("| model | accuracy |\n|---|---:|")
    print(f"| tf-idf + lr | {pct(s_base_acc)} |\n| llmos multitask | {pct(s_acc)} |")
    print(f"llmos - baseline: {100 * (s_acc - s_base_acc):+.2f} points\n")

    # --- new intents from 8 examples --------------------------------------------------------
    if held:
        few_shot_eval(pipe, rows, known, held, test, results, vectors, args.fewshot_encoder)

    # --- scripted form dialogues ---------------------------------------------------------------
    form_dialogues(pipe, known["valid"], test, lang)

    # --- per-message cost -------------------------------------------------------------------
    msgs = [r["text"] for r in test[: args.timing_messages]]

    def timed(fn) -> list[float]:
        fn(msgs[0])  # warm-up
        out = []
        for m in msgs:
            t = time.perf_counter()
            fn(m)
            out.append(1000 * (time.perf_counter() - t))
        return out

    heads = {n: pipe.head(n) for n in spec.heads}
    plain = timed(lambda m: heads["intent"].classify([m]))
    one = timed(lambda m: pipe.analyze([m]))
    apart = timed(
        lambda m: (
            heads["intent"].classify([m]),
            heads["slots"].tag([m]),
            heads["sentiment"].classify([m]),
            pipe.embed([m]),
        )
    )
    print(f"## per-message cost ({len(msgs)} messages, one at a time, ms)")
    print("| call | p50 | p95 | vs one classify (p50) |\n|---|---:|---:|---:|")
    for name, ms in (
        ("one classify (intent head)", plain),
        ("analyze: all heads + vector, one pass", one),
        ("four calls apart", apart),
    ):
        p50, p95 = statistics.median(ms), float(np.percentile(ms, 95))
        print(f"| {name} | {p50:.1f} | {p95:.1f} | {p50 / statistics.median(plain):.2f}x |")
    print(f"\n(test-set analyze of {len(test)} utterances in batches: {ours_s:.1f} s)")


if __name__ == "__main__":
    main()
