"""The OpenAI-compatible surface, under ``/openai/v1`` so that nothing collides with llmos's own
``/v1``: ``POST /chat/completions``, ``POST /completions``, ``POST /embeddings``, ``GET /models``
(https://platform.openai.com/docs/api-reference). One serving core, two surfaces: the same API
keys (``Authorization: Bearer``), rate limits, metrics and micro-batchers as the native routes;
only the shapes of requests, answers and errors differ. docs/openai.md says what maps to what.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from llmos.checkpoint.task import Instruct
from llmos.errors import LlmosError
from llmos.inference.chat import Message, render_chat
from llmos.inference.generate import GenerationConfig
from llmos.inference.generator import Completion
from llmos.serve import openai_schemas as o
from llmos.serve.catalog import ModelEntry
from llmos.serve.deps import ApiError, Caller, Server, ServerDep, UserDep, check_texts, submit
from llmos.serve.operations import EmbedOp, GenerateOp, Prompt, TextBatch
from llmos.serve.routes.inference import start_stream
from llmos.serve.schemas import decoding_default

PREFIX = "/openai/v1"
# A caller's profile key that lets a chat whose ``user`` is the caller's own name read and extend
# their conversation memory (PATCH /v1/me/profile {"changes": {"openai_memory": true}}).
MEMORY_FLAG = "openai_memory"
MEMORY_TURNS = 20  # the stored messages a chat reads (the newest ones)

_STATUS_TYPES = {401: "invalid_request_error", 403: "permission_error", 429: "rate_limit_error"}
# llmos error kinds under the codes OpenAI's own API answers with.
_CODES = {"unknown_model": "model_not_found", "unauthorized": "invalid_api_key"}
_unique = itertools.count()

router = APIRouter(
    prefix=PREFIX,
    tags=["openai"],
    responses={
        code: {"model": o.OpenAIErrorBody, "description": description}
        for code, description in (
            (400, "a field the server refuses or cannot read (param names it)"),
            (401, "no API key, or an unknown or revoked one"),
            (404, "no such model"),
            (413, "the body is larger than the server's limit"),
            (429, "rate limit or full queue: retry after Retry-After seconds"),
            (503, "the model was unloaded meanwhile"),
            (504, "the request passed its deadline in the queue"),
        )
    },
)


def is_openai(path: str) -> bool:
    """Whether a request path belongs to this surface (its errors take OpenAI's envelope)."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def error_response(
    status: int,
    kind: str,
    message: str,
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> Response:
    """OpenAI's error envelope ``{"error": {"message", "type", "param", "code"}}``. OpenAI
    answers a request it cannot take with 400, where llmos's /v1 says 422."""
    status = 400 if status == 422 else status
    kind_type = "server_error" if status >= 500 else _STATUS_TYPES.get(status)
    body = {
        "message": message,
        "type": kind_type or "invalid_request_error",
        "param": param,
        "code": _CODES.get(kind, kind),
    }
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _bad(message: str, param: str | None) -> ApiError:
    """A 400 naming the request field at fault."""
    return ApiError(400, "invalid_request", message, param=param)


def _refuse_unsupported(body: o.SamplingOptions) -> None:
    """400 for any field set to what llmos's decoder cannot do (never silently ignored)."""
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(body, name) != 0:
            raise _bad(
                f"{name} is not supported: llmos's decoder has a multiplicative "
                "repetition penalty (POST /v1/generate repetition_penalty), not OpenAI's "
                "additive one; send 0 or leave it out",
                name,
            )
    if body.logit_bias:
        raise _bad("logit_bias is not supported; leave it out", "logit_bias")
    refused: dict[str, Any] = {}
    if isinstance(body, o.ChatCompletionRequest):
        refused = {
            "logprobs": body.logprobs,
            "top_logprobs": body.top_logprobs,
            "tools": body.tools or None,
            "tool_choice": None if body.tool_choice in (None, "none") else body.tool_choice,
            "response_format": None
            if body.response_format in (None, {"type": "text"})
            else body.response_format,
        }
    elif isinstance(body, o.CompletionRequest):
        refused = {
            "echo": body.echo or None,
            "suffix": body.suffix,
            "logprobs": body.logprobs,
            "best_of": None if body.best_of in (None, body.n) else body.best_of,
        }
    for name, value in refused.items():
        if value:
            raise _bad(f"{name} is not supported by this server; leave it out", name)


def decoding_options(
    body: o.SamplingOptions, srv: Server, window: int, max_tokens: int, param: str
) -> dict[str, Any]:
    """The request's sampling fields as GenerationConfig options (checked before it queues).

    temperature 0 is greedy decoding; any other (default 1, as OpenAI's) samples with it and
    top_p. llmos's own defaults for what OpenAI has no field for stay on (a repetition penalty
    of 1.1, no repeated trigrams): GenerationConfig's docstring says why a small model needs
    them."""
    _refuse_unsupported(body)
    limit = srv.settings.max_new_tokens
    if max_tokens > limit:
        raise _bad(f"{param} is {max_tokens}; this server generates at most {limit}", param)
    if max_tokens >= window:
        raise ApiError(
            400,
            "context_length_exceeded",
            f"{param} is {max_tokens}; model {body.model!r} has a context of {window} tokens, "
            "which also holds the prompt: ask for fewer",
            param=param,
        )
    temperature = 1.0 if body.temperature is None else body.temperature
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or ())
    options: dict[str, Any] = {"max_new_tokens": max_tokens, "stop": tuple(stop)}
    if temperature == 0:
        options["strategy"] = "greedy"
    else:
        options.update(strategy="sample", temperature=temperature, top_p=body.top_p or 1.0)
        options["num_return_sequences"] = body.n
        if body.seed is not None:
            options["seed"] = body.seed
    try:
        GenerationConfig(**options)
    except LlmosError as e:
        raise _bad(str(e), None) from None
    if body.stream and body.n > 1:
        raise _bad("streaming decodes one sequence: n must be 1 with stream", "n")
    return options


def _entry(srv: Server, model: str, capability: str, route: str) -> ModelEntry:
    entry = srv.registry.entry(model)  # UnknownModel: 404 model_not_found
    if capability not in entry.capabilities:
        raise _bad(f"model {model!r} is a {entry.task} model; it does not answer {route}", "model")
    return entry


async def _generate(
    request: Request, srv: Server, model: str, prompt: str, options: dict[str, Any], n: int
) -> list[Completion]:
    """``n`` completions of one prompt through the model's batcher (greedy: one decoded, as
    every copy would be the same)."""
    seeded = "seed" in options
    op = GenerateOp.of(options, True, next(_unique) if seeded else None)
    done = await submit(request, srv, model, op, Prompt(prompt, details=True), 1)
    return done if len(done) == n else done * n


def _usage(done: list[Completion], prompt_tokens: int | None = None) -> dict[str, int]:
    prompt = done[0].prompt_tokens if prompt_tokens is None else prompt_tokens
    completion = sum(c.completion_tokens for c in done)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


# --- memory (docs/openai.md: "Conversation memory") ------------------------------------------


async def _memory(srv: Server, user: Caller, label: str | None) -> list[Message] | None:
    """The caller's stored conversation, when the request's ``user`` is the caller's own name
    and their profile allows it (``openai_memory: true``); None otherwise (``user`` is then only
    a label, as on OpenAI's API). Only the caller's own memory is ever read."""
    if label is None or label != user.name:
        return None
    profile = await run_in_threadpool(srv.store.profile, user.id)
    if profile.get(MEMORY_FLAG) is not True:
        return None
    rows = await run_in_threadpool(srv.store.memory, user.id, MEMORY_TURNS)
    return [Message(r.role, r.content) for r in rows]


async def _remember(srv: Server, user: Caller, asked: str, answer: str) -> None:
    await run_in_threadpool(srv.store.remember, user.id, "user", asked)
    if answer.strip():
        await run_in_threadpool(srv.store.remember, user.id, "assistant", answer)


# --- routes ---------------------------------------------------------------------------------


@router.get("/models", response_model=o.OpenAIModelList)
async def list_models(srv: ServerDep, _: UserDep) -> Any:
    """The served models that answer this surface (generation, instruction-tuned, encoders)."""
    entries = sorted(srv.registry.models.values(), key=lambda e: e.name)
    return {"data": [_model(e) for e in entries if not e.hidden and _openai_model(e)]}


@router.get("/models/{model}", response_model=o.OpenAIModel)
async def get_model(model: str, srv: ServerDep, _: UserDep) -> Any:
    entry = srv.registry.entry(model)
    if entry.hidden or not _openai_model(entry):
        raise ApiError(404, "unknown_model", f"model {model!r} is not served here", param="model")
    return _model(entry)


def _openai_model(entry: ModelEntry) -> bool:
    return "generate" in entry.capabilities or "embed" in entry.capabilities


def _model(entry: ModelEntry) -> dict[str, Any]:
    created = int(entry.path.stat().st_mtime) if entry.path.exists() else 0
    return {"id": entry.name, "created": created, "owned_by": "llmos"}


@router.post(
    "/chat/completions",
    response_model=o.ChatCompletion,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def chat_completions(
    body: o.ChatCompletionRequest, request: Request, srv: ServerDep, user: UserDep
) -> Any:
    """Answer the last user message of a conversation with an instruction-tuned model; the
    messages are laid out in the checkpoint's own template (:mod:`llmos.inference.chat`)."""
    entry = _entry(srv, body.model, "generate", "/chat/completions")
    if entry.task != "instruct":
        raise _bad(
            f"model {body.model!r} is a {entry.task} model without a chat template; "
            "use /completions, or an instruction-tuned model (llmos instruct)",
            "model",
        )
    messages = [
        Message("system" if m.role == "developer" else m.role, m.text) for m in body.messages
    ]
    check_texts(srv, [m.content for m in messages], "messages")
    loaded = await srv.registry.get(body.model)
    window = loaded.pipe.config.max_position
    param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
    # Left out: llmos's generate default, within half the context (the prompt needs the rest).
    default = min(decoding_default("max_new_tokens"), window // 2)
    max_tokens = body.max_completion_tokens or body.max_tokens or default
    options = decoding_options(body, srv, window, max_tokens, param)
    memory = await _memory(srv, user, body.user)
    spec = loaded.pipe.spec
    assert isinstance(spec, Instruct), "the catalog said instruct"
    try:
        prompt = render_chat(spec, [*(memory or ()), *messages])
    except LlmosError as e:
        raise _bad(str(e), "messages") from None
    asked = messages[-1].content
    remember = (lambda text: _remember(srv, user, asked, text)) if memory is not None else None
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": body.model}
    if body.stream:
        pieces = await start_stream(request, srv, body.model, prompt, options, raw=True)
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        events = _chat_events(head, pieces, include_usage, remember)
        return StreamingResponse(events, media_type="text/event-stream")
    done = await _generate(request, srv, body.model, prompt, options, body.n)
    if remember is not None:
        await remember(done[0].text)
    choices = [
        {"index": i, "message": {"content": c.text}, "finish_reason": c.finish_reason}
        for i, c in enumerate(done)
    ]
    return {**head, "choices": choices, "usage": _usage(done)}


@router.post(
    "/completions",
    response_model=o.Completion,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def completions(
    body: o.CompletionRequest, request: Request, srv: ServerDep, _: UserDep
) -> Any:
    """Continue each prompt as given (no template, even for an instruction-tuned model)."""
    _entry(srv, body.model, "generate", "/completions")
    loaded = await srv.registry.get(body.model)
    window = loaded.pipe.config.max_position
    options = decoding_options(body, srv, window, body.max_tokens, "max_tokens")
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    check_texts(srv, prompts, "prompt")
    for i, p in enumerate(prompts):
        if not p.strip():
            raise _bad(f"prompt {i} is blank: give some text to continue", "prompt")
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": body.model}
    if body.stream:
        if len(prompts) > 1:
            raise _bad("streaming continues one prompt: send a string", "prompt")
        pieces = await start_stream(request, srv, body.model, prompts[0], options, raw=True)
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        events = _completion_events(head, pieces, include_usage)
        return StreamingResponse(events, media_type="text/event-stream")
    # Every prompt queues on its own; the batcher decodes those with equal options together.
    groups = await asyncio.gather(
        *(_generate(request, srv, body.model, p, options, body.n) for p in prompts)
    )
    choices = [
        {"index": i * body.n + j, "text": c.text, "finish_reason": c.finish_reason}
        for i, group in enumerate(groups)
        for j, c in enumerate(group)
    ]
    prompt_tokens = sum(g[0].prompt_tokens for g in groups)
    flat = [c for g in groups for c in g]
    return {**head, "choices": choices, "usage": _usage(flat, prompt_tokens)}


@router.post("/embeddings", response_model=o.EmbeddingList)
async def embeddings(body: o.EmbeddingRequest, request: Request, srv: ServerDep, _: UserDep) -> Any:
    """Sentence embeddings with the model's own pooling and normalization; E5-style models get
    their passage prefix (``passage: ``), as OpenAI's API has no query/document switch."""
    _entry(srv, body.model, "embed", "/embeddings")
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise _bad("input is empty: give a text or a list of texts", "input")
    check_texts(srv, texts, "input")
    payload = TextBatch(texts, details=True)
    vectors, tokens = await submit(
        request, srv, body.model, EmbedOp(kind="passage"), payload, len(texts)
    )
    dim = len(vectors[0])
    if body.dimensions is not None and body.dimensions != dim:
        raise _bad(
            f"dimensions {body.dimensions} is not supported: model {body.model!r} gives "
            f"{dim}-dimensional vectors (leave dimensions out, or send {dim})",
            "dimensions",
        )
    if body.encoding_format == "base64":  # little-endian float32, as OpenAI's clients decode it
        data: list[Any] = [
            base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode() for v in vectors
        ]
    else:
        data = vectors
    n = sum(tokens)
    return {
        "data": [{"index": i, "embedding": v} for i, v in enumerate(data)],
        "model": body.model,
        "usage": {"prompt_tokens": n, "total_tokens": n},
    }


# --- server-sent events, OpenAI's way: data-only chunks, then "data: [DONE]" ----------------


def _data(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _stream_error(e: Exception) -> str:
    # Headers are sent: the error travels as an event, in OpenAI's envelope (as its API does).
    kind = "invalid_request_error" if isinstance(e, LlmosError) else "server_error"
    return _data({"error": {"message": str(e), "type": kind, "param": None, "code": None}})


async def _chat_events(
    head: dict[str, Any],
    pieces: AsyncIterator[str | Completion],
    include_usage: bool,
    remember: Any,
) -> AsyncIterator[str]:
    chunk = {**head, "object": "chat.completion.chunk"}

    def delta(content: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": content, "finish_reason": finish, "logprobs": None}
        return _data({**chunk, "choices": [choice]})

    try:
        yield delta({"role": "assistant", "content": ""})
        async for piece in pieces:
            if isinstance(piece, str):
                yield delta({"content": piece})
                continue
            yield delta({}, piece.finish_reason)
            if include_usage:
                yield _data({**chunk, "choices": [], "usage": _usage([piece])})
            if remember is not None:
                await remember(piece.text)
        yield "data: [DONE]\n\n"
    except Exception as e:
        yield _stream_error(e)


async def _completion_events(
    head: dict[str, Any], pieces: AsyncIterator[str | Completion], include_usage: bool
) -> AsyncIterator[str]:
    chunk = {**head, "object": "text_completion"}

    def text(piece: str, finish: str | None = None) -> str:
        choice = {"index": 0, "text": piece, "finish_reason": finish, "logprobs": None}
        return _data({**chunk, "choices": [choice]})

    try:
        async for piece in pieces:
            if isinstance(piece, str):
                yield text(piece)
                continue
            yield text("", piece.finish_reason)
            if include_usage:
                yield _data({**chunk, "choices": [], "usage": _usage([piece])})
        yield "data: [DONE]\n\n"
    except Exception as e:
        yield _stream_error(e)
