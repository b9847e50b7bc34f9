"""``llmos support kb ...`` and ``llmos support ask``: the customer-service app's knowledge
bases and its desk, from the command line.

Each command acts for one user (``--user NAME``, created with ``llmos users create``) on the
store the server uses ($LLMOS_DATABASE_URL or the SQLite file) and embeds with an encoder
checkpoint (``--encoder``, default ``runs/e5-zh``, which ``llmos setup`` builds; the server's
``--support-encoder`` should name the same model, so both share the saved indexes).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from llmos.cli.flags import Subcommands
from llmos.errors import LlmosError

if TYPE_CHECKING:
    from llmos.apps.support.service import SupportService


def add_support(sub: Subcommands) -> None:
    """``llmos support kb ACTION``."""
    sp = sub.add_parser(
        "support", help="the customer-service app: FAQ knowledge bases and their search"
    ).add_subparsers(dest="group", required=True)
    kb = sp.add_parser("kb", help="a user's FAQ knowledge bases").add_subparsers(
        dest="action", required=True
    )

    def action(name: str, help: str) -> argparse.ArgumentParser:
        p = kb.add_parser(name, help=help)
        p.add_argument("--user", required=True, help="the owner (llmos users create NAME)")
        p.add_argument(
            "--encoder", default="runs/e5-zh", help="embedding checkpoint (default runs/e5-zh)"
        )
        p.add_argument(
            "--models-dir",
            type=Path,
            default=Path("runs"),
            help="where the models a knowledge base may name as its encoder are, as the "
            "server's --models-dir (default runs)",
        )
        p.set_defaults(func=_kb)
        return p

    action("create", "create an empty knowledge base").add_argument("name")
    action("list", "list the user's knowledge bases")
    p = action("add", "add the FAQ pairs of a JSONL, CSV or TSV file (all or none)")
    p.add_argument("name")
    p.add_argument("file", type=Path)
    p = action("entries", "print the entries as JSONL")
    p.add_argument("name")
    p = action("remove", "delete entries by id")
    p.add_argument("name")
    p.add_argument("ids", nargs="+", type=int)
    action("delete", "delete a knowledge base and its entries").add_argument("name")
    p = action(
        "encoder",
        "search a knowledge base with its own embedding model, named as the server names it "
        "(e.g. one fine-tuned on its wordings); without MODEL, the default encoder again",
    )
    p.add_argument("name")
    p.add_argument("model", nargs="?")
    p = action("search", "the entries that best answer a query")
    p.add_argument("name")
    p.add_argument("query")
    p.add_argument("--k", type=int, default=5)
    action("demo", "load the packaged chatterbot QA pairs as faq-zh and faq-en")
    p = action(
        "pairs",
        "write the entries as retrieval training pairs (OUT/train.jsonl, OUT/valid.jsonl) for "
        "`llmos finetune --config configs/finetune/embed-kb.yaml data.dataset=OUT`",
    )
    p.add_argument("name")
    p.add_argument("--out", type=Path, required=True, help="directory to write")
    p = action("share", "let other users ask it (--public/--private) and name its agents")
    p.add_argument("name")
    p.add_argument("--public", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--agents", help="comma-separated user names that serve its human queue")

    ask = sp.add_parser(
        "ask", help="send a message to a knowledge base's desk and print the reply (as --user)"
    )
    ask.add_argument("kb", help="OWNER/NAME (or the conversation with --conversation)")
    ask.add_argument("text")
    ask.add_argument("--user", required=True, help="the customer (llmos users create NAME)")
    ask.add_argument("--conversation", type=int, help="continue this conversation of yours")
    ask.add_argument("--encoder", default="runs/e5-zh", help="embedding checkpoint")
    ask.add_argument(
        "--models-dir",
        type=Path,
        default=Path("runs"),
        help="where a knowledge base's own encoder is (as `support kb encoder`; default runs)",
    )
    ask.add_argument(
        "--sentiment-zh",
        default="runs/sentiment-zh/checkpoint",
        help="Chinese sentiment checkpoint (skipped when missing)",
    )
    ask.add_argument(
        "--sentiment-en", default=None, help="English sentiment checkpoint (default: none)"
    )
    ask.add_argument(
        "--nlu-zh",
        default="runs/support-zh/checkpoint",
        help="Chinese multitask checkpoint: intent, slots, sentiment (skipped when missing)",
    )
    ask.add_argument(
        "--nlu-en",
        default="runs/support-en/checkpoint",
        help="English multitask checkpoint: intent, slots, sentiment (skipped when missing)",
    )
    ask.add_argument(
        "--domain", type=Path, default=None, help="domain file (default: the packaged demo)"
    )
    ask.set_defaults(func=_ask)


def _kb(args: argparse.Namespace) -> int:
    from llmos.apps.support.local import PipelineEmbedder, catalog_encoders
    from llmos.apps.support.service import SupportService
    from llmos.paths import llmos_home
    from llmos.store.db import Store

    store = Store()
    try:
        user = store.user(args.user)
        if user is None:
            raise LlmosError(f"no user named {args.user!r} (see `llmos users list`)")
        needs_encoder = args.action in ("add", "search", "remove", "demo", "encoder")
        if needs_encoder and not (Path(args.encoder) / "config.json").is_file():
            raise LlmosError(
                f"{args.encoder}: no encoder checkpoint (build runs/e5-zh with `llmos setup`, "
                "or pass --encoder)"
            )
        embed = PipelineEmbedder(args.encoder) if needs_encoder else _no_encoder
        svc = SupportService(
            store,
            embed,
            llmos_home() / "apps" / "support",
            encoders=catalog_encoders(args.models_dir),
        )
        _run(svc, user.id, args)
    finally:
        store.close()
    return 0


class _NoEncoder:
    """The embedder of the commands that embed nothing (create, list, entries, delete)."""

    name = "none"

    def __call__(self, texts: list[str], kind: str) -> None:  # pragma: no cover - never called
        raise AssertionError("this command embeds nothing")


_no_encoder = _NoEncoder()


def _run(svc: SupportService, owner: int, args: argparse.Namespace) -> None:
    if args.action == "create":
        svc.create_kb(owner, args.name)
        print(f"created knowledge base {args.name!r}")
    elif args.action == "list":
        for kb in svc.list_kbs(owner):
            encoder = f"  encoder {kb.encoder}" if kb.encoder else ""
            print(f"{kb.name:<30} {kb.entries:>7} entries  revision {kb.revision}{encoder}")
    elif args.action == "add":
        ids = svc.add_file(owner, args.name, args.file)
        print(f"added {len(ids)} entries to {args.name!r} (ids {ids[0]}-{ids[-1]})")
    elif args.action == "entries":
        for e in svc.entries(owner, args.name):
            row = {
                "id": e.id,
                "question": e.question,
                "answer": e.answer,
                "alternatives": e.alternatives,
                "tags": e.tags,
            }
            print(json.dumps(row, ensure_ascii=False))
    elif args.action == "pairs":
        from llmos.apps.support.faq import kb_pairs
        from llmos.files import atomic_write

        pairs = kb_pairs(svc.entries(owner, args.name))
        if not pairs["train"] or not pairs["valid"]:
            raise LlmosError(
                f"{args.name!r}: too few wordings to train on ({len(pairs['train'])} training "
                f"and {len(pairs['valid'])} validation pairs); validation needs entries with "
                "at least two alternatives"
            )
        args.out.mkdir(parents=True, exist_ok=True)
        for split, rows in pairs.items():
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            atomic_write(args.out / f"{split}.jsonl", text)
        print(
            f"{args.out}: {len(pairs['train'])} training and {len(pairs['valid'])} validation pairs"
        )
    elif args.action == "remove":
        n = svc.remove(owner, args.name, args.ids)
        print(f"removed {n} of {len(args.ids)} entries from {args.name!r}")
    elif args.action == "delete":
        svc.delete_kb(owner, args.name)
        print(f"deleted knowledge base {args.name!r}")
    elif args.action == "search":
        for rank, h in enumerate(svc.search(owner, args.name, args.query, args.k), 1):
            print(
                f"{rank}. [{h.entry}] {h.question}\n   -> {h.answer}\n   "
                f"(score {h.score:.4f}, cosine {h.similarity:.3f}, bm25 {h.bm25:.2f})"
            )
    elif args.action == "encoder":
        info = svc.set_encoder(owner, args.name, args.model)
        print(
            f"{args.name!r} searches with {info.encoder!r}"
            if info.encoder
            else f"{args.name!r} searches with the default encoder"
        )
    elif args.action == "share":
        agents = [a.strip() for a in args.agents.split(",") if a.strip()] if args.agents else None
        info, names = svc.share(owner, args.name, args.public, agents)
        who = ", ".join(names) or "none"
        print(f"{args.name!r}: {'public' if info.public else 'private'}; agents: {who}")
    else:
        from llmos.apps.support.demo import load_demo

        added = load_demo(svc, owner)
        for name, n in added.items():
            print(f"{name}: {n} FAQ pairs")
        if not added:
            print("the demo knowledge bases exist already")


def _ask(args: argparse.Namespace) -> int:
    from llmos.apps.support.domain import demo_domain, read_domain
    from llmos.apps.support.local import (
        PipelineClassifier,
        PipelineEmbedder,
        PipelineNlu,
        catalog_encoders,
    )
    from llmos.apps.support.service import SupportService
    from llmos.paths import llmos_home
    from llmos.store.db import Store

    store = Store()
    try:
        user = store.user(args.user)
        if user is None:
            raise LlmosError(f"no user named {args.user!r} (see `llmos users list`)")
        if not (Path(args.encoder) / "config.json").is_file():
            raise LlmosError(f"{args.encoder}: no encoder checkpoint (pass --encoder)")
        svc = SupportService(
            store,
            PipelineEmbedder(args.encoder),
            llmos_home() / "apps" / "support",
            classify=PipelineClassifier({"zh": args.sentiment_zh, "en": args.sentiment_en}),
            nlu=PipelineNlu({"zh": args.nlu_zh, "en": args.nlu_en}),
            domain=read_domain(args.domain) if args.domain else demo_domain(),
            encoders=catalog_encoders(args.models_dir),
        )
        kb = None if args.conversation else args.kb
        r = svc.message(user.id, args.text, kb=kb, conversation=args.conversation)
        print(r.reply)
        mood = f", negative {r.sentiment['negative']:.2f}" if r.sentiment else ""
        ticket = f", ticket #{r.ticket_id}" if r.ticket_id else ""
        where = f"conversation {r.conversation_id}, {r.language}{mood}{ticket}"
        if r.intent:
            slots = ", ".join(f"{x['name']}={x['value']}" for x in r.slots)
            where += f"; intent {r.intent['label']} ({r.intent['score']:.2f})"
            where += f"; slots {slots}" if slots else ""
        print(f"[{r.action}: {r.reason}; {where}]")
    finally:
        store.close()
    return 0
