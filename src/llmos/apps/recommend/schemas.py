"""The HTTP contract of the recommendation app (``/v1/apps/recommend``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from llmos.apps.recommend.jobs import MAX_ITEMS
from llmos.apps.recommend.sequential import MAX_STEPS

ItemId = Annotated[str, Field(min_length=1, max_length=200)]
Tag = Annotated[str, Field(min_length=1, max_length=100)]
# An imported item's id: no "/", so that GET /items/{id} reaches it; the events table's width.
NewItemId = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"^[^/]+$")
]
CatalogName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Reg = Annotated[
    float | None,
    Field(gt=0, le=1e6, allow_inf_nan=False, description="EASE's L2 weight (default: kept)"),
]
HalfLife = Annotated[
    float | None,
    Field(
        gt=0,
        le=36_500,
        allow_inf_nan=False,
        description="popularity's half-life in days (default: kept; none for a new catalog)",
    ),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ItemOut(BaseModel):
    id: str
    title: str
    text: str
    tags: list[str]


class RecommendationOut(ItemOut):
    score: float = Field(description="the sum of the standardised signals (higher: better)")
    reason: str = Field(description="why it is recommended, from the signal that gave most")
    source: str = Field(description="personal, wish, tags, popular or content")


class RecommendationList(BaseModel):
    catalog: str
    items: list[RecommendationOut]


class EventIn(Strict):
    kind: Literal["view", "click", "rate", "like", "dislike", "hide"]
    item: ItemId
    value: float | None = Field(
        None, allow_inf_nan=False, description="a rate event's rating (3 or more: liked it)"
    )


class EventsIn(Strict):
    events: list[EventIn] = Field(min_length=1, max_length=100)


class EventIds(BaseModel):
    ids: list[int]


class ItemList(BaseModel):
    items: list[ItemOut]


class Preferences(Strict):
    """Onboarding: what the user says they like, in tags and in words."""

    interests: list[Tag] = Field(default=[], max_length=50)
    wish: Annotated[str, Field(max_length=500)] = ""
    blocked_tags: list[Tag] = Field(default=[], max_length=50)


class TasteOut(BaseModel):
    top_tags: list[tuple[str, float]] = Field(description="tags of the liked items, weighted")
    recent: list[ItemOut]
    disliked: list[ItemOut]
    hidden: list[ItemOut]
    preferences: Preferences


class TagCount(BaseModel):
    tag: str
    items: int


class TagList(BaseModel):
    catalog: str
    tags: list[TagCount]


# --- admin: the catalog and its training jobs ------------------------------------------------


class CatalogItemIn(Strict):
    id: NewItemId
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
    text: Annotated[str, Field(max_length=5_000)] = ""
    tags: list[Tag] = Field(default=[], max_length=20)


class CatalogIn(Strict):
    """A catalog that replaces the served one (the body stays under the server's
    ``--max-body``, 1 MiB by default: a few thousand items with short texts)."""

    catalog: CatalogName = Field(description="its name; users' events carry it")
    items: list[CatalogItemIn] = Field(min_length=1, max_length=MAX_ITEMS)
    reg: Reg = None
    half_life_days: HalfLife = None


class TrainIn(Strict):
    reg: Reg = None
    half_life_days: HalfLife = None
    sasrec_steps: int | None = Field(
        default=None,
        ge=1,
        le=MAX_STEPS,
        strict=True,
        description="also train the sequential model (SASRec) for this many steps, as a "
        "background job (GET /v1/jobs/{id}) that a job worker runs (1200 for MovieLens: 6-9 "
        "minutes on 2 cores)",
    )


class JobResult(BaseModel):
    catalog: str
    items: int
    users: int = Field(description="rows EASE learned from: the file's users and the store's")
    interactions: int = Field(description="distinct (user, item) pairs learned from")
    store_users: int = Field(description="store users with events on the catalog")
    kept_interactions: int = Field(description="the previous checkpoint's file interactions kept")
    dropped_items: int = Field(description="items of the previous catalog that are gone")
    content_vectors: bool = Field(description="the items' text is embedded (wishes work)")
    encoder: str | None
    notes: list[str]


class JobOut(BaseModel):
    id: str
    kind: Literal["catalog", "train"]
    status: Literal["queued", "running", "done", "failed"]
    request: dict[str, Any] = Field(description="what was asked")
    created_at: str
    started_at: str | None
    finished_at: str | None
    error: str | None = Field(description="why it failed")
    result: JobResult | None = Field(description="what was trained, once done")


class JobList(BaseModel):
    jobs: list[JobOut]
