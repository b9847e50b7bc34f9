"""A CLIP model's images over HTTP: ``/v1/images/describe`` (an image's nearest emoji names,
Chinese and English) and ``/v1/images/search`` (the emoji images nearest a text, with their
PNGs); and the image halves of ``/v1/embed`` and ``/v1/classify``, which
:mod:`llmos.serve.routes.inference` hands here when a request has ``images``.

Images arrive in base64 (or as data: URLs) in JSON, or as multipart/form-data files on the
routes that take uploads (``/v1/embed``, ``/v1/images/describe``); :mod:`llmos.serve.images`
reads them, under the server's limits, and says which statuses its errors get.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from llmos.errors import DataError, LlmosError
from llmos.inference.image_zeroshot import label_descriptions
from llmos.serve import schemas as s
from llmos.serve.deps import ApiError, Server, ServerDep, UserDep, check_texts, require, submit
from llmos.serve.fewshot import MAX_LABELS
from llmos.serve.images import (
    UploadRoute,
    emoji_home,
    emoji_styles,
    read_images,
    require_clip,
    submit_clip,
    upload_form,
)
from llmos.serve.operations import DescribeOp, ImageClassifyOp, ImageEmbedOp, ImageSearchOp

router = APIRouter(prefix="/v1/images", tags=["images"], route_class=UploadRoute)
# The routes whose bodies carry images: the app's guard lets them be max_image_body_bytes.
IMAGE_PATHS = ("/v1/embed", "/v1/classify", "/v1/images/describe")
LANGS = {"zh": ("zh",), "en": ("en",), "both": ("zh", "en")}


def _invalid(message: str, param: str | None = None) -> ApiError:
    return ApiError(422, "invalid_request", message, param=param)


@router.post(
    "/describe",
    response_model=s.DescribeResponse,
    response_model_exclude_none=True,  # drawing_score, caption_score: by drawings or both only
    openapi_extra=upload_form(
        k={"type": "integer", "default": 5},
        lang={"enum": ["zh", "en", "both"], "default": "both"},
        by={"enum": ["captions", "drawings", "both"], "default": "captions"},
        zooms={"type": "array", "items": {"type": "number"}},
    ),
)
async def describe(body: s.DescribeRequest, request: Request, srv: ServerDep, _: UserDep) -> Any:
    """Image -> text: each image's ``k`` best emoji names (CLDR's Chinese and English names
    of the prepared emoji data), best first, by the cosine of image and name (``by``
    ``captions``), of the image and the emoji's nearest drawing in the styles the model trained
    on (``drawings``), or their sum (``both``); with ``zooms``, each image as the mean of its
    scaled views. Takes JSON, or the images as multipart/form-data ``files`` (with ``model``,
    ``k``, ``lang``, ``by`` and ``zooms``, one part per factor, as fields)."""
    pixels = await read_images(request, srv, body.model, body.images)
    zooms = tuple(body.zooms) if body.zooms is not None else None
    op = DescribeOp(body.k, LANGS[body.lang], body.by, zooms)
    results = await submit_clip(request, srv, body.model, op, pixels, len(pixels))
    return {"model": body.model, "results": results}


@router.post("/search", response_model=s.ImageSearchResponse)
async def search(body: s.ImageSearchRequest, request: Request, srv: ServerDep, _: UserDep) -> Any:
    """Text -> image: the ``k`` emoji images of one style nearest the query (Chinese or
    English), best first, each with its PNG as a data: URL."""
    require(srv.registry.entry(body.model), "images/search")
    check_texts(srv, [body.query], "query")
    home = emoji_home(srv)
    if body.style is not None and body.style not in (styles := emoji_styles(home)):
        raise _invalid(
            f"style {body.style!r} is not prepared on this server (it has: "
            f"{', '.join(styles) or 'none'})",
            "style",
        )
    op = ImageSearchOp(body.k, body.style)
    hits = await submit_clip(request, srv, body.model, op, body.query, 1)
    style = hits[0]["style"]
    try:
        urls = await run_in_threadpool(
            srv.thumbnails.urls, home, style, [h["unified"] for h in hits]
        )
    except DataError as e:
        raise ApiError(503, "no_emoji_data", str(e)) from None
    hits = [{**h, "image": url} for h, url in zip(hits, urls, strict=True)]
    return {"model": body.model, "style": style, "hits": hits}


# --- the image halves of /v1/embed and /v1/classify -------------------------------------------


async def embed_images(body: s.EmbedRequest, request: Request, srv: Server) -> dict[str, Any]:
    """``/v1/embed`` with images: a CLIP model's unit vectors, in the space its texts embed
    into."""
    assert body.images is not None
    if body.texts is not None:
        raise _invalid("give texts or images, not both (a request embeds one kind)")
    options = [n for n in ("pooling", "normalize", "kind") if getattr(body, n) is not None]
    if options:
        raise _invalid(
            f"{', '.join(options)}: for texts; a CLIP model's image vectors are unit vectors "
            "of its own",
            options[0],
        )
    pixels = await read_images(request, srv, body.model, body.images)
    vectors = await submit(request, srv, body.model, ImageEmbedOp(), pixels, len(pixels))
    return {"model": body.model, "dim": len(vectors[0]), "embeddings": vectors}


async def classify_images(body: s.ClassifyRequest, request: Request, srv: Server) -> dict[str, Any]:
    """``/v1/classify`` with images: zero-shot, each label's descriptions (Chinese or English)
    averaged in a CLIP model's space, the probabilities a softmax of its logit scale times the
    cosines (:class:`~llmos.inference.image_zeroshot.ImageZeroShot`)."""
    assert body.images is not None
    for name in ("texts", "texts_b", "examples"):
        if getattr(body, name) is not None:
            raise _invalid(
                f"{name}: images are classified zero-shot from labels alone; give texts or "
                "images, not both",
                name,
            )
    if body.method not in (None, "similarity"):
        raise _invalid(f"method {body.method!r}: images are classified by similarity", "method")
    if body.labels is None:
        raise _invalid(
            'labels: Field required (images are classified zero-shot: {"cat": ["猫", "a cat"], '
            "...})",
            "labels",
        )
    require_clip(srv.registry.entry(body.model))
    try:
        labels = label_descriptions(body.labels)
    except LlmosError as e:
        raise _invalid(str(e), "labels") from None
    if len(labels) > MAX_LABELS:
        raise _invalid(f"{len(labels)} labels; at most {MAX_LABELS} per request", "labels")
    for name, texts in labels.items():
        check_texts(srv, texts, f"labels.{name}")
    pixels = await read_images(request, srv, body.model, body.images)
    op = ImageClassifyOp(tuple((name, tuple(texts)) for name, texts in labels.items()))
    results = await submit(request, srv, body.model, op, pixels, len(pixels))
    return {"model": body.model, "results": results, "method": "similarity", "cached": False}
