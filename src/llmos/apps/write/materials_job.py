"""The writing assistant's shared material index, built as a background job.

``llmos setup``'s ``materials`` step embeds a sample of the shared corpus (2,500 documents,
about 2 minutes on 2 CPU cores: :func:`~llmos.apps.write.suggestions.setup_materials`). The
demo needs none of it to start, so ``llmos setup --background materials --demo-user NAME``
(what ``make run`` runs) leaves the step to a durable job of kind ``write.materials``
(:mod:`llmos.jobs`), owned by the demo user, which a worker process (``llmos serve --workers
1``, what ``make run`` starts, or ``llmos worker``) runs while the demo is already served.
:func:`queue_materials` queues it unless the index is built (by the same encoder) or such a
job is queued or running.

The job is :func:`~llmos.apps.write.suggestions.setup_materials` itself, with a progress
report after each batch of passages embedded and a look for a cancellation there. The index
is written as a whole once every passage is embedded (:meth:`~llmos.apps.write.materials.
MaterialIndex.save` swaps the directory into place), so a cancelled, failed or killed job
writes nothing. A running server reads the new index at its next suggestion
(:meth:`~llmos.apps.write.suggestions.Materials.shared_index` watches its ``meta.json``);
until then it suggests from the users' documents only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmos.apps.write.materials import META_FILE
from llmos.apps.write.suggestions import setup_materials
from llmos.checkpoint.digest import weights_digest
from llmos.jobs import JobContext, register_kind, submit_once

JOB_KIND = "write.materials"


def encoder_name(encoder: str | Path) -> str:
    """How an index embedded by ``encoder`` names it in its ``meta.json``: as the embedder
    names itself (the weights digest, else the resolved path; ``PipelineEmbedder.name``)."""
    return weights_digest(encoder) or str(Path(encoder).resolve())


def indexed_with(out: str | Path) -> str | None:
    """The encoder named by the material index saved in ``out``; None when there is no
    complete, readable index there."""
    try:
        meta = json.loads((Path(out) / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    encoder = meta.get("encoder") if isinstance(meta, dict) else None
    return encoder if isinstance(encoder, str) else None


def queue_materials(
    out: str | Path,
    encoder: str | Path,
    user: str,
    max_docs: int | None,
    url: str | None = None,
) -> tuple[dict[str, Any] | None, str]:
    """Queue the building of the shared material index into ``out`` (``max_docs`` documents
    of the corpus, embedded with ``encoder``) as a job of the store user ``user`` (``llmos
    setup --background materials``), unless the index there was embedded by ``encoder``
    already or such a job is queued or running. Returns the job (the new or the pending one;
    None when there is nothing to do) and what was done, in words.

    Raises:
        LlmosError: no store user ``user`` to own the job.
    """
    out, encoder = Path(out).resolve(), Path(encoder).resolve()
    if not (encoder / "config.json").is_file():
        return None, f"no encoder at {encoder} to embed the materials with"
    held = indexed_with(out)
    if held is not None and held == encoder_name(encoder):
        return None, f"{out} is built (embedded by {encoder.name})"
    params = {"out": str(out), "encoder": str(encoder), "max_docs": max_docs}
    job, new = submit_once(
        user,
        JOB_KIND,
        "out",
        str(out),
        lambda jobs, owner: jobs.submit(owner, JOB_KIND, params),
        url,
    )
    if not new:
        return job, f"job {job['id']} ({job['status']}) is building it already"
    sample = f"{max_docs} documents" if max_docs is not None else "the whole corpus"
    replaced = "; it replaces the index there, of another encoder" if held is not None else ""
    return job, f"queued job {job['id']} ({sample} into {out}) for user {user!r}{replaced}"


def run_materials_job(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """The ``write.materials`` job (a worker runs it; see the module docstring).

    Params: ``out`` (the index's directory), ``encoder`` (the checkpoint that embeds the
    passages), ``max_docs`` (the sample's size; None: the whole corpus). Nothing is saved
    before the end, so there is nothing to resume: a later attempt (after a worker died)
    builds the index again from the start, which for setup's sample is about 2 minutes.
    """
    out, encoder = Path(params["out"]), Path(params["encoder"])
    max_docs = params.get("max_docs")
    ctx.log(
        f"building the shared material index {out} with {encoder} "
        f"({max_docs if max_docs is not None else 'all'} documents; attempt {ctx.attempt}"
        f"{', from the start again' if ctx.attempt > 1 else ''})"
    )
    ctx.check_cancelled()
    ctx.progress(0.0, "preparing the shared corpus")

    def on_batch(embedded: int, total: int) -> None:
        ctx.progress(embedded / total, f"embedded {embedded} of {total} passages")
        ctx.log(f"embedded {embedded} of {total} passages")
        ctx.check_cancelled()  # before the next batch, or before the save after the last

    index = setup_materials(out, encoder, max_docs, progress=on_batch)
    ctx.progress(1.0, f"wrote {out}")
    ctx.log(f"wrote {out}: {len(index.documents)} documents, {len(index)} passages")
    return {
        "out": str(out),
        "encoder": index.encoder,
        "version": index.version,
        "documents": len(index.documents),
        "passages": len(index),
    }


register_kind(JOB_KIND, f"{__name__}:run_materials_job")
