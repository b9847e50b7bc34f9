"""The HTTP contract of the OpenAI-compatible surface (``/openai/v1``): request and response
bodies shaped as OpenAI's API reference shapes them (https://platform.openai.com/docs/api-reference),
for the fields llmos serves. Fields llmos cannot honour are declared so that a request setting
them is refused by name (400) rather than answered as if it had not (see routes/openai.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmos.serve.schemas import ModelName, Text

Stop = Annotated[str, Field(min_length=1, max_length=200)]
Texts = Annotated[list[Text], Field(min_length=1, max_length=10_000)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error, rate_limit_error, server_error, ...")
    param: str | None = Field(description="the request field at fault, if one is")
    code: str | None = Field(description="llmos's error kind, e.g. model_not_found")


class OpenAIErrorBody(BaseModel):
    error: OpenAIErrorDetail


class StreamOptions(Strict):
    include_usage: bool = False


class SamplingOptions(Strict):
    """What chat and text completions share: OpenAI's sampling fields, llmos's ``GenerationConfig``
    underneath (temperature 0 is greedy decoding)."""

    model: ModelName
    temperature: float | None = Field(None, ge=0, le=2, description="0: greedy; default 1")
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=16)
    stop: Stop | Annotated[list[Stop], Field(max_length=16)] | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    presence_penalty: float = Field(0.0, ge=-2, le=2, description="only 0 is served")
    frequency_penalty: float = Field(0.0, ge=-2, le=2, description="only 0 is served")
    logit_bias: dict[str, float] | None = Field(None, description="refused unless empty")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: Annotated[str, Field(max_length=200)] | None = Field(
        None, description="a label; the caller's own name uses their memory when allowed"
    )


class TextPart(Strict):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients may send e.g. refusal: null

    role: Literal["system", "developer", "user", "assistant"]
    content: Annotated[str, Field(max_length=100_000)] | list[TextPart] | None = None
    name: str | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatCompletionRequest(SamplingOptions):
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    max_tokens: int | None = Field(None, ge=1, description="default: the server's max_new_tokens")
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = Field(None, description="refused if true")
    top_logprobs: int | None = Field(None, description="refused")
    tools: list[dict[str, Any]] | None = Field(None, description="refused unless empty")
    tool_choice: str | dict[str, Any] | None = Field(None, description="refused unless none")
    response_format: dict[str, Any] | None = Field(None, description="text only")
    # Accepted and ignored, as they change nothing of the answer.
    parallel_tool_calls: bool | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None


class CompletionRequest(SamplingOptions):
    prompt: Text | Texts = Field(description="a text or a list of texts")
    max_tokens: int = Field(16, ge=1, description="OpenAI's default: 16")
    echo: bool = Field(False, description="refused if true")
    suffix: str | None = Field(None, description="refused")
    best_of: int | None = Field(None, ge=1, description="refused above n")
    logprobs: int | None = Field(None, description="refused")


class EmbeddingRequest(Strict):
    model: ModelName
    input: Text | Texts = Field(description="a text or a list of texts (not token ids)")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, description="only the model's own")
    user: Annotated[str, Field(max_length=200)] | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    system_fingerprint: str | None = None


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 of float32 (little-endian)")


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: EmbeddingUsage


class OpenAIModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class OpenAIModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIModel]
