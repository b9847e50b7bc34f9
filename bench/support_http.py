"""The customer-service desk over HTTP: per-message latency against one plain /v1/classify call
of the same model, and reliability (32 customers chatting at once, then a killed server).

    python bench/support_http.py                      # runs/support-zh + runs/e5-zh
    python bench/support_http.py --clients 1,16 --seconds 20 --chat-seconds 60 --users 32

One ``llmos serve`` subprocess per configuration (a fresh SQLite store, ``--apps-dir`` in a
temporary directory, ``--rate-limit 0``, micro-batching at its defaults), with a models
directory of symlinks:

- ``support-zh``: the multitask NLU checkpoint (--nlu), read once per message for intent,
  slots, sentiment and its vector;
- ``e5-zh``: the knowledge base's encoder (--encoder);
- ``intent``: the NLU checkpoint's intent head written as a plain classification checkpoint
  (the same encoder weights, the same head: :func:`intent_checkpoint`), the baseline's model.

The knowledge base is the packaged chatterbot QA (qa-zh), uploaded over HTTP by its owner and
made public. Two desks are measured: *two passes* (the default server: the NLU pass, then an
E5 pass for the query vector) and *one pass* (``--support-encoder support-zh``: the NLU pass's
vector is the query, as ``bench/support_eval.py`` measured for paraphrases).

**Latency** (wrk, as bench/serve_load.py: one C thread, keep-alive, closed loop; one request
per message, each in a new conversation; texts cycle through intent-zh test utterances and
qa-zh questions, interleaved): for each client count, /v1/classify with one text on the
``intent`` model, then POST /v1/apps/support/messages on each desk. Reported: requests/s,
p50/p95/p99, errors, and the ratio of each desk's p95 to the classify call's at the same
client count. Targets (issue 17): p95 <= 1.5x the classify call's; <= 150 ms at 1 client.

**Reliability** (Python threads, one per customer; latency is not measured here): --users
customers, each its own user and API key, chat for --chat-seconds with the two-pass desk:
each sends the next message of a script (FAQ questions, smart-home requests with and without
their slot, a complaint, a request for a person) in its conversation and starts a new
conversation every 8 messages; meanwhile the owner adds an FAQ entry every 2 s. Every
answer's status is counted (no 5xx allowed). Then the server is killed with SIGKILL and
started again on the same database and apps directory; every customer's conversations (their
turns), the owner's tickets and the knowledge base's entries are read back over HTTP before
and after, and must be equal; each conversation that the bot still serves must take one more
message after the restart.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from serve_load import WRK_SCRIPT, LiveServer, _wait_ready, http, run_wrk, stop

import llmos
from llmos.apps.support.demo import demo_pairs
from llmos.checkpoint.io import save_checkpoint
from llmos.data.datasets import dataset_files
from llmos.models.bert import BertForSequenceClassification
from llmos.serve.testing import free_port
from llmos.store.db import Store

MESSAGES = "/v1/apps/support/messages"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def intent_checkpoint(nlu: Path, out: Path) -> Path:
    """The multitask checkpoint's intent head as a classification checkpoint: its encoder
    (``bert.*``) and ``heads.intent`` as the classifier, mean pooling as the head reads it;
    ``classify`` on it equals ``analyze``'s intent (checked here)."""
    pipe = llmos.load(nlu)
    spec = pipe.spec.heads["intent"]
    model = BertForSequenceClassification(pipe.checkpoint.config, len(spec.labels), "mean")
    state = {k: v for k, v in pipe.model.state_dict().items() if k.startswith("bert.")}
    state["classifier.weight"] = pipe.model.heads["intent"].weight
    state["classifier.bias"] = pipe.model.heads["intent"].bias
    model.load_state_dict(state, strict=True)
    save_checkpoint(out, model, pipe.checkpoint.config, pipe.tokenizer, spec)
    probe = ["把客厅的灯打开", "我的订单到哪了"]
    single = llmos.load(out).classify(probe)
    joint, _ = pipe.analyze(probe)
    for a, b in zip(single, joint, strict=True):
        if a["label"] != b["intent"]["label"] or abs(a["score"] - b["intent"]["score"]) > 1e-4:
            raise RuntimeError(f"the exported intent head disagrees: {a} vs {b['intent']}")
    return out


@contextlib.contextmanager
def server(
    name: str, work: Path, key: str, extra: list[str], log_name: str | None = None
) -> Iterator[LiveServer]:
    """``llmos serve`` on the bench's store and apps directory, ready."""
    env = dict(os.environ, LLMOS_DATABASE_URL=f"sqlite:///{work / 'store.db'}")
    port = free_port()
    cmd = [sys.executable, "-m", "llmos", "serve", "--models", str(work / "models")]
    cmd += ["--port", str(port), "--rate-limit", "0", "--apps-dir", str(work / "apps"), *extra]
    log_path = work / f"{log_name or name}.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    srv = LiveServer(name, proc, port, key, log_path)
    try:
        _wait_ready(srv, timeout=120)
        yield srv
    finally:
        stop(proc)


def call(srv: LiveServer, path: str, body: dict | None = None, key: str | None = None) -> dict:
    status, raw = http(f"{srv.url}{path}", body, key or srv.key)
    if status >= 300:
        raise RuntimeError(f"{path} answered {status}: {raw[:300]!r}")
    return json.loads(raw) if raw else {}


def wrk_run(srv: LiveServer, work: Path, path: str, bodies: list[dict], clients: int, secs: int):
    script, data = work / f"{abs(hash(path))}.lua", work / f"{abs(hash(path))}.jsonl"
    script.write_text(WRK_SCRIPT.replace('"/v1/classify"', json.dumps(path)))
    data.write_text("".join(json.dumps(b, ensure_ascii=False) + "\n" for b in bodies))
    r = run_wrk(srv, clients, secs, script, data)
    secs_run = r["duration_us"] / 1e6
    return {
        "rps": (r["requests"] - r["non2xx"]) / secs_run,
        "requests": r["requests"],
        "errors": r["non2xx"] + r["socket_errors"] + r["timeouts"],
        **{p: r[f"{p}_us"] / 1000 for p in ("p50", "p95", "p99")},
    }


def latency(srv_by_desk: dict[str, LiveServer], work: Path, texts: list[str], args) -> None:
    classify = [{"model": "intent", "texts": [t]} for t in texts]
    messages = [{"kb": "owner/faq", "text": t} for t in texts]
    first = next(iter(srv_by_desk.values()))
    for srv in srv_by_desk.values():
        # The first message builds the knowledge base's index with the desk's encoder (368
        # entries: longer than a warm-up run on a slow machine, whose requests would then all
        # wait on it); then a warm-up at full load.
        call(srv, MESSAGES, messages[0])
        wrk_run(srv, work, MESSAGES, messages, max(args.clients), args.warmup)
    wrk_run(first, work, "/v1/classify", classify, max(args.clients), args.warmup)
    print("| clients | call | requests/s | p50 ms | p95 ms | p99 ms | errors | p95 / classify |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for clients in args.clients:
        base = wrk_run(first, work, "/v1/classify", classify, clients, args.seconds)
        rows = [("/v1/classify (intent head)", base)]
        for desk, srv in srv_by_desk.items():
            rows.append(
                (f"messages, {desk}", wrk_run(srv, work, MESSAGES, messages, clients, args.seconds))
            )
        for name, r in rows:
            ratio = f"{r['p95'] / base['p95']:.2f}x" if base["p95"] > 0 else "-"
            print(
                f"| {clients} | {name} | {r['rps']:.1f} | {r['p50']:.1f} | {r['p95']:.1f} | "
                f"{r['p99']:.1f} | {r['errors']} | {ratio} |"
            )
    print("(targets: p95 <= 1.5x the classify call's; <= 150 ms at 1 client)\n")


def script_for(i: int, faq: list[str], requests: list[str]) -> list[str]:
    """Customer ``i``'s messages, cycled: FAQ questions, smart-home requests (one without its
    slot, then the slot), a complaint and, for every fourth customer, a request for a person."""
    pick = [faq[(i * 7 + k) % len(faq)] for k in range(3)]
    req = [requests[(i * 5 + k) % len(requests)] for k in range(2)]
    out = [
        pick[0],
        req[0],
        "把温度调高",
        "25度",
        pick[1],
        "你们的服务太差了，气死我了",
        req[1],
        pick[2],
    ]
    if i % 4 == 0:
        out[5] = "我要找人工客服"
    return out


def chat(srv: LiveServer, keys: list[str], faq: list[str], requests: list[str], args):
    """--users customers chatting for --chat-seconds; the owner adds entries meanwhile."""
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + args.chat_seconds
    acked: dict[int, int] = {}  # conversation -> customer messages answered with 200

    def customer(i: int) -> None:
        script, conv, n = script_for(i, faq, requests), None, 0
        while time.monotonic() < stop:
            body = {"text": script[n % len(script)]}
            body |= {"conversation_id": conv} if conv else {"kb": "owner/faq"}
            try:
                status, raw = http(f"{srv.url}{MESSAGES}", body, keys[i])
            except OSError:
                status, raw = 599, b""
            with lock:
                statuses[status] += 1
                if status == 200:
                    conv = json.loads(raw)["conversation_id"]
                    acked[conv] = acked.get(conv, 0) + 1
            n += 1
            if n % 8 == 0:
                conv = None

    def owner() -> None:
        k = 0
        while time.monotonic() < stop:
            entry = {"question": f"压力测试问题{k}", "answer": f"压力测试答案{k}"}
            status, _ = http(
                f"{srv.url}/v1/apps/support/kbs/faq/entries", {"entries": [entry]}, srv.key
            )
            with lock:
                statuses[status] += 1
            k += 1
            time.sleep(2)

    threads = [threading.Thread(target=customer, args=(i,)) for i in range(len(keys))]
    threads.append(threading.Thread(target=owner))
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.monotonic() - t0
    return statuses, acked, secs


def snapshot(srv: LiveServer, keys: list[str]) -> dict:
    """Everything the restart must keep, read over HTTP."""
    convs = {}
    for key in keys:
        for c in call(srv, "/v1/apps/support/conversations", key=key)["conversations"]:
            full = call(srv, f"/v1/apps/support/conversations/{c['id']}", key=key)
            convs[c["id"]] = (full["status"], [(t["role"], t["text"]) for t in full["turns"]])
    tickets = call(srv, "/v1/apps/support/tickets?status=all")["tickets"]
    entries, offset = [], 0
    while True:
        page = call(srv, f"/v1/apps/support/kbs/faq/entries?offset={offset}&limit=500")
        entries += [(e["id"], e["question"]) for e in page["entries"]]
        if len(page["entries"]) < 500:
            break
        offset += 500
    return {
        "conversations": convs,
        "tickets": [(t["id"], t["status"]) for t in tickets],
        "entries": entries,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nlu", default="runs/support-zh/checkpoint", type=Path)
    ap.add_argument("--encoder", default="runs/e5-zh", type=Path)
    ap.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16])
    ap.add_argument("--seconds", type=int, default=20, help="seconds per latency run")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--texts", type=int, default=400, help="distinct messages cycled through")
    ap.add_argument("--users", type=int, default=32)
    ap.add_argument("--chat-seconds", type=int, default=60, help="0: no reliability run")
    ap.add_argument("--skip-latency", action="store_true")
    args = ap.parse_args()
    if shutil.which("wrk") is None and not args.skip_latency:
        sys.exit("wrk is not installed (apt-get install wrk)")
    torch.set_num_threads(os.cpu_count() or 1)

    intents = [
        json.loads(x)["text"] for x in dataset_files("intent-zh")["test"].read_text().splitlines()
    ]
    faq_pairs = demo_pairs("qa-zh.jsonl")
    faq = [p.question for p in faq_pairs]
    texts = [
        t for pair in zip(intents, faq * (len(intents) // len(faq) + 1), strict=False) for t in pair
    ]
    texts = texts[: args.texts]
    print(f"# {cpu_name()}, {os.cpu_count()} CPUs; NLU {args.nlu}, encoder {args.encoder}\n")

    with tempfile.TemporaryDirectory(prefix="llmos-support-http-") as tmp:
        work = Path(tmp)
        models = work / "models"
        models.mkdir()
        (models / "support-zh").symlink_to(args.nlu.resolve())
        (models / "e5-zh").symlink_to(args.encoder.resolve())
        intent_checkpoint(args.nlu, models / "intent")
        store = Store(f"sqlite:///{work / 'store.db'}")
        _, owner_key = store.create_user("owner", admin=True)
        keys = [store.create_user(f"customer{i}")[1] for i in range(args.users)]
        store.close()
        desks = {
            "two passes (NLU + E5)": [],
            "one pass (NLU vector as query)": ["--support-encoder", "support-zh"],
        }

        with server("setup", work, owner_key, []) as srv:
            call(srv, "/v1/apps/support/kbs", {"name": "faq"})
            entries = [
                {"question": p.question, "answer": p.answer, "tags": list(p.tags)}
                for p in faq_pairs
            ]
            call(srv, "/v1/apps/support/kbs/faq/entries", {"entries": entries})
            req = _patch(srv, "/v1/apps/support/kbs/faq", {"public": True})
            print(f"knowledge base owner/faq: {len(entries)} entries, public: {req['public']}\n")

        if not args.skip_latency:
            print(f"## latency ({args.seconds} s per run, {len(texts)} messages cycled)\n")
            with contextlib.ExitStack() as stack:
                running = {
                    desk: stack.enter_context(server(desk, work, owner_key, flags, f"desk{i}"))
                    for i, (desk, flags) in enumerate(desks.items())
                }
                latency(running, work, texts, args)

        if args.chat_seconds <= 0:
            return
        print(f"## reliability: {args.users} customers for {args.chat_seconds} s, then SIGKILL\n")
        with server("chat", work, owner_key, []) as srv:
            statuses, acked, secs = chat(srv, keys, faq, intents, args)
            before = snapshot(srv, keys)
            srv.proc.kill()
            srv.proc.wait()
        n = sum(statuses.values())
        fives = sum(v for k, v in statuses.items() if k >= 500)
        print(
            f"- {n} requests in {secs:.1f} s ({n / secs:.1f}/s); statuses {dict(statuses)}; "
            f"5xx: {fives}"
        )
        stored_ok = all(
            sum(1 for role, _ in before["conversations"][c][1] if role == "customer") >= k
            for c, k in acked.items()
        )
        print(
            f"- conversations {len(before['conversations'])}, turns "
            f"{sum(len(t) for _, t in before['conversations'].values())}, tickets "
            f"{len(before['tickets'])}, entries {len(before['entries'])}; every answered "
            f"message stored: {stored_ok}"
        )
        with server("restarted", work, owner_key, []) as srv:
            after = snapshot(srv, keys)
            same = after == before
            resumed = 0
            bot = [(c, st) for c, (st, _) in before["conversations"].items() if st == "bot"]
            owners = {}
            for key in keys:
                for c in call(srv, "/v1/apps/support/conversations", key=key)["conversations"]:
                    owners[c["id"]] = key
            for c, _ in bot:
                out = call(srv, MESSAGES, {"conversation_id": c, "text": "谢谢"}, key=owners[c])
                resumed += out["conversation_id"] == c
        print(
            f"- after SIGKILL and restart: everything equal: {same}; "
            f"{resumed} of {len(bot)} bot conversations took one more message"
        )
        if fives or not same or not stored_ok or resumed != len(bot):
            sys.exit(1)


def _patch(srv: LiveServer, path: str, body: dict) -> dict:
    import urllib.request

    req = urllib.request.Request(
        f"{srv.url}{path}",
        data=json.dumps(body).encode(),
        method="PATCH",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {srv.key}"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


if __name__ == "__main__":
    main()
