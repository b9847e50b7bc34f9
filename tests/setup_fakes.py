"""What ``llmos setup`` and ``llmos data prepare`` leave behind, faked for tests in several
directories (import as ``setup_fakes``: the tests directory is on the import path): finished
outputs of every default step, and the prepared shared corpus of material suggestions."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmos.jobs import Jobs
from llmos.recipes import defaults as S
from llmos.store.db import Store


def fake_outputs(models: Path) -> None:
    """Finished outputs for every default step (as a second `make run` finds them)."""
    for step in S.DEFAULT_STEPS:
        out = S.output_of(step, models)
        if step.kind == "tokenizer":
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"model": {"vocab": {"[PAD]": 0, "a": 1}}}))
        elif step.kind == "materials":
            # The index names its encoder as the embedder does: the weights digest, or (the
            # fake encoder has no weights) its resolved path.
            encoder = models / str(step.init)
            out.mkdir(parents=True, exist_ok=True)
            meta = {"encoder": str(encoder.resolve()), "documents": 2, "rows": 3}
            (out / "meta.json").write_text(json.dumps(meta))
        else:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.json").write_text("{}")


def write_materials(data: Path, docs: list) -> str:
    """The shared corpus as `llmos data prepare` and `prepare_materials` leave it: the data
    manifest, ``materials/documents.jsonl`` and its manifest (for the default poetry, so that
    nothing is downloaded). Returns the documents' sha256."""
    from llmos.data.materials import DEFAULT_POETRY, MANIFEST_VERSION

    (data / "materials").mkdir(parents=True)
    (data / "manifest.json").write_text("{}")  # `llmos data prepare` has run
    body = "".join(json.dumps(asdict(d), ensure_ascii=False) + "\n" for d in docs).encode()
    (data / "materials" / "documents.jsonl").write_bytes(body)
    sha = hashlib.sha256(body).hexdigest()
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "poetry": list(DEFAULT_POETRY),
        "documents": len(docs),
        "sha256": sha,
    }
    (data / "materials" / "manifest.json").write_text(json.dumps(manifest))
    return sha


def queued_jobs(user: str) -> tuple[list[dict[str, Any]], int]:
    """Every job in the local store's table (anyone's), and the id of the store user ``user``:
    what ``llmos setup --demo-user`` left queued."""
    store = Store()
    try:
        jobs = Jobs(store)
        try:
            listed = jobs.list(0, admin=True)
        finally:
            jobs.close()
        return listed, store.user(user).id
    finally:
        store.close()
