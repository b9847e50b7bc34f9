"""Images and texts in one space: the pipeline of a CLIP checkpoint (issue 22).

A CLIP checkpoint (:mod:`llmos.checkpoint.clip`) holds a ViT, two projections and a
temperature; its text tower is another checkpoint, a frozen sentence encoder (multilingual-e5:
``runs/e5-zh``), whose unit vectors ``text_projection`` maps into the shared space. So:

- an image: decoded as training read it (:mod:`llmos.inference.image_decode`), scaled to
  [-1, 1], through the ViT and ``visual_projection``, normalised:
  :meth:`ImagePipeline.embed_images`;
- a text: embedded by the tower with the prefix kind the captions were embedded with
  (``text_kind``, E5's ``query: ``), through ``text_projection``, normalised:
  :meth:`ImagePipeline.embed_texts`.

On those vectors: zero-shot classification
(:class:`~llmos.inference.image_zeroshot.ImageZeroShot`: each label's descriptions averaged, a
softmax over the model's own logit scale times the cosines, as in training),
image -> text (:meth:`ImagePipeline.describe_images`, over a caption index: by default every
emoji's CLDR name in Chinese and English from the prepared data, or by look-alike drawings:
:mod:`llmos.inference.image_drawings`) and text -> image
(:meth:`ImagePipeline.search_images`, over a gallery: by default the prepared emoji of one
style, the checkpoint's held-out evaluation style). Indexes are exact FAISS inner-product
search over unit vectors (:class:`~llmos.inference.image_index.EntryIndex`).

An image may also be embedded as the mean of several scaled views of it (``zooms``:
:mod:`llmos.inference.image_views`, where what it gains is measured).

The tower is loaded on first use (image embeddings need none of it), found as
:func:`~llmos.checkpoint.clip.text_encoder_path` says and checked against the digest of the
weights the projection was trained on (:func:`~llmos.checkpoint.clip.check_text_encoder`).
The default indexes are built on first use too, then kept; the default caption index's tower
vectors are cached on disk under ``$LLMOS_HOME/cache/clip`` by the key training uses, so a
trained checkpoint's captions are usually embedded already.

One module of over 500 lines: it is one class whose methods share the lazily built tower,
indexes and lock; what stands alone is in ``image_decode``, ``image_index``,
``image_drawings``, ``image_views`` and ``image_zeroshot``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from llmos.checkpoint.clip import (
    ClipCheckpoint,
    check_text_encoder,
    read_clip,
    text_encoder_path,
)
from llmos.checkpoint.digest import weights_digest
from llmos.checkpoint.io import load_state_dict_strict, read_weights
from llmos.config.clip import EmojiDataConfig
from llmos.data.emoji_pairs import load_rows, normalise, style_images, trained_texts
from llmos.errors import CheckpointError, LlmosError
from llmos.files import atomic_path
from llmos.inference.encoder import EncoderPipeline
from llmos.inference.image_decode import (
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    ImageInput,
    decode_images,
)
from llmos.inference.image_drawings import DrawingIndex, check_by, train_styles
from llmos.inference.image_index import (
    EntryIndex,
    emoji_captions,
    emoji_gallery,
    text_cache_path,
)
from llmos.inference.image_views import check_zooms, embed_views
from llmos.inference.image_zeroshot import ImageZeroShot
from llmos.inference.pipeline import OPERATIONS, UnsupportedTaskError
from llmos.models.clip import CLIPModel
from llmos.models.precision import resolve_precision

log = logging.getLogger("llmos.inference")


class ImagePipeline:
    """A CLIP checkpoint ready for inference (see the module docstring).

    Args:
        model: the CLIP model, in eval mode.
        checkpoint: what it was read from.
        text_encoder: the text tower's checkpoint, overriding ``config.json``'s.
        emoji_home: the data directory holding ``emoji/`` for the default indexes (default
            ``$LLMOS_HOME/data``).
        max_bytes, max_pixels: the limits each image is decoded under.

    Attributes:
        model: the :class:`~llmos.models.clip.CLIPModel`.
        checkpoint: the :class:`~llmos.checkpoint.clip.ClipCheckpoint`.
        image_size: the side of the square images the ViT reads.
    """

    operations: ClassVar[tuple[str, ...]] = (
        "embed_images",
        "embed_texts",
        "classify_images",
        "describe_images",
        "search_images",
    )

    def __init__(
        self,
        model: CLIPModel,
        checkpoint: ClipCheckpoint,
        *,
        text_encoder: str | os.PathLike[str] | None = None,
        emoji_home: str | os.PathLike[str] | None = None,
        max_bytes: int = MAX_IMAGE_BYTES,
        max_pixels: int = MAX_IMAGE_PIXELS,
    ) -> None:
        self.model = model.eval()
        self.checkpoint = checkpoint
        self.device = next(model.parameters()).device
        self.image_size = checkpoint.config.vision.image_size
        self.max_bytes, self.max_pixels = max_bytes, max_pixels
        self.emoji_home = Path(emoji_home) if emoji_home is not None else None
        self._text_encoder = text_encoder
        self._tower: EncoderPipeline | None = None
        self._tower_digest: str | None = None
        self._captions: dict[str | None, EntryIndex] = {}
        self._galleries: dict[str, EntryIndex] = {}
        self._drawings: DrawingIndex | None = None
        self._lock = threading.RLock()  # lazy loads, when a server calls from several threads

    # --- what it is ---------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.checkpoint.path

    @property
    def config(self) -> Any:
        """The :class:`~llmos.config.model.CLIPConfig`."""
        return self.checkpoint.config

    @property
    def logit_scale(self) -> float:
        """exp(logit_scale) as trained, clamped at ``logit_scale_max``."""
        return float(self.model.scale().detach())

    def describe(self) -> str:
        """``a CLIP image-text model``, for messages (as other pipelines' ``describe``)."""
        return "a CLIP image-text model"

    def __getattr__(self, name: str) -> Any:
        # Only reached for missing names: a text pipeline's operation (or attribute, such as
        # the ``spec`` a text command reads) gets a message that says what this one can do.
        if name.startswith("_"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        needs = "needs" if name in OPERATIONS else "is for"
        raise UnsupportedTaskError(
            f"this checkpoint is {self.describe()}: it can {', '.join(self.operations)}; "
            f"{name} {needs} a text checkpoint (texts into the image space: embed_texts)"
        )

    # --- the text tower -----------------------------------------------------------------

    @property
    def text_tower(self) -> EncoderPipeline:
        """The frozen text encoder, loaded (found and checked) on first use.

        Raises:
            CheckpointError: not found, other weights than the projection was trained on, or
                vectors of another size than ``text_dim``.
        """
        with self._lock:
            if self._tower is None:
                from llmos.inference.load import load_pipeline

                path = text_encoder_path(self.checkpoint, self._text_encoder)
                digest = weights_digest(path)
                check_text_encoder(self.checkpoint, path, digest)
                tower = load_pipeline(path, device=str(self.device))
                if not isinstance(tower, EncoderPipeline):
                    raise CheckpointError(f"text encoder {path}: not an encoder checkpoint")
                dim = tower.config.hidden_size
                if dim != self.config.text_dim:
                    raise CheckpointError(
                        f"text encoder {path}: {dim}-dimensional vectors, but the model's "
                        f"text projection takes {self.config.text_dim} (config.json text_dim)"
                    )
                self._tower, self._tower_digest = tower, digest
            return self._tower

    def tower_vectors(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """(N, text_dim) the tower's unit vectors of ``texts`` with the captions' prefix kind:
        what ``text_projection`` reads."""
        vectors = self.text_tower.embed(
            texts, kind=self.checkpoint.text_kind, batch_size=batch_size
        )
        return np.asarray(vectors, dtype=np.float32)

    def _cached_tower_vectors(self, texts: list[str]) -> np.ndarray:
        """:meth:`tower_vectors`, cached on disk by the key training's
        :func:`~llmos.train.tasks.clip.text_vectors` uses (the tower's digest, the kind, the
        texts), so the two share their files."""
        path = text_cache_path(self._digest(), self.checkpoint.text_kind, texts)
        if path.is_file():
            return np.load(path)
        vectors = self.tower_vectors(texts)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, vectors)
        return vectors

    def _digest(self) -> str:
        self.text_tower  # noqa: B018 - loads the tower and its digest
        assert self._tower_digest is not None
        return self._tower_digest

    # --- embeddings ---------------------------------------------------------------------

    def decode(self, images: Sequence[ImageInput], start: int = 0) -> torch.Tensor:
        """(N, 3, S, S) uint8 pixels of images (bytes, paths or PIL images), as the model reads
        them (:func:`~llmos.inference.image_decode.decode_images`; errors name
        ``images[start + i]``)."""
        return decode_images(
            images,
            size=self.image_size,
            max_bytes=self.max_bytes,
            max_pixels=self.max_pixels,
            start=start,
        )

    def embed_pixels(
        self, pixels: torch.Tensor, batch_size: int = 32, zooms: Sequence[float] | None = None
    ) -> np.ndarray:
        """(N, D) float32 unit vectors of (N, 3, S, S) uint8 pixels (:meth:`decode`'s).

        ``zooms``: test-time views (:mod:`~llmos.inference.image_views`), each image also
        embedded scaled by each factor (e.g. ``(0.9, 1, 1.1)``), the views' vectors averaged;
        None: the image as it is.
        """
        if pixels.dim() != 4 or pixels.dtype != torch.uint8:
            raise LlmosError(
                f"pixels: expected (N, 3, S, S) uint8, got {tuple(pixels.shape)} {pixels.dtype}"
            )
        return embed_views(lambda px: self._embed_pixels(px, batch_size), pixels, zooms)

    @torch.inference_mode()
    def _embed_pixels(self, pixels: torch.Tensor, batch_size: int) -> np.ndarray:
        out = [
            self.model.embed_images(normalise(pixels[i : i + batch_size]).to(self.device))
            .float()
            .cpu()
            for i in range(0, len(pixels), batch_size)
        ]
        if not out:
            return np.zeros((0, self.config.projection_dim), dtype=np.float32)
        return torch.cat(out).numpy()

    def embed_images(
        self,
        images: Sequence[ImageInput],
        batch_size: int = 32,
        zooms: Sequence[float] | None = None,
    ) -> np.ndarray:
        """(N, D) float32 unit vectors of images (bytes, paths or PIL images), decoded a batch
        at a time; ``zooms`` as :meth:`embed_pixels`'.

        Raises:
            ImageError: an input that is not a usable image (naming it).
        """
        if batch_size < 1:
            raise LlmosError(f"batch_size must be at least 1, got {batch_size}")
        images = list(images) if not isinstance(images, bytes | str | os.PathLike) else images
        chunks = [
            self.embed_pixels(self.decode(images[i : i + batch_size], start=i), batch_size, zooms)
            for i in range(0, len(images), batch_size)
        ]
        if not chunks:
            return np.zeros((0, self.config.projection_dim), dtype=np.float32)
        return np.concatenate(chunks)

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str] | str, batch_size: int = 32) -> np.ndarray:
        """(N, D) float32 unit vectors of texts in the image space: the tower's vectors (with
        the checkpoint's ``text_kind`` prefix) through ``text_projection``, normalised."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return np.zeros((0, self.config.projection_dim), dtype=np.float32)
        if not all(isinstance(t, str) for t in texts):
            raise LlmosError("texts: expected strings")
        return self.project_texts(self.tower_vectors(texts, batch_size))

    @torch.inference_mode()
    def project_texts(self, tower_vectors: np.ndarray) -> np.ndarray:
        """(N, text_dim) text-tower vectors (:meth:`tower_vectors`) -> (N, D) float32 unit
        vectors in the image space."""
        raw = torch.from_numpy(np.ascontiguousarray(tower_vectors, dtype=np.float32))
        dtype = self.model.text_projection.weight.dtype
        return self.model.embed_texts(raw.to(self.device, dtype)).float().cpu().numpy()

    # --- zero-shot ----------------------------------------------------------------------

    def zero_shot(self, labels: Mapping[str, str | Sequence[str]]) -> ImageZeroShot:
        """A zero-shot classifier of images into ``labels`` (descriptions embedded once)."""
        return ImageZeroShot(self, labels)

    def classify_images(
        self,
        images: Sequence[ImageInput],
        labels: Mapping[str, str | Sequence[str]],
        batch_size: int = 32,
    ) -> list[dict[str, Any]]:
        """Zero-shot: ``[{"label", "score", "scores"}, ...]`` per image (:class:`ImageZeroShot`;
        keep :meth:`zero_shot`'s classifier to embed the labels once for many calls)."""
        return self.zero_shot(labels).classify(images, batch_size)

    # --- indexes ------------------------------------------------------------------------

    def caption_index(
        self, texts: Sequence[str] | None = None, *, lang: str | None = None
    ) -> EntryIndex:
        """The texts :meth:`describe_images` chooses from: ``texts`` (entries ``{"index",
        "text"}``), or by default every emoji's CLDR name of the prepared data, in ``lang``
        (``zh``, ``en``, None: both), entries ``{"index", "text", "lang", "emoji",
        "unified"}`` (an emoji without a CLDR name goes by emoji-datasource's English one).
        The default is built once, then kept.

        Raises:
            DataError: the emoji data was not prepared (``llmos data prepare --with-emoji``).
        """
        if texts is not None:
            texts = [texts] if isinstance(texts, str) else list(texts)
            entries = [{"text": t} for t in texts]
            return EntryIndex.build("text", self.embed_texts(texts), entries)
        with self._lock:
            if lang not in self._captions:
                self._captions[lang] = self._emoji_captions(lang)
            return self._captions[lang]

    def _emoji_captions(self, lang: str | None) -> EntryIndex:
        t0 = time.perf_counter()
        rows = load_rows(self.emoji_home)
        entries = emoji_captions(rows, lang)
        texts = sorted({e["text"] for e in entries})
        # Training embedded every caption and category name at once: that cached file, when
        # it is there, holds these names too.
        trained = trained_texts(rows)
        cached = text_cache_path(self._digest(), self.checkpoint.text_kind, trained)
        if cached.is_file():
            pos = {t: i for i, t in enumerate(trained)}
            raw = np.load(cached)[[pos[t] for t in texts]]
        else:
            raw = self._cached_tower_vectors(texts)
        at = {t: i for i, t in enumerate(texts)}
        vectors = self.project_texts(raw[[at[e["text"]] for e in entries]])
        log.info("caption index: %d emoji names in %.1f s", len(entries), time.perf_counter() - t0)
        return EntryIndex.build("text", vectors, entries)

    def image_gallery(
        self,
        images: Sequence[ImageInput] | None = None,
        *,
        names: Sequence[str] | None = None,
        style: str | None = None,
        batch_size: int = 256,
    ) -> EntryIndex:
        """The images :meth:`search_images` chooses from: ``images`` (entries ``{"index",
        "name"}``, ``names[i]`` or None), or by default the prepared emoji of ``style``
        (default: the checkpoint's evaluation style, never trained on), entries ``{"index",
        "emoji", "unified", "name", "zh_name", "style"}``. A default gallery is built once per
        style, then kept.

        Raises:
            DataError: the emoji data or that style was not prepared.
            ImageError: an input that is not a usable image.
        """
        if images is not None:
            images = list(images)
            if names is not None and len(names) != len(images):
                raise LlmosError(f"{len(names)} names for {len(images)} images")
            entries = [{"name": names[i] if names else None} for i in range(len(images))]
            return EntryIndex.build("image", self.embed_images(images, batch_size), entries)
        style = style or self.checkpoint.meta.get("eval_style") or EmojiDataConfig().eval_style
        with self._lock:
            if style not in self._galleries:
                rows = load_rows(self.emoji_home)
                drawn = style_images(rows, style, self.image_size, self.emoji_home)
                entries = emoji_gallery(rows, drawn.rows.tolist(), style)
                t0 = time.perf_counter()
                vectors = self.embed_pixels(drawn.pixels, batch_size)
                log.info(
                    "gallery: %d %s emoji embedded in %.1f s",
                    len(entries),
                    style,
                    time.perf_counter() - t0,
                )
                self._galleries[style] = EntryIndex.build("image", vectors, entries)
            return self._galleries[style]

    def drawing_index(self, batch_size: int = 256) -> DrawingIndex:
        """Every drawing of the styles the checkpoint trained on
        (:func:`~llmos.inference.image_drawings.train_styles`), embedded once, then kept: what
        ``describe_images(by="drawings")`` compares an image with.

        Raises:
            DataError: the emoji data or one of those styles was not prepared.
        """
        with self._lock:
            if self._drawings is None:
                styles, size = train_styles(self.checkpoint.meta), self.image_size
                embed = lambda px: self.embed_pixels(px, batch_size)  # noqa: E731
                home, device = self.emoji_home, self.device
                self._drawings = DrawingIndex.build(styles, size, home, embed, device)
            return self._drawings

    # --- retrieval ----------------------------------------------------------------------

    def describe_images(
        self,
        images: Sequence[ImageInput],
        k: int = 5,
        *,
        lang: str | None = None,
        captions: Sequence[str] | EntryIndex | None = None,
        by: str = "captions",
        batch_size: int = 32,
        zooms: Sequence[float] | None = None,
    ) -> list[list[dict[str, Any]]]:
        """Image -> text: each image's ``k`` best captions, each its entry
        (:meth:`caption_index`) with its ``score``.

        Args:
            images: bytes, paths or PIL images.
            k: captions per image.
            lang: the default index's language (``zh``, ``en``; None: both).
            captions: texts to choose from, or an index from :meth:`caption_index`; default
                the emoji names.
            by: ``captions`` (cosines), ``drawings`` (a name's best cosine over its emoji's
                training-style drawings: :mod:`~llmos.inference.image_drawings`) or ``both``
                (the sum); the last two for the emoji names only, hits with ``drawing_score``.
            zooms: test-time views of each image (:meth:`embed_pixels`); None: one view.
        """
        check_by(by, captions is not None)
        check_zooms(zooms)
        vectors = self.embed_images(images, batch_size, zooms)  # a bad image fails first
        if captions is None:
            return self.describe_vectors(vectors, k, lang=lang, by=by)
        index = captions if isinstance(captions, EntryIndex) else self.caption_index(captions)
        if index.kind != "text":
            raise LlmosError("captions: expected texts or a caption index, got an image gallery")
        return index.search(vectors, k)

    def describe_vectors(
        self, vectors: np.ndarray, k: int = 5, *, lang: str | None = None, by: str = "captions"
    ) -> list[list[dict[str, Any]]]:
        """:meth:`describe_images` over the emoji names, of (N, D) image vectors."""
        check_by(by, False)
        index = self.caption_index(lang=lang)
        if by == "captions":
            return index.search(vectors, k)
        return self.drawing_index().describe(vectors, k, index, lang, by)

    def search_images(
        self,
        texts: Sequence[str] | str,
        k: int = 5,
        *,
        style: str | None = None,
        gallery: Sequence[ImageInput] | EntryIndex | None = None,
    ) -> list[list[dict[str, Any]]]:
        """Text -> image: each text's ``k`` nearest images, best first, each its entry
        (:meth:`image_gallery`) with the cosine ``score``.

        Args:
            texts: queries, in any language the text tower reads.
            k: images per text.
            style: the default gallery's emoji style.
            gallery: images to choose from, or a gallery from :meth:`image_gallery`; default
                the prepared emoji of ``style``.
        """
        index = (
            gallery if isinstance(gallery, EntryIndex) else self.image_gallery(gallery, style=style)
        )
        if index.kind != "image":
            raise LlmosError("gallery: expected images or an image gallery, got a caption index")
        return index.search(self.embed_texts(texts), k)


def load_image_pipeline(
    path: str | os.PathLike[str],
    device: str = "cpu",
    precision: str = "fp32",
    *,
    text_encoder: str | os.PathLike[str] | None = None,
    emoji_home: str | os.PathLike[str] | None = None,
    max_bytes: int = MAX_IMAGE_BYTES,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> ImagePipeline:
    """A CLIP checkpoint directory as an :class:`ImagePipeline` (its weights loaded strictly;
    the text tower on first use). ``precision`` ``bf16`` casts the model's weights (outputs
    stay float32); ``auto``: bf16 where the device computes it natively.

    Raises:
        CheckpointError: not a CLIP checkpoint, or weights that do not fit its config.
    """
    try:
        precision = resolve_precision(precision, device)
    except ValueError as e:
        raise LlmosError(str(e)) from None
    ckpt = read_clip(path)
    model = CLIPModel(ckpt.config)
    load_state_dict_strict(model, read_weights(ckpt.path))
    if precision == "bf16":
        model = model.to(torch.bfloat16)
    model = model.to(device).eval()
    return ImagePipeline(
        model,
        ckpt,
        text_encoder=text_encoder,
        emoji_home=emoji_home,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
    )
