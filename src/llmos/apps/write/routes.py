"""``/v1/apps/write``: the writing assistant over HTTP.

``POST /correct`` corrects texts with a served spelling model (``--write-model``, default
``csc-zh``) through its micro-batcher, under the caller's own dictionary;
``GET|PUT|POST /dictionary`` and ``DELETE /dictionary/{term}`` read and change that
dictionary. ``/documents`` (CRUD) holds the caller's own writing; ``/adapters`` trains a LoRA
adapter of the served GPT (``--write-generator``, default ``gpt-zh``) on those documents as a
background job, lists and deletes them; ``POST /continue`` continues a text with the caller's
adapter (server-sent events by default); ``POST /suggest`` finds material for a paragraph in the
shared corpus and the caller's documents (``--write-encoder``, default ``e5-zh``). No route
reads or writes another user's dictionary, documents or adapters.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from starlette.concurrency import run_in_threadpool

from llmos.apps.write import schemas as s
from llmos.apps.write.adapters import JOB_KIND, PRIVATE_INFO
from llmos.apps.write.edits import apply_edits
from llmos.apps.write.service import WriteService
from llmos.errors import LlmosError
from llmos.serve.deps import ApiError, ServerDep, UserDep, check_texts, require, submit
from llmos.serve.operations import AdapterRef, CorrectOp, GenerateOp, Prompt, TextBatch
from llmos.serve.routes.inference import generation_options, stream_generation

router = APIRouter(prefix="/v1/apps/write", tags=["write"])
DocId = Annotated[int, Path(ge=1, le=2**31 - 1, description="a document id")]
AdapterName = Annotated[str, Path(pattern=r"^[\w-]{1,64}$", description="an adapter name")]


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
    if body.lang == "en":
        return await _correct_local(body, srv, user.id, "english")
    model = body.model or srv.settings.write_model
    if body.model is None and model not in srv.registry.models:
        return await _correct_local(body, srv, user.id, "chinese")
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


LOCAL = {  # correctors the service builds itself: the name answered, how one is missing
    "english": ("english-speller", "no English speller here: {e}"),
    "chinese": (
        "classic-zh",
        "the writing assistant's spelling model {model!r} is not served (build it with "
        "`llmos setup --with csc-zh`, or name another with --write-model), and the classic "
        "corrector that stands in for it cannot be built here: {e}",
    ),
}


async def _correct_local(body: s.CorrectIn, srv: Any, user: int, which: str) -> dict[str, Any]:
    """Texts through a corrector the service builds from the prepared data on first use
    (``english``: the English speller; ``chinese``: the classic confusion-set + n-gram
    corrector, when the default spelling model is not served), under the caller's
    dictionary."""
    if body.model is not None or body.threshold is not None:
        what = "lang en" if which == "english" else "the classic corrector (no spelling model)"
        raise ApiError(422, "invalid_request", f"{what} takes no model or threshold")
    check_texts(srv, body.texts)
    write = service(srv)
    name, missing = LOCAL[which]
    try:
        corrector = await run_in_threadpool(getattr(write, which))
    except LlmosError as e:  # the server's data, not the caller's request
        detail = missing.format(e=e, model=srv.settings.write_model)
        raise ApiError(404, "no_model", detail) from None
    edits = await call(write.local_edits, user, corrector, body.texts)
    return {
        "model": name,
        "results": [
            {"text": t, "corrected": apply_edits(t, e), "edits": [x.as_json() for x in e]}
            for t, e in zip(body.texts, edits, strict=True)
        ],
    }


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


@router.delete("/dictionary/{term:path}", status_code=204)
async def delete_term(term: str, srv: ServerDep, user: UserDep) -> None:
    """Remove one term (protected or a wrong form) from the caller's dictionary."""
    if not await call(service(srv).remove, user.id, [term]):
        raise ApiError(404, "not_found", f"no term {term!r} in your dictionary")


# --- documents -----------------------------------------------------------------------------


@router.get("/documents", response_model=list[s.DocumentSummary])
async def list_documents(srv: ServerDep, user: UserDep) -> Any:
    """The caller's documents (without their text)."""
    docs = await call(service(srv).documents.list, user.id)
    return [d.summary() for d in docs]


@router.post("/documents", status_code=201, response_model=s.DocumentOut)
async def add_document(body: s.DocumentIn, srv: ServerDep, user: UserDep) -> Any:
    """Upload a document: searched for material and learned from by your adapters."""
    doc = await call(service(srv).documents.add, user.id, body.title, body.text)
    return doc.summary() | {"text": doc.text}


async def _own_document(srv: Any, user: int, doc_id: int) -> Any:
    doc = await call(service(srv).documents.get, user, doc_id)
    if doc is None:  # another user's document does not exist for this one
        raise ApiError(404, "not_found", f"no document {doc_id}")
    return doc


@router.get("/documents/{doc_id}", response_model=s.DocumentOut)
async def get_document(doc_id: DocId, srv: ServerDep, user: UserDep) -> Any:
    doc = await _own_document(srv, user.id, doc_id)
    return doc.summary() | {"text": doc.text}


@router.put("/documents/{doc_id}", response_model=s.DocumentOut)
async def update_document(
    doc_id: DocId, body: s.DocumentPatch, srv: ServerDep, user: UserDep
) -> Any:
    """Change a document's title and/or text."""
    await _own_document(srv, user.id, doc_id)
    doc = await call(service(srv).documents.update, user.id, doc_id, body.title, body.text)
    return doc.summary() | {"text": doc.text}


@router.delete("/documents/{doc_id}", status_code=204)
async def delete_document(doc_id: DocId, srv: ServerDep, user: UserDep) -> Response:
    if not await call(service(srv).documents.remove, user.id, doc_id):
        raise ApiError(404, "not_found", f"no document {doc_id}")
    return Response(status_code=204)


# --- continuation --------------------------------------------------------------------------


def _generator(srv: Any, model: str | None) -> str:
    name = model or srv.settings.write_generator
    if model is None and name not in srv.registry.models:
        raise ApiError(
            404,
            "no_model",
            f"the writing assistant's generator {name!r} is not served (`llmos setup` builds "
            "gpt-zh; or name another with --write-generator)",
        )
    require(srv.registry.entry(name), "generate")
    return name


@router.post(
    "/continue",
    response_model=s.ContinueOut,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def continue_text(body: s.ContinueIn, request: Request, srv: ServerDep, user: UserDep) -> Any:
    """Continue the caller's text with the served GPT and their adapter (the named one, else
    their newest ready one over that model; ``use_adapter: false`` for the base alone). With
    ``stream`` (the default) the answer is server-sent events as ``/v1/generate``'s, the
    ``done`` event naming the adapter used."""
    write = service(srv)
    model = _generator(srv, body.model)
    check_texts(srv, [body.text[-srv.settings.max_chars :]], "text")
    if not body.text.strip():
        raise ApiError(422, "invalid_request", "text is blank: give some text to continue")
    options = generation_options(body, srv)  # type: ignore[arg-type]
    adapter = None
    if body.use_adapter:
        adapter = await call(write.adapters.ready, user.id, body.adapter, model)
    ref = (
        None
        if adapter is None
        else AdapterRef(write.adapters.key(adapter), str(write.adapters.checkpoint(adapter)))
    )
    name = None if adapter is None else adapter.name
    # The model's window takes the text's end: generation truncates on the left anyway.
    prompt = body.text[-srv.settings.max_chars :]
    if body.stream:
        if body.num_beams > 1:
            raise ApiError(422, "invalid_request", "streaming decodes one sequence: num_beams 1")
        return await stream_generation(
            request, srv, model, prompt, options, raw=True, adapter=ref, done={"adapter": name}
        )
    op = GenerateOp.of(options, True, None if body.seed is None else id(body))
    text = await submit(request, srv, model, op, Prompt(prompt, ref), 1)
    return {"model": model, "adapter": name, "text": text}


# --- adapters ------------------------------------------------------------------------------


def _adapter_json(adapter: Any, job: str | None = None) -> dict[str, Any]:
    out = adapter.summary()
    out["info"] = {k: v for k, v in out["info"].items() if k not in PRIVATE_INFO}
    return out | {"job": job if job is not None else out["info"].get("job")}


@router.get("/adapters", response_model=list[s.AdapterOut])
async def list_adapters(srv: ServerDep, user: UserDep) -> Any:
    """The caller's adapters and their status (training, ready, failed)."""
    return [_adapter_json(a) for a in await call(service(srv).adapters.rows.list, user.id)]


@router.post("/adapters", status_code=202, response_model=s.AdapterOut)
async def train_adapter(body: s.AdapterIn, srv: ServerDep, user: UserDep) -> Any:
    """Train a new adapter on the caller's documents, as a background job: answered at once
    with the adapter (status ``training``) and its job id (``GET /v1/jobs/{id}``)."""
    write = service(srv)
    model = _generator(srv, body.model)
    base_path = srv.registry.entry(model).path
    adapter = await call(write.adapters.create, user.id, body.name, model, base_path, body.steps)
    job = await start_adapter_job(srv, user.id, adapter.name)
    return _adapter_json(adapter, job)


@router.delete("/adapters/{name}", status_code=204)
async def delete_adapter(name: AdapterName, srv: ServerDep, user: UserDep) -> Response:
    if not await call(service(srv).adapters.remove, user.id, name):
        raise ApiError(404, "not_found", f"no adapter {name!r}")
    return Response(status_code=204)


async def start_adapter_job(srv: Any, user: int, name: str) -> str | None:
    """Queue the adapter's training as a background job; its id."""
    jobs = getattr(srv, "jobs", None)
    if jobs is None:
        await call(service(srv).adapters.fail, user, name, "no job workers")
        raise ApiError(503, "not_ready", "this server runs no background jobs")
    job = await run_in_threadpool(jobs.submit, user, JOB_KIND, {"name": name})
    # The adapter remembers its job (a listing after a reload can still follow it).
    await call(service(srv).adapters.rows.add_info, user, name, {"job": str(job["id"])})
    return str(job["id"])


# --- material suggestions --------------------------------------------------------------------


@router.post("/suggest", response_model=s.SuggestOut)
async def suggest(body: s.SuggestIn, srv: ServerDep, user: UserDep) -> Any:
    """Passages for the paragraph ``text``, each with its source: from the shared corpus
    (三国演义, People's Daily, Tang poems, Song ci; ``llmos write materials build``) and from
    the caller's own documents (never another user's), ranked together."""
    write = service(srv)
    encoder = srv.settings.write_encoder
    if encoder not in srv.registry.models:
        raise ApiError(
            404,
            "no_model",
            f"the writing assistant's encoder {encoder!r} is not served (`llmos setup` builds "
            "e5-zh; or name another with --write-encoder)",
        )
    materials = await call(write.materials)
    found = await call(materials.suggest, user.id, body.text, body.k)
    return {"suggestions": [x.as_json() for x in found], "shared": materials.shared is not None}
