"""The HTTP contract: request and response bodies of the ``/v1`` routes.

Field limits here are the hard caps any server has; a server's own, usually tighter, limits
(``ServeSettings``: texts per request, characters per text) are checked by the routes and
answered 422 with the same error shape.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from llmos.inference.generate import GenerationConfig
from llmos.inference.image_views import MAX_VIEWS, ZOOM_RANGE

Text = Annotated[str, Field(min_length=1, max_length=100_000)]
ModelName = Annotated[
    str, Field(min_length=1, max_length=200, description="a name from /v1/models")
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    type: str = Field(description="machine-readable kind, e.g. invalid_request, queue_full")
    message: str = Field(description="what went wrong, and what was expected")


class ErrorBody(BaseModel):
    error: ErrorDetail


# --- models ---------------------------------------------------------------------------------


class ModelInfo(BaseModel):
    name: str
    task: str = Field(
        description="classification, tagging, embedding, fill-mask, generation, instruct, "
        "recommendation, clip (images and texts in one space)"
    )
    model_type: str = Field(
        description="the architecture: bert, roberta, gpt, xlnet, clip (item-recommender for "
        "a recommendation model)"
    )
    capabilities: list[str] = Field(description="the /v1 routes this model answers")
    labels: list[str] | None
    language: str
    size_bytes: int
    quantization: str | None
    max_length: int
    loaded: bool


class IndexInfo(BaseModel):
    name: str
    model: str
    count: int
    dim: int


class ModelList(BaseModel):
    models: list[ModelInfo]
    indexes: list[IndexInfo]
    memory_used_bytes: int
    memory_budget_bytes: int


class ModelAction(Strict):
    model: ModelName


# --- inference --------------------------------------------------------------------------------


LabelName = Annotated[str, Field(min_length=1, max_length=200)]
ImageData = Annotated[
    str,
    Field(
        min_length=1,
        description="an image file (PNG, JPEG, WebP, GIF or BMP) in base64, or a data: URL "
        "(data:image/png;base64,...)",
    ),
]
IMAGES = (
    "images (base64 or data: URLs), for a CLIP model (task clip); at most the server's "
    "max_images, each at most max_image_bytes and max_image_pixels"
)


class ClassifyRequest(Strict):
    model: ModelName = Field(
        description="a classifier; or, with labels and/or examples, an encoder that embeds "
        "(e.g. e5-zh): the classifier is then built on the fly; or, with images and labels, a "
        "CLIP model (zero-shot image classification)"
    )
    texts: list[Text] | None = Field(
        None, min_length=1, max_length=10_000, description="the texts (or give images)"
    )
    images: list[ImageData] | None = Field(
        None, min_length=1, max_length=256, description=f"instead of texts: {IMAGES}"
    )
    labels: dict[LabelName, Text | list[Text]] | None = Field(
        None,
        description='on the fly: each label\'s description(s), e.g. {"pos": "a positive '
        "review\"} (zero-shot); a label of examples needs none; with images, each label's "
        'description(s) in Chinese or English, e.g. {"cat": ["猫", "a cat"]}',
    )
    examples: dict[LabelName, list[Text]] | None = Field(
        None, description="on the fly: a few example texts per label (few-shot)"
    )
    method: Literal["similarity", "centroid", "logreg"] | None = Field(
        None,
        description="on the fly: similarity (descriptions), centroid or logreg (examples); "
        "default centroid with examples, else similarity",
    )
    texts_b: list[Text] | None = Field(
        None, description="second texts of sentence pairs, one per text"
    )
    long_inputs: Literal["window", "truncate"] = Field(
        "window",
        description="a text longer than the model's max_length: classified from overlapping "
        "windows whose logits are averaged (window), or cut off (truncate); sentence pairs are "
        "always truncated",
    )


class Classification(BaseModel):
    label: str
    score: float
    scores: dict[str, float]
    windows: int = Field(
        1, description="how many windows the text was read in (1 unless longer than max_length)"
    )


class ClassifyResponse(BaseModel):
    model: str
    results: list[Classification]
    method: str | None = Field(
        None, description="on the fly: the method that classified (null for a classifier)"
    )
    cached: bool | None = Field(
        None, description="on the fly: whether the classifier was built by an earlier request"
    )


class TagRequest(Strict):
    model: ModelName
    texts: list[Text] = Field(min_length=1, max_length=10_000)


class Span(BaseModel):
    text: str
    label: str
    start: int = Field(description="character offset into the text")
    end: int
    score: float | None = None


class TagResponse(BaseModel):
    model: str
    results: list[list[Span]]


class CorrectRequest(Strict):
    model: ModelName
    texts: list[Text] = Field(min_length=1, max_length=10_000)
    threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="detection probability from which a character is replaced (default: the "
        "model's own, fitted on its validation split)",
    )


class Correction(BaseModel):
    start: int = Field(description="character offset into the text")
    end: int
    original: str
    suggestion: str
    score: float = Field(description="the detection probability")
    prob: float = Field(description="the correction head's probability of the suggestion")


class CorrectResponse(BaseModel):
    model: str
    results: list[list[Correction]]


class FillMaskRequest(Strict):
    model: ModelName
    text: Text = Field(description="text with one or more [MASK] tokens")
    top_k: int = Field(5, ge=1, le=100)


class Fill(BaseModel):
    token: str
    token_id: int
    score: float
    sequence: str


class FillMaskResponse(BaseModel):
    model: str
    results: list[list[Fill]] = Field(description="one list per [MASK], left to right")


class EmbedRequest(Strict):
    model: ModelName
    texts: list[Text] | None = Field(
        None,
        min_length=1,
        max_length=10_000,
        description="the texts (or give images); a CLIP model embeds them into its image space",
    )
    images: list[ImageData] | None = Field(
        None, min_length=1, max_length=256, description=f"instead of texts: {IMAGES}"
    )
    pooling: Literal["mean", "cls", "max"] | None = None
    normalize: bool | None = None
    # The model's prefix for this kind of text (E5: "query: " / "passage: "); none: as given.
    kind: Literal["query", "passage"] | None = None


class EmbedResponse(BaseModel):
    model: str
    dim: int
    embeddings: list[list[float]]


def decoding_default(name: str) -> Any:
    """The default of the decoding option ``name``: GenerationConfig's, the one source of
    decoding defaults for the Python API, the CLI and the server alike."""
    f = GenerationConfig.__dataclass_fields__[name]
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


class GenerateOptions(Strict):
    """The decoding options of a generate request, with the server's defaults."""

    max_new_tokens: int = Field(decoding_default("max_new_tokens"), ge=1)
    strategy: Literal["greedy", "sample"] = decoding_default("strategy")
    temperature: float = Field(decoding_default("temperature"), gt=0, le=100)
    top_k: int = Field(decoding_default("top_k"), ge=0)
    top_p: float = Field(decoding_default("top_p"), gt=0, le=1)
    repetition_penalty: float = Field(decoding_default("repetition_penalty"), gt=0, le=100)
    no_repeat_ngram_size: int = Field(decoding_default("no_repeat_ngram_size"), ge=0, le=100)
    num_beams: int = Field(decoding_default("num_beams"), ge=1, le=16)
    seed: int | None = Field(decoding_default("seed"), ge=0, le=2**63 - 1)
    stop: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=lambda: list(decoding_default("stop")), max_length=16
    )


class GenerateRequest(GenerateOptions):
    model: ModelName
    prompt: Text
    raw: bool = Field(False, description="instruction-tuned models: skip the prompt template")
    stream: bool = Field(False, description="server-sent events, one per decoded piece")


class GenerateResponse(BaseModel):
    model: str
    text: str


class SearchRequest(Strict):
    index: Annotated[str, Field(min_length=1, max_length=200)]
    query: Text
    k: int = Field(5, ge=1, le=100)


class Hit(BaseModel):
    id: str
    score: float
    text: str


class SearchResponse(BaseModel):
    index: str
    hits: list[Hit]


# --- images (a CLIP model: serve/routes/images.py) -------------------------------------------


class DescribeRequest(Strict):
    model: ModelName = Field(description="a CLIP model (task clip)")
    images: list[ImageData] = Field(min_length=1, max_length=256, description=IMAGES)
    k: int = Field(5, ge=1, le=50, description="names per image and language")
    lang: Literal["zh", "en", "both"] = Field(
        "both", description="the names' language: Chinese (CLDR), English, or both"
    )
    by: Literal["captions", "drawings", "both"] = Field(
        "captions",
        description="rank the names by the cosine of image and name (captions), by the "
        "image's nearest drawing of each emoji in the styles the model trained on (drawings), "
        "or by the two cosines added (both)",
    )
    zooms: list[Annotated[float, Field(ge=ZOOM_RANGE[0], le=ZOOM_RANGE[1])]] | None = Field(
        None,
        min_length=1,
        max_length=MAX_VIEWS,
        description="describe each image by the mean of its views scaled by these factors "
        "about the centre, e.g. [0.9, 1, 1.1]: one pass of the image tower per view "
        "(docs/guide.md, 'Three views of the query'); default: the image as it is",
    )

    @field_validator("zooms", mode="before")
    @classmethod
    def _one_zoom(cls, value: Any) -> Any:
        return [value] if isinstance(value, str | int | float) else value  # one form field


class Description(BaseModel):
    text: str = Field(description="the emoji's name")
    lang: str = Field(description="zh or en")
    emoji: str = Field(description="the emoji it names")
    unified: str = Field(description="its code points, e.g. 1F600")
    score: float = Field(
        description="what was ranked: by captions, the cosine of the image and the name, in "
        "[-1, 1]; by drawings, drawing_score; by both, caption_score + drawing_score"
    )
    drawing_score: float | None = Field(
        None,
        description="by drawings or both: the best cosine of the image and the emoji's "
        "drawings in the training styles (for a name none draws, by both: the image's lowest)",
    )
    caption_score: float | None = Field(
        None, description="by both: the cosine of the image and the name"
    )


class DescribeResponse(BaseModel):
    model: str
    results: list[dict[str, list[Description]]] = Field(
        description="per image, in order: each asked language's names, best first"
    )


Style = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]


class ImageSearchRequest(Strict):
    model: ModelName = Field(description="a CLIP model (task clip)")
    query: Text = Field(description="what to find, in Chinese or English")
    k: int = Field(8, ge=1, le=50)
    style: Style | None = Field(
        None,
        description="the emoji style searched: apple, google, twitter or facebook, as "
        "prepared (default: the model's held-out evaluation style)",
    )


class ImageHit(BaseModel):
    emoji: str
    unified: str
    name: str | None = Field(description="its English name")
    zh_name: str | None = Field(description="its Chinese name (CLDR), when it has one")
    style: str
    score: float = Field(description="cosine similarity of the query and the image")
    image: str = Field(description="the emoji's 64 x 64 PNG as a data: URL")


class ImageSearchResponse(BaseModel):
    model: str
    style: str
    hits: list[ImageHit]


# --- users and their data -------------------------------------------------------------------


class UserInfo(BaseModel):
    id: int
    name: str
    is_admin: bool


class UserCreate(Strict):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    admin: bool = False


class UserCreated(UserInfo):
    api_key: str = Field(description="shown once; only its hash is stored")


class NewKey(BaseModel):
    api_key: str = Field(description="shown once; only its hash is stored")


MAX_PROFILE_DEPTH = 32


def _storable(value: Any, depth: int = 0) -> Any:
    """A profile reads back as written: no NaN or Infinity (JSON has none; they would read back
    as null) and nesting no deeper than MAX_PROFILE_DEPTH (deeper JSON cannot be serialized
    back, and the profile would fail every read)."""
    if depth > MAX_PROFILE_DEPTH:
        raise ValueError(f"is nested deeper than {MAX_PROFILE_DEPTH} levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"holds {value}, which JSON cannot carry: use a finite number")
    if isinstance(value, dict | list):
        for child in value.values() if isinstance(value, dict) else value:
            _storable(child, depth + 1)
    return value


class ProfilePatch(Strict):
    changes: Annotated[dict[str, Any], AfterValidator(_storable)] = Field(
        description="keys to set; a null value removes the key"
    )


class Profile(BaseModel):
    profile: dict[str, Any]


class EventIn(Strict):
    kind: Annotated[str, Field(min_length=1, max_length=50)]
    item: Annotated[str, Field(max_length=200)] | None = None
    text: Annotated[str, Field(max_length=10_000)] | None = None
    value: float | None = Field(None, allow_inf_nan=False)


class EventOut(BaseModel):
    id: int
    kind: str
    item: str | None
    text: str | None
    value: float | None
    created_at: str


class EventList(BaseModel):
    events: list[EventOut]


class MemoryIn(Strict):
    role: Literal["user", "assistant", "system"]
    content: Annotated[str, Field(min_length=1, max_length=10_000)]


class MemoryOut(BaseModel):
    role: str
    content: str
    created_at: str


class MemoryList(BaseModel):
    memory: list[MemoryOut]


class Created(BaseModel):
    id: int | None = None
    ok: bool = True
