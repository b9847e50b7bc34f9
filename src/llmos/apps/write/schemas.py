"""The HTTP contract of the writing assistant (``/v1/apps/write``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from llmos.apps.write.adapters import DEFAULT_STEPS, MAX_STEPS
from llmos.apps.write.suggestions import MAX_K
from llmos.serve.schemas import GenerateOptions
from llmos.store.documents import MAX_DOCUMENT_CHARS
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
    lang: Literal["zh", "en"] = Field(
        "zh",
        description="zh: the spelling model; en: the English speller (SymSpell candidates "
        "ranked in context by a character 6-gram LM of the prepared English corpus)",
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


# --- documents, continuation, adapters --------------------------------------------------


class DocumentIn(Strict):
    title: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_DOCUMENT_CHARS)]


class DocumentPatch(Strict):
    title: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_DOCUMENT_CHARS)] | None = (
        None
    )


class DocumentSummary(BaseModel):
    id: int
    title: str
    chars: int
    created_at: str
    updated_at: str


class DocumentOut(DocumentSummary):
    text: str


class ContinueIn(GenerateOptions):
    text: Annotated[str, StringConstraints(min_length=1, max_length=100_000)] = Field(
        description="what the user has written so far (its end is continued)"
    )
    model: str | None = Field(None, description="a served GPT (default: --write-generator)")
    adapter: str | None = Field(
        None, description="one of your adapters (default: your newest ready one, if any)"
    )
    use_adapter: bool = Field(True, description="false: the base model, even with an adapter")
    stream: bool = Field(True, description="server-sent events, one per decoded piece")


class ContinueOut(BaseModel):
    model: str
    adapter: str | None
    text: str


class AdapterIn(Strict):
    name: Annotated[str, StringConstraints(pattern=r"^[\w-]{1,64}$")]
    model: str | None = Field(None, description="the served GPT to adapt (--write-generator)")
    steps: int = Field(DEFAULT_STEPS, ge=1, le=MAX_STEPS)


class AdapterOut(BaseModel):
    id: int
    name: str
    base: str
    status: str
    info: dict[str, Any]
    created_at: str
    job: str | None = None


class SuggestIn(Strict):
    text: Annotated[str, StringConstraints(min_length=1, max_length=100_000)] = Field(
        description="the paragraph being written"
    )
    k: int = Field(5, ge=1, le=MAX_K, description="how many suggestions (documents)")


class Source(BaseModel):
    corpus: str = Field(description="sanguo, peoples_daily, tang, songci, ... or user (yours)")
    title: str
    doc: str = Field(description="the document's id in its corpus (yours: the document id)")
    offset: int = Field(description="the passage's first character in the document")


class SuggestionOut(BaseModel):
    text: str
    score: float
    source: Source
    similarity: float
    dense_rank: int | None
    bm25_rank: int | None


class SuggestOut(BaseModel):
    suggestions: list[SuggestionOut]
    shared: bool = Field(description="whether the shared corpus was searched (else: yours only)")
