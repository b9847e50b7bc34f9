"""Where a customer-service message's server time goes, in this process: the parts of one
``POST /v1/apps/support/messages`` that a plain ``/v1/classify`` call does not have.

    python bench/support_cost.py                                  # runs/support-zh/checkpoint
    python bench/support_cost.py --checkpoint runs/sz-base/checkpoint --messages 400

``bench/support_http.py`` measures the desk over HTTP against one classify call. Under many
clients the server's cores are the limit, so the ratio of the two calls' p95 follows the
ratio of their server time per request. This script splits that time, on a SQLite store in a
temporary directory, with the desk of ``--support-encoder`` (the NLU model's own vector is
the knowledge base's query: one encoder pass per message):

- the model: the multitask ``analyze`` (intent, slots with the CRF, sentiment and the vector)
  against ``classify`` on its intent head alone (the same encoder weights: the baseline model
  of ``bench/support_http.py``), per text at batch 1 and at batch 16 (what the server's
  micro-batcher forms under 16 clients);
- everything else a message does (``SupportService.message`` with the NLU pass answered from a
  cache): the store's reads and writes, the knowledge-base search (BM25 + dense, fused), the
  policy; and each store call alone, one thread and 16 threads (whether they wait on one
  another: the wall time per message against the process's CPU time);
- the two writes through SQLAlchemy Core instead of the ORM, to show what a rewrite of the
  store's hot path would save.

The packaged chatterbot knowledge base (qa-zh, 368 entries) is the desk's; the messages are
intent-zh test utterances and its questions, interleaved, each in a new conversation (as
``bench/support_http.py`` sends them).
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import insert, update

sys.path.insert(0, str(Path(__file__).parent))
from support_http import cpu_name, intent_checkpoint

import llmos
from llmos.apps.support.demo import demo_pairs
from llmos.apps.support.domain import demo_domain
from llmos.apps.support.local import PipelineEmbedder, PipelineNlu
from llmos.apps.support.service import SupportService
from llmos.data.datasets import dataset_files
from llmos.store.db import Store
from llmos.store.desk import Conversation, Turn
from llmos.store.models import now


def per_item_ms(fn: Callable[[], Any], n: int) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) / n * 1000


def model_costs(checkpoint: Path, texts: list[str], work: Path) -> None:
    nlu = llmos.load(checkpoint)
    clf = llmos.load(intent_checkpoint(checkpoint, work / "intent"))
    print("## the model, ms per text (one process, the machine's cores)\n")
    print("| call | batch 1 | batch 16 |\n|---|---:|---:|")
    calls: dict[str, Callable[[list[str]], Any]] = {
        "classify (intent head)": clf.classify,
        "analyze (every head and the vector)": nlu.analyze,
    }
    for name, call in calls.items():
        call(texts[:16])  # warm
        ones, batched = texts[:100], texts[:320]
        one = per_item_ms(lambda c=call, o=ones: [c([t]) for t in o], len(ones))
        sixteen = per_item_ms(
            lambda c=call, b=batched: [c(b[i : i + 16]) for i in range(0, len(b), 16)],
            len(batched),
        )
        print(f"| {name} | {one:.2f} | {sixteen:.2f} |")
    print()


class CachedNlu:
    """The desk's NLU with its answers memoised: the message's cost without the model."""

    def __init__(self, nlu: PipelineNlu) -> None:
        self.nlu, self.cache = nlu, {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.nlu, name)

    def __call__(self, texts: list[str], lang: str) -> Any:
        key = (tuple(texts), lang)
        if key not in self.cache:
            self.cache[key] = self.nlu(texts, lang)
        return self.cache[key]


def desk_costs(checkpoint: Path, texts: list[str], work: Path, threads: int) -> None:
    store = Store(f"sqlite:///{work / 'store.db'}")
    owner, key = store.create_user("owner", admin=True)
    nlu = PipelineNlu({"zh": checkpoint})
    svc = SupportService(
        store, PipelineEmbedder(checkpoint), work / "indexes", nlu=nlu, domain=demo_domain()
    )
    svc.kbs.create(owner.id, "faq")
    svc.kbs.add(owner.id, "faq", demo_pairs("qa-zh.jsonl"))
    svc.kbs.set_public(owner.id, "faq", True)
    users = [store.create_user(f"customer{i}")[0] for i in range(threads)]
    svc.nlu = CachedNlu(nlu)  # type: ignore[assignment]
    for t in texts:  # the index built, every NLU answer cached
        svc.message(users[0].id, t, kb="owner/faq")

    n = len(texts)

    def messages() -> None:
        for i, t in enumerate(texts):
            svc.message(users[i % threads].id, t, kb="owner/faq")

    whole = per_item_ms(messages, n)
    print("## a message without the model, ms (one thread)\n")
    print(f"`SupportService.message`, the NLU pass from a cache: **{whole:.2f} ms**\n")

    desk, kbs = svc.desk, svc.kbs
    spent: collections.Counter[str] = collections.Counter()

    def timed(name: str, fn: Callable[..., Any], *a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        out = fn(*a, **k)
        spent[name] += time.perf_counter() - t
        return out

    def store_calls(user: int, record: bool) -> None:
        call = timed if record else (lambda _n, fn, *a, **k: fn(*a, **k))
        call("authenticate (the API key)", store.authenticate, key)
        kb = call("askable (the knowledge base)", desk.askable, user, "owner/faq")
        conv = call("start (conversation + customer turn)", desk.start, user, kb.id, "x", {})
        call("revision (the index up to date?)", kbs.revision, owner.id, "faq")
        call("profile", store.profile, user)
        call(
            "add_turn (bot turn + state)",
            desk.add_turn,
            conv.id,
            "bot",
            "reply",
            "answer",
            {"reason": "r", "sources": [1, 2, 3]},
            "bot",
            {"a": 1},
        )

    for i in range(n):
        store_calls(users[i % threads].id, True)
    index, embed = svc.indexes.synced(owner.id, "faq")
    assert nlu.encoder("zh") == embed.name  # the one-pass desk: the NLU vector is the query
    vectors = {t: svc.nlu([t], "zh")[1][0] for t in texts}
    for t in texts:
        timed("knowledge-base search (BM25 + dense, fused)", index.search, t, vectors[t], 5)
    print("| part | ms per message |\n|---|---:|")
    for name, secs in spent.items():
        print(f"| {name} | {secs / n * 1000:.2f} |")
    print()

    print(f"## the store calls above, {threads} threads at once\n")
    per = max(1, n // threads)

    def worker(user: int) -> None:
        for _ in range(per):
            store_calls(user, False)

    pool = [threading.Thread(target=worker, args=(u.id,)) for u in users]
    cpu, wall = time.process_time(), time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    total = per * threads
    print(
        f"wall {wall / total * 1000:.2f} ms per message, process CPU {cpu / total * 1000:.2f} ms "
        f"(wall / CPU {wall / cpu:.2f}: 1.00 when no call waits on another's lock)\n"
    )

    conv0 = desk.start(users[0].id, desk.askable(users[0].id, "owner/faq").id, "x", {})

    def core_writes() -> None:
        for _ in range(n):
            with store.engine.begin() as c:
                cid = c.execute(
                    insert(Conversation)
                    .values(customer_id=users[0].id, kb_id=conv0.kb_id, status="bot", state={})
                    .returning(Conversation.id)
                ).scalar_one()
                c.execute(insert(Turn).values(conversation_id=cid, role="customer", text="x"))
            with store.engine.begin() as c:
                c.execute(insert(Turn).values(conversation_id=cid, role="bot", text="reply"))
                c.execute(
                    update(Conversation)
                    .where(Conversation.id == cid)
                    .values(updated_at=now(), status="bot", state={"a": 1})
                )

    def orm_writes() -> None:
        for _ in range(n):
            conv = desk.start(users[0].id, conv0.kb_id, "x", {})
            desk.add_turn(conv.id, "bot", "reply", "answer", {}, "bot", {"a": 1})

    print("## the two writes of a message: ORM (the store) vs SQLAlchemy Core\n")
    print("| how | ms per message |\n|---|---:|")
    print(f"| ORM (`SupportDesk.start` + `add_turn`) | {per_item_ms(orm_writes, n):.2f} |")
    print(f"| Core (two `engine.begin()` transactions) | {per_item_ms(core_writes, n):.2f} |")
    print()
    store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="runs/support-zh/checkpoint", type=Path)
    ap.add_argument("--messages", type=int, default=400)
    ap.add_argument("--threads", type=int, default=16)
    args = ap.parse_args()
    intents = [
        json.loads(x)["text"] for x in dataset_files("intent-zh")["test"].read_text().splitlines()
    ]
    faq = [p.question for p in demo_pairs("qa-zh.jsonl")]
    texts = [t for pair in zip(intents, faq * 10, strict=False) for t in pair][: args.messages]
    print(f"# {cpu_name()}; Python {platform.python_version()}; {args.checkpoint}\n")
    with tempfile.TemporaryDirectory(prefix="llmos-support-cost-") as tmp:
        model_costs(args.checkpoint, texts, Path(tmp))
        desk_costs(args.checkpoint, texts, Path(tmp), args.threads)


if __name__ == "__main__":
    main()
