"""Who the whole support desk sends to a person: complaints, praise and plain questions, each a
customer's first message, through ``SupportService.message`` as ``llmos serve`` runs it (the
make-run NLU models, E5 for the knowledge base, the demo domain and the demo knowledge bases),
as it was before (``PolicyConfig.negative_unanswered`` off, no out-of-domain gate:
``FewShotConfig.in_domain`` empty), with the first, and with both (the default).

    python bench/support_complaints.py                        # zh and en, 400 messages a group
    python bench/support_complaints.py --lang zh --per-group 100 --threads 1

Messages (test splits; a seeded sample of ``--per-group`` of each group):

- ``complaints``: the negative reviews of ``tasks/sentiment-{lang}`` (Chinese product and
  hotel reviews; English film reviews);
- ``praise``: the positive reviews of the same split;
- ``questions``: the intents' utterances and the FAQ questions of the split (the neutral
  messages of ``bench/support_eval.py --apology``);
- English only, ``shop complaints`` and ``shop questions``: :data:`SHOP_COMPLAINTS_EN` and
  :data:`SHOP_QUESTIONS_EN`, 20 each, written for this bench before any model scored them:
  the English reviews are film reviews, and a shop's complaints read otherwise.

Each message starts a new conversation with the demo knowledge base of its language; the
desk's action (answer, clarify, fallback, ask: a form, escalate) and its reason are counted.
A complaint that reaches a person is what the policy is for; praise or a question that does
is a false alarm. The model's answers are computed once and replayed for every desk, so the
rows differ by the policy alone.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine

from llmos.apps.support.demo import DEMO_KBS, demo_pairs
from llmos.apps.support.dialogue import PolicyConfig
from llmos.apps.support.domain import demo_domain
from llmos.apps.support.fewshot import FewShotConfig
from llmos.apps.support.local import PipelineEmbedder, PipelineNlu
from llmos.apps.support.service import SupportService
from llmos.paths import data_dir
from llmos.store.db import Store

GROUPS = ("complaints", "praise", "questions", "shop complaints", "shop questions")
SHOP_COMPLAINTS_EN = [
    "the blender I bought broke after two days, absolutely useless",
    "my package arrived damaged and nobody is answering my emails",
    "this is the third time my order was late, I'm fed up",
    "the shoes you sent are the wrong size and the return label doesn't work",
    "you charged me twice for the same order",
    "the phone case cracked the first day, terrible quality",
    "I waited an hour on hold and then got disconnected",
    "the jacket smells awful and the zipper is broken",
    "your delivery driver threw my parcel over the fence",
    "I never received my refund and it's been three weeks",
    "the product looks nothing like the pictures on your site",
    "the coffee machine leaks water all over the counter",
    "the headphones stopped working after a week",
    "your customer service is the worst I have ever dealt with",
    "I ordered a red dress and got a green one, very disappointed",
    "the battery dies after an hour, what a waste of money",
    "the item was missing parts and the instructions were useless",
    "I was promised next day delivery and it took ten days",
    "the screen has dead pixels out of the box",
    "stop sending me spam emails, I unsubscribed months ago",
]
SHOP_QUESTIONS_EN = [
    "what are your opening hours",
    "do you ship to canada",
    "how long does delivery usually take",
    "can I pay with paypal",
    "is this laptop available in silver",
    "where can I find my order number",
    "do you have a store in london",
    "what is your return policy",
    "how do I reset my password",
    "can I change the delivery date",
    "is there a warranty on this blender",
    "do you offer gift wrapping",
    "what sizes does this shirt come in",
    "how much is shipping to germany",
    "can I pick up my order in the store",
    "when will the new model be in stock",
    "do you have a student discount",
    "how do I contact the seller",
    "what payment methods do you accept",
    "can I add an item to my existing order",
]


class Cached:
    """A callable's answers memoised by its arguments (texts as a tuple), other attributes
    passed through: the models run once for every desk."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.cache = inner, {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __call__(self, texts: list[str], *rest: Any) -> Any:
        key = (tuple(texts), *rest)
        if key not in self.cache:
            self.cache[key] = self.inner(texts, *rest)
        return self.cache[key]


def messages(lang: str, n: int) -> dict[str, list[str]]:
    """The groups of the test split, ``n`` of each (``random.Random(0)``; the English shop
    groups whole)."""
    base = data_dir() / "tasks"
    lines = (base / f"sentiment-{lang}" / "test.tsv").read_text(encoding="utf-8").splitlines()
    reviews = [line.split("\t") for line in lines[1:]]
    questions = [
        json.loads(x)["text"]
        for x in (base / f"intent-{lang}" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    questions += [
        json.loads(x)["question"]
        for x in (base / f"qa-{lang}" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    groups = {
        "complaints": [t for t, y in reviews if y == "neg"],
        "praise": [t for t, y in reviews if y == "pos"],
        "questions": questions,
    }
    rng = random.Random(0)
    out = {g: rng.sample(v, min(n, len(v))) for g, v in groups.items()}
    if lang == "en":
        out |= {"shop complaints": SHOP_COMPLAINTS_EN, "shop questions": SHOP_QUESTIONS_EN}
    return out


def outcome(action: str, reason: str) -> str:
    """The action, an escalation by its cause."""
    if action != "escalate":
        return action
    for cause, words in (
        ("escalate: unanswered negative", "no sure answer"),
        ("escalate: strongly negative", "strongly negative"),
        ("escalate: hand-off intent", "goes to a person"),
        ("escalate: asked for a person", "asked for a person"),
    ):
        if words in reason:
            return cause
    return "escalate: other"


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    nlu = PipelineNlu({lang: args.nlu.get(lang) for lang in args.langs})
    embed = PipelineEmbedder(args.encoder)
    cached_nlu, cached_embed = Cached(nlu), Cached(embed)
    work = Path(tempfile.mkdtemp(prefix="llmos-bench-complaints-"))
    store = Store(f"sqlite:///{work / 'store.db'}")
    owner, _ = store.create_user("owner", admin=True)
    customer, _ = store.create_user("customer")
    policies = {
        "before": (PolicyConfig(negative_unanswered=False), FewShotConfig(in_domain={})),
        "+ negative_unanswered": (PolicyConfig(), FewShotConfig(in_domain={})),
        "+ in_domain (now)": (PolicyConfig(), FewShotConfig()),
    }
    counts: dict[tuple[str, str, str], collections.Counter[str]] = {}
    sizes: dict[tuple[str, str], int] = {}
    t0 = time.perf_counter()
    for p, (name, (policy, fewshot)) in enumerate(policies.items()):
        svc = SupportService(
            store,
            embed,
            work / "indexes",
            policy=policy,
            nlu=nlu,
            domain=demo_domain(),
            fewshot=fewshot,
        )
        svc.nlu, svc.embed = cached_nlu, cached_embed  # type: ignore[assignment]
        svc.indexes.embed = cached_embed  # type: ignore[assignment]
        for lang in args.langs:
            kb = f"faq-{lang}"
            if p == 0:
                svc.create_kb(owner.id, kb)
                svc.add(owner.id, kb, demo_pairs(DEMO_KBS[kb]))
                svc.kbs.set_public(owner.id, kb, True)
            for group, texts in messages(lang, args.per_group).items():
                sizes[lang, group] = len(texts)
                c = counts.setdefault((name, lang, group), collections.Counter())
                for text in texts:
                    r = svc.message(customer.id, text, kb=f"owner/{kb}")
                    c[outcome(r.action, r.reason)] += 1
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"\nCPU: {machine()}, {args.threads} torch threads")
    print(f"NLU {args.nlu}, encoder {args.encoder}")
    for lang in args.langs:
        groups = [g for g in GROUPS if (lang, g) in sizes]
        n = {g: sizes[lang, g] for g in groups}
        print(f"\n### {lang} (test split: {n})\n")
        print("| group | policy | to a person | answer | clarify | fallback | ask (form) |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for group in groups:
            for name in policies:
                c = counts[name, lang, group]
                total = sum(c.values())
                person = sum(v for k, v in c.items() if k.startswith("escalate"))
                cells = [person] + [c[k] for k in ("answer", "clarify", "fallback", "ask")]
                row = " | ".join(f"{100 * v / total:.1f} %" for v in cells)
                print(f"| {group} | {name} | {row} |")
        print("\nescalations by cause (now):")
        for group in groups:
            c = counts[list(policies)[-1], lang, group]
            causes = {k[len("escalate: ") :]: v for k, v in c.items() if k.startswith("escalate")}
            print(f"- {group}: {causes}")
    store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lang", choices=["zh", "en", "both"], default="both")
    ap.add_argument("--per-group", type=int, default=400)
    ap.add_argument("--encoder", default="runs/e5-zh")
    ap.add_argument("--nlu-zh", default="runs/support-zh/checkpoint")
    ap.add_argument("--nlu-en", default="runs/support-en/checkpoint")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    args.langs = ("zh", "en") if args.lang == "both" else (args.lang,)
    args.nlu = {"zh": args.nlu_zh, "en": args.nlu_en}
    run(args)


if __name__ == "__main__":
    main()
