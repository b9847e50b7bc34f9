"""``/v1`` inference routes: classify, tag, correct, fill-mask, embed, generate (JSON or server-sent
events), search. Each checks the request against the server's limits and the model's task,
then waits on the model's micro-batcher. A classify or embed request with ``images`` (a CLIP
model's) goes to :mod:`llmos.serve.routes.images`."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from llmos.errors import LlmosError
from llmos.inference.generate import GenerationConfig
from llmos.inference.generator import Completion
from llmos.serve import schemas as s
from llmos.serve.deps import (
    ApiError,
    Server,
    ServerDep,
    UserDep,
    check_texts,
    deadline,
    require,
    submit,
)
from llmos.serve.images import UploadRoute, upload_form
from llmos.serve.operations import (
    AdapterRef,
    ClassifyOp,
    CorrectOp,
    EmbedOp,
    FillMaskOp,
    GenerateOp,
    Query,
    SearchOp,
    StreamJob,
    StreamOp,
    TagOp,
    TextBatch,
)
from llmos.serve.routes import images

router = APIRouter(prefix="/v1", tags=["inference"])
# Routes that take image files as multipart/form-data too (serve/images.py: UploadRoute), in
# this router (below: its /v1 prefix and tags).
uploads = APIRouter(route_class=UploadRoute)
_unique = itertools.count()


def _texts_required(body: s.ClassifyRequest | s.EmbedRequest) -> list[str]:
    if body.texts is None:
        raise ApiError(
            422,
            "invalid_request",
            "texts: Field required (or images, for a CLIP model)",
            param="texts",
        )
    return body.texts


@router.post("/classify", response_model=s.ClassifyResponse)
async def classify(body: s.ClassifyRequest, request: Request, srv: ServerDep, _: UserDep) -> Any:
    """Labels with probabilities for each text (or text pair): by a classifier, or by one built
    on the fly from an encoder plus labels and/or examples (:mod:`llmos.serve.fewshot`); or,
    with ``images`` and ``labels``, each image's by a CLIP model, zero-shot."""
    if body.images is not None:
        return await images.classify_images(body, request, srv)
    texts = _texts_required(body)
    check_texts(srv, texts)
    if body.labels is not None or body.examples is not None:
        if body.texts_b is not None:
            raise ApiError(
                422, "invalid_request", "texts_b (sentence pairs) needs a trained classifier"
            )
        results, method, cached = await srv.on_the_fly.classify(
            request, srv, body.model, texts, body.labels, body.examples, body.method
        )
        return {"model": body.model, "results": results, "method": method, "cached": cached}
    if body.method is not None:
        raise ApiError(
            422, "invalid_request", "method is for a classifier built from labels or examples"
        )
    entry = srv.registry.entry(body.model)
    if entry.task == "clip":
        raise ApiError(
            400,
            "wrong_model",
            f"model {body.model!r} is a CLIP model: it classifies zero-shot, from labels "
            "(with images, or texts)",
        )
    require(entry, "classify")
    if body.texts_b is not None:
        check_texts(srv, body.texts_b, "texts_b")
        if len(body.texts_b) != len(texts):
            raise ApiError(
                422,
                "invalid_request",
                f"texts_b has {len(body.texts_b)} items but texts has {len(texts)}; "
                "give one second text per text",
            )
    op = ClassifyOp(pairs=body.texts_b is not None, long_inputs=body.long_inputs)
    payload = TextBatch(texts, body.texts_b)
    results = await submit(request, srv, body.model, op, payload, len(texts))
    return {"model": body.model, "results": results}


@router.post("/tag", response_model=s.TagResponse)
async def tag(body: s.TagRequest, request: Request, srv: ServerDep, _: UserDep) -> Any:
    """Labelled spans (entities, slots, words) with character offsets, per text."""
    require(srv.registry.entry(body.model), "tag")
    check_texts(srv, body.texts)
    payload = TextBatch(body.texts)
    results = await submit(request, srv, body.model, TagOp(), payload, len(body.texts))
    return {"model": body.model, "results": results}


@router.post("/correct", response_model=s.CorrectResponse)
async def correct(body: s.CorrectRequest, request: Request, srv: ServerDep, _: UserDep) -> Any:
    """Spelling corrections (a character each: offset, original, suggestion) per text."""
    require(srv.registry.entry(body.model), "correct")
    check_texts(srv, body.texts)
    op = CorrectOp(body.threshold)
    results = await submit(request, srv, body.model, op, TextBatch(body.texts), len(body.texts))
    return {"model": body.model, "results": results}


@router.post("/fill-mask", response_model=s.FillMaskResponse)
async def fill_mask(body: s.FillMaskRequest, request: Request, srv: ServerDep, _: UserDep) -> Any:
    """The likeliest tokens behind each ``[MASK]`` of the text."""
    require(srv.registry.entry(body.model), "fill-mask")
    check_texts(srv, [body.text], "text")
    result = await submit(request, srv, body.model, FillMaskOp(body.top_k), body.text, 1)
    if result and isinstance(result[0], dict):  # one mask: the pipeline returns a flat list
        result = [result]
    return {"model": body.model, "results": result}


@uploads.post("/embed", response_model=s.EmbedResponse, openapi_extra=upload_form())
async def embed(body: s.EmbedRequest, request: Request, srv: ServerDep, _: UserDep) -> Any:
    """Sentence embeddings (pooling and normalization default to the model's own); or, with
    ``images``, a CLIP model's image embeddings, in the space its texts embed into. Images come
    in base64 in JSON, or as multipart/form-data ``files`` (with a ``model`` field)."""
    if body.images is not None:
        return await images.embed_images(body, request, srv)
    texts = _texts_required(body)
    entry = srv.registry.entry(body.model)
    require(entry, "embed")
    check_texts(srv, texts)
    if entry.task == "clip" and (body.pooling, body.normalize, body.kind) != (None, None, None):
        raise ApiError(
            422,
            "invalid_request",
            "pooling, normalize and kind: a CLIP model embeds texts its own way (its text "
            "tower's prefix, unit vectors in the image space); leave them out",
        )
    op = EmbedOp(body.pooling, body.normalize, body.kind)
    payload = TextBatch(texts)
    vectors = await submit(request, srv, body.model, op, payload, len(texts))
    return {"model": body.model, "dim": len(vectors[0]), "embeddings": vectors}


@router.post("/search", response_model=s.SearchResponse)
async def search(body: s.SearchRequest, request: Request, srv: ServerDep, _: UserDep) -> Any:
    """The ``k`` documents of an index nearest the query (cosine similarity, best first)."""
    ix = srv.registry.index(body.index)
    check_texts(srv, [body.query], "query")
    query = Query(body.query, body.k)
    hits = await submit(request, srv, ix.model, SearchOp(ix.name), query, 1)
    return {"index": ix.name, "hits": hits}


def generation_options(body: s.GenerateRequest, srv: Server) -> dict[str, Any]:
    if body.max_new_tokens > srv.settings.max_new_tokens:
        raise ApiError(
            422,
            "invalid_request",
            f"max_new_tokens is {body.max_new_tokens}; this server generates at most "
            f"{srv.settings.max_new_tokens}",
        )
    options = body.model_dump(include=set(s.GenerateOptions.model_fields))
    options["stop"] = tuple(options["stop"])
    try:
        GenerationConfig(**options)  # every option checked before the request queues
    except LlmosError as e:
        raise ApiError(422, "invalid_request", str(e)) from None
    return options


@router.get("/generate/defaults", response_model=s.GenerateOptions)
async def generate_defaults(_: UserDep) -> Any:
    """The decoding options a generate request gets when it leaves them out (the console
    starts its form from these)."""
    return s.GenerateOptions()


@router.post(
    "/generate",
    response_model=s.GenerateResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def generate(body: s.GenerateRequest, request: Request, srv: ServerDep, _: UserDep) -> Any:
    """Continue a prompt (or answer an instruction). With ``stream: true`` the answer is
    server-sent events: ``data: {"text": piece}`` as pieces decode, then ``event: done``
    with the whole text (or ``event: error``)."""
    require(srv.registry.entry(body.model), "generate")
    check_texts(srv, [body.prompt], "prompt")
    if not body.prompt.strip():
        raise ApiError(422, "invalid_request", "prompt is blank: give some text to continue")
    options = generation_options(body, srv)
    if body.stream:
        if body.num_beams > 1:
            raise ApiError(422, "invalid_request", "streaming decodes one sequence: num_beams 1")
        return await _stream(body, options, request, srv)
    # Requests with equal options decode together as one left-padded batch; a seeded sample
    # runs alone so that its result does not depend on the batch it lands in.
    op = GenerateOp.of(options, body.raw, None if body.seed is None else next(_unique))
    text = await submit(request, srv, body.model, op, body.prompt, 1)
    return {"model": body.model, "text": text}


def _sse(data: dict[str, Any], event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _stream(
    body: s.GenerateRequest, options: dict[str, Any], request: Request, srv: Server
) -> StreamingResponse:
    return await stream_generation(request, srv, body.model, body.prompt, options, raw=body.raw)


async def stream_generation(
    request: Request,
    srv: Server,
    model: str,
    prompt: str,
    options: dict[str, Any],
    *,
    raw: bool = False,
    adapter: AdapterRef | None = None,
    done: dict[str, Any] | None = None,
) -> StreamingResponse:
    """Server-sent events of one generation: ``data: {"text": piece}`` per decoded piece,
    then ``event: done`` with the model, the whole text and ``done``'s fields (or ``event:
    error``). Decoding stops when the client goes away."""
    pieces = await start_stream(request, srv, model, prompt, options, raw=raw, adapter=adapter)

    async def events() -> AsyncIterator[str]:
        try:
            async for piece in pieces:
                if isinstance(piece, str):
                    yield _sse({"text": piece})
                else:
                    yield _sse({"model": model, "text": piece.text, **(done or {})}, "done")
        except Exception as e:  # headers are sent: the error travels as an event
            yield _sse({"type": type(e).__name__, "message": str(e)}, "error")

    return StreamingResponse(events(), media_type="text/event-stream")


async def start_stream(
    request: Request,
    srv: Server,
    model: str,
    prompt: str,
    options: dict[str, Any],
    *,
    raw: bool = False,
    adapter: AdapterRef | None = None,
) -> AsyncIterator[str | Completion]:
    """Queue one streamed generation now (so that a full queue or an unknown model is answered
    before any byte is sent) and return its pieces: each decoded piece as a ``str``, then the
    whole stream's :class:`~llmos.inference.generator.Completion`; a failure is raised while
    iterating. Decoding stops when the iteration does (the client went away)."""
    loaded = await srv.registry.get(model)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def emit(piece: str) -> None:  # called in the model's thread
        loop.call_soon_threadsafe(queue.put_nowait, piece)

    job = StreamJob(
        prompt=prompt,
        raw=raw,
        options=options,
        emit=emit,
        ended=lambda outcome: srv.metrics.streams.labels(model, outcome).inc(),
        adapter=adapter,
    )
    future = loaded.batcher.submit(StreamOp(), job, 1, deadline(request, srv))
    future.add_done_callback(lambda _: queue.put_nowait(None))

    async def pieces() -> AsyncIterator[str | Completion]:
        try:
            while True:
                piece = await queue.get()
                if piece is None:
                    break
                yield piece
            result = future.result()
            if isinstance(result, BaseException):
                raise result
            yield result
        finally:  # the client went away (or the stream ended): stop decoding
            job.cancelled.set()
            future.cancel()

    return pieces()


router.include_router(uploads)
