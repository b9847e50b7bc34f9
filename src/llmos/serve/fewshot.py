"""On-the-fly classifiers for ``POST /v1/classify``: an encoder's name plus ``labels`` (a few
words describing each) and/or ``examples`` (a few texts of each), instead of a trained
classifier's name. The answer has a trained classifier's shape.

The classifier is :class:`~llmos.inference.zeroshot.ZeroShotClassifier` (``similarity`` from
descriptions, ``centroid`` or ``logreg`` from examples), built from vectors the encoder's own
micro-batcher computes: the label texts once (descriptions as passages, examples as queries,
as E5 reads them), then each request's texts as queries. Built classifiers are kept, least
recently used first out, under a hash of (the encoder's checkpoint and its weights file's
modification time, the method, the labels and the examples): a repeated request pays only
for embedding its own texts, as a trained classifier's call pays for its forward pass; a
retrained encoder, or a changed label or example, builds a new one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from fastapi import Request
from starlette.concurrency import run_in_threadpool

from llmos.checkpoint.io import WEIGHTS_FILE
from llmos.errors import LlmosError
from llmos.inference.classify import label_result
from llmos.inference.zeroshot import ZeroShotClassifier
from llmos.serve.deps import ApiError, Server, check_texts, require, submit
from llmos.serve.operations import EmbedOp, TextBatch

CACHE_SIZE = 64  # built classifiers kept per server
MAX_LABELS = 200
MAX_LABEL_TEXTS = 5_000  # descriptions and examples of one request, together


class Precomputed:
    """An ``embed`` that answers from vectors computed beforehand, by (kind, text)."""

    def __init__(self, vectors: Mapping[tuple[str, str], np.ndarray]) -> None:
        self.vectors = vectors

    def embed(self, texts: list[str], *, kind: str | None = None, **_: Any) -> np.ndarray:
        return np.stack([self.vectors[kind or "query", t] for t in texts])


class OnTheFly:
    """The server's cache of built classifiers, and the classify call."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self.built: OrderedDict[str, ZeroShotClassifier] = OrderedDict()
        self.building: dict[str, asyncio.Future[ZeroShotClassifier]] = {}

    async def classify(
        self,
        request: Request,
        srv: Server,
        model: str,
        texts: list[str],
        labels: Mapping[str, str | Sequence[str]] | None,
        examples: Mapping[str, Sequence[str]] | None,
        method: str | None,
    ) -> tuple[list[dict[str, Any]], str, bool]:
        """(results, method, whether the classifier was cached) for ``texts``."""
        entry = srv.registry.entry(model)
        require(entry, "embed")
        labels, examples = dict(labels or {}), dict(examples or {})
        names = set(labels) | set(examples)
        if len(names) > MAX_LABELS:
            raise ApiError(
                422, "invalid_request", f"{len(names)} labels; at most {MAX_LABELS} per request"
            )
        label_texts = [t for v in labels.values() for t in ([v] if isinstance(v, str) else v)]
        label_texts += [t for v in examples.values() for t in v]
        if len(label_texts) > MAX_LABEL_TEXTS:
            raise ApiError(
                422,
                "invalid_request",
                f"labels and examples hold {len(label_texts)} texts; at most {MAX_LABEL_TEXTS}",
            )
        for name, v in (("labels", labels), ("examples", examples)):
            for label, items in v.items():
                check_texts(
                    srv, [items] if isinstance(items, str) else list(items), f"{name}.{label}"
                )
        weights = entry.path / WEIGHTS_FILE
        stamp = weights.stat().st_mtime_ns if weights.is_file() else 0
        key = hashlib.sha256(
            json.dumps(
                [model, str(entry.path), stamp, method, labels, examples],
                ensure_ascii=False,
                sort_keys=True,
            ).encode()
        ).hexdigest()
        cached = key in self.built
        if cached:
            self.built.move_to_end(key)
            clf = self.built[key]
        else:
            pending = self.building.get(key)
            if pending is not None:  # the same classifier is being built for another request
                clf = await asyncio.shield(pending)
            else:
                future: asyncio.Future[ZeroShotClassifier] = (
                    asyncio.get_running_loop().create_future()
                )
                self.building[key] = future
                try:
                    clf = await self._build(request, srv, model, labels, examples, method)
                except BaseException as e:
                    future.set_exception(e)
                    future.exception()  # retrieved: no "never retrieved" warning
                    raise
                finally:
                    self.building.pop(key, None)
                future.set_result(clf)
                self.built[key] = clf
                while len(self.built) > self.size:
                    self.built.popitem(last=False)
        vectors = await submit(
            request, srv, model, EmbedOp(kind="query"), TextBatch(texts), len(texts)
        )
        probs = clf.probabilities(np.asarray(vectors, dtype=np.float32))
        return [label_result(clf.labels, row) for row in probs.tolist()], clf.method, cached

    async def _build(
        self,
        request: Request,
        srv: Server,
        model: str,
        labels: dict[str, str | Sequence[str]],
        examples: dict[str, Sequence[str]],
        method: str | None,
    ) -> ZeroShotClassifier:
        # Stripped, as ZeroShotClassifier reads them (an empty one is its 422 to give).
        by_kind = {
            "query": list(dict.fromkeys(t.strip() for v in examples.values() for t in v)),
            "passage": list(
                dict.fromkeys(
                    t.strip() for v in labels.values() for t in ([v] if isinstance(v, str) else v)
                )
            ),
        }
        by_kind = {kind: [t for t in texts if t] for kind, texts in by_kind.items()}
        vectors: dict[tuple[str, str], np.ndarray] = {}
        for kind, texts in by_kind.items():
            if texts:
                got = await submit(
                    request, srv, model, EmbedOp(kind=kind), TextBatch(texts), len(texts)
                )
                vectors.update(
                    {(kind, t): np.asarray(v, np.float32) for t, v in zip(texts, got, strict=True)}
                )
        try:
            return await run_in_threadpool(
                ZeroShotClassifier, Precomputed(vectors), labels, examples, method=method
            )
        except LlmosError as e:
            raise ApiError(422, "invalid_request", str(e)) from None
