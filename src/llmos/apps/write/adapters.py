"""Users' continuation adapters: a LoRA adapter of the served GPT trained on the user's own
documents, so that continuations read like the user's writing.

An adapter is a store row (:class:`~llmos.store.documents.WriteAdapters`: name, base model,
status ``training`` / ``ready`` / ``failed``, metrics) and a run directory under the server's
adapters directory, ``<adapters>/<user id>/<name>/``, whose ``checkpoint/`` is the PEFT adapter
(:mod:`llmos.models.lora`) once trained. Training goes through the shared loop
(:func:`llmos.train.adapter.train_adapter`) with exact resume, so a job cut off by a crash
picks up at its last checkpoint. Every method takes the caller's user id: one user's documents
are never trained on, and one user's adapter never decodes, for another.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmos.errors import LlmosError
from llmos.jobs import JobCancelled, JobContext, register_kind
from llmos.models.lora import LoraConfig
from llmos.store.db import Store, database_url
from llmos.store.documents import Adapter, DocumentsError, WriteAdapters, WriteDocuments
from llmos.train.adapter import AdapterRun, train_adapter

JOB_KIND = "write.adapter"
PRIVATE_INFO = ("base_path", "root")  # server paths: kept in the row, never answered
DEFAULT_STEPS = 300  # batch 8 x 128 tokens: ~307k tokens, 2-3 minutes for gpt-zh on 2 cores
MAX_STEPS = 5_000


class UserAdapters:
    """The adapters of every user of one store, their files under ``root``."""

    def __init__(self, store: Store, root: Path) -> None:
        self.rows = WriteAdapters(store)
        self.documents = WriteDocuments(store)
        self.root = Path(root)

    def run_dir(self, adapter: Adapter) -> Path:
        return self.root / adapter.path

    def create(self, user: int, name: str, base: str, base_path: Path, steps: int) -> Adapter:
        """Record a new adapter (status ``training``) of the served model ``base`` (its
        checkpoint at ``base_path``); the caller then runs :meth:`train` (as a job)."""
        if not 1 <= steps <= MAX_STEPS:
            raise DocumentsError(f"steps must be 1-{MAX_STEPS}, got {steps}")
        if not self.documents.revision(user)[0]:
            raise DocumentsError(
                "you have no documents to learn your style from: upload some first "
                "(POST /v1/apps/write/documents)"
            )
        info = {"base_path": str(base_path), "root": str(self.root), "steps": steps}
        row = self.rows.create(user, name, base, f"{user}/{name.strip()}", info)
        shutil.rmtree(self.run_dir(row), ignore_errors=True)  # a deleted namesake's leftovers
        return row

    def train(
        self,
        user: int,
        name: str,
        *,
        resume: bool = True,
        on_step: Callable[[int, int], None] | None = None,
        num_threads: int | None = None,
    ) -> dict[str, Any]:
        """Train the adapter on the user's documents now (resuming a cut-off run); marks it
        ``ready`` with its metrics, or ``failed`` with the error. Returns the metrics."""
        row = self.rows.get(user, name)
        if row is None:
            raise DocumentsError(f"no adapter {name!r}")
        texts = [d.text for d in self.documents.list(user)]
        run = AdapterRun(
            lora=LoraConfig(),
            max_steps=int(row.info.get("steps", DEFAULT_STEPS)),
            num_threads=num_threads,
            progress=False,
        )
        try:
            result = train_adapter(
                row.info["base_path"],
                texts,
                self.run_dir(row),
                run,
                resume=resume,
                on_step=on_step,
            )
        except LlmosError as e:
            self.rows.set_status(user, name, "failed", {"error": str(e)})
            raise
        summary = result.summary()
        self.rows.set_status(user, name, "ready", summary | {"documents": len(texts)})
        return summary

    def fail(self, user: int, name: str, error: str) -> None:
        if self.rows.get(user, name) is not None:
            self.rows.set_status(user, name, "failed", {"error": error})

    def ready(self, user: int, name: str | None, base: str) -> Adapter | None:
        """The user's adapter ``name`` (or, with None, their newest ready one) over ``base``;
        None when they have none. A named adapter that is not ready, or is over another
        base, is a DocumentsError saying so."""
        if name is None:
            found = [a for a in self.rows.list(user) if a.status == "ready" and a.base == base]
            return found[-1] if found else None
        row = self.rows.get(user, name)
        if row is None:
            raise DocumentsError(f"no adapter {name!r}")
        if row.status != "ready":
            raise DocumentsError(f"adapter {name!r} is {row.status}, not ready")
        if row.base != base:
            raise DocumentsError(f"adapter {name!r} adapts {row.base!r}, not {base!r}")
        return row

    def checkpoint(self, adapter: Adapter) -> Path:
        return self.run_dir(adapter) / "checkpoint"

    @staticmethod
    def key(adapter: Adapter) -> str:
        """The adapter's name inside the served model: unique per trained adapter (a deleted
        adapter's id may come back in SQLite; its creation time does not)."""
        return f"a{adapter.id}_{int(adapter.created_at.timestamp() * 1e6)}"

    def remove(self, user: int, name: str) -> bool:
        row = self.rows.remove(user, name)
        if row is None:
            return False
        shutil.rmtree(self.run_dir(row), ignore_errors=True)
        return True


def run_adapter_job(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """The ``write.adapter`` job (a worker runs it): train the user's adapter ``params["name"]``
    on their documents. A later attempt (the worker died) resumes the run from its last
    checkpoint; a cancel stops it at the next step and marks the adapter failed."""
    name = str(params.get("name", ""))
    store = Store(database_url())  # the worker's store (LLMOS_DATABASE_URL)
    try:
        row = WriteAdapters(store).get(ctx.user_id, name)
        if row is None:
            raise DocumentsError(f"no adapter {name!r} (deleted before it trained?)")
        adapters = UserAdapters(store, Path(row.info["root"]))

        def on_step(step: int, total: int) -> None:
            ctx.progress(step / total, f"step {step}/{total}")
            if ctx.cancelled():
                adapters.fail(ctx.user_id, name, "cancelled")
                raise JobCancelled

        ctx.log(f"training adapter {name!r} of {row.base} (attempt {ctx.attempt})")
        try:
            summary = adapters.train(ctx.user_id, name, resume=True, on_step=on_step)
        except JobCancelled:
            raise
        except Exception as e:  # the adapter says why it is not ready (LlmosError: said)
            if not isinstance(e, LlmosError):
                adapters.fail(ctx.user_id, name, f"{type(e).__name__}: {e}")
            raise
        ctx.log(
            f"held-out perplexity: base {summary['base_perplexity']:.1f}, "
            f"adapter {summary['perplexity']:.1f}"
        )
        return {"adapter": name, **summary}
    finally:
        store.close()


register_kind(JOB_KIND, f"{__name__}:run_adapter_job")
