"""What every route shares: the server state, API errors, authentication, rate limits and the
wait for a batched result.

Routes take the server and the caller through the ``Annotated`` aliases defined here once:
``ServerDep`` (the app's :class:`Server`), ``UserDep`` (any authenticated caller) and
``AdminDep`` (an admin caller, 403 otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from llmos.serve.catalog import ModelEntry
from llmos.serve.metrics import Metrics
from llmos.serve.operations import Operation
from llmos.serve.registry import Registry
from llmos.serve.settings import ServeSettings
from llmos.store.db import Store, hash_key

if TYPE_CHECKING:
    from llmos.apps.recommend.jobs import CatalogJobs
    from llmos.apps.recommend.service import RecommendService
    from llmos.apps.support.service import SupportService
    from llmos.apps.write.service import WriteService
    from llmos.jobs.runner import Jobs
    from llmos.serve.fewshot import OnTheFly
    from llmos.serve.images import EmojiThumbnails


class ApiError(Exception):
    """An HTTP error answered as ``{"error": {"type", "message"}}`` (on the OpenAI-compatible
    routes, OpenAI's envelope, where ``param`` names the request field at fault)."""

    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.type, self.message, self.headers = status, type, message, headers
        self.param = param


class RateLimiter:
    """A token bucket per API key: ``rate`` requests a second, bursts of ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.buckets: dict[str, tuple[float, float]] = {}

    def check(self, key_id: str) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        tokens, last = self.buckets.get(key_id, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens < 1:
            self.buckets[key_id] = (tokens, now)
            wait = max(1, round((1 - tokens) / self.rate + 0.5))
            raise ApiError(
                429,
                "rate_limited",
                f"this API key is limited to {self.rate:g} requests a second "
                f"(bursts of {self.burst}); retry in {wait} s",
                {"Retry-After": str(wait)},
            )
        self.buckets[key_id] = (tokens - 1, now)


@dataclass
class Caller:
    """The authenticated user of a request."""

    id: int
    name: str
    is_admin: bool


class KeyCache:
    """Recently authenticated API keys, by their SHA-256, for ``ttl`` seconds: a busy client
    costs the store one lookup every ``ttl`` seconds instead of one per request. Only known
    keys are kept (an unknown key is looked up every time), at most ``size`` of them. A key
    revoked elsewhere (``llmos users revoke``, another server process) is refused by this
    server at most ``ttl`` seconds later; ``ttl`` 0 turns the cache off."""

    def __init__(
        self, ttl: float, size: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl, self.size, self.clock = ttl, size, clock
        self.entries: dict[str, tuple[Caller, float]] = {}

    def get(self, digest: str) -> Caller | None:
        hit = self.entries.get(digest)
        if hit is None:
            return None
        if self.clock() >= hit[1]:
            del self.entries[digest]
            return None
        return hit[0]

    def put(self, digest: str, user: Caller) -> None:
        if self.ttl <= 0:
            return
        if len(self.entries) >= self.size:  # the oldest entry goes (dicts keep insertion order)
            del self.entries[next(iter(self.entries))]
        self.entries[digest] = (user, self.clock() + self.ttl)

    def forget(self, digest: str) -> None:
        self.entries.pop(digest, None)


@dataclass
class Server:
    """The state of one running app (``app.state.server``)."""

    settings: ServeSettings
    store: Store
    registry: Registry
    metrics: Metrics
    limiter: RateLimiter
    keys: KeyCache
    started: float = field(default_factory=time.time)
    ready: bool = False
    support: SupportService | None = None  # the customer-service app
    recommend: RecommendService | None = None  # the recommendation app
    recommend_jobs: CatalogJobs | None = None  # its catalog imports and retrainings
    write: WriteService | None = None  # the writing assistant
    jobs: Jobs | None = None  # background jobs: submit, read, cancel (llmos.jobs)
    on_the_fly: OnTheFly = field(default_factory=lambda: _on_the_fly())  # /v1/classify's
    thumbnails: EmojiThumbnails = field(default_factory=lambda: _thumbnails())  # image search


def _thumbnails() -> EmojiThumbnails:
    from llmos.serve.images import EmojiThumbnails  # it imports this module

    return EmojiThumbnails()


def _on_the_fly() -> OnTheFly:
    from llmos.serve.fewshot import OnTheFly  # it imports this module

    return OnTheFly()


async def server(request: Request) -> Server:
    """The app's state. (async: FastAPI runs a plain-def dependency in a worker thread, a
    thread hop per request for an attribute read.)"""
    return request.app.state.server


def bearer_key(request: Request) -> str:
    """The API key of ``Authorization: Bearer KEY`` (401 without one)."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(
            401,
            "unauthorized",
            "send an API key as 'Authorization: Bearer KEY' (create one with "
            "`llmos users create NAME`)",
            {"WWW-Authenticate": "Bearer"},
        )
    return key.strip()


async def caller(request: Request) -> Caller:
    """The user whose ``Authorization: Bearer KEY`` this is (401 otherwise); rate-limited
    per key (429)."""
    srv: Server = request.app.state.server
    key = bearer_key(request)
    digest = hash_key(key)
    who = srv.keys.get(digest)
    if who is None:
        user = await run_in_threadpool(srv.store.authenticate, key)
        if user is None:
            raise ApiError(
                401, "unauthorized", "unknown or revoked API key", {"WWW-Authenticate": "Bearer"}
            )
        who = Caller(user.id, user.name, user.is_admin)
        srv.keys.put(digest, who)
    try:
        srv.limiter.check(digest)
    except ApiError:
        srv.metrics.rejected.labels("rate_limit").inc()
        raise
    return who


UserDep = Annotated[Caller, Depends(caller)]
ServerDep = Annotated[Server, Depends(server)]


async def admin(user: UserDep) -> Caller:
    """The caller, if an admin (403 otherwise)."""
    if not user.is_admin:
        raise ApiError(403, "forbidden", "this route is for admins (llmos users create --admin)")
    return user


AdminDep = Annotated[Caller, Depends(admin)]


def check_texts(srv: Server, texts: list[str], name: str = "texts") -> None:
    """The server's own limits on a request's texts (422 with the field named)."""
    s = srv.settings
    if len(texts) > s.max_texts:
        raise ApiError(
            422,
            "invalid_request",
            f"{name} has {len(texts)} items; this server takes at most {s.max_texts} per request",
            param=name,
        )
    for i, t in enumerate(texts):
        if len(t) > s.max_chars:
            raise ApiError(
                422,
                "invalid_request",
                f"{name}[{i}] is {len(t)} characters; this server takes at most {s.max_chars}",
                param=name,
            )


def require(entry: ModelEntry, capability: str) -> None:
    """400 unless the model answers the route ``/v1/{capability}``."""
    if capability not in entry.capabilities:
        routes = ", ".join(f"/v1/{c}" for c in entry.capabilities)
        raise ApiError(
            400,
            "wrong_model",
            f"model {entry.name!r} is a {entry.task} model: it answers {routes}, "
            f"not /v1/{capability}",
        )


def deadline(request: Request, srv: Server) -> float:
    """When a request must have left the queue: the server's timeout, or the client's shorter
    ``X-Request-Timeout`` (seconds)."""
    timeout = srv.settings.request_timeout_s
    asked = request.headers.get("x-request-timeout")
    if asked is not None:
        try:
            value = float(asked)
        except ValueError:
            value = -1.0
        if not 0 < value < 1e6:
            raise ApiError(
                422, "invalid_request", f"X-Request-Timeout must be seconds > 0, got {asked!r}"
            )
        timeout = min(timeout, value)
    return time.monotonic() + timeout


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def submit(
    request: Request, srv: Server, model: str, op: Operation, payload: Any, size: int
) -> Any:
    """Queue a request (``payload`` of ``size`` texts, for the operation ``op``) on a model's
    batcher and wait for its result; a client that disconnects meanwhile withdraws it (it takes
    no batch slot)."""
    loaded = await srv.registry.get(model)
    future = loaded.batcher.submit(op, payload, size, deadline(request, srv))
    srv.metrics.queue_depth.labels(model).set(loaded.batcher.depth)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({future, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    srv.metrics.queue_depth.labels(model).set(loaded.batcher.depth)
    if not future.done():
        future.cancel()
        raise ApiError(499, "client_closed", "the client closed the connection")
    result = future.result()
    if isinstance(result, BaseException):
        raise result
    return result
