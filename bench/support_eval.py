"""The customer-service app measured on held-out data, against the baseline a user would
otherwise run, in the same run.

    python bench/support_eval.py --encoder runs/e5-zh              # zh and en
    python bench/support_eval.py --encoder runs/e5-zh --lang zh --folds 5
    # the encoder fine-tuned on the intents' knowledge base first (its own 8 wordings each):
    python bench/support_eval.py --encoder runs/e5-zh --protocol paraphrase \
        --tune configs/finetune/embed-kb.yaml

Knowledge-base answers (``kb``): the demo knowledge bases are the packaged chatterbot QA pairs
(``tasks/qa-{lang}.jsonl``). A customer never types the stored question, so the questions are
held out: in k-fold cross-validation (``--folds``, default 5, folds by a hash of the
question) the knowledge base keeps every entry, but the entries of the held-out fold keep only
their answer (their question is not indexed). Each held-out question is then asked and must
find its own entry. Reported per language: accuracy@1, accuracy@5 and MRR of

- BM25 alone over the same rows (jieba words for Chinese; ``bm25s``, k1 1.5, b 0.75),
- dense retrieval alone (the encoder, questions as queries, answers as passages; FAISS),
- the app's hybrid search (reciprocal-rank fusion of the two, with the BM25 weight the base
  chose for itself: ``KbIndex.calibrate``; ``--bm25-weight`` fixes it),
- the fusion at the fixed default weight 0.5, recomputed from the same hits' two ranks,

all from the same index and the same search calls (each hit carries its rank in either
retriever). With ``--tune CONFIG``, per language, the encoder is first fine-tuned
(``llmos finetune``, ``task: embedding``) on the pairs ``llmos support kb pairs`` makes of the
paraphrase protocol's knowledge base (its entries' stored wordings only; the asked utterances
come from templates never seen in training), and that encoder answers. The issue's target:
hybrid accuracy@1 >= BM25's + 15 points, zh and en.

Who gets an apology (``--apology``): the policy puts one before the answer when the desk's
sentiment (the NLU model's head, or a sentiment classifier) says negative with at least
``PolicyConfig.negative``. Measured on neutral messages (the intents' utterances and the FAQ
questions) against the sentiment reviews, at every threshold of a grid; valid chooses
(:func:`apology_eval`), test reports.

    python bench/support_eval.py --protocol --apology      # the make-run NLU models, zh and en

Results go to docs/BENCHMARKS.md with this command.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from llmos.apps.support.dialogue import PolicyConfig, chosen_entry, decide
from llmos.apps.support.index import BM25_WEIGHT as DEFAULT_WEIGHT
from llmos.apps.support.index import KbIndex, fuse_ranks
from llmos.apps.support.local import PipelineEmbedder
from llmos.paths import data_dir
from llmos.store.kb import KbSnapshot
from llmos.store.models import KbEntry

BM25_WEIGHT: float | None = None  # None: the base's own (KbIndex.calibrate)
SPLIT = "test"
CALIBRATIONS: list[tuple[float, dict | None]] = []  # each index's weight and its measurement


class CachedEmbedder:
    """Each (text, kind) embedded once over all folds."""

    def __init__(self, inner: PipelineEmbedder) -> None:
        self.inner, self.name, self.cache = inner, inner.name, {}

    def __call__(self, texts: list[str], kind: str) -> np.ndarray:
        missing = sorted({t for t in texts if (t, kind) not in self.cache})
        if missing:
            for t, v in zip(missing, self.inner(missing, kind), strict=True):
                self.cache[(t, kind)] = v
        return np.stack([self.cache[(t, kind)] for t in texts])


def fold_of(question: str, folds: int) -> int:
    return int(hashlib.sha256(question.encode("utf-8")).hexdigest(), 16) % folds


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def rank_all(
    entries: list[KbEntry], queries: list[tuple[str, int]], embed: CachedEmbedder
) -> dict[str, list[int | None]]:
    """Index ``entries``, ask every query, and give the rank of its entry under BM25 alone,
    dense alone, the hybrid search (the base's own BM25 weight) and the hybrid at the fixed
    default weight (recomputed from the same hits' ranks; None: not found)."""
    index = KbIndex(embed.name, BM25_WEIGHT)
    index.sync(KbSnapshot(0, "eval", 1, entries), embed)
    CALIBRATIONS.append((index.bm25_weight, index.calibration))
    ranks: dict[str, list[int | None]] = {"bm25": [], "dense": [], "hybrid": [], "fixed": []}
    vectors = embed([q for q, _ in queries], "query")
    for (q, entry), v in zip(queries, vectors, strict=True):
        hits = index.search(q, v, k=len(entries))
        mine = next((h for h in hits if h.entry == entry), None)
        ranks["hybrid"].append(hits.index(mine) + 1 if mine else None)
        ranks["bm25"].append(mine.bm25_rank if mine else None)
        ranks["dense"].append(mine.dense_rank if mine else None)
        fixed = fuse_ranks(
            {h.entry: h.dense_rank for h in hits if h.dense_rank},
            {h.entry: h.bm25_rank for h in hits if h.bm25_rank},
            DEFAULT_WEIGHT,
        )
        order = sorted(fixed, key=lambda e: (-fixed[e], e))
        ranks["fixed"].append(order.index(entry) + 1 if mine else None)
    return ranks


def qa_rows(lang: str) -> list[dict]:
    path = data_dir() / "tasks" / f"qa-{lang}.jsonl"
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def entry(i: int, question: str, answer: str, alternatives: list[str] = ()) -> KbEntry:
    return KbEntry(id=i, question=question, answer=answer, alternatives=list(alternatives), tags=[])


def answers_protocol(lang: str, embed: CachedEmbedder, folds: int) -> dict[str, list]:
    """Every question held out: the knowledge base is the answers; each question must find
    its own entry's answer."""
    rows = qa_rows(lang)
    entries = [entry(i, "", r["answer"]) for i, r in enumerate(rows)]
    return rank_all(entries, [(r["question"], i) for i, r in enumerate(rows)], embed)


def unseen_protocol(lang: str, embed: CachedEmbedder, folds: int) -> dict[str, list]:
    """k-fold: the held-out fold's entries keep only their answer, the others their question
    too; each held-out question must find its own entry."""
    rows = qa_rows(lang)
    ranks: dict[str, list] = {"bm25": [], "dense": [], "hybrid": [], "fixed": []}
    for f in range(folds):
        held = {i for i, r in enumerate(rows) if fold_of(r["question"], folds) == f}
        entries = [
            entry(i, "" if i in held else r["question"], r["answer"]) for i, r in enumerate(rows)
        ]
        fold = rank_all(entries, [(rows[i]["question"], i) for i in sorted(held)], embed)
        for name in ranks:
            ranks[name] += fold[name]
    return ranks


def intent_entries(lang: str, answers: bool) -> tuple[list[KbEntry], list[str]]:
    """One FAQ entry per intent: 8 of its training utterances (spread over its list, which is
    ordered by template) as the question and 7 alternatives; the intent's name as the answer
    when ``answers``, else no answer text."""
    examples: dict[str, list[str]] = {}
    path = data_dir() / "tasks" / f"intent-{lang}" / "train.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        examples.setdefault(r["intent"], []).append(r["text"])
    intents = sorted(examples)
    picked = {n: examples[n][:: max(1, len(examples[n]) // 8)][:8] for n in intents}
    entries = [
        entry(i, picked[n][0], n if answers else "", picked[n][1:]) for i, n in enumerate(intents)
    ]
    return entries, intents


def paraphrase_protocol(lang: str, embed: CachedEmbedder, folds: int) -> dict[str, list]:
    """An FAQ entry per intent (:func:`intent_entries`, no answer text); every utterance of
    the split (templates never seen in training) must find its intent's entry."""
    entries, intents = intent_entries(lang, answers=False)
    queries = []
    path = data_dir() / "tasks" / f"intent-{lang}" / f"{SPLIT}.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if r["intent"] in intents:
            queries.append((r["text"], intents.index(r["intent"])))
    return rank_all(entries, queries, embed)


def tune_on_kb(encoder: str, config: str, lang: str, work: Path) -> Path:
    """The encoder fine-tuned (``config``) on the pairs of the paraphrase protocol's knowledge
    base (:func:`~llmos.apps.support.faq.kb_pairs` of :func:`intent_entries`)."""
    from llmos.apps.support.faq import kb_pairs
    from llmos.config import FinetuneConfig, load_config
    from llmos.recipes.finetune import finetune

    entries, _ = intent_entries(lang, answers=False)
    data = work / f"pairs-{lang}"
    data.mkdir(parents=True, exist_ok=True)
    for split, rows in kb_pairs(entries).items():
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        (data / f"{split}.jsonl").write_text(text, encoding="utf-8")
    overrides = [f"init={encoder}", f"data.dataset={data}", f"out_dir={work}", f"name=kb-{lang}"]
    t = time.perf_counter()
    result = finetune(load_config(FinetuneConfig, config, overrides))
    best = result.best and result.best["metrics"]
    print(f"# {lang}: tuned in {time.perf_counter() - t:.0f} s; best validation {best}")
    return result.checkpoint


PROTOCOLS = {
    "answers": answers_protocol,
    "unseen": unseen_protocol,
    "paraphrase": paraphrase_protocol,
}


def summary(ranks: list[int | None]) -> dict[str, float]:
    n = len(ranks)
    return {
        "acc@1": sum(r == 1 for r in ranks) / n,
        "acc@5": sum(r is not None and r <= 5 for r in ranks) / n,
        "mrr": sum(1 / r for r in ranks if r) / n,
        "n": n,
    }


# --- the dialogue: scripted conversations through the policy ---------------------------------

HUMAN = {
    "zh": ["转人工", "我要找人工客服", "有没有真人"],
    "en": ["I want to talk to a human", "Can I speak to someone?", "get me a real person"],
}


def intent_desk(lang: str, embed: CachedEmbedder) -> tuple[KbIndex, list[str]]:
    """The intents as an FAQ desk (:func:`intent_entries`, the intent's name as the answer)."""
    entries, intents = intent_entries(lang, answers=True)
    index = KbIndex(embed.name)
    index.sync(KbSnapshot(0, "desk", 1, entries), embed)
    return index, intents


def scripts(lang: str, split: str, intents: list[str]) -> list[dict]:
    """Scripted conversations: an in-scope question (an utterance of the split, unseen
    templates) that must end in its intent's answer, the customer picking the right number
    when asked to clarify (two turns at most); two off-topic messages (chatterbot small talk,
    sentiment reviews) that must end in an escalation after a fallback; a request for a
    person that must escalate at once."""
    base = data_dir() / "tasks"
    out = []
    for line in (
        (base / f"intent-{lang}" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    ):
        r = json.loads(line)
        if r["intent"] in intents:
            out.append(
                {"kind": "in-scope", "turns": [r["text"]], "want": intents.index(r["intent"])}
            )
    qa = [
        json.loads(x)["question"]
        for x in (base / f"qa-{lang}.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    reviews = [
        x.split("\t")[0]
        for x in (base / f"sentiment-{lang}" / f"{split}.tsv")
        .read_text(encoding="utf-8")
        .splitlines()[1:]
    ]
    off = [t for t in qa + reviews if fold_of(t, 4) == (0 if split == "valid" else 1)][:300]
    for a, b in zip(off[::2], off[1::2], strict=False):
        out.append({"kind": "off-topic", "turns": [a, b]})
    for text in HUMAN[lang]:
        out.append({"kind": "human", "turns": [text]})
    return out


def run_script(
    script: dict, lang: str, index: KbIndex, embed: CachedEmbedder, config: PolicyConfig
) -> bool:
    state: dict = {}
    actions = []
    for i, text in enumerate(script["turns"]):
        hits = index.search(text, embed([text], "query")[0], k=5)
        d = decide(text, lang, None, hits, state, config)
        actions.append(d.action)
        state = d.state
        if script["kind"] == "in-scope":
            if d.action == "answer":
                return d.entry is not None and d.entry.entry == script["want"]
            if d.action == "clarify" and i == 0:
                script["clarified"] = True
                ids = [h.entry for h in d.candidates]
                if script["want"] not in ids:
                    return False
                pick = str(ids.index(script["want"]) + 1)
                chosen = index.hit(chosen_entry(pick, state))
                final = decide(pick, lang, None, [], state, config, chosen)
                return final.action == "answer" and final.entry.entry == script["want"]
            return False
    if script["kind"] == "off-topic":
        return actions == ["fallback", "escalate"]
    return actions == ["escalate"]


def dialogue_eval(
    lang: str, split: str, embed: CachedEmbedder, config: PolicyConfig
) -> dict[str, float]:
    index, intents = intent_desk(lang, embed)
    done: dict[str, list[bool]] = {}
    made = scripts(lang, split, intents)
    for script in made:
        done.setdefault(script["kind"], []).append(run_script(script, lang, index, embed, config))
    out = {kind: sum(v) / len(v) for kind, v in done.items()}
    in_scope = [x for x in made if x["kind"] == "in-scope"]
    out["clarified"] = sum(x.get("clarified", False) for x in in_scope) / len(in_scope)
    out["all"] = sum(sum(v) for v in done.values()) / sum(len(v) for v in done.values())
    out["n"] = {kind: len(v) for kind, v in done.items()}
    return out


MAX_CLARIFIED = 0.45  # a desk that asks back on most questions is not one anybody wants


def calibrate(embed: CachedEmbedder, langs: tuple[str, ...]) -> PolicyConfig:
    """The thresholds with the best mean task success over the languages' valid scripts, among
    those that ask back (clarify) on at most MAX_CLARIFIED of the in-scope questions."""
    best = None
    for answer in (0.90, 0.92, 0.94, 0.96, 0.98):
        for margin in (0.01, 0.02, 0.04, 0.08):
            for clarify in (0.86, 0.88, 0.90):
                if clarify > answer:
                    continue
                config = PolicyConfig(
                    answer_similarity=answer, answer_margin=margin, clarify_similarity=clarify
                )
                results = [dialogue_eval(lang, "valid", embed, config) for lang in langs]
                score = sum(r["all"] for r in results) / len(langs)
                asked = max(r["clarified"] for r in results)
                print(f"  valid: {answer=} {margin=} {clarify=}: {100 * score:.2f} %, {asked=:.2f}")
                if asked > MAX_CLARIFIED:
                    continue
                if best is None or score > best[0]:
                    best = (score, config)
    assert best is not None
    return best[1]


# --- escalation on complaints ------------------------------------------------------------------


@functools.cache
def _pipeline(checkpoint: str) -> Any:
    import llmos

    return llmos.load(checkpoint)


def negative_scores(checkpoint: str, texts: list[str]) -> np.ndarray:
    """The desk's probability that each text is negative: a multitask NLU model's sentiment
    head, or a sentiment classifier (as ``SupportService.understand`` reads them)."""
    from llmos.apps.support.service import sentiment_of
    from llmos.checkpoint.task import MultiTask

    pipe = _pipeline(checkpoint)
    if isinstance(pipe.spec, MultiTask):  # the desk's NLU model: its sentiment head
        results = [r["sentiment"] for r in pipe.analyze(texts)[0]]
    else:  # a sentiment classifier, read as the desk's PipelineClassifier reads it
        results = pipe.classify(texts)
    return np.array([sentiment_of(r)[0] for r in results])


def review_rows(lang: str, split: str) -> list[tuple[str, str]]:
    """(text, label) of the sentiment reviews of a split."""
    path = data_dir() / "tasks" / f"sentiment-{lang}" / f"{split}.tsv"
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return [(t, y) for t, y in (line.split("\t") for line in lines)]


def escalation_eval(lang: str, checkpoint: str, config: PolicyConfig) -> dict[str, dict]:
    """Negative test reviews as complaints, positive ones as controls, each a customer's first
    message: does the desk escalate (the policy: a request for a person, or the sentiment
    model's negative probability >= ``strongly_negative``)? Against the sentiment threshold
    alone at 0.5, and with the threshold that reaches 0.90 recall."""
    from llmos.apps.support.dialogue import wants_human

    rows = review_rows(lang, "test")
    texts = [t for t, _ in rows]
    complaint = np.array([label == "neg" for _, label in rows])
    negative = negative_scores(checkpoint, texts)
    human = np.array([wants_human(t, lang) for t in texts])

    def pr(escalated: np.ndarray) -> dict[str, float]:
        tp = int((escalated & complaint).sum())
        return {
            "recall": tp / int(complaint.sum()),
            "precision": tp / max(1, int(escalated.sum())),
            "escalated": float(escalated.mean()),
        }

    order = np.sort(negative[complaint])
    at_90 = float(order[int(0.10 * len(order))])  # 90 % of the complaints are at or above
    return {
        "policy": pr(human | (negative >= config.strongly_negative)),
        "threshold 0.5": pr(negative >= 0.5),
        f"threshold {at_90:.3f} (recall 0.90)": pr(negative >= at_90),
        "n": {"complaints": int(complaint.sum()), "controls": int((~complaint).sum())},
    }


APOLOGY_GRID = [round(0.5 + 0.025 * i, 3) for i in range(19)]  # 0.5 .. 0.95
NEUTRAL_CAP = 0.05  # the share of neutral messages a desk may apologise to


def apology_eval(checkpoints: dict[str, str]) -> dict:
    """Who gets the policy's apology (negative probability >= ``PolicyConfig.negative``, or
    ``negative_two_class`` for a sentiment model with no neutral class)?
    Neutral messages: the intents' utterances of the split (commands and questions to the
    desk) and the FAQ questions of the split (``tasks/qa-{lang}/{split}.jsonl``: the split
    ``desk-sentiment-{lang}`` trains a neutral class on, so none of these is trained on);
    against the sentiment reviews of the split (negative: the apology is wanted; positive).
    Per language and split, the share apologised to at each threshold of the grid; valid
    chooses the smallest threshold whose neutral share, averaged over the languages, is at
    most :data:`NEUTRAL_CAP`."""
    base = data_dir() / "tasks"
    shares: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for lang, checkpoint in checkpoints.items():
        shares[lang] = {}
        for split in ("valid", "test"):
            lines = (base / f"intent-{lang}" / f"{split}.jsonl").read_text(encoding="utf-8")
            neutral = [json.loads(x)["text"] for x in lines.splitlines()]
            lines = (base / f"qa-{lang}" / f"{split}.jsonl").read_text(encoding="utf-8")
            neutral += [json.loads(x)["question"] for x in lines.splitlines()]
            reviews = review_rows(lang, split)
            groups = {
                "neutral": neutral,
                "negative reviews": [t for t, y in reviews if y == "neg"],
                "positive reviews": [t for t, y in reviews if y == "pos"],
            }
            shares[lang][split] = {
                name: _share(negative_scores(checkpoint, texts)) for name, texts in groups.items()
            }
            shares[lang][split]["n"] = np.array([len(v) for v in groups.values()])
    mean_neutral = np.mean([shares[lang]["valid"]["neutral"] for lang in shares], axis=0)
    ok = [t for t, m in zip(APOLOGY_GRID, mean_neutral, strict=True) if m <= NEUTRAL_CAP]
    return {"shares": shares, "chosen": ok[0] if ok else None}


APOLOGY_DEFAULTS = ("zh=runs/support-zh/checkpoint", "en=runs/support-en/checkpoint")


def report_apology(checkpoints: dict[str, str]) -> None:
    r = apology_eval(checkpoints)
    p = PolicyConfig()
    print(
        f"\n## who gets an apology ({checkpoints}); the policy's: {p.negative} with a neutral "
        f"class, {p.negative_two_class} without"
    )
    print(
        f"chosen on valid (the smallest threshold with at most {NEUTRAL_CAP:.0%} of the "
        f"neutral messages apologised to, averaged over the languages): {r['chosen']}"
    )
    for lang, splits in r["shares"].items():
        n = dict(
            zip(("neutral", "negative", "positive"), splits["test"]["n"].tolist(), strict=True)
        )
        print(f"\n{lang} (test: {n})")
        print(
            "| threshold | valid: neutral | negative reviews | positive reviews | "
            "test: neutral | negative reviews | positive reviews |\n|---:|" + "---:|" * 6
        )
        for i, t in enumerate(APOLOGY_GRID):
            cells = [
                f"{100 * splits[s][g][i]:.1f} %"
                for s in ("valid", "test")
                for g in ("neutral", "negative reviews", "positive reviews")
            ]
            print(f"| {t:g} | " + " | ".join(cells) + " |")


def _share(negative: np.ndarray) -> np.ndarray:
    """The share of the texts at or above each threshold of :data:`APOLOGY_GRID`."""
    return np.array([(negative >= t).mean() for t in APOLOGY_GRID])


# --- scale: a 10,000-entry knowledge base ------------------------------------------------------


def scale_eval(n: int, embed: PipelineEmbedder, queries: int = 200) -> dict[str, float]:
    """Build a knowledge base of ``n`` entries (questions: Chinese reviews cut to 60
    characters; answers: People's Daily sentences), save it, then time ``queries`` searches
    (a review not in the base each: embedding the query + the hybrid search)."""
    import shutil
    import tempfile

    base = data_dir() / "tasks"
    reviews = [
        x.split("\t")[0][:60]
        for x in (base / "sentiment-zh" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    ]
    sentences = [
        "".join(w.rsplit("/", 1)[0] for w in line.split())
        for line in (base / "pku" / "train.txt").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    if len(reviews) < n + queries or len(sentences) < n:
        raise SystemExit(f"not enough text for {n} entries")
    entries = [entry(i, reviews[i], sentences[i][:200]) for i in range(n)]
    index = KbIndex(embed.name)
    start = time.perf_counter()
    index.sync(KbSnapshot(0, "scale", 1, entries), embed)
    build = time.perf_counter() - start
    out = Path(tempfile.mkdtemp())
    start = time.perf_counter()
    index.save(out)
    save = time.perf_counter() - start
    size = sum(f.stat().st_size for f in out.iterdir())
    start = time.perf_counter()
    KbIndex.load(out)
    load = time.perf_counter() - start
    shutil.rmtree(out)
    whole, search = [], []
    for q in reviews[n : n + queries]:
        t0 = time.perf_counter()
        v = embed([q], "query")[0]
        t1 = time.perf_counter()
        index.search(q, v, k=5)
        t2 = time.perf_counter()
        whole.append(t2 - t0)
        search.append(t2 - t1)
    p = lambda xs, q: 1000 * float(np.percentile(xs, q))  # noqa: E731
    return {
        "rows": len(index.rows),
        "build_s": build,
        "save_s": save,
        "load_s": load,
        "size_mb": size / 2**20,
        "query_p50_ms": p(whole, 50),
        "query_p95_ms": p(whole, 95),
        "search_p50_ms": p(search, 50),
        "search_p95_ms": p(search, 95),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoder", default="runs/e5-zh", help="encoder checkpoint (embeddings)")
    ap.add_argument("--lang", choices=["zh", "en", "both"], default="both")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument(
        "--protocol",
        nargs="*",
        choices=list(PROTOCOLS),
        default=list(PROTOCOLS),
        help="which held-out questions (none: --protocol alone)",
    )
    ap.add_argument("--bm25-weight", type=float, default=None)
    ap.add_argument("--tune", help="a task: embedding config: fine-tune on the paraphrase KB first")
    ap.add_argument("--work", default="runs/bench-kb", help="where --tune writes its runs")
    ap.add_argument("--split", default="test", help="the intents' split asked (paraphrase)")
    ap.add_argument(
        "--dialogue", action="store_true", help="also the scripted dialogues through the policy"
    )
    ap.add_argument(
        "--calibrate",
        action="store_true",
        help="choose the policy's thresholds on the valid scripts",
    )
    ap.add_argument("--scale", type=int, default=0, help="also time a knowledge base of N entries")
    ap.add_argument(
        "--sentiment",
        default=None,
        help="a Chinese sentiment (or multitask NLU) checkpoint: also measure escalation on "
        "complaint reviews",
    )
    ap.add_argument(
        "--apology",
        nargs="*",
        metavar="LANG=CHECKPOINT",
        help="also measure who gets the policy's apology, per language's NLU or sentiment "
        "checkpoint (no value: zh=runs/support-zh/checkpoint en=runs/support-en/checkpoint)",
    )
    args = ap.parse_args()
    global BM25_WEIGHT, SPLIT
    SPLIT = args.split
    if args.bm25_weight is not None:
        BM25_WEIGHT = args.bm25_weight
    embed = CachedEmbedder(PipelineEmbedder(args.encoder))
    print(f"# {cpu_name()}, encoder {args.encoder}, {args.folds} folds")
    for lang in ("zh", "en") if args.lang == "both" else (args.lang,):
        if args.tune:
            tuned = tune_on_kb(args.encoder, args.tune, lang, Path(args.work))
            print(f"\n# {lang}: encoder fine-tuned on the knowledge base: {tuned}")
            embed = CachedEmbedder(PipelineEmbedder(str(tuned)))
        for name in args.protocol:
            start = time.perf_counter()
            CALIBRATIONS.clear()
            result = {k: summary(v) for k, v in PROTOCOLS[name](lang, embed, args.folds).items()}
            took = time.perf_counter() - start
            n = result["bm25"]["n"]
            print(f"\n## knowledge-base answers, {lang}, {name} ({n} questions, {took:.0f} s)")
            weights = sorted({w for w, _ in CALIBRATIONS})
            chosen = "fixed" if BM25_WEIGHT is not None else "the base's own"
            print(f"BM25 weight ({chosen}): {', '.join(f'{w:g}' for w in weights)}")
            for _, c in CALIBRATIONS[:1]:
                print(f"calibration of the first index: {c}")
            print("| retriever | acc@1 | acc@5 | MRR |\n|---|---:|---:|---:|")
            for r, label in (
                ("bm25", "bm25"),
                ("dense", "dense"),
                ("fixed", f"hybrid, weight {DEFAULT_WEIGHT:g}"),
                ("hybrid", "hybrid (the app)"),
            ):
                m = result[r]
                at1, at5 = 100 * m["acc@1"], 100 * m["acc@5"]
                print(f"| {label} | {at1:.2f} % | {at5:.2f} % | {m['mrr']:.3f} |")
            gain = 100 * (result["hybrid"]["acc@1"] - result["bm25"]["acc@1"])
            print(f"hybrid - BM25 accuracy@1: {gain:+.2f} points (target >= +15)")
    if args.scale:
        r = scale_eval(args.scale, embed.inner)
        print(f"\n## a {args.scale:,}-entry knowledge base ({r['rows']:,} rows)")
        print(
            f"build (embed + index) {r['build_s']:.1f} s, save {r['save_s']:.2f} s, "
            f"load {r['load_s']:.2f} s, {r['size_mb']:.1f} MiB on disk; a query (embed + "
            f"search) p50 {r['query_p50_ms']:.1f} ms, p95 {r['query_p95_ms']:.1f} ms; the "
            f"search alone p50 {r['search_p50_ms']:.1f} ms, p95 {r['search_p95_ms']:.1f} ms"
        )
    if args.sentiment:
        r = escalation_eval("zh", args.sentiment, PolicyConfig())
        n = r.pop("n")
        print(
            f"\n## escalation on complaints, sentiment-zh test ({n['complaints']} negative "
            f"reviews as complaints, {n['controls']} positive as controls; {args.sentiment})"
        )
        print("| rule | recall | precision | escalated |\n|---|---:|---:|---:|")
        for name, m in r.items():
            print(f"| {name} | {m['recall']:.3f} | {m['precision']:.3f} | {m['escalated']:.3f} |")
    if args.apology is not None:
        pairs = args.apology or list(APOLOGY_DEFAULTS)
        report_apology(dict(p.split("=", 1) for p in pairs))
    if not (args.dialogue or args.calibrate):
        return
    langs = ("zh", "en") if args.lang == "both" else (args.lang,)
    config = calibrate(embed, langs) if args.calibrate else PolicyConfig()
    print(f"\n## scripted dialogues, {args.split} split, policy {config}")
    print(
        "| language | in-scope | off-topic | asks for a person | all | in-scope clarified |\n"
        "|---|---:|---:|---:|---:|---:|"
    )
    for lang in langs:
        r = dialogue_eval(lang, args.split, embed, config)
        n = r["n"]
        cells = [f"{100 * r[k]:.2f} % ({n[k]})" for k in ("in-scope", "off-topic", "human")]
        all_, asked = 100 * r["all"], 100 * r["clarified"]
        print(f"| {lang} | {' | '.join(cells)} | {all_:.2f} % | {asked:.2f} % |")


if __name__ == "__main__":
    main()
