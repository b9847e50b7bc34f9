"""``/v1/apps/recommend``: the recommendation app over HTTP.

Every user route acts for the caller: their events, their onboarding choices, their list. The
catalog (items, tags, similar items) is shared by every user of the server; no user route reads
or writes another user's events. The admin routes (``PUT /catalog``, ``POST /train``,
``/jobs``) replace or retrain the served catalog from every user's events, as background jobs
(:mod:`~llmos.apps.recommend.jobs`): they answer 202 with the job at once. ``POST /train``
with ``sasrec_steps`` queues instead a durable job that a job worker runs
(:mod:`~llmos.apps.recommend.sequential`; ``GET /v1/jobs/{id}``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from llmos.apps.recommend import schemas as s
from llmos.apps.recommend.jobs import CatalogJobs, Job, JobsBusy, UnknownJob
from llmos.apps.recommend.sequential import AlreadyQueued, queue_sequential
from llmos.apps.recommend.service import (
    NoRecommender,
    Preferences,
    RecommendService,
    UnknownItem,
)
from llmos.data.interactions import Item
from llmos.errors import LlmosError
from llmos.serve.deps import AdminDep, ApiError, ServerDep, UserDep
from llmos.serve.routes.jobs import JobOut as DurableJobOut

router = APIRouter(prefix="/v1/apps/recommend", tags=["recommend"])
MAX_LIST = 100  # items in an exclude or tags query


def service(srv: Any) -> RecommendService:
    rec = getattr(srv, "recommend", None)
    if rec is None:
        raise ApiError(503, "not_ready", "the recommendation app is not running")
    return rec


async def call(fn: Any, *args: Any) -> Any:
    """Run a service method in a worker thread: an unknown item is a 404, a missing model a
    503 that says how to build it, another mistake a 422."""
    try:
        return await run_in_threadpool(fn, *args)
    except UnknownItem as e:
        raise ApiError(404, "not_found", str(e)) from None
    except NoRecommender as e:
        raise ApiError(
            503,
            "no_recommender",
            f"{e} (build one with `llmos recommend train` or `llmos setup`, have an admin "
            "import a catalog with PUT /v1/apps/recommend/catalog, or name another with "
            "--recommend-model)",
        ) from None
    except LlmosError as e:
        raise ApiError(422, "invalid_request", str(e)) from None


def _item(item: Item) -> dict[str, Any]:
    return {"id": item.id, "title": item.title, "text": item.text, "tags": list(item.tags)}


def _recs(recs: list[Any]) -> list[dict[str, Any]]:
    return [
        {**_item(r.item), "score": r.score, "reason": r.reason, "source": r.source} for r in recs
    ]


def _short(values: list[str], name: str) -> tuple[str, ...]:
    if len(values) > MAX_LIST or any(not 0 < len(v) <= 200 for v in values):
        raise ApiError(422, "invalid_request", f"{name}: at most {MAX_LIST} values of 1-200 chars")
    return tuple(values)


@router.get("", response_model=s.RecommendationList)
async def recommend(
    srv: ServerDep,
    user: UserDep,
    k: Annotated[int, Query(ge=1, le=100)] = 10,
    exclude: Annotated[list[str], Query()] = [],  # noqa: B006 - FastAPI copies defaults
    tags: Annotated[list[str], Query(description="only items with one of these tags")] = [],  # noqa: B006
    diversity: Annotated[float, Query(ge=0, le=1, description="MMR over tags")] = 0.0,
    wish: Annotated[str | None, Query(max_length=500, description="this request's wish")] = None,
) -> Any:
    """The caller's next items, each with why. Reads the caller's events at every call, so a
    like, a dislike or a hide changes the next list."""
    svc = service(srv)
    only = _short(exclude, "exclude"), _short(tags, "tags")

    def run() -> tuple[str, list[Any]]:  # one worker-thread hop for the list and its catalog
        return svc.catalog, svc.recommend(user.id, k, *only, diversity, wish)

    catalog, recs = await call(run)
    return {"catalog": catalog, "items": _recs(recs)}


@router.post("/events", response_model=s.EventIds, status_code=201)
async def add_events(body: s.EventsIn, srv: ServerDep, user: UserDep) -> Any:
    """Record the caller's events on catalog items (all or none)."""
    events = [(e.kind, e.item, e.value) for e in body.events]
    return {"ids": await call(service(srv).add_events, user.id, events)}


@router.get("/profile", response_model=s.TasteOut)
async def profile(srv: ServerDep, user: UserDep) -> Any:
    """What the caller's events show (top tags, recent items, dislikes) and their choices."""
    view = await call(service(srv).profile, user.id)
    for key in ("recent", "disliked", "hidden"):
        view[key] = [_item(i) for i in view[key]]
    return view


@router.put("/onboarding", response_model=s.Preferences)
async def onboarding(body: s.Preferences, srv: ServerDep, user: UserDep) -> Any:
    """Save the caller's interests (tags), free-text wish and blocked tags."""
    prefs = Preferences(tuple(body.interests), body.wish.strip(), tuple(body.blocked_tags))
    return (await call(service(srv).set_preferences, user.id, prefs)).as_json()


@router.get("/tags", response_model=s.TagList)
async def tags(srv: ServerDep, _: UserDep) -> Any:
    """The catalog's tags and how many items carry each (for onboarding)."""
    svc = service(srv)
    catalog, counts = await call(lambda: (svc.catalog, svc.tags()))
    return {"catalog": catalog, "tags": [{"tag": t, "items": n} for t, n in counts]}


@router.get("/items", response_model=s.ItemList)
async def search(
    srv: ServerDep,
    _: UserDep,
    q: Annotated[str, Query(min_length=1, max_length=200)],
    k: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Any:
    """Catalog items whose title, text or tags contain every word of ``q``."""
    return {"items": [_item(i) for i in await call(service(srv).search, q, k)]}


@router.get("/items/{item}", response_model=s.ItemOut)
async def get_item(item: s.ItemId, srv: ServerDep, _: UserDep) -> Any:
    return _item(await call(service(srv).item, item))


@router.get("/similar/{item}", response_model=s.RecommendationList)
async def similar(
    item: s.ItemId, srv: ServerDep, _: UserDep, k: Annotated[int, Query(ge=1, le=100)] = 10
) -> Any:
    """The items most like ``item`` (what people who took it took; by text for a new item)."""
    svc = service(srv)
    catalog, recs = await call(lambda: (svc.catalog, svc.similar(item, k)))
    return {"catalog": catalog, "items": _recs(recs)}


# --- admin: the catalog and its training jobs ------------------------------------------------


def jobs(srv: Any) -> CatalogJobs:
    found = getattr(srv, "recommend_jobs", None)
    if found is None:
        raise ApiError(503, "not_ready", "the recommendation app is not running")
    return found


def _queued(submit: Any, response: Response, *args: Any) -> dict[str, Any]:
    """Queue a job (quick: nothing is read or trained here) and answer it, with its URL in
    ``Location``; a full queue is a 429, a bad item list a 422."""
    try:
        job: Job = submit(*args)
    except JobsBusy as e:
        raise ApiError(429, "busy", str(e), {"Retry-After": "30"}) from None
    except LlmosError as e:
        raise ApiError(422, "invalid_request", str(e)) from None
    response.headers["Location"] = f"{router.prefix}/jobs/{job.id}"
    return job.as_json()


@router.put("/catalog", response_model=s.JobOut, status_code=202, tags=["admin"])
async def import_catalog(body: s.CatalogIn, srv: ServerDep, _: AdminDep, response: Response) -> Any:
    """Replace the served catalog with these items (admins). A job trains the new model from
    every user's events on the catalog (and, under the same catalog name, the interactions the
    old model keeps, less those of items that are gone); the next list is the new model's once
    the job is done."""
    items = [Item(i.id, i.title, i.text, tuple(i.tags)) for i in body.items]
    args = body.catalog, items, body.reg, body.half_life_days
    return _queued(jobs(srv).import_catalog, response, *args)


@router.post("/train", response_model=s.JobOut | DurableJobOut, status_code=202, tags=["admin"])
async def train(
    srv: ServerDep, admin: AdminDep, response: Response, body: s.TrainIn | None = None
) -> Any:
    """Retrain the served catalog (admins): same items, the interactions its model keeps plus
    every user's events on it now. With ``sasrec_steps``, a sequential model (SASRec) is
    trained on the kept interactions too: that takes minutes, so it is a durable job of the
    caller's, run by a job worker (``llmos serve --workers 1``, ``llmos worker``), answered as
    ``/v1/jobs`` answers it (``Location: /v1/jobs/{id}``); the served model is replaced when
    it is done (409 while one is queued or running)."""
    body = body or s.TrainIn()
    if body.sasrec_steps is None:
        return _queued(jobs(srv).retrain, response, body.reg, body.half_life_days)
    queue = getattr(srv, "jobs", None)
    if queue is None:
        raise ApiError(503, "not_ready", "this server runs no background jobs")
    path = await call(service(srv).locate)
    args = admin.id, path, body.sasrec_steps, body.reg, body.half_life_days
    try:
        job = await run_in_threadpool(queue_sequential, queue, *args)
    except AlreadyQueued as e:
        raise ApiError(409, "conflict", str(e)) from None
    except LlmosError as e:
        raise ApiError(422, "invalid_request", str(e)) from None
    response.headers["Location"] = f"/v1/jobs/{job['id']}"
    return job


@router.get("/jobs", response_model=s.JobList, tags=["admin"])
async def list_jobs(srv: ServerDep, _: AdminDep) -> Any:
    """The jobs since the server started, the newest first (the last 100 finished ones)."""
    return {"jobs": [job.as_json() for job in jobs(srv).list()]}


@router.get("/jobs/{job_id}", response_model=s.JobOut, tags=["admin"])
async def get_job(job_id: str, srv: ServerDep, _: AdminDep) -> Any:
    """A job: ``queued``, ``running``, ``done`` (with what was trained) or ``failed`` (with
    why)."""
    try:
        return jobs(srv).get(job_id).as_json()
    except UnknownJob as e:
        raise ApiError(404, "not_found", str(e)) from None
