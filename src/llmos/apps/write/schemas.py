"""The HTTP contract of the writing assistant (``/v1/apps/write``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from llmos.store.terms import MAX_TERM_CHARS, MAX_TERMS

Term = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TERM_CHARS)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CorrectIn(Strict):
    texts: list[Annotated[str, Field(min_length=1, max_length=100_000)]] = Field(
        min_length=1, max_length=10_000
    )
    model: str | None = Field(
        None, description="a served spelling model (default: the server's --write-model)"
    )
    threshold: float | None = Field(
        None, ge=0, le=1, description="detection probability from which a character is replaced"
    )


class EditOut(BaseModel):
    start: int = Field(description="character offset into the text")
    end: int
    original: str
    suggestion: str
    score: float
    kind: str = Field(description="spelling (the model) or dictionary (the user's own pair)")


class Corrected(BaseModel):
    text: str
    corrected: str
    edits: list[EditOut]


class CorrectOut(BaseModel):
    model: str
    results: list[Corrected]


class DictionaryIn(Strict):
    protect: list[Term] = Field(
        default_factory=list, max_length=MAX_TERMS, description="terms never to be corrected"
    )
    pairs: dict[Term, Term] = Field(
        default_factory=dict, description="wrong form -> right form, replaced wherever found"
    )


class DictionaryOut(BaseModel):
    protect: list[str]
    pairs: dict[str, str]
    size: int
