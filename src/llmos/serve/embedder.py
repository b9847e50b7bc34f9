"""Embeddings, classifications and multitask analyses for an app's service, computed by
served models' micro-batchers.

An app's service runs in a worker thread (its store calls block) and asks for embeddings
synchronously; :class:`BatcherEmbedder` hands each request to the event loop, where it joins
the model's queue like any ``/v1/embed`` call, so messages of many users share forward passes
and the server's queue limits and memory budget apply to the app too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from llmos.apps.support.fewshot import intent_examples
from llmos.apps.support.indexes import UnknownEncoder
from llmos.checkpoint.digest import weights_digest
from llmos.checkpoint.io import read_checkpoint
from llmos.serve.catalog import UnknownModel
from llmos.serve.operations import AnalyzeOp, ClassifyOp, EmbedOp, TextBatch

log = logging.getLogger("llmos.serve")

# A large upload is queued as requests of CHUNK texts, IN_FLIGHT at a time: it never fills the
# model's queue, and other users' requests interleave with it.
CHUNK, IN_FLIGHT = 64, 4


class BatcherEmbedder:
    """The :class:`~llmos.apps.support.index.Embedder` of the served model ``model``."""

    def __init__(self, server: Any, model: str, loop: asyncio.AbstractEventLoop) -> None:
        self.server, self.model, self.loop = server, model, loop
        self._name: str | None = None

    @property
    def name(self) -> str:
        """The model's weights digest (its path for a model without safetensors)."""
        if self._name is None:
            path = self.server.registry.entry(self.model).path
            self._name = weights_digest(path) or str(path)
        return self._name

    def __call__(self, texts: list[str], kind: str) -> np.ndarray:
        future = asyncio.run_coroutine_threadsafe(self._embed(texts, kind), self.loop)
        return np.asarray(future.result(), dtype=np.float32)

    async def _embed(self, texts: list[str], kind: str) -> list[list[float]]:
        loaded = await self.server.registry.get(self.model)
        op = EmbedOp(kind=kind)
        chunks = [texts[i : i + CHUNK] for i in range(0, len(texts), CHUNK)]
        out: list[list[float]] = []
        for w in range(0, len(chunks), IN_FLIGHT):
            deadline = time.monotonic() + self.server.settings.request_timeout_s
            futures = [
                loaded.batcher.submit(op, TextBatch(c), len(c), deadline)
                for c in chunks[w : w + IN_FLIGHT]
            ]
            for result in await asyncio.gather(*futures):
                if isinstance(result, BaseException):
                    raise result
                out.extend(result)
        return out


def served_encoders(server: Any, loop: asyncio.AbstractEventLoop) -> Callable[[str], Any]:
    """The support service's ``encoders``: a served model's name -> its
    :class:`BatcherEmbedder`, refusing a model that is not served or does not embed."""

    def encoder(name: str) -> BatcherEmbedder:
        try:
            server.registry.catalog.encoder(name)
        except UnknownModel as e:
            raise UnknownEncoder(str(e)) from None
        return BatcherEmbedder(server, name, loop)

    return encoder


class BatcherClassifier:
    """The sentiment classifier of the customer-service app: a served classification model
    per language (``{"zh": "sentiment-zh"}``); a language without one, or whose model is not
    in the models directory, gets None (the policy then works without sentiment)."""

    def __init__(
        self, server: Any, models: dict[str, str | None], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.server, self.models, self.loop = server, models, loop

    def __call__(self, texts: list[str], lang: str) -> list[dict[str, Any]] | None:
        model = self.models.get(lang)
        if not model or model not in self.server.registry.models:
            return None
        future = asyncio.run_coroutine_threadsafe(self._classify(model, texts), self.loop)
        return future.result()

    async def _classify(self, model: str, texts: list[str]) -> list[dict[str, Any]]:
        loaded = await self.server.registry.get(model)
        deadline = time.monotonic() + self.server.settings.request_timeout_s
        result = await loaded.batcher.submit(ClassifyOp(), TextBatch(texts), len(texts), deadline)
        if isinstance(result, BaseException):
            raise result
        return result


class BatcherNlu:
    """The customer-service app's NLU (:class:`~llmos.apps.support.service.Nlu`): a served
    multitask model per language (``{"zh": "support-zh"}``), read through its batcher so that
    messages of many users share one forward pass; a language without one, or whose model is
    not in the models directory, gets None."""

    def __init__(
        self, server: Any, models: dict[str, str | None], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.server, self.models, self.loop = server, models, loop
        self._names: dict[str, str] = {}
        self._examples: dict[str, dict[str, list[str]]] = {}
        self._warned: set[str] = set()

    def _model(self, lang: str) -> str | None:
        """The served multitask model of ``lang``; None when the setting names none, or a
        model that is missing or not a multitask model (logged once)."""
        model = self.models.get(lang)
        if not model or model not in self.server.registry.models:
            return None
        task = self.server.registry.entry(model).task
        if task != "multitask":
            if model not in self._warned:
                self._warned.add(model)
                log.warning(
                    "support NLU model %r is a %s model, not a multitask one: not used", model, task
                )
            return None
        return model

    def encoder(self, lang: str) -> str | None:
        model = self._model(lang)
        if model is None:
            return None
        if model not in self._names:
            path = self.server.registry.entry(model).path
            self._names[model] = weights_digest(path) or str(path)
        return self._names[model]

    def intent_examples(self, lang: str) -> dict[str, list[str]]:
        model = self._model(lang)
        if model is None:
            return {}
        if model not in self._examples:
            path = self.server.registry.entry(model).path
            self._examples[model] = intent_examples(read_checkpoint(path).task)
        return self._examples[model]

    def __call__(
        self, texts: list[str], lang: str
    ) -> tuple[list[dict[str, Any]], np.ndarray] | None:
        model = self._model(lang)
        if model is None:
            return None
        future = asyncio.run_coroutine_threadsafe(self._analyze(model, texts), self.loop)
        rows = future.result()
        return [r for r, _ in rows], np.asarray([v for _, v in rows], dtype=np.float32)

    async def _analyze(self, model: str, texts: list[str]) -> list[Any]:
        loaded = await self.server.registry.get(model)
        out: list[Any] = []
        for i in range(0, len(texts), CHUNK):
            chunk = texts[i : i + CHUNK]
            deadline = time.monotonic() + self.server.settings.request_timeout_s
            result = await loaded.batcher.submit(
                AnalyzeOp(), TextBatch(chunk), len(chunk), deadline
            )
            if isinstance(result, BaseException):
                raise result
            out.extend(result)
        return out
