"""The encoder pipeline: classify, tag, fill-mask and embed with a BERT-style checkpoint (or
its ONNX export).

Which of the four a checkpoint answers depends on what it was trained for (its
:data:`~llmos.checkpoint.task.TaskSpec`): ``classify`` needs a classifier, ``tag`` a tagger,
``fill_mask`` a pretrained encoder with its masked-LM head; every encoder embeds. Asking for
another says what the checkpoint is.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import torch

from llmos.checkpoint.io import Checkpoint
from llmos.checkpoint.task import Classification, Embedding, MaskedLM, Tagging
from llmos.errors import LlmosError
from llmos.inference.classify import (
    batched_logits,
    check_long_inputs,
    encode_texts,
    encode_windows,
    mean_over_windows,
)
from llmos.inference.embed import POOLINGS, embed_ids
from llmos.inference.onnx import OnnxModel
from llmos.inference.pipeline import Pipeline
from llmos.inference.tag import SpanDecoder, predict_spans, tokenize_for_tagging
from llmos.text.tokenizer import decode

log = logging.getLogger("llmos.inference")


EMBED_KINDS = ("query", "passage")


def with_prefix(spec: Embedding, texts: list[str], kind: str | None) -> list[str]:
    """``texts`` with the spec's prefix for ``kind`` (``query`` / ``passage``) put before each;
    unchanged for ``kind`` None or a spec without that prefix."""
    if kind is None:
        return texts
    if kind not in EMBED_KINDS:
        raise LlmosError(f"kind must be one of {list(EMBED_KINDS)} (or none), got {kind!r}")
    prefix = spec.query_prefix if kind == "query" else spec.passage_prefix
    return [prefix + t for t in texts] if prefix else texts


class EncoderPipeline(Pipeline):
    """A BERT-style checkpoint ready for inference (see :func:`llmos.load`)."""

    operations: ClassVar[tuple[str, ...]] = ("classify", "tag", "fill_mask", "embed")
    needs: ClassVar[str] = "a GPT checkpoint"

    def __init__(self, model: torch.nn.Module, checkpoint: Checkpoint) -> None:
        super().__init__(model, checkpoint)
        spec = checkpoint.task
        # Tagging models: tag sequences -> spans under the checkpoint's labels and scheme.
        self.decoder = (
            SpanDecoder(list(spec.labels), spec.scheme) if isinstance(spec, Tagging) else None
        )

    def _pad(self) -> int:
        return self._ids["pad"] or 0

    def _encode(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(text).ids
        if len(ids) > self.config.max_position:
            raise LlmosError(
                f"input is {len(ids)} tokens; this model takes at most {self.config.max_position}"
            )
        return ids

    def require_task(self, kind: str) -> list[str]:
        """The labels of a ``kind`` (classification, tagging) model; a clear error for any
        other model."""
        spec = self.spec
        if spec.kind != kind or not isinstance(spec, Classification | Tagging):
            have = "pretraining (fill-mask)" if isinstance(spec, MaskedLM) else spec.kind
            raise LlmosError(f"this checkpoint is a {have} model, not a {kind} model")
        return list(spec.labels)

    @torch.inference_mode()
    def fill_mask(
        self, text: str, top_k: int = 5
    ) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Predict the tokens hidden behind ``[MASK]``.

        Returns:
            For one mask, ``[{"token", "token_id", "score", "sequence"}, ...]`` best first; for
            several masks, one such list per mask, left to right.
        """
        if not isinstance(self.spec, MaskedLM):
            raise LlmosError(
                f"this checkpoint is a {self.spec.kind} model; fill-mask needs a pretrained BERT "
                "(MLM) checkpoint"
            )
        if self.config.heads == "none" or isinstance(self.model, OnnxModel):
            raise LlmosError(
                "this encoder has no masked-LM head (an embedding model): use embed(), or a "
                "checkpoint pretrained with MLM for fill-mask"
            )
        mask_id = self._ids.get("mask")
        if mask_id is None:
            raise LlmosError("this checkpoint's tokenizer has no [MASK] token")
        if top_k < 1:
            raise LlmosError(f"top_k must be >= 1, got {top_k}")
        ids = self._encode(text)
        where = [i for i, t in enumerate(ids) if t == mask_id]
        if not where:
            raise LlmosError(f"no [MASK] token in the input {text!r}")
        x = torch.tensor([ids], device=self.device)
        positions = torch.tensor(where, device=self.device)
        logits = self.model(x, mlm_positions=positions).mlm_logits.float()  # (M, V)
        probs = logits.softmax(-1)
        scores, tokens = probs.topk(min(top_k, probs.size(-1)), dim=-1)
        results = []
        for m, pos in enumerate(where):
            row = []
            for score, tok in zip(scores[m].tolist(), tokens[m].tolist(), strict=True):
                filled = list(ids)
                filled[pos] = tok
                row.append(
                    {
                        "token": decode(self.tokenizer, [tok]),
                        "token_id": tok,
                        "score": score,
                        "sequence": decode(self.tokenizer, filled),
                    }
                )
            results.append(row)
        return results[0] if len(results) == 1 else results

    def classify(
        self,
        texts: list[str],
        texts_b: list[str] | None = None,
        batch_size: int = 32,
        long_inputs: str = "window",
    ) -> list[dict[str, Any]]:
        """Classify texts (or sentence pairs with ``texts_b``).

        Args:
            texts: the texts (or the first texts of pairs).
            texts_b: the second texts of sentence pairs, one per text.
            batch_size: rows per forward pass (texts, or windows of long texts).
            long_inputs: what happens to a text longer than the checkpoint's ``max_length``
                tokens. ``"window"`` (the default): it is read in windows that overlap by half
                (each wrapped in the tokenizer's own special tokens) and its logits are the
                mean of the windows' logits (see
                :func:`~llmos.inference.classify.mean_over_windows`). ``"truncate"``: only its
                first ``max_length`` tokens are read, with a warning. Sentence pairs are always
                truncated (longest first), as the model was trained on them: a window of the
                second text alone would not be the pair the model learned to judge.

        A classifier fine-tuned with a ``text_prefix`` (task.json) reads ``prefix + text``
        for every text (the first of a pair), as in training; in the window path the prefix
        begins every window. The answers are about the texts as given.

        Returns:
            ``[{"label", "score", "scores": {label: probability}, "windows"}, ...]`` in input
            order; ``windows`` is how many windows the text was read in (1 unless it was
            longer than ``max_length`` and windowed).
        """
        labels = self.require_task("classification")
        check_long_inputs(long_inputs)
        if isinstance(texts, str):
            texts = [texts]
        max_length = self.checkpoint.max_length
        prefix = self.spec.text_prefix if isinstance(self.spec, Classification) else None
        pairs = texts_b is not None and any(b is not None for b in texts_b)
        if long_inputs == "window" and not pairs:
            inputs = encode_windows(self.tokenizer, texts, max_length, prefix)
            ids, types, windows = inputs.ids, inputs.types, inputs.windows
            truncated = inputs.fallback
        else:
            ids, types, truncated = encode_texts(self.tokenizer, texts, texts_b, max_length, prefix)
            windows = [1] * len(texts)
        if truncated:
            log.warning(
                "%d of %d inputs were truncated to %d tokens", truncated, len(texts), max_length
            )
        logits = batched_logits(self.model, ids, types, self._pad(), batch_size)
        probs = mean_over_windows(logits, windows).softmax(-1)
        out = []
        for row, n in zip(probs.tolist(), windows, strict=True):
            best = max(range(len(row)), key=row.__getitem__)
            out.append(
                {
                    "label": labels[best],
                    "score": row[best],
                    "scores": dict(zip(labels, row, strict=True)),
                    "windows": n,
                }
            )
        return out

    def tag(self, texts: list[str] | str, batch_size: int = 32) -> list[list[dict[str, Any]]]:
        """Label spans in texts (entities, slots, words, words with their POS).

        Texts of any length: long ones are read in overlapping windows and decoded as a whole
        (constrained Viterbi), so every tag sequence is valid under the model's scheme.

        Returns:
            One list per text of ``{"text", "label", "start", "end", "score"}`` spans, with
            character offsets into that text (``text[start:end]``); for word segmentation the
            label is ``""``.
        """
        self.require_task("tagging")
        assert self.decoder is not None
        if isinstance(texts, str):
            texts = [texts]
        tokens = tokenize_for_tagging(self.tokenizer, texts)
        return predict_spans(
            self.model,
            tokens,
            texts,
            self.decoder,
            self._ids,
            self.checkpoint.max_length,
            batch_size,
        )[2]

    def embed(
        self,
        texts: list[str] | str,
        *,
        pooling: str | None = None,
        normalize: bool | None = None,
        kind: str | None = None,
        batch_size: int = 32,
    ) -> np.ndarray:
        """Sentence embeddings from the encoder's last layer.

        ``pooling`` (``mean``, ``cls``, ``max``) and ``normalize`` (unit L2 length) default to
        the checkpoint's ``task.json`` (an imported sentence-transformers model records its
        own), else mean pooling, normalized. ``kind`` (``query`` or ``passage``) puts the
        checkpoint's prefix for that kind before every text, as asymmetric retrieval models
        expect (multilingual-e5-small: ``query: `` for searches, ``passage: `` for the
        documents searched); a checkpoint without prefixes embeds both kinds alike. Texts
        longer than the model's ``max_length`` are truncated, with a warning.

        Returns:
            A float32 numpy array (number of texts, hidden size).
        """
        if isinstance(texts, str):
            texts = [texts]
        own = self.spec if isinstance(self.spec, Embedding) else Embedding()
        pooling = pooling or own.pooling
        if pooling not in POOLINGS:
            raise LlmosError(f"pooling must be one of {list(POOLINGS)}, got {pooling!r}")
        normalize = own.normalize if normalize is None else bool(normalize)
        texts = with_prefix(own, texts, kind)
        max_length = self.checkpoint.max_length
        ids, types, truncated = encode_texts(self.tokenizer, texts, None, max_length)
        if truncated:
            log.warning(
                "%d of %d texts were truncated to %d tokens", truncated, len(texts), max_length
            )
        if isinstance(self.model, OnnxModel):  # the graph pools and normalizes as task.json says
            if (pooling, normalize) != (own.pooling, own.normalize):
                raise LlmosError(
                    "this ONNX model pools and normalizes as its task.json says; other pooling "
                    "or normalize options need the PyTorch checkpoint"
                )
            return batched_logits(self.model, ids, types, self._pad(), batch_size).numpy()
        return embed_ids(self.model.bert, ids, types, self._pad(), pooling, normalize, batch_size)
