"""The generator pipeline: ``generate`` and ``stream`` with a GPT checkpoint (pretrained, or
instruction-tuned: prompts are then wrapped in the template it was tuned with).

Token-level decoding lives in :mod:`llmos.inference.generate`; this module owns the text side:
prompt templates and truncation, detokenizing, stop strings and streaming, and the LoRA adapters
(:mod:`llmos.models.lora`) a request may decode with: one base model in memory, any number of
adapters beside it (the least recently used dropped past :data:`MAX_ADAPTERS`), and a batch whose
prompts each name their own adapter decodes in one pass.
"""

from __future__ import annotations

import collections
import functools
import logging
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from llmos.checkpoint.digest import weights_digest
from llmos.checkpoint.task import Instruct
from llmos.data.clm import PROMPT_TEMPLATE
from llmos.errors import LlmosError
from llmos.inference import instruct
from llmos.inference.generate import GenerationConfig, decode_steps, generate_ids
from llmos.inference.pipeline import Pipeline
from llmos.inference.stream import TextStream
from llmos.models import lora
from llmos.text.tokenizer import token_bytes

log = logging.getLogger("llmos.inference")

MAX_ADAPTERS = 64  # adapters kept beside one base model (a rank-8 GPT-zh adapter is ~0.2 MB)

Adapters = str | list[str | None] | None


@dataclass(frozen=True)
class Completion:
    """One generated sequence and what it cost.

    Attributes:
        text: as :meth:`GeneratorPipeline.generate` returns it.
        prompt_tokens: tokens the model read (the prompt after its template and truncation).
        completion_tokens: tokens generated, an end-of-text token included.
        finish_reason: ``"length"`` when ``max_new_tokens`` ended it, else ``"stop"`` (the
            end-of-text token or a stop string).
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class GeneratorPipeline(Pipeline):
    """A GPT checkpoint ready for generation (see :func:`llmos.load`)."""

    operations: ClassVar[tuple[str, ...]] = ("generate", "stream")
    needs: ClassVar[str] = "an encoder (BERT) checkpoint"

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
        spec = self.spec
        # The template the checkpoint was tuned with (task.json), not today's default.
        template = (spec.template or PROMPT_TEMPLATE) if isinstance(spec, Instruct) else None
        out = []
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str) or not prompt.strip():
                raise LlmosError(f"prompt {i} is empty: give some text to continue")
            text = template.format(instruction=prompt.strip()) if template and not raw else prompt
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

    def add_adapter(self, name: str, directory: str | Path) -> None:
        """Load the LoRA adapter in ``directory`` as ``name`` (a no-op when it is loaded).
        An adapter trained by llmos names its base's weights digest: it must be this model's
        (an adapter of another base would decode nonsense)."""
        loaded = self._adapters
        if name in loaded:
            loaded.move_to_end(name)
            return
        info = lora.read_info(directory)
        want = info.get("base_digest")
        if want is not None and want != self._digest:
            raise LlmosError(
                f"adapter {directory} was trained on another base ({info.get('base')}); "
                f"this model is {self.path}"
            )
        lora.load_adapter(self.model, directory, name)
        self.model.eval()
        loaded[name] = Path(directory)
        while len(loaded) > MAX_ADAPTERS:
            old, _ = loaded.popitem(last=False)
            lora.remove_adapter(self.model, old)

    def remove_adapter(self, name: str) -> None:
        if self._adapters.pop(name, None) is not None:
            lora.remove_adapter(self.model, name)

    @property
    def adapters(self) -> list[str]:
        return list(self._adapters)

    @functools.cached_property
    def _adapters(self) -> collections.OrderedDict[str, Path]:
        return collections.OrderedDict()

    @functools.cached_property
    def _digest(self) -> str | None:
        return weights_digest(self.path)

    def _check_adapters(self, adapter: Adapters, n: int) -> None:
        names = adapter if isinstance(adapter, list) else [adapter]
        if isinstance(adapter, list) and len(adapter) != n:
            raise LlmosError(f"{len(adapter)} adapters given for {n} prompts")
        for name in names:
            if name is not None and name not in self._adapters:
                raise LlmosError(f"no adapter {name!r} is loaded (add_adapter first)")

    def generate(
        self,
        prompts: str | list[str],
        *,
        raw: bool = False,
        adapter: Adapters = None,
        **options: Any,
    ) -> str | list[str] | list[list[str]]:
        """Continue text (or answer instructions, for an instruction-tuned checkpoint).

        Args:
            prompts: one prompt or a list (decoded together as a left-padded batch).
            raw: for instruction-tuned checkpoints, use the prompt as is instead of wrapping it
                in the instruction template.
            adapter: a loaded adapter (:meth:`add_adapter`) to decode with, or one per prompt
                (None: the base model), decoded together in one batch.
            **options: :class:`~llmos.inference.generate.GenerationConfig` fields:
                ``max_new_tokens``, ``strategy`` (greedy | sample), ``temperature``,
                ``top_k``, ``top_p``, ``repetition_penalty``, ``no_repeat_ngram_size``,
                ``seed``, ``num_beams``, ``length_penalty``, ``early_stopping``,
                ``num_return_sequences``, ``stop`` (strings). Defaults are those of
                ``GenerationConfig`` (a mild repetition penalty and no repeated trigrams).

        Returns:
            The generated text (the prompt not included, cut before any stop string) per
            prompt: a string for a single prompt, a list for a list; with
            ``num_return_sequences`` n > 1, a list of n strings in their place.
        """
        single = isinstance(prompts, str)
        items = [prompts] if single else list(prompts)
        done = self.complete(items, raw=raw, adapter=adapter, **options)
        grouped = [[c.text for c in group] if len(group) > 1 else group[0].text for group in done]
        return grouped[0] if single else grouped

    def complete(
        self, prompts: list[str], *, raw: bool = False, adapter: Adapters = None, **options: Any
    ) -> list[list[Completion]]:
        """:meth:`generate` with token counts and why each sequence ended: per prompt, its
        ``num_return_sequences`` :class:`Completion` records (the OpenAI-compatible API's
        ``usage`` and ``finish_reason``)."""
        items = list(prompts)
        if not items:
            raise LlmosError("no prompts given")
        cfg = GenerationConfig(**options)
        self._check_adapters(adapter, len(items))
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

        eos = self._ids.get("eos")
        with lora.use(self.model, adapter):
            rows = generate_ids(
                self.model,
                ids,
                cfg,
                eos_id=eos,
                pad_id=self._pad_id(),
                stop=stop if hooked else None,
            )
        if hooked:  # the streams have already decoded every row, token by token
            for text in streams:
                text.finish()
        else:
            streams = [self._finish(r, cfg.stop) for r in rows]
        out = []
        for r, (row, text) in enumerate(zip(rows, streams, strict=True)):
            ended = text.stopped or (eos is not None and bool(row) and row[-1] == eos)
            reason = "length" if not ended and len(row) >= cfg.max_new_tokens else "stop"
            out.append(Completion(text.text, len(ids[r // n]), len(row), reason))
        return [out[i * n : (i + 1) * n] for i in range(len(items))]

    def stream(
        self, prompt: str, *, raw: bool = False, adapter: str | None = None, **options: Any
    ) -> Iterator[str]:
        """Generate for one prompt, yielding text as soon as it decodes cleanly: never half a
        UTF-8 character, never part of a stop string. Joined, the pieces equal
        :meth:`generate`'s result with the same options (greedy/sampling, one sequence).
        The adapter applies while the stream is consumed: consume it before another call."""
        yield from self.stream_completion(prompt, raw=raw, adapter=adapter, **options)

    def stream_completion(
        self, prompt: str, *, raw: bool = False, adapter: str | None = None, **options: Any
    ) -> Generator[str, None, Completion]:
        """:meth:`stream`, whose generator returns (``StopIteration.value``) the
        :class:`Completion` of the whole stream: the same record :meth:`complete` gives."""
        cfg = GenerationConfig(**options)
        self._check_adapters(adapter, 1)
        if cfg.num_beams > 1 or cfg.num_return_sequences > 1:
            raise LlmosError(
                "streaming decodes one sequence: num_beams and num_return_sequences must be 1"
            )
        ids = self._prompt_ids([prompt], raw, cfg.max_new_tokens)
        text = TextStream(self.tokenizer, cfg.stop, self._token_bytes)
        eos = self._ids.get("eos")
        steps, reason = 0, "stop"
        with lora.use(self.model, adapter):
            for step in decode_steps(self.model, ids, cfg, eos_id=eos, pad_id=self._pad_id()):
                token = step[0]
                if token < 0:
                    break
                steps += 1  # the end-of-text token counts, as in complete()
                if token == eos:
                    break
                piece = text.push(token)
                if piece:
                    yield piece
                if text.stopped:
                    return Completion(text.text, len(ids[0]), steps, "stop")
            else:
                reason = "length" if steps >= cfg.max_new_tokens else "stop"
        rest = text.finish()
        if rest:
            yield rest
        return Completion(text.text, len(ids[0]), steps, reason)

    def answer_scores(
        self, instruction: str, texts: list[str], answers: Sequence[str], batch_size: int = 32
    ) -> np.ndarray:
        """The log-probability of each answer, then the end-of-text token, after each text's
        instruction prompt (the template the checkpoint was tuned with, the text as its
        input): constrained answers for zero-shot classification
        (:mod:`llmos.inference.instruct`).

        Returns:
            A float64 array (number of texts, number of answers). A text whose prompt and the
            longest answer exceed the context window loses its end (with a warning).

        Raises:
            LlmosError: an answer of no tokens, a tokenizer without an end-of-text token, or
                an instruction too long to leave room for the text.
        """
        eos = self._ids.get("eos")
        if eos is None:
            raise LlmosError(
                f"{self.path}: the tokenizer has no end-of-text token, which ends an answer"
            )
        encoded = self.tokenizer.encode_batch(list(answers), add_special_tokens=False)
        answer_ids = []
        for answer, enc in zip(answers, encoded, strict=True):
            if not enc.ids:
                raise LlmosError(f"the answer {answer!r} is no token of this model's vocabulary")
            answer_ids.append([*enc.ids, eos])
        spec = self.spec
        tuned = isinstance(spec, Instruct)
        room = self.config.max_position - max(len(a) for a in answer_ids)
        prompts, cut = instruct.encode_prompts(
            self.tokenizer,
            instruction,
            texts,
            room,
            template=spec.template if tuned else None,
            template_with_input=spec.template_with_input if tuned else None,
        )
        if cut:
            log.warning(
                "%d of %d texts cut so that the prompt and the answers fit the %d-token "
                "context window",
                cut,
                len(texts),
                self.config.max_position,
            )
        pad = self._pad_id()
        return instruct.answer_log_probs(self.model, prompts, answer_ids, pad, batch_size)

    @functools.cached_property
    def _token_bytes(self) -> list[bytes] | None:
        return token_bytes(self.tokenizer)

    def _pad_id(self) -> int:
        pad = self._ids.get("pad")
        return pad if pad is not None else (self._ids.get("eos") or 0)

    def _finish_text(self, tokens: list[int], stop: tuple[str, ...]) -> str:
        """Clean text of generated ids: special tokens dropped, cut before the first stop
        string, an incomplete last character dropped."""
        return self._finish(tokens, stop).text

    def _finish(self, tokens: list[int], stop: tuple[str, ...]) -> TextStream:
        """Generated ids decoded: ``.text`` is clean text (special tokens dropped, cut before
        the first stop string, an incomplete last character dropped); ``.stopped`` says
        whether a stop string cut it."""
        text = TextStream(self.tokenizer, stop, self._token_bytes)
        for t in tokens:
            text.push(t)
            if text.stopped:
                break
        text.finish()
        return text
