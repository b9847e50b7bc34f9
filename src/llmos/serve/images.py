"""Images in requests, for a CLIP model's routes: base64 (or ``data:`` URLs) and multipart
uploads to the pixels the model reads, under the server's limits; and the emoji thumbnails
that image search answers with.

Every image is checked before it queues on the model, each failure answered with the image's
place in the request (``images[2]``, or ``files[2] (cat.png)`` for an upload):

    status  type            when
    400     wrong_model     images sent to a model that is not a CLIP model
    413     too_large       more than ``max_image_bytes`` bytes or ``max_image_pixels`` pixels
    422     invalid_request more than ``max_images`` images
    422     invalid_image   not base64, not a PNG/JPEG/WebP/GIF/BMP file, truncated or corrupt

The bytes decide what an image is: a declared type (a data: URL's, an upload's) is not read,
so a wrong one is never a 415. A body over ``max_image_body_bytes`` is refused before it is
read (the app's guard, 413).

A multipart/form-data request to a route of :class:`UploadRoute` becomes its JSON body: the
``files`` parts are the ``images`` (in base64), every other part a field of the same name, so
one handler and one schema serve both.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from fastapi import Request, Response
from fastapi.routing import APIRoute
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from llmos.data.emoji import EMOJI_DIR, load_images
from llmos.errors import DataError
from llmos.inference.image_decode import ImageError, ImageTooLarge, decode_image
from llmos.paths import data_dir
from llmos.serve.catalog import ModelEntry
from llmos.serve.deps import ApiError, Server, submit
from llmos.serve.operations import Operation, Pixels

UPLOAD_FIELD = "files"  # the multipart parts that carry image files
THUMBNAIL_STYLES = 2  # styles whose PNGs are kept (a style's ~3,800 emoji: about 16 MB)


# --- uploads --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Upload:
    """The file names of a multipart request's images (``request.state.upload``), so that an
    error names the file as the client sent it."""

    names: tuple[str, ...]


def _is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


async def _form_as_json(request: Request) -> Request:
    """The multipart request as the JSON request its route reads (see the module docstring)."""
    form = await request.form()
    try:
        body: dict[str, Any] = {}
        names = []
        for key in dict.fromkeys(form.keys()):
            values = form.getlist(key)
            if key == UPLOAD_FIELD:
                images = []
                for i, value in enumerate(values):
                    if not isinstance(value, UploadFile):
                        raise ApiError(
                            422, "invalid_request", f"{key}[{i}]: expected a file, got text"
                        )
                    images.append(base64.b64encode(await value.read()).decode("ascii"))
                    names.append(value.filename or "")
                body["images"] = images
                continue
            if key == "images" or any(isinstance(v, UploadFile) for v in values):
                raise ApiError(
                    422,
                    "invalid_request",
                    f"{key}: not a field of the form (image files go in '{UPLOAD_FIELD}' parts)",
                )
            body[key] = values[0] if len(values) == 1 else values
    finally:
        await form.close()
    if "images" not in body:
        raise ApiError(
            422,
            "invalid_request",
            f"{UPLOAD_FIELD}: Field required (one or more image files, as multipart/form-data)",
        )
    data = json.dumps(body).encode()
    headers = [
        (k, v) for k, v in request.scope["headers"] if k not in (b"content-type", b"content-length")
    ]
    headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:  # the body was read: what comes next is the client going away
            return await request.receive()
        sent = True
        return {"type": "http.request", "body": data, "more_body": False}

    as_json = Request({**request.scope, "headers": headers}, receive)
    as_json.state.upload = Upload(tuple(names))
    return as_json


class UploadRoute(APIRoute):
    """A JSON route that takes multipart/form-data too: image files as ``files`` parts,
    other fields as parts of their name (see the module docstring). Document the form with
    ``openapi_extra=upload_form(...)``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def route(request: Request) -> Response:
            if _is_multipart(request):
                request = await _form_as_json(request)
            return await handle(request)

        return route


def upload_form(**fields: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of an :class:`UploadRoute`'s multipart form: ``model``,
    ``files`` and ``fields`` (name -> JSON schema), added to its JSON body."""
    properties = {
        "model": {"type": "string", "description": "a CLIP model (task clip)"},
        UPLOAD_FIELD: {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "the image files (PNG, JPEG, WebP, GIF or BMP)",
        },
        **fields,
    }
    schema = {"type": "object", "required": ["model", UPLOAD_FIELD], "properties": properties}
    return {"requestBody": {"content": {"multipart/form-data": {"schema": schema}}}}


# --- images to pixels -----------------------------------------------------------------------


def require_clip(entry: ModelEntry) -> None:
    """400 unless the model reads images."""
    if entry.task != "clip":
        raise ApiError(
            400,
            "wrong_model",
            f"model {entry.name!r} is a {entry.task} model: it reads texts, not images; "
            "images need a CLIP model (task clip in GET /v1/models)",
            param="model",
        )


def _base64(item: str, what: str) -> bytes:
    text = item.strip()
    if text.startswith("data:"):
        head, comma, text = text.partition(",")
        if not comma or not head.endswith(";base64"):
            raise ApiError(
                422,
                "invalid_image",
                f"{what}: a data: URL must carry base64 (data:image/png;base64,...)",
            )
    text = "".join(text.split())  # line breaks, as `base64` wraps its output
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(
            422,
            "invalid_image",
            f"{what}: not base64 (send the file's bytes in base64, or as a data: URL)",
        ) from None


def _decode(items: list[str], names: list[str], size: int, srv: Server) -> torch.Tensor:
    """(N, 3, size, size) uint8 pixels of base64 images (in a worker thread)."""
    s = srv.settings
    out = []
    for item, what in zip(items, names, strict=True):
        raw = _base64(item, what)
        try:
            out.append(
                decode_image(
                    raw,
                    size=size,
                    max_bytes=s.max_image_bytes,
                    max_pixels=s.max_image_pixels,
                    name=what,
                )
            )
        except ImageTooLarge as e:
            raise ApiError(413, "too_large", str(e)) from None
        except ImageError as e:
            raise ApiError(422, "invalid_image", str(e)) from None
    return torch.stack(out)


async def read_images(request: Request, srv: Server, model: str, images: list[str]) -> Pixels:
    """The request's images as the CLIP model ``model`` reads them (module docstring: the
    errors)."""
    require_clip(srv.registry.entry(model))
    upload: Upload | None = getattr(request.state, "upload", None)
    field = UPLOAD_FIELD if upload is not None else "images"
    limit = srv.settings.max_images
    if len(images) > limit:
        raise ApiError(
            422,
            "invalid_request",
            f"{field} has {len(images)} items; this server takes at most {limit} per request",
            param=field,
        )
    names = [f"{field}[{i}]" for i in range(len(images))]
    if upload is not None:  # the file's name too, as the client sent it
        files = zip(names, upload.names, strict=True)
        names = [f"{what} ({name})" if name else what for what, name in files]
    size = (await srv.registry.get(model)).pipe.image_size
    return Pixels(await run_in_threadpool(_decode, images, names, size, srv))


async def submit_clip(
    request: Request, srv: Server, model: str, op: Operation, payload: Any, size: int
) -> Any:
    """:func:`~llmos.serve.deps.submit`, with the emoji data missing on the server a 503
    that says how to prepare it."""
    try:
        return await submit(request, srv, model, op, payload, size)
    except DataError as e:
        raise ApiError(
            503,
            "no_emoji_data",
            f"this server has no emoji data to describe or search with ({e}); an operator "
            "runs `llmos data prepare --with-emoji` (or passes --emoji-home)",
        ) from None


# --- thumbnails -----------------------------------------------------------------------------


def emoji_home(srv: Server) -> Path:
    return srv.settings.emoji_home or data_dir()


def emoji_styles(home: Path) -> list[str]:
    """The prepared emoji styles under ``home``."""
    return sorted(p.stem for p in (home / EMOJI_DIR / "images").glob("*.npz"))


def _png_url(rgba: Any) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class EmojiThumbnails:
    """Each prepared emoji's 64 x 64 PNG, as a data: URL: a style's are all encoded on its
    first use (a few seconds), then kept, for the last :data:`THUMBNAIL_STYLES` styles
    (a style's pixel array is 60 MB; its PNGs about 16 MB)."""

    def __init__(self, keep: int = THUMBNAIL_STYLES) -> None:
        self.keep = keep
        self.styles: OrderedDict[tuple[Path, str], dict[str, str]] = OrderedDict()
        self.lock = threading.Lock()

    def urls(self, home: Path, style: str, unified: list[str]) -> list[str]:
        """The data: URLs of the emoji ``unified`` of ``style`` (blocking: call in a thread).

        Raises:
            DataError: the style was not prepared.
        """
        key = (home, style)
        with self.lock:
            pngs = self.styles.get(key)
            if pngs is None:
                codes, rgba = load_images(home, style)
                pngs = {c: _png_url(rgba[i]) for i, c in enumerate(codes.tolist())}
                self.styles[key] = pngs
                while len(self.styles) > self.keep:
                    self.styles.popitem(last=False)
            self.styles.move_to_end(key)
        return [pngs[u] for u in unified]
