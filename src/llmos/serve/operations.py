"""Typed batch operations: what a request asks of a loaded model, and how a batch of such
requests runs as one call of its pipeline.

An operation is a frozen dataclass and is the batcher's key: queued requests with *equal*
operations (the same kind and the same options) share one forward pass; requests whose options
differ never mix. Each operation's ``run`` takes the payloads of one batch (one per request,
in queue order) and returns one result per payload, in the model's own thread.

    op              payload        result per payload
    ClassifyOp      TextBatch      [{"label", "score", "scores", "windows"}, ...]
    TagOp           TextBatch      [[span, ...], ...]
    EmbedOp         TextBatch      [[float, ...], ...]
    AnalyzeOp       TextBatch      [({head: result}, [float, ...]), ...] (a multitask model)
    FillMaskOp      str (text)     the pipeline's fill-mask answer
    GenerateOp      str | Prompt   the generated text (a Prompt with ``details``: Completions)
    SearchOp        Query          [{"id", "score", "text"}, ...]
    StreamOp        StreamJob      the whole stream's Completion (pieces go out through the job)

A CLIP model's (:class:`~llmos.inference.image.ImagePipeline`) images arrive decoded, as the
pixels the model reads (decoding, and its errors, are the request's: ``serve/images.py``):

    ImageEmbedOp    Pixels         [[float, ...], ...]
    ImageClassifyOp Pixels         [{"label", "score", "scores"}, ...]
    DescribeOp      Pixels         [{lang: [caption, ...]}, ...]
    ImageSearchOp   str (text)     [image, ...] (emoji entries of the gallery, with "score")

EmbedOp embeds a CLIP model's texts into its image space (its own prefix kind).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from llmos.inference.classify import label_result
from llmos.inference.image import ImagePipeline
from llmos.store.vectors import DocumentIndex

if TYPE_CHECKING:
    from llmos.inference.generator import Completion

# The batch size a pipeline call gets: at least this, or the whole batch's texts at once.
MIN_BATCH_SIZE = 32


@dataclass
class Runtime:
    """What a loaded model's batches run on: its pipeline and the indexes whose queries it
    embeds (by index name)."""

    pipe: Any
    indexes: dict[str, DocumentIndex] = field(default_factory=dict)


class Operation(Protocol):
    """A batch key that runs a batch of its payloads on a model (see the module docstring)."""

    def run(self, runtime: Runtime, payloads: list[Any]) -> list[Any]: ...


@dataclass(frozen=True)
class TextBatch:
    """The texts of one request (and, for sentence pairs, their second texts). ``details``
    (EmbedOp): the result is ``(vectors, tokens read per text)``, for the OpenAI-compatible
    API's usage."""

    texts: list[str]
    texts_b: list[str] | None = None
    details: bool = False


@dataclass(frozen=True)
class AdapterRef:
    """A LoRA adapter a generation decodes with: its key in the pipeline (unique per trained
    adapter) and its directory (loaded on first use, in the model's thread)."""

    key: str
    path: str


@dataclass(frozen=True)
class Prompt:
    """A prompt that decodes with a user's adapter (a plain ``str`` payload uses the base);
    with ``details``, its result is the list of its :class:`Completion` records (token counts
    and finish reasons, for the OpenAI-compatible API) instead of text. Both kinds of payload
    share a batch when their options are equal."""

    text: str
    adapter: AdapterRef | None = None
    details: bool = False


def _with_adapters(pipe: Any, refs: list[AdapterRef | None]) -> list[str | None] | None:
    """Load the adapters ``refs`` name (in the model's thread) and return their keys per
    prompt, or None when no prompt has one."""
    if not any(refs):
        return None
    for ref in dict.fromkeys(r for r in refs if r is not None):
        pipe.add_adapter(ref.key, ref.path)
    return [None if r is None else r.key for r in refs]


@dataclass(frozen=True)
class Query:
    """One search request: the query text and how many hits it wants."""

    text: str
    k: int


def _flatten(payloads: list[TextBatch]) -> tuple[list[str], list[int]]:
    """Every text of the batch in order, and how many each request brought."""
    return [t for p in payloads for t in p.texts], [len(p.texts) for p in payloads]


def _split(flat: list[Any], sizes: list[int]) -> list[list[Any]]:
    """``flat`` cut back into one list per request (the inverse of :func:`_flatten`)."""
    out, i = [], 0
    for n in sizes:
        out.append(flat[i : i + n])
        i += n
    return out


@dataclass(frozen=True)
class ClassifyOp:
    """Classify texts, or sentence pairs (``pairs``: every payload has ``texts_b``); a text
    longer than the model reads is windowed or truncated as ``long_inputs`` says."""

    pairs: bool = False
    long_inputs: str = "window"

    def run(self, runtime: Runtime, payloads: list[TextBatch]) -> list[Any]:
        texts, sizes = _flatten(payloads)
        seconds = [t for p in payloads for t in p.texts_b or ()] if self.pairs else None
        batch_size = max(MIN_BATCH_SIZE, len(texts))
        results = runtime.pipe.classify(
            texts, seconds, batch_size=batch_size, long_inputs=self.long_inputs
        )
        return _split(results, sizes)


@dataclass(frozen=True)
class TagOp:
    """Label spans in texts."""

    def run(self, runtime: Runtime, payloads: list[TextBatch]) -> list[Any]:
        texts, sizes = _flatten(payloads)
        batch_size = max(MIN_BATCH_SIZE, len(texts))
        return _split(runtime.pipe.tag(texts, batch_size=batch_size), sizes)


@dataclass(frozen=True)
class CorrectOp:
    """Spelling corrections (``threshold`` None: the model's own), each as a dict."""

    threshold: float | None = None

    def run(self, runtime: Runtime, payloads: list[TextBatch]) -> list[Any]:
        texts, sizes = _flatten(payloads)
        found = runtime.pipe.correct(
            texts, threshold=self.threshold, batch_size=max(MIN_BATCH_SIZE, len(texts))
        )
        rows = [
            [
                {
                    "start": c.offset,
                    "end": c.offset + 1,
                    "original": c.original,
                    "suggestion": c.suggestion,
                    "score": c.detect,
                    "prob": c.prob,
                }
                for c in row
            ]
            for row in found
        ]
        return _split(rows, sizes)


@dataclass(frozen=True)
class EmbedOp:
    """Sentence embeddings; ``None`` options mean the model's own (its task.json)."""

    pooling: str | None = None
    normalize: bool | None = None
    kind: str | None = None

    def run(self, runtime: Runtime, payloads: list[TextBatch]) -> list[Any]:
        texts, sizes = _flatten(payloads)
        pipe, batch_size = runtime.pipe, max(MIN_BATCH_SIZE, len(texts))
        if isinstance(pipe, ImagePipeline):  # CLIP: into the image space; its own kind
            vectors = pipe.embed_texts(texts, batch_size=batch_size)
            counter, kind = pipe.text_tower, pipe.checkpoint.text_kind
        else:
            vectors = pipe.embed(
                texts,
                pooling=self.pooling,
                normalize=self.normalize,
                kind=self.kind,
                batch_size=batch_size,
            )
            counter, kind = pipe, self.kind
        out = _split(vectors.tolist(), sizes)
        for i, p in enumerate(payloads):
            if p.details:
                out[i] = (out[i], counter.count_tokens(p.texts, kind))
        return out


@dataclass(frozen=True)
class AnalyzeOp:
    """Every head of a multitask model and the sentence vector, from one pass per text."""

    def run(self, runtime: Runtime, payloads: list[TextBatch]) -> list[Any]:
        texts, sizes = _flatten(payloads)
        results, vectors = runtime.pipe.analyze(texts, batch_size=max(MIN_BATCH_SIZE, len(texts)))
        return _split(list(zip(results, vectors.tolist(), strict=True)), sizes)


@dataclass(frozen=True)
class FillMaskOp:
    """The ``top_k`` likeliest tokens behind each ``[MASK]`` (one pipeline call per text)."""

    top_k: int = 5

    def run(self, runtime: Runtime, payloads: list[str]) -> list[Any]:
        return [runtime.pipe.fill_mask(text, top_k=self.top_k) for text in payloads]


@dataclass(frozen=True)
class GenerateOp:
    """Continue prompts with equal decoding options as one left-padded batch.

    ``options`` are GenerationConfig fields as sorted ``(name, value)`` pairs (hashable); build
    one with :meth:`of`. ``solo``, a number no other request has, makes the request decode
    alone: a seeded sample's result must not depend on the batch it lands in.
    """

    options: tuple[tuple[str, Any], ...] = ()
    raw: bool = False
    solo: int | None = None

    @classmethod
    def of(cls, options: dict[str, Any], raw: bool = False, solo: int | None = None) -> GenerateOp:
        """The operation for decoding ``options`` (list values, such as ``stop``, as tuples)."""
        items = ((k, tuple(v) if isinstance(v, list) else v) for k, v in options.items())
        return cls(tuple(sorted(items)), raw, solo)

    @property
    def kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments of the pipeline's ``generate``/``stream``."""
        return dict(self.options)

    def run(self, runtime: Runtime, payloads: list[str | Prompt]) -> list[Any]:
        texts = [p.text if isinstance(p, Prompt) else p for p in payloads]
        refs = [p.adapter if isinstance(p, Prompt) else None for p in payloads]
        keys = _with_adapters(runtime.pipe, refs)
        # Prompts with different adapters share the batch: each row gets its own update.
        adapter = {} if keys is None else {"adapter": keys}
        done = runtime.pipe.complete(texts, raw=self.raw, **adapter, **self.kwargs)
        out: list[Any] = []
        for p, group in zip(payloads, done, strict=True):
            if isinstance(p, Prompt) and p.details:
                out.append(group)
            else:  # as GeneratorPipeline.generate answers: n > 1 sequences as a list
                out.append([c.text for c in group] if len(group) > 1 else group[0].text)
        return out


@dataclass(frozen=True)
class SearchOp:
    """The nearest documents of the index ``index`` to each query (embedded as one batch)."""

    index: str

    def run(self, runtime: Runtime, payloads: list[Query]) -> list[Any]:
        index = runtime.indexes[self.index]
        queries = [q.text for q in payloads]
        vectors = runtime.pipe.embed(queries, kind="query", batch_size=MIN_BATCH_SIZE)
        hits = index.search(vectors, max(q.k for q in payloads))
        return [row[: q.k] for row, q in zip(hits, payloads, strict=True)]


@dataclass(frozen=True)
class Pixels:
    """The images of one request, decoded as the model reads them: (N, 3, S, S) uint8."""

    pixels: torch.Tensor

    def __len__(self) -> int:
        return len(self.pixels)


def _image_vectors(
    runtime: Runtime, payloads: list[Pixels], zooms: tuple[float, ...] | None = None
) -> np.ndarray:
    """(N, D) unit vectors of every image of the batch, in order (each the mean of its
    ``zooms`` views when given)."""
    pixels = torch.cat([p.pixels for p in payloads])
    batch_size = max(MIN_BATCH_SIZE, len(pixels))
    return runtime.pipe.embed_pixels(pixels, batch_size=batch_size, zooms=zooms)


@dataclass(frozen=True)
class ImageEmbedOp:
    """A CLIP model's image embeddings (unit vectors in the space its texts embed into)."""

    def run(self, runtime: Runtime, payloads: list[Pixels]) -> list[Any]:
        vectors = _image_vectors(runtime, payloads).tolist()
        return _split(vectors, [len(p) for p in payloads])


@dataclass(frozen=True)
class ImageClassifyOp:
    """Zero-shot image classification into ``labels``: ``(label, (description, ...))`` pairs,
    in order (:class:`~llmos.inference.image_zeroshot.ImageZeroShot`, the descriptions
    embedded once per batch)."""

    labels: tuple[tuple[str, tuple[str, ...]], ...]

    def run(self, runtime: Runtime, payloads: list[Pixels]) -> list[Any]:
        clf = runtime.pipe.zero_shot({name: list(texts) for name, texts in self.labels})
        probs = clf.probabilities(_image_vectors(runtime, payloads))
        results = [label_result(clf.labels, row) for row in probs.tolist()]
        return _split(results, [len(p) for p in payloads])


@dataclass(frozen=True)
class DescribeOp:
    """Each image's ``k`` best emoji names in each of ``langs`` (zh, en), best first, ranked
    ``by`` captions, drawings or both, each image embedded as the mean of its ``zooms`` views
    when given (:meth:`~llmos.inference.image.ImagePipeline.describe_images`)."""

    k: int
    langs: tuple[str, ...]
    by: str = "captions"
    zooms: tuple[float, ...] | None = None

    def run(self, runtime: Runtime, payloads: list[Pixels]) -> list[Any]:
        vectors = _image_vectors(runtime, payloads, self.zooms)
        by_lang = {
            lang: runtime.pipe.describe_vectors(vectors, self.k, lang=lang, by=self.by)
            for lang in self.langs
        }
        rows = [{lang: by_lang[lang][i] for lang in self.langs} for i in range(len(vectors))]
        return _split(rows, [len(p) for p in payloads])


@dataclass(frozen=True)
class ImageSearchOp:
    """The ``k`` emoji images of ``style`` (None: the model's held-out style) nearest each
    query text, best first."""

    k: int
    style: str | None = None

    def run(self, runtime: Runtime, payloads: list[str]) -> list[Any]:
        return runtime.pipe.search_images(payloads, self.k, style=self.style)


@dataclass
class StreamJob:
    """One streamed generation: the prompt and options, and the hooks the model's thread calls.

    Attributes:
        emit: called with each decoded piece, in the model's thread.
        ended: called once with how the stream ended: ``done``, ``client_closed`` or ``error``.
        cancelled: set when the client goes away; decoding stops at the next piece.
    """

    prompt: str
    raw: bool
    options: dict[str, Any]
    emit: Callable[[str], None]
    ended: Callable[[str], None]
    cancelled: threading.Event = field(default_factory=threading.Event)
    adapter: AdapterRef | None = None


@dataclass(frozen=True, eq=False)
class StreamOp:
    """Stream one generation piece by piece. Compared by identity (``eq=False``): each stream
    is its own batch, as a stream decodes one sequence."""

    def run(self, runtime: Runtime, payloads: list[StreamJob]) -> list[Completion | None]:
        (job,) = payloads
        outcome, done = "error", None
        try:
            keys = _with_adapters(runtime.pipe, [job.adapter])
            adapter = {"adapter": keys[0]} if keys else {}
            pieces = runtime.pipe.stream_completion(
                job.prompt, raw=job.raw, **adapter, **job.options
            )
            while True:
                try:
                    piece = next(pieces)
                except StopIteration as end:  # the generator returns the whole Completion
                    outcome, done = "done", end.value
                    break
                if job.cancelled.is_set():  # the client went away: stop decoding
                    pieces.close()
                    outcome = "client_closed"
                    break
                job.emit(piece)
        finally:
            job.ended(outcome)
        return [done]


def run_batch(runtime: Runtime, op: Operation, payloads: list[Any]) -> list[Any]:
    """One call of the model for a batch of requests with the operation ``op``."""
    return op.run(runtime, payloads)


def isolating(run: Callable[[Any, list[Any]], list[Any]]) -> Callable[[Any, list[Any]], list[Any]]:
    """A batch function that, when a batch of several requests fails, runs them one by one so
    that one bad request fails alone (its exception becomes its result)."""

    def wrapped(key: Any, payloads: list[Any]) -> list[Any]:
        try:
            return run(key, payloads)
        except Exception:
            if len(payloads) == 1:
                raise
        out: list[Any] = []
        for p in payloads:
            try:
                out.extend(run(key, [p]))
            except Exception as e:
                out.append(e)
        return out

    return wrapped
