"""The CLIP commands' file work (issue 22): ``llmos embed --image`` (a ``.npy`` matrix of image
vectors), ``llmos search-images`` (text -> image) and ``llmos describe-images`` (image ->
text), over :class:`~llmos.inference.image.ImagePipeline`. Zero-shot image classification is
``llmos classify-zero --image`` (``recipes/classify_zero.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llmos.data.textfiles import read_inputs
from llmos.errors import DataError, LlmosError
from llmos.files import atomic_path
from llmos.inference.image import ImagePipeline
from llmos.inference.image_decode import image_files
from llmos.inference.image_views import check_zooms
from llmos.inference.load import load_pipeline


def load_clip_pipeline(checkpoint: str | Path, text_encoder: str | None = None) -> ImagePipeline:
    """The checkpoint's pipeline, which must be a CLIP one (a clear error otherwise)."""
    pipe = load_pipeline(checkpoint, text_encoder=text_encoder)
    if not isinstance(pipe, ImagePipeline):
        raise LlmosError(
            f"{checkpoint} is {pipe.describe()}: images need a CLIP checkpoint "
            "(`llmos pretrain --config configs/pretrain/clip-emoji.yaml`, then "
            "runs/clip-emoji/checkpoint)"
        )
    return pipe


def save_matrix(vectors: np.ndarray, output: str | Path) -> None:
    """A float32 ``.npy`` file, written atomically."""
    # Through an open file: np.save appends .npy to a path name that lacks it.
    with atomic_path(output) as tmp, open(tmp, "wb") as fh:
        np.save(fh, vectors.astype(np.float32))


def embed_image_files(
    checkpoint: str | Path,
    images: Sequence[str],
    output: str | Path,
    *,
    batch_size: int = 32,
    text_encoder: str | None = None,
) -> tuple[int, int]:
    """Embed image files (files, directories, glob patterns:
    :func:`~llmos.inference.image_decode.image_files`) into a float32 ``.npy`` matrix of unit
    rows, row i for the i-th file; returns its shape. The text tower is not loaded."""
    files = image_files(images)  # before the model loads: a typo fails at once
    pipe = load_clip_pipeline(checkpoint, text_encoder)
    vectors = pipe.embed_images(files, batch_size=batch_size)
    save_matrix(vectors, output)
    return vectors.shape


def search_images(
    checkpoint: str | Path,
    queries: Sequence[str],
    *,
    k: int = 5,
    style: str | None = None,
    gallery: Sequence[str] = (),
    text_encoder: str | None = None,
) -> list[dict[str, Any]]:
    """Each query's ``k`` nearest images: ``[{"query", "images": [hit, ...]}, ...]``, a hit
    as :meth:`~llmos.inference.image.ImagePipeline.search_images` gives it (``gallery``
    files: ``name`` is the file's path)."""
    if not queries:
        raise LlmosError("give one query at least")
    files = image_files(gallery) if gallery else None
    pipe = load_clip_pipeline(checkpoint, text_encoder)
    index = pipe.image_gallery(files, names=[str(f) for f in files]) if files else None
    hits = pipe.search_images(list(queries), k, style=style, gallery=index)
    return [{"query": q, "images": h} for q, h in zip(queries, hits, strict=True)]


def describe_images(
    checkpoint: str | Path,
    images: Sequence[str],
    *,
    k: int = 5,
    lang: str | None = None,
    captions_path: str | None = None,
    by: str = "captions",
    batch_size: int = 32,
    text_encoder: str | None = None,
    zooms: Sequence[float] | None = None,
) -> list[dict[str, Any]]:
    """Each image's ``k`` best captions: ``[{"image", "captions": [hit, ...]}, ...]``, a
    hit as :meth:`~llmos.inference.image.ImagePipeline.describe_images` gives it; the
    captions are the emoji names (in ``lang``) unless ``captions_path`` gives texts (one a
    line, or .tsv/.csv/.jsonl ``text``); ``by`` ranks them by ``captions``, look-alike
    ``drawings`` (emoji names only) or ``both``; ``zooms`` describes each image by the mean
    of its scaled views."""
    check_zooms(zooms)
    files = image_files(images)
    captions = None
    if captions_path and by != "captions":
        raise LlmosError(f"--by {by}: only the emoji names have drawings; leave out --captions")
    if captions_path:
        if lang is not None:
            raise LlmosError("--lang chooses among the emoji names; --captions gives the texts")
        captions, _ = read_inputs(captions_path)
        if not captions:
            raise DataError(f"{captions_path}: no texts")
    pipe = load_clip_pipeline(checkpoint, text_encoder)
    hits = pipe.describe_images(
        files, k, lang=lang, captions=captions, by=by, batch_size=batch_size, zooms=zooms
    )
    return [{"image": str(f), "captions": h} for f, h in zip(files, hits, strict=True)]
