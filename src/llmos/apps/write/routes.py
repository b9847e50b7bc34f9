"""``/v1/apps/write``: the writing assistant over HTTP.

``POST /correct`` corrects texts with a served spelling model (``--write-model``, default
``csc-zh``) through its micro-batcher, under the caller's own dictionary;
``GET|PUT|POST /dictionary`` and ``DELETE /dictionary/{term}`` read and change that
dictionary. No route reads or writes another user's dictionary.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from llmos.apps.write import schemas as s
from llmos.apps.write.edits import apply_edits
from llmos.apps.write.service import WriteService
from llmos.errors import LlmosError
from llmos.serve.deps import ApiError, ServerDep, UserDep, check_texts, require, submit
from llmos.serve.operations import CorrectOp, TextBatch

router = APIRouter(prefix="/v1/apps/write", tags=["write"])


def service(srv: Any) -> WriteService:
    write = getattr(srv, "write", None)
    if write is None:
        raise ApiError(503, "not_ready", "the writing assistant is not running")
    return write


async def call(fn: Any, *args: Any) -> Any:
    """A service method in a worker thread; a refused change is a 422."""
    try:
        return await run_in_threadpool(fn, *args)
    except LlmosError as e:
        raise ApiError(422, "invalid_request", str(e)) from None


@router.post("/correct", response_model=s.CorrectOut)
async def correct(body: s.CorrectIn, request: Request, srv: ServerDep, user: UserDep) -> Any:
    """Spelling edits of each text (the model's, then the caller's dictionary's) and the text
    with them applied."""
    write = service(srv)
    model = body.model or srv.settings.write_model
    if body.model is None and model not in srv.registry.models:
        raise ApiError(  # 404 as for any model the server lacks, saying how to build this one
            404,
            "no_model",
            f"the writing assistant's spelling model {model!r} is not served (build it with "
            "`llmos setup --with csc-zh`, or name another with --write-model)",
        )
    require(srv.registry.entry(model), "correct")
    check_texts(srv, body.texts)
    op = CorrectOp(body.threshold)
    found = await submit(request, srv, model, op, TextBatch(body.texts), len(body.texts))

    def edit_all() -> list[dict[str, Any]]:
        out = []
        for text, corrections in zip(body.texts, found, strict=True):
            edits = write.edits(user.id, text, corrections)
            out.append(
                {
                    "text": text,
                    "corrected": apply_edits(text, edits),
                    "edits": [e.as_json() for e in edits],
                }
            )
        return out

    return {"model": model, "results": await run_in_threadpool(edit_all)}


def _dictionary(write: WriteService, user: int) -> dict[str, Any]:
    entries = write.entries(user)
    return entries | {"size": len(entries["protect"]) + len(entries["pairs"])}


@router.get("/dictionary", response_model=s.DictionaryOut)
async def get_dictionary(srv: ServerDep, user: UserDep) -> Any:
    """The caller's dictionary."""
    return await call(_dictionary, service(srv), user.id)


@router.put("/dictionary", response_model=s.DictionaryOut)
async def put_dictionary(body: s.DictionaryIn, srv: ServerDep, user: UserDep) -> Any:
    """Replace the caller's dictionary (all or none)."""
    write = service(srv)
    await call(write.put, user.id, body.protect, body.pairs, True)
    return await call(_dictionary, write, user.id)


@router.post("/dictionary", response_model=s.DictionaryOut)
async def add_to_dictionary(body: s.DictionaryIn, srv: ServerDep, user: UserDep) -> Any:
    """Add entries to the caller's dictionary (an existing term takes the new form)."""
    write = service(srv)
    await call(write.put, user.id, body.protect, body.pairs, False)
    return await call(_dictionary, write, user.id)


@router.delete("/dictionary/{term}", status_code=204)
async def delete_term(term: str, srv: ServerDep, user: UserDep) -> None:
    """Remove one term (protected or a wrong form) from the caller's dictionary."""
    if not await call(service(srv).remove, user.id, [term]):
        raise ApiError(404, "not_found", f"no term {term!r} in your dictionary")
