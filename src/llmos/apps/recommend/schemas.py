"""The HTTP contract of the recommendation app (``/v1/apps/recommend``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

ItemId = Annotated[str, Field(min_length=1, max_length=200)]
Tag = Annotated[str, Field(min_length=1, max_length=100)]


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
