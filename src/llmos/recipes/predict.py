"""Recipes for the file jobs: ``llmos predict`` (classify or tag every text of a file),
``llmos generate --input`` (generate for every prompt of a file) and ``llmos embed`` (a
``.npy`` matrix of sentence vectors). Scoring on labelled files is ``recipes/evaluate.py``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tqdm import tqdm

from llmos.checkpoint.task import Tagging
from llmos.data.textfiles import read_inputs, write_lines
from llmos.errors import DataError, LlmosError
from llmos.files import atomic_path
from llmos.inference.classify import check_long_inputs
from llmos.inference.image import ImagePipeline
from llmos.inference.load import load_pipeline


def predict_file(
    checkpoint: str | Path,
    input_path: str,
    output: str,
    *,
    batch_size: int = 32,
    long_inputs: str = "window",
) -> int:
    """Write one JSON line per input text.

    Classifiers: ``{"text", "label", "score", "scores", "windows"}``, a text longer than the
    model reads classified from overlapping windows (``long_inputs="window"``) or truncated
    (``"truncate"``), as :meth:`~llmos.inference.encoder.EncoderPipeline.classify` does;
    taggers (which always read long texts in windows): ``{"text", "spans": [{"text", "label",
    "start", "end", "score"}, ...]}`` with character offsets into ``text``.
    """
    check_long_inputs(long_inputs)  # before the model loads: a typo fails at once
    pipe = load_pipeline(checkpoint)
    texts, texts_b = read_inputs(input_path)
    if isinstance(pipe.spec, Tagging):
        preds: list[dict[str, Any]] = [{"spans": s} for s in pipe.tag(texts, batch_size=batch_size)]
    else:
        preds = pipe.classify(texts, texts_b, batch_size=batch_size, long_inputs=long_inputs)
    lines = [
        json.dumps({"text": t, **p}, ensure_ascii=False) for t, p in zip(texts, preds, strict=True)
    ]
    return write_lines(lines, output)


def generate_file(
    checkpoint: str | Path,
    input_path: str,
    output: str,
    *,
    batch_size: int = 8,
    raw: bool = False,
    **options: Any,
) -> int:
    """Generate for every prompt of a file (one a line, or JSONL ``{"prompt": ...}``); write
    ``{"prompt", "generation"}`` lines (``"generations"``, a list, with
    ``num_return_sequences`` > 1)."""
    pipe = load_pipeline(checkpoint)
    prompts, _ = read_inputs(input_path, key="prompt")
    if not prompts:
        raise DataError(f"{input_path}: no prompts")
    key = "generations" if options.get("num_return_sequences", 1) > 1 else "generation"
    lines = []
    for i in tqdm(range(0, len(prompts), batch_size), desc="generate", unit="batch"):
        chunk = prompts[i : i + batch_size]
        outs = pipe.generate(chunk, raw=raw, **options)
        lines += [
            json.dumps({"prompt": p, key: o}, ensure_ascii=False)
            for p, o in zip(chunk, outs, strict=True)
        ]
    return write_lines(lines, output)


def embed_file(
    checkpoint: str | Path,
    input_path: str,
    output: str | Path,
    *,
    pooling: str | None = None,
    normalize: bool | None = None,
    kind: str | None = None,
    batch_size: int = 32,
    text_encoder: str | None = None,
) -> tuple[int, int]:
    """Embed every text of a file (one a line, or .tsv/.csv/.jsonl ``text``) into a float32
    ``.npy`` matrix, row i for text i; returns its shape. ``kind`` (query / passage) applies
    the checkpoint's prefix for that kind, if it has one. A CLIP checkpoint embeds the texts
    into its image space (``embed_texts``; ``text_encoder`` overrides its text tower)."""
    import numpy as np

    pipe = load_pipeline(checkpoint, text_encoder=text_encoder)
    texts, _ = read_inputs(input_path)
    if not texts:
        raise DataError(f"{input_path}: no texts")
    if isinstance(pipe, ImagePipeline):
        if pooling is not None or normalize is not None or kind is not None:
            raise LlmosError(
                f"{checkpoint} is a CLIP checkpoint: its texts are embedded as it was trained "
                "(no --pooling, --normalize or --kind)"
            )
        vectors = pipe.embed_texts(texts, batch_size=batch_size)
    else:
        vectors = pipe.embed(
            texts, pooling=pooling, normalize=normalize, kind=kind, batch_size=batch_size
        )
    # Through an open file: np.save appends .npy to a path name that lacks it.
    with atomic_path(output) as tmp, open(tmp, "wb") as fh:
        np.save(fh, vectors)
    return vectors.shape
