"""The HTTP contract of the customer-service app (``/v1/apps/support``)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

KbName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^/]+$")]
FaqText = Annotated[str, Field(min_length=1, max_length=20_000)]
RowId = Annotated[int, Path(ge=1, le=2**31 - 1, description="an id (the store's ids are 32-bit)")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


EncoderName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        description="a served embedding model (GET /v1/models); the knowledge base's index "
        "embeds with it instead of the desk's default encoder",
    ),
]


class KbCreate(Strict):
    name: KbName
    encoder: EncoderName | None = None


class KbEncoder(Strict):
    """The model a knowledge base searches with; null: the desk's default encoder."""

    encoder: EncoderName | None


class KbInfo(BaseModel):
    name: str
    revision: int = Field(description="grows by one with every change to the entries")
    entries: int
    public: bool = Field(description="other users may ask it questions")
    encoder: str | None = Field(
        description="the served model its index embeds with; null: the desk's default"
    )


class KbList(BaseModel):
    kbs: list[KbInfo]


class FaqIn(Strict):
    question: FaqText
    answer: FaqText
    alternatives: list[FaqText] = Field(default=[], max_length=100)
    tags: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default=[], max_length=20
    )


class EntriesIn(Strict):
    entries: list[FaqIn] = Field(min_length=1, max_length=10_000)


class FileIn(Strict):
    """An FAQ file's content: JSONL, CSV or TSV, as ``llmos support kb add`` reads them."""

    format: Literal["jsonl", "csv", "tsv"]
    content: Annotated[str, Field(min_length=1)]


class EntryIds(BaseModel):
    ids: list[int]


class Entry(BaseModel):
    id: int
    question: str
    answer: str
    alternatives: list[str]
    tags: list[str]


class EntryList(BaseModel):
    revision: int
    total: int
    entries: list[Entry]


class SearchIn(Strict):
    query: Annotated[str, Field(min_length=1, max_length=4000)]
    k: int = Field(default=5, ge=1, le=50)


class SearchHit(BaseModel):
    id: int = Field(description="the entry")
    question: str
    answer: str
    tags: list[str]
    score: float = Field(description="fused reciprocal-rank score")
    similarity: float = Field(description="cosine of the query to the entry's nearest text")
    bm25: float = Field(description="BM25 score of the entry's best text (0: no shared word)")
    matched: str = Field(description="the entry's text nearest the query")


class SearchOut(BaseModel):
    kb: str
    hits: list[SearchHit]


class KbShare(Strict):
    """Who may ask the knowledge base, and who serves its human queue."""

    public: bool | None = Field(default=None, description="other users may ask it questions")
    agents: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(
        default=None, max_length=100, description="user names that serve its queue (replaces)"
    )


class KbShared(KbInfo):
    agents: list[str]


class MessageIn(Strict):
    """A customer's message: in a new conversation with ``kb`` (``OWNER/NAME``), or in one of
    the caller's conversations."""

    text: Annotated[str, Field(min_length=1, max_length=4000)]
    kb: Annotated[str, Field(min_length=3, max_length=201)] | None = None
    conversation_id: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None


class Source(BaseModel):
    id: int = Field(description="the knowledge-base entry")
    question: str
    similarity: float
    score: float


class Sentiment(BaseModel):
    label: str
    negative: float | None


class Intent(BaseModel):
    label: str
    score: float = Field(description="the head's probability, or the few-shot cosine")
    source: Literal["head", "examples"] = Field(
        description="the trained head, or the domain file's few-shot examples"
    )


class Slot(BaseModel):
    name: str
    value: str
    start: int
    end: int


class Form(BaseModel):
    intent: str
    slots: dict[str, str] = Field(description="the form's slots filled so far")


class MessageOut(BaseModel):
    conversation_id: int
    reply: str
    action: Literal["answer", "ask", "clarify", "fallback", "escalate"]
    language: Literal["zh", "en"]
    reason: str = Field(description="why the policy chose the action")
    sentiment: Sentiment | None
    sources: list[Source]
    ticket_id: int | None
    intent: Intent | None = Field(None, description="null without an NLU model")
    slots: list[Slot] = Field(default_factory=list, description="the message's tagged slots")
    form: Form | None = Field(None, description="the form that answered (action ask/answer)")


class TurnOut(BaseModel):
    role: Literal["customer", "bot", "agent"]
    text: str
    action: str | None
    created_at: str


class TracedTurn(TurnOut):
    trace: dict = Field(
        description="the policy's evidence: language, sentiment, intent, slots, form, "
        "sources, reason"
    )


class ConversationOut(BaseModel):
    id: int
    kb: str
    status: Literal["bot", "human", "closed"]
    turns: list[TurnOut]


class ConversationInfo(BaseModel):
    id: int
    kb: str
    status: str
    updated_at: str


class ConversationList(BaseModel):
    conversations: list[ConversationInfo]


class TicketInfo(BaseModel):
    id: int
    kb: str
    conversation_id: int
    reason: str
    status: Literal["open", "closed"]
    created_at: str


class TicketList(BaseModel):
    tickets: list[TicketInfo]


class TicketOut(TicketInfo):
    transcript: list[TracedTurn]


class AgentReply(Strict):
    text: Annotated[str, Field(min_length=1, max_length=4000)]
