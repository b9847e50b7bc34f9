"""Text in, results out: preprocess -> forward -> postprocess over a loaded checkpoint.

The model never sees text; this module owns the tokenizer calls and the post-processing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from llmos.checkpoint.io import (
    TOKENIZER_FILE,
    load_state_dict_strict,
    read_config,
    read_task,
    read_weights,
)
from llmos.config.model import BertConfig
from llmos.errors import CheckpointError, LlmosError
from llmos.inference.classify import batched_logits, encode_texts
from llmos.inference.tag import SpanDecoder, predict_spans, tokenize_for_tagging
from llmos.models.bert import (
    BertForPreTraining,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from llmos.text.tokenizer import decode, load_tokenizer, special_ids

log = logging.getLogger("llmos.inference")


def build_model(config: BertConfig, task: dict[str, Any] | None, path: Path) -> torch.nn.Module:
    """The model class a checkpoint's ``task.json`` names (pretraining heads when absent)."""
    if task is None:
        return BertForPreTraining(config)
    kind = task.get("task")
    labels = task.get("labels")
    if kind == "classification" and isinstance(labels, list) and labels:
        return BertForSequenceClassification(config, len(labels))
    if kind == "tagging" and isinstance(labels, list) and labels:
        if task.get("scheme") not in ("bio", "bmes"):
            raise CheckpointError(
                f"{path}/task.json: tagging needs a 'scheme' of 'bio' or 'bmes', "
                f"got {task.get('scheme')!r}"
            )
        return BertForTokenClassification(config, len(labels))
    raise CheckpointError(
        f"{path}/task.json: unsupported task {kind!r} or missing labels "
        "(supported: classification, tagging)"
    )


class Pipeline:
    """A checkpoint ready for inference (see :func:`llmos.load`)."""

    def __init__(
        self,
        model: torch.nn.Module,
        config: BertConfig,
        tokenizer: Any,
        task: dict[str, Any] | None = None,
        path: Path | None = None,
    ) -> None:
        self.model = model.eval()
        self.config = config
        self.tokenizer = tokenizer
        self.task = task
        self.path = path
        self.device = next(model.parameters()).device
        self._ids = special_ids(tokenizer)
        # Tagging models: tag sequences -> spans under the checkpoint's labels and scheme.
        self.decoder = (
            SpanDecoder(task["labels"], task["scheme"])
            if task and task.get("task") == "tagging"
            else None
        )

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> Pipeline:
        """Load config, weights and tokenizer of a checkpoint directory (safetensors only)."""
        path = Path(path)
        config = read_config(path)
        weights = read_weights(path)
        tokenizer = load_tokenizer(path / TOKENIZER_FILE)
        if tokenizer.get_vocab_size() != config.vocab_size:
            raise CheckpointError(
                f"{path}: tokenizer.json has {tokenizer.get_vocab_size()} tokens but config.json "
                f"says vocab_size {config.vocab_size}"
            )
        task = read_task(path)
        model = build_model(config, task, path)
        load_state_dict_strict(model, weights)
        return cls(model.to(device), config, tokenizer, task, path)

    def _encode(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(text).ids
        if len(ids) > self.config.max_position:
            raise LlmosError(
                f"input is {len(ids)} tokens; this model takes at most {self.config.max_position}"
            )
        return ids

    @torch.inference_mode()
    def fill_mask(
        self, text: str, top_k: int = 5
    ) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Predict the tokens hidden behind ``[MASK]``.

        Returns:
            For one mask, ``[{"token", "token_id", "score", "sequence"}, ...]`` best first; for
            several masks, one such list per mask, left to right.
        """
        if self.task is not None:
            raise LlmosError(
                f"this checkpoint is a {self.task.get('task')} model; fill-mask needs a "
                "pretrained (MLM) checkpoint"
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

    def require_task(self, kind: str) -> list[str]:
        if not self.task or self.task.get("task") != kind:
            have = self.task.get("task") if self.task else "pretraining (fill-mask)"
            raise LlmosError(f"this checkpoint is a {have} model, not a {kind} model")
        return list(self.task["labels"])

    def classify(
        self, texts: list[str], texts_b: list[str] | None = None, batch_size: int = 32
    ) -> list[dict[str, Any]]:
        """Classify texts (or sentence pairs with ``texts_b``).

        Inputs longer than the model's ``max_length`` are truncated, with a warning.

        Returns:
            ``[{"label", "score", "scores": {label: probability}}, ...]`` in input order.
        """
        labels = self.require_task("classification")
        if isinstance(texts, str):
            texts = [texts]
        max_length = int(self.task.get("max_length", self.config.max_position))
        ids, types, truncated = encode_texts(self.tokenizer, texts, texts_b, max_length)
        if truncated:
            log.warning(
                "%d of %d inputs were truncated to %d tokens", truncated, len(texts), max_length
            )
        probs = batched_logits(self.model, ids, types, self._ids["pad"] or 0, batch_size).softmax(
            -1
        )
        out = []
        for row in probs.tolist():
            best = max(range(len(row)), key=row.__getitem__)
            out.append(
                {
                    "label": labels[best],
                    "score": row[best],
                    "scores": dict(zip(labels, row, strict=True)),
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
        max_length = int(self.task.get("max_length", self.config.max_position))
        tokens = tokenize_for_tagging(self.tokenizer, texts)
        return predict_spans(
            self.model, tokens, texts, self.decoder, self._ids, max_length, batch_size
        )[2]
