"""The demo knowledge bases: the packaged chatterbot-corpus QA pairs (``llmos data prepare``
writes them to ``tasks/qa-zh.jsonl`` and ``tasks/qa-en.jsonl``), as ``faq-zh`` and ``faq-en``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from llmos.apps.support.local import PipelineEmbedder
from llmos.apps.support.service import SupportService
from llmos.errors import DataError, LlmosError
from llmos.paths import data_dir, llmos_home
from llmos.store.db import Store
from llmos.store.kb import FaqPair

log = logging.getLogger("llmos.apps.support")
DEMO_KBS = {"faq-zh": "qa-zh.jsonl", "faq-en": "qa-en.jsonl"}


def demo_pairs(file: str) -> list[FaqPair]:
    """The QA pairs of a prepared file, each tagged with its chatterbot category."""
    path = data_dir() / "tasks" / file
    if not path.is_file():
        raise DataError(f"{path} not found: run `llmos data prepare` first")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [FaqPair(r["question"], r["answer"], tags=(r["category"],)) for r in rows]


def load_demo(service: SupportService, owner: int) -> dict[str, int]:
    """Create and fill the demo knowledge bases the owner lacks; entries added per name."""
    have = {kb.name for kb in service.list_kbs(owner)}
    added = {}
    for name, file in DEMO_KBS.items():
        if name in have:
            continue
        pairs = demo_pairs(file)
        service.create_kb(owner, name)
        added[name] = len(service.add(owner, name, pairs))
        log.info("demo knowledge base %r: %d FAQ pairs", name, added[name])
    return added


def setup_demo(user: str, encoder: str | Path) -> dict[str, int]:
    """``llmos setup --demo-user``'s part: the demo knowledge bases for ``user``, searched with
    ``encoder`` (the served ``e5-zh``), indexed where the server looks for them."""
    store = Store()
    try:
        owner = store.user(user)
        if owner is None:
            raise LlmosError(f"no user named {user!r}")
        service = SupportService(
            store, PipelineEmbedder(encoder), llmos_home() / "apps" / "support"
        )
        return load_demo(service, owner.id)
    finally:
        store.close()
