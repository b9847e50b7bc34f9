"""The HTTP server: ``create_app(settings)`` builds the FastAPI app; ``serve()`` runs it.

Startup (the lifespan) opens the store (migrating it) and scans the models directory; shutdown
serves what is queued and unloads every model. A pure-ASGI middleware in front of the routes
refuses oversized bodies (413; the routes that take images have a limit of their own) and
records every request's route, status and latency.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
)
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmos import __version__
from llmos.apps.recommend import routes as recommend_routes
from llmos.apps.recommend.jobs import CatalogJobs
from llmos.apps.recommend.service import NoRecommender, RecommendService
from llmos.apps.support import routes as support_routes
from llmos.apps.support.domain import demo_domain, read_domain
from llmos.apps.support.fewshot import FewShotConfig
from llmos.apps.support.service import SupportService
from llmos.apps.write import routes as write_routes
from llmos.apps.write.corrector import classic_corrector, english_speller
from llmos.apps.write.service import WriteService
from llmos.apps.write.suggestions import Materials
from llmos.errors import LlmosError
from llmos.jobs.runner import Jobs  # background jobs (issue 19 item 5)
from llmos.jobs.worker import WorkerProcesses
from llmos.paths import data_dir, llmos_home
from llmos.serve.catalog import UnknownModel
from llmos.serve.deps import KeyCache, RateLimiter, Server
from llmos.serve.embedder import BatcherClassifier, BatcherEmbedder, BatcherNlu, served_encoders
from llmos.serve.errors import ERROR_RESPONSES, error, install_handlers
from llmos.serve.metrics import Metrics
from llmos.serve.registry import Registry
from llmos.serve.routes import images, inference, jobs, models, openai, users
from llmos.serve.settings import ServeSettings
from llmos.store.db import Store
from llmos.store.documents import WriteDocuments

log = logging.getLogger("llmos.serve")
STATIC = Path(__file__).parent / "static"  # the web console: plain HTML, CSS and ES modules
# The API docs pages' scripts and styles, served by this server so that /docs and /redoc work
# offline (FastAPI's own pages load them from a CDN). They come from the pinned fastapi-offline
# package (Swagger UI, ReDoc and a favicon), not from copies kept in this repository.
DOCS_ASSETS = "/docs-assets"
JOBS_GRACE_S = 10.0  # how long shutdown waits for a running recommender job


class Guard:
    """Refuse request bodies over ``limit`` bytes (``limits[path]`` for the paths it names), by
    Content-Length or while they stream in, with 413, and count every HTTP request by route
    template and status."""

    def __init__(
        self, app: ASGIApp, limit: int, metrics: Metrics, limits: dict[str, int] | None = None
    ) -> None:
        self.app, self.limit, self.metrics = app, limit, metrics
        self.limits = limits or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = {"code": 500, "started": False}

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
            await send(message)

        limit = self.limits.get(scope.get("path", ""), self.limit)
        too_large = self._too_large(scope, limit)
        seen = 0

        async def receive_limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:  # a chunked body without Content-Length
                    self.metrics.rejected.labels("too_large").inc()
                    raise HTTPException(413, self._message(limit))
            return message

        try:
            if too_large is not None:
                await too_large(scope, receive, send_status)
            else:
                await self.app(scope, receive_limited, send_status)
        finally:  # counted even when an unhandled error goes on to the 500 handler
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(label, str(status["code"])).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - start)

    def _message(self, limit: int) -> str:
        return f"the request body is larger than this server's limit of {limit} bytes"

    def _refuse(self, path: str, limit: int) -> Response:
        self.metrics.rejected.labels("too_large").inc()
        return error(413, "too_large", self._message(limit), path=path)

    def _too_large(self, scope: Scope, limit: int) -> Response | None:
        path = scope.get("path", "")
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > limit:
                        return self._refuse(path, limit)
                except ValueError:
                    return error(
                        400, "invalid_request", "Content-Length is not a number", path=path
                    )
        return None


def _install_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), as FastAPI's own pages but with their
    assets served under DOCS_ASSETS instead of a CDN."""
    assets = importlib.resources.files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")
    oauth2_redirect = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=oauth2_redirect,
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )

    @app.get(oauth2_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )


def _recommend_service(srv: Server, loop: asyncio.AbstractEventLoop) -> RecommendService:
    """The recommendation app over the served recommender ``--recommend-model``; wishes are
    embedded by ``--recommend-encoder``'s batcher (when that model is served)."""
    settings = srv.settings
    name = settings.recommend_model

    def locate() -> Path:
        try:
            entry = srv.registry.entry(name)
        except UnknownModel:
            raise NoRecommender(f"no recommender named {name!r} in the models directory") from None
        if entry.task != "recommendation":
            raise NoRecommender(f"model {name!r} is a {entry.task} model, not a recommender")
        return entry.path

    embedder = BatcherEmbedder(srv, settings.recommend_encoder, loop)

    def embed(texts: list[str], kind: str) -> Any:
        if settings.recommend_encoder not in srv.registry.models:
            raise LlmosError(
                f"the wish needs the embedding model {settings.recommend_encoder!r}, which is "
                "not served"
            )
        return embedder(texts, kind)

    def digest() -> str | None:
        return embedder.name if settings.recommend_encoder in srv.registry.models else None

    return RecommendService(srv.store, locate, embed, digest)


def _recommend_jobs(srv: Server, service: RecommendService) -> CatalogJobs:
    """The recommendation app's admin jobs. A catalog imported while no recommender is served
    is written as ``models_dir/recommend_model``; the models directory is then read again, so
    that the app finds it by that name."""
    settings = srv.settings
    name = settings.recommend_model

    def serves(path: Path) -> bool:
        entry = srv.registry.models.get(name)
        return entry is not None and entry.path.resolve() == path.resolve()

    def published(path: Path) -> None:
        if serves(path):
            return
        srv.registry.rescan()
        if not serves(path):
            raise LlmosError(
                f"wrote {path}, but the models directory's scan does not serve it as {name!r}: "
                "name the recommender by its directory with --recommend-model"
            )

    new = settings.models_dir / name
    return CatalogJobs(service, new, published, encoder=settings.recommend_encoder)


def _write_materials(
    srv: Server, db: Store, apps_dir: Path, loop: asyncio.AbstractEventLoop
) -> Callable[[], Any]:
    """The writing assistant's material suggestions, made on first use: the shared corpus's
    index once it is built (``llmos write materials build``, ``llmos setup`` or its background
    job, even while the server runs) with the served ``write_encoder``, and each user's
    documents."""

    def make() -> Any:
        embed = BatcherEmbedder(srv, srv.settings.write_encoder, loop)
        return Materials(
            embed,
            documents=WriteDocuments(db),
            root=apps_dir / "write" / "users",
            shared_dir=apps_dir / "write" / "materials",  # read when it appears or changes
        )

    return make


def create_app(settings: ServeSettings | None = None, store: Store | None = None) -> FastAPI:
    """The llmos HTTP app. ``store`` defaults to ``Store(settings.database_url)``, opened at
    startup."""
    settings = settings or ServeSettings()
    metrics = Metrics()
    # Read now, so that a malformed domain file stops `llmos serve` with its line, not later.
    domain = read_domain(settings.support_domain) if settings.support_domain else demo_domain()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = store or await run_in_threadpool(Store, settings.database_url)
        registry = Registry(settings, metrics)
        await run_in_threadpool(registry.rescan)
        for name in settings.preload:
            await registry.get(name)
        limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
        srv = Server(settings, db, registry, metrics, limiter, KeyCache(settings.auth_cache_s))
        apps_dir = settings.apps_dir or llmos_home() / "apps"
        loop = asyncio.get_running_loop()
        sentiment = {"zh": settings.support_sentiment_zh, "en": settings.support_sentiment_en}
        nlu = {"zh": settings.support_nlu_zh, "en": settings.support_nlu_en}
        srv.support = SupportService(
            db,
            BatcherEmbedder(srv, settings.support_encoder, loop),
            apps_dir / "support",
            classify=BatcherClassifier(srv, sentiment, loop),
            nlu=BatcherNlu(srv, nlu, loop),
            domain=domain,
            fewshot=FewShotConfig() if settings.support_in_domain else FewShotConfig(in_domain={}),
            encoders=served_encoders(srv, loop),
        )
        srv.recommend = _recommend_service(srv, loop)
        srv.recommend_jobs = _recommend_jobs(srv, srv.recommend)
        srv.write = WriteService(
            db,
            apps_dir / "write",
            materials=_write_materials(srv, db, apps_dir, loop),
            english=lambda: english_speller(
                settings.write_english_corpus or data_dir() / "corpus" / "en" / "train.txt"
            ),
            chinese=lambda: classic_corrector(
                settings.write_chinese_corpus or data_dir() / "corpus" / "zh" / "train.txt",
                settings.write_confusion or data_dir() / "tasks" / "csc-zh" / "confusion",
            ),
        )
        # --- background jobs (llmos.jobs): the queue, and --workers worker processes
        app.state.jobs = srv.jobs = await run_in_threadpool(Jobs, db)
        workers = None
        if settings.workers:
            workers = WorkerProcesses(db.url, settings.workers)
        # --- end background jobs
        app.state.server = srv
        srv.ready = True
        try:
            yield
        finally:
            srv.ready = False
            if workers is not None:  # a running job goes back to the queue (SIGTERM)
                await run_in_threadpool(workers.stop)
            app.state.jobs.close()
            # a job still training after this is cut off with the process (its write is atomic)
            await run_in_threadpool(srv.recommend_jobs.close, JOBS_GRACE_S)
            await registry.close()
            if store is None:
                db.close()

    app = FastAPI(
        title="llmos",
        version=__version__,
        description="Language models as shared services: every /v1 route takes "
        "`Authorization: Bearer KEY` (`llmos users create NAME`).",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
        docs_url=None,  # _install_docs serves them with local assets
        redoc_url=None,
    )
    install_handlers(app, metrics)
    _install_docs(app)
    routers = (models, inference, images, users, jobs, support_routes, recommend_routes)
    for module in (*routers, write_routes):
        app.include_router(module.router)
    app.include_router(openai.router)  # the OpenAI-compatible surface (docs/openai.md)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, Any]:
        """Liveness: the process answers."""
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", tags=["ops"])
    async def readyz(request: Request) -> Response:
        """Readiness: started, and the store answers."""
        srv: Server | None = getattr(request.app.state, "server", None)
        if srv is None or not srv.ready:
            return error(503, "not_ready", "the server is starting or stopping")
        try:
            await asyncio.wait_for(run_in_threadpool(srv.store.users), 5)
        except Exception as e:
            return error(503, "not_ready", f"the store does not answer ({type(e).__name__})")
        return JSONResponse({"status": "ready", "models": len(srv.registry.models)})

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def prometheus(request: Request) -> Response:
        """Prometheus text format."""
        srv: Server = request.app.state.server
        reg = srv.registry
        metrics.models_loaded.set(len(reg.loaded))
        metrics.model_bytes.set(reg.used_bytes)
        for name, m in reg.loaded.items():
            metrics.queue_depth.labels(name).set(m.batcher.depth)
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/", include_in_schema=False)
    async def console() -> FileResponse:
        """The web console (sign in with an API key; it calls the /v1 routes)."""
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    image_limits = dict.fromkeys(images.IMAGE_PATHS, settings.max_image_body_bytes)
    app.add_middleware(Guard, limit=settings.max_body_bytes, metrics=metrics, limits=image_limits)
    return app


def serve(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the server with uvicorn until interrupted (Ctrl-C drains and unloads)."""
    import uvicorn

    if not settings.models_dir.is_dir():
        raise LlmosError(f"models directory {settings.models_dir} does not exist")
    app = create_app(settings)
    log.info("llmos %s on http://%s:%d (console at /, API docs at /docs)", __version__, host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=10)
