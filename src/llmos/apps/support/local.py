"""The support desk's models loaded in this process (the command line, scripts, tests): an
:class:`~llmos.apps.support.index.Embedder`, a sentiment
:data:`~llmos.apps.support.service.Classifier` and an :class:`~llmos.apps.support.service.Nlu`
over checkpoint directories. The server uses its models' batchers instead
(:mod:`llmos.serve.embedder`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from llmos.apps.support.fewshot import intent_examples
from llmos.apps.support.indexes import UnknownEncoder
from llmos.checkpoint.digest import weights_digest
from llmos.checkpoint.task import MultiTask
from llmos.errors import LlmosError


class PipelineEmbedder:
    """An :class:`~llmos.apps.support.index.Embedder` over an encoder checkpoint loaded in
    this process (CLI, scripts,
    tests). ``name`` is the checkpoint's weights digest."""

    def __init__(self, checkpoint: str | Path, batch_size: int = 32) -> None:
        from llmos.inference.load import load_pipeline

        self.pipe = load_pipeline(checkpoint)
        self.name = weights_digest(checkpoint) or str(Path(checkpoint).resolve())
        self.batch_size = batch_size
        self.lock = threading.Lock()  # one forward pass at a time over the shared model

    def __call__(self, texts: list[str], kind: str) -> np.ndarray:
        with self.lock:
            return self.pipe.embed(texts, kind=kind, batch_size=self.batch_size)


def catalog_encoders(models_dir: str | Path) -> Callable[[str], PipelineEmbedder]:
    """A support service's ``encoders`` on the command line: a model's name under
    ``models_dir`` (the server's ``--models-dir``, named as the server names it) -> that
    checkpoint loaded here; a missing model, or one that does not embed, is refused."""
    from llmos.serve.catalog import Catalog

    catalog: list[Catalog] = []

    def encoder(name: str) -> PipelineEmbedder:
        try:
            if not catalog:
                catalog.append(Catalog.read(Path(models_dir)))
            entry = catalog[0].encoder(name)
        except LlmosError as e:  # no such directory, no such model, not an encoder
            raise UnknownEncoder(f"encoder {name!r}: {e} (--models-dir {models_dir})") from None
        return PipelineEmbedder(entry.path)

    return encoder


class PipelineClassifier:
    """A :data:`~llmos.apps.support.service.Classifier` over classification checkpoints
    loaded in this process, one per
    language (``{"zh": "runs/sentiment-zh/checkpoint"}``); a language without one, or whose
    checkpoint is missing, gets None."""

    def __init__(self, checkpoints: dict[str, str | Path | None]) -> None:
        from llmos.inference.load import load_pipeline

        self.pipes = {
            lang: load_pipeline(path)
            for lang, path in checkpoints.items()
            if path is not None and (Path(path) / "config.json").is_file()
        }

    def __call__(self, texts: list[str], lang: str) -> list[dict[str, Any]] | None:
        pipe = self.pipes.get(lang)
        return pipe.classify(texts) if pipe is not None else None


class PipelineNlu:
    """An :class:`~llmos.apps.support.service.Nlu` over multitask checkpoints loaded in
    this process, one per language
    (``{"zh": "runs/support-zh/checkpoint"}``); a language without one, or whose checkpoint
    is missing, gets None."""

    def __init__(self, checkpoints: dict[str, str | Path | None], batch_size: int = 32) -> None:
        from llmos.inference.load import load_pipeline

        self.pipes, self.names = {}, {}
        for lang, path in checkpoints.items():
            if path is not None and (Path(path) / "config.json").is_file():
                pipe = load_pipeline(path)
                if not isinstance(pipe.spec, MultiTask):
                    raise LlmosError(
                        f"{path}: the NLU model must be a multitask checkpoint (intent, slots, "
                        f"sentiment heads: configs/finetune/support-zh.yaml), not {pipe.describe()}"
                    )
                self.pipes[lang] = pipe
                self.names[lang] = weights_digest(path) or str(Path(path).resolve())
        self.batch_size = batch_size
        self.lock = threading.Lock()

    def __call__(
        self, texts: list[str], lang: str
    ) -> tuple[list[dict[str, Any]], np.ndarray] | None:
        pipe = self.pipes.get(lang)
        if pipe is None:
            return None
        with self.lock:
            return pipe.analyze(texts, batch_size=self.batch_size)

    def encoder(self, lang: str) -> str | None:
        return self.names.get(lang)

    def intent_examples(self, lang: str) -> dict[str, list[str]]:
        pipe = self.pipes.get(lang)
        return intent_examples(pipe.spec) if pipe is not None else {}
