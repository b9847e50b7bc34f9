"""Text in, results out: preprocess -> forward -> postprocess over a loaded checkpoint.

The model never sees text; this module owns the tokenizer calls and the post-processing.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from llmos.checkpoint.io import (
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    load_state_dict_strict,
    read_config,
    read_task,
    read_weights,
)
from llmos.config.model import BertConfig, GPTConfig
from llmos.data.clm import PROMPT_TEMPLATE
from llmos.errors import CheckpointError, LlmosError
from llmos.inference.classify import batched_logits, encode_texts
from llmos.inference.embed import POOLINGS, embed_ids
from llmos.inference.generate import GenerationConfig, decode_steps, generate_ids
from llmos.inference.onnx import ONNX_FILE, OnnxModel
from llmos.inference.stream import TextStream
from llmos.inference.tag import SpanDecoder, predict_spans, tokenize_for_tagging
from llmos.models.bert import (
    BertForPreTraining,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from llmos.models.gpt import GPT
from llmos.text.tokenizer import decode, load_tokenizer, special_ids, token_bytes

log = logging.getLogger("llmos.inference")


def build_model(
    config: BertConfig | GPTConfig, task: dict[str, Any] | None, path: Path
) -> torch.nn.Module:
    """The model class a checkpoint's ``config.json`` and ``task.json`` name (pretraining
    heads when there is no task)."""
    if isinstance(config, GPTConfig):
        if task is None or task.get("task") == "instruct":
            return GPT(config)
        raise CheckpointError(
            f"{path}/task.json: unsupported task {task.get('task')!r} for a GPT (supported: "
            "instruct, or none for a pretrained decoder)"
        )
    if task is None or task.get("task") == "embedding":
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
        "(supported: classification, tagging, embedding)"
    )


class Pipeline:
    """A checkpoint ready for inference (see :func:`llmos.load`)."""

    def __init__(
        self,
        model: torch.nn.Module,
        config: BertConfig | GPTConfig,
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
    def from_checkpoint(
        cls, path: str | Path, device: str = "cpu", precision: str = "fp32", compile: bool = False
    ) -> Pipeline:
        """Load config, weights and tokenizer of a checkpoint directory (safetensors only; or
        an ONNX encoder directory, run by ONNX Runtime on the CPU).

        ``precision`` ``bf16`` casts an encoder's weights to bfloat16 (fast on CUDA and on CPUs
        with AVX512-BF16 or AMX; emulated, and slower, elsewhere); outputs are returned in fp32.
        ``compile`` wraps an encoder in ``torch.compile(dynamic=True)``: each new batch shape
        compiles first (minutes on a CPU), so it pays off only for long-running servers.
        """
        if precision not in ("fp32", "bf16"):
            raise LlmosError(f"precision must be fp32 or bf16, got {precision!r}")
        path = Path(path)
        config = read_config(path)
        if (path / ONNX_FILE).is_file() and not (path / WEIGHTS_FILE).is_file():
            tokenizer = load_tokenizer(path / TOKENIZER_FILE)
            return cls(OnnxModel(path / ONNX_FILE), config, tokenizer, read_task(path), path)
        weights = read_weights(path)
        tokenizer = load_tokenizer(path / TOKENIZER_FILE)
        if tokenizer.get_vocab_size() != config.vocab_size:
            raise CheckpointError(
                f"{path}: tokenizer.json has {tokenizer.get_vocab_size()} tokens but config.json "
                f"says vocab_size {config.vocab_size}"
            )
        task = read_task(path)
        model = build_model(config, task, path)
        if getattr(config, "quantization", None) == "int8-dynamic":
            from llmos.compress.quantize import prepare_quantized

            prepare_quantized(model, weights)
        load_state_dict_strict(model, weights)
        if precision == "bf16":
            if config.model_type == "gpt" or getattr(config, "quantization", None):
                raise LlmosError(f"{path}: bf16 inference covers fp32 encoder checkpoints")
            model = model.to(torch.bfloat16)
        model = model.to(device)
        if compile:
            if config.model_type == "gpt":
                raise LlmosError(f"{path}: compile covers encoder checkpoints")
            model.forward = torch.compile(model.forward, dynamic=True)
        return cls(model, config, tokenizer, task, path)

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
        if self.task is not None or self.config.model_type == "gpt":
            have = self.task.get("task") if self.task else self.config.model_type
            raise LlmosError(
                f"this checkpoint is a {have} model; fill-mask needs a pretrained BERT (MLM) "
                "checkpoint"
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

    def embed(
        self,
        texts: list[str] | str,
        *,
        pooling: str | None = None,
        normalize: bool | None = None,
        batch_size: int = 32,
    ) -> Any:
        """Sentence embeddings from the encoder's last layer.

        ``pooling`` (``mean``, ``cls``, ``max``) and ``normalize`` (unit L2 length) default to
        the checkpoint's ``task.json`` (an imported sentence-transformers model records its
        own), else mean pooling, normalized. Texts longer than the model's ``max_length`` are
        truncated, with a warning.

        Returns:
            A float32 numpy array (number of texts, hidden size).
        """
        if self.config.model_type == "gpt":
            raise LlmosError("embed() needs an encoder (BERT) checkpoint, this one is a GPT")
        if isinstance(texts, str):
            texts = [texts]
        task = self.task or {}
        pooling = pooling or task.get("pooling", "mean")
        if pooling not in POOLINGS:
            raise LlmosError(f"pooling must be one of {list(POOLINGS)}, got {pooling!r}")
        normalize = task.get("normalize", True) if normalize is None else normalize
        max_length = int(task.get("max_length", self.config.max_position))
        ids, types, truncated = encode_texts(self.tokenizer, texts, None, max_length)
        if truncated:
            log.warning(
                "%d of %d texts were truncated to %d tokens", truncated, len(texts), max_length
            )
        if isinstance(self.model, OnnxModel):  # the graph pools and normalizes as task.json says
            if (pooling, bool(normalize)) != (
                task.get("pooling", "mean"),
                bool(task.get("normalize", True)),
            ):
                raise LlmosError(
                    "this ONNX model pools and normalizes as its task.json says; other pooling "
                    "or normalize options need the PyTorch checkpoint"
                )
            pad = self._ids["pad"] or 0
            return batched_logits(self.model, ids, types, pad, batch_size).numpy()
        encoder = self.model.bert
        return embed_ids(
            encoder, ids, types, self._ids["pad"] or 0, pooling, bool(normalize), batch_size
        )

    # --- generation (GPT checkpoints) ----------------------------------------------------

    def _require_decoder(self) -> None:
        if self.config.model_type != "gpt":
            have = self.task.get("task") if self.task else "pretrained BERT"
            raise LlmosError(f"this checkpoint is a {have} model; generation needs a GPT")

    def _prompt_ids(self, prompts: list[str], raw: bool, max_new_tokens: int) -> list[list[int]]:
        """Token ids of each prompt (wrapped in the instruction template for instruction-tuned
        checkpoints unless ``raw``), left-truncated with a warning so that prompt and
        ``max_new_tokens`` fit the context window."""
        window = self.config.max_position
        if max_new_tokens >= window:
            raise LlmosError(
                f"max_new_tokens ({max_new_tokens}) must be below the context window of "
                f"{window} tokens, which also holds the prompt"
            )
        instruct = not raw and self.task is not None and self.task.get("task") == "instruct"
        out = []
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str) or not prompt.strip():
                raise LlmosError(f"prompt {i} is empty: give some text to continue")
            # The template the checkpoint was tuned with (task.json), not today's default.
            text = (
                self.task.get("template", PROMPT_TEMPLATE).format(instruction=prompt.strip())
                if instruct
                else prompt
            )
            ids = self.tokenizer.encode(text, add_special_tokens=False).ids
            room = window - max_new_tokens
            if len(ids) > room:
                log.warning(
                    "prompt %d is %d tokens; kept its last %d so that it and max_new_tokens "
                    "(%d) fit the %d-token context window",
                    i,
                    len(ids),
                    room,
                    max_new_tokens,
                    window,
                )
                ids = ids[-room:]
            out.append(ids)
        return out

    def generate(
        self, prompts: str | list[str], *, raw: bool = False, **options: Any
    ) -> str | list[str] | list[list[str]]:
        """Continue text (or answer instructions, for an instruction-tuned checkpoint).

        Args:
            prompts: one prompt or a list (decoded together as a left-padded batch).
            raw: for instruction-tuned checkpoints, use the prompt as is instead of wrapping it
                in the instruction template.
            **options: :class:`~llmos.inference.generate.GenerationConfig` fields:
                ``max_new_tokens``, ``strategy`` (greedy | sample), ``temperature``,
                ``top_k``, ``top_p``, ``repetition_penalty``, ``no_repeat_ngram_size``,
                ``seed``, ``num_beams``, ``length_penalty``, ``early_stopping``,
                ``num_return_sequences``, ``stop`` (strings).

        Returns:
            The generated text (the prompt not included, cut before any stop string) per
            prompt: a string for a single prompt, a list for a list; with
            ``num_return_sequences`` n > 1, a list of n strings in their place.
        """
        self._require_decoder()
        single = isinstance(prompts, str)
        items = [prompts] if single else list(prompts)
        if not items:
            raise LlmosError("no prompts given")
        cfg = GenerationConfig(**options)
        ids = self._prompt_ids(items, raw, cfg.max_new_tokens)
        n = cfg.num_return_sequences
        # With stop strings (greedy/sampling), each row's text is decoded as it grows, so that
        # decoding can end at the first stop string; beams are cut afterwards.
        hooked = bool(cfg.stop) and cfg.num_beams == 1
        streams = [
            TextStream(self.tokenizer, cfg.stop, self._token_bytes)
            for _ in range(len(items) * n if hooked else 0)
        ]

        def stop(row: int, tokens: list[int]) -> bool:
            streams[row].push(tokens[-1])
            return streams[row].stopped

        rows = generate_ids(
            self.model,
            ids,
            cfg,
            eos_id=self._ids.get("eos"),
            pad_id=self._pad_id(),
            stop=stop if hooked else None,
        )
        if hooked:  # the streams have already decoded every row, token by token
            for text in streams:
                text.finish()
            texts = [text.text for text in streams]
        else:
            texts = [self._finish_text(r, cfg.stop) for r in rows]
        grouped = [texts[i * n : (i + 1) * n] for i in range(len(items))] if n > 1 else texts
        return grouped[0] if single else grouped

    def stream(self, prompt: str, *, raw: bool = False, **options: Any) -> Iterator[str]:
        """Generate for one prompt, yielding text as soon as it decodes cleanly: never half a
        UTF-8 character, never part of a stop string. Joined, the pieces equal
        :meth:`generate`'s result with the same options (greedy/sampling, one sequence)."""
        self._require_decoder()
        cfg = GenerationConfig(**options)
        if cfg.num_beams > 1 or cfg.num_return_sequences > 1:
            raise LlmosError(
                "streaming decodes one sequence: num_beams and num_return_sequences must be 1"
            )
        ids = self._prompt_ids([prompt], raw, cfg.max_new_tokens)
        text = TextStream(self.tokenizer, cfg.stop, self._token_bytes)
        eos = self._ids.get("eos")
        for step in decode_steps(
            self.model,
            ids,
            cfg,
            eos_id=eos,
            pad_id=self._pad_id(),
        ):
            token = step[0]
            if token < 0 or token == eos:
                break
            piece = text.push(token)
            if piece:
                yield piece
            if text.stopped:
                return
        rest = text.finish()
        if rest:
            yield rest

    @functools.cached_property
    def _token_bytes(self) -> list[bytes] | None:
        return token_bytes(self.tokenizer)

    def _pad_id(self) -> int:
        pad = self._ids.get("pad")
        return pad if pad is not None else (self._ids.get("eos") or 0)

    def _finish_text(self, tokens: list[int], stop: tuple[str, ...]) -> str:
        """Clean text of generated ids: special tokens dropped, cut before the first stop
        string, an incomplete last character dropped."""
        text = TextStream(self.tokenizer, stop, self._token_bytes)
        for t in tokens:
            text.push(t)
            if text.stopped:
                break
        text.finish()
        return text.text
