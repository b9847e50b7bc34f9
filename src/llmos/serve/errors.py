"""The server's error answers: one body for every error (``{"error": {"type", "message"}}``,
or OpenAI's envelope on the OpenAI-compatible routes), the status each exception maps to, and
validation messages that name the field as the client wrote it."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from llmos.errors import LlmosError
from llmos.serve.batcher import BatcherClosed, DeadlineExceeded, QueueFull
from llmos.serve.catalog import UnknownModel
from llmos.serve.deps import ApiError
from llmos.serve.metrics import Metrics
from llmos.serve.routes import openai
from llmos.serve.schemas import ErrorBody

log = logging.getLogger("llmos.serve")


def error(
    status: int,
    type: str,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    path: str = "",
    param: str | None = None,
) -> Response:
    """The error answer: ``{"error": {"type", "message"}}``, or OpenAI's envelope for a
    request to the OpenAI-compatible routes (``path`` under their prefix)."""
    if openai.is_openai(path):
        return openai.error_response(status, type, message, headers, param)
    return JSONResponse(
        {"error": {"type": type, "message": message}}, status_code=status, headers=headers
    )


# Every error is answered as ErrorBody; the OpenAPI schema says so (instead of FastAPI's
# default 422 shape, which this server never sends).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": description}
    for code, description in (
        (400, "the model does not do this task, or the body cannot be read"),
        (401, "no API key, or an unknown or revoked one"),
        (403, "an admin route"),
        (404, "no such route, model or index"),
        (405, "the route does not take this method"),
        (409, "the user exists already"),
        (413, "the body, or an image in it, is larger than the server's limit"),
        (422, "the request does not fit the schema or the server's limits; an unreadable image"),
        (429, "rate limit or full queue: retry after Retry-After seconds"),
        (
            503,
            "the server is starting or stopping, the model was unloaded meanwhile, or the "
            "server lacks the data a route needs",
        ),
        (504, "the request passed its deadline in the queue"),
    )
}


def _where(loc: tuple[Any, ...]) -> str:
    """A field's place as the client wrote it: ``("body", "items", 12, "id")`` ->
    ``items[12].id``; a query or path parameter keeps its kind (``query.k``)."""
    parts = loc[1:] if len(loc) > 1 and loc[0] == "body" else loc
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        loc = tuple(e.get("loc", ()))
        if e.get("type") == "json_invalid":
            where = f" at character {loc[1]}" if len(loc) > 1 else ""
            reason = (e.get("ctx") or {}).get("error", "malformed")
            return f"the request body is not valid JSON ({reason}{where})"
        if loc == ("body",) and e.get("type") == "model_attributes_type":
            return "the request body must be a JSON object (Content-Type: application/json)"
        parts.append(f"{_where(loc)}: {e.get('msg')}")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def install_handlers(app: FastAPI, metrics: Metrics) -> None:
    """Answer every exception a route raises with :func:`error`'s body and status."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        path = request.url.path
        return error(exc.status, exc.type, exc.message, exc.headers, path=path, param=exc.param)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        param = _where(tuple(errors[0].get("loc", ()))) if errors else None
        message = _validation_message(exc)
        return error(422, "invalid_request", message, path=request.url.path, param=param)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        kinds = {
            400: "invalid_request",
            404: "not_found",
            405: "method_not_allowed",
            413: "too_large",
        }
        message = str(exc.detail)
        route = f"{request.method} {request.url.path}"
        if exc.status_code == 404:
            message = f"no route {route} (GET /docs lists the API)"
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            message = f"{route}: method not allowed" + (f"; use {allowed}" if allowed else "")
        elif exc.__cause__ is not None:  # FastAPI's "error parsing the body": say what it was
            message = f"{message}: {exc.__cause__}"
        return error(
            exc.status_code,
            kinds.get(exc.status_code, "http_error"),
            message,
            dict(exc.headers) if exc.headers else None,
            path=request.url.path,
        )

    @app.exception_handler(UnknownModel)
    async def unknown(request: Request, exc: UnknownModel) -> Response:
        return error(404, "unknown_model", str(exc), path=request.url.path, param="model")

    @app.exception_handler(QueueFull)
    async def full(request: Request, exc: QueueFull) -> Response:
        metrics.rejected.labels("queue_full").inc()
        retry = {"Retry-After": str(exc.retry_after)}
        return error(429, "queue_full", str(exc), retry, path=request.url.path)

    @app.exception_handler(DeadlineExceeded)
    async def late(request: Request, exc: DeadlineExceeded) -> Response:
        metrics.rejected.labels("deadline").inc()
        return error(504, "deadline_exceeded", str(exc), path=request.url.path)

    @app.exception_handler(BatcherClosed)
    async def closed(request: Request, exc: BatcherClosed) -> Response:
        message, retry = f"{exc}; send the request again", {"Retry-After": "1"}
        return error(503, "model_unloaded", message, retry, path=request.url.path)

    @app.exception_handler(LlmosError)
    async def bad_input(request: Request, exc: LlmosError) -> Response:
        return error(422, "invalid_request", str(exc), path=request.url.path)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.url.path)
        message = f"internal error ({type(exc).__name__}); see the log"
        return error(500, "internal_error", message, path=request.url.path)
