"""A spelling checkpoint's decoding, as :meth:`EncoderPipeline.correct
<llmos.inference.encoder.EncoderPipeline.correct>` runs it: the model alone
(:func:`~llmos.inference.correct.predict_corrections`), or the model's evidence with the
checkpoint's character n-gram LM (:mod:`llmos.inference.csc_lm`, fitted by ``llmos write lm``).

It holds what a loaded spelling model reads once: the correction head's characters, the
confusion sets saved in the checkpoint's ``confusion/`` directory, the LM, and the
noisy-channel prior when the fit chose one (:mod:`llmos.inference.csc_channel`).

When the fit's ``alpha`` is 0 the search reads only the detection logits, and the correction
head (a product over every output character) runs only at the edits the search accepts, for
their probability: 86-90 -> 108-114 sentences/s of 50 characters here (docs/BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer

from llmos.checkpoint.task import Spelling
from llmos.data.spelling import read_confusion
from llmos.errors import CheckpointError, LlmosError
from llmos.inference import correct as csc
from llmos.inference import csc_lm
from llmos.inference.csc_channel import ChannelPrior, ChannelWeights, channel_features
from llmos.models.ngram import CharNgramLM

# Texts decoded per pass of the model when the search reads only detection logits: the
# encoder's output is kept at every character position until the search is done (384 floats
# each for e5-zh's width: ~50 MB per 32k characters).
CHUNK_CHARACTERS = 32768


def _chunks(texts: Sequence[str], characters: int) -> list[tuple[int, int]]:
    """(start, end) of consecutive runs of ``texts`` with at most ``characters`` characters
    each (a longer text alone)."""
    out, start, size = [], 0, 0
    for i, text in enumerate(texts):
        if size and size + len(text) > characters:
            out.append((start, i))
            start, size = i, 0
        size += len(text)
    if start < len(texts):
        out.append((start, len(texts)))
    return out


class Speller:
    """Spelling correction with one loaded checkpoint.

    Args:
        model: its :class:`~llmos.models.csc.BertForSpellingCorrection`.
        tokenizer: its tokenizer.
        path: its directory (``confusion/`` and the LM file are read from there).
        spec: its task.
        ids: the tokenizer's special token ids (``cls``, ``sep``, ``pad``, ``mask``).
        max_length: the tokens the model reads at once (longer texts: consecutive windows).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Tokenizer,
        path: Path,
        spec: Spelling,
        ids: dict[str, int | None],
        max_length: int,
    ) -> None:
        self.model, self.tokenizer, self.path, self.spec = model, tokenizer, path, spec
        self.ids, self.max_length = ids, max_length
        self.vocab = csc.CharVocab.from_ids(tokenizer, model.char_ids.tolist())
        self._confusion: Callable[[str], Sequence[str]] | bool | None = None
        self._usable: Callable[[str], list[str]] | None = None
        self._lm: CharNgramLM | None = None
        self._channel: ChannelPrior | None = None

    def _windows(self, texts: list[str]) -> list[csc.Window]:
        cls_id, sep_id = self.ids["cls"] or 0, self.ids["sep"] or 0
        return csc.encode_windows(self.tokenizer, texts, self.max_length, cls_id, sep_id)

    def correct(
        self,
        texts: list[str] | str,
        threshold: float | None,
        candidates: Callable[[str], Sequence[str]] | str | None,
        batch_size: int,
        lm: bool,
    ) -> list[list[csc.Correction]]:
        """:meth:`EncoderPipeline.correct <llmos.inference.encoder.EncoderPipeline.correct>`."""
        spec = self.spec
        if isinstance(texts, str):
            texts = [texts]
        if lm and spec.lm is not None and threshold is None and candidates == "model":
            if self._lm is None:
                self._lm = CharNgramLM.load(self.path / spec.lm.file)
            threads = max(1, torch.get_num_threads())  # the LM search, in the model's threads
            usable = self.candidates()
            prior = self._prior(self._lm)
            if spec.lm.alpha != 0:  # the search reads the head's log-probabilities
                evidence = self.evidence(texts, batch_size)
                return csc_lm.lm_corrections(
                    self._lm, texts, evidence, usable, spec.lm, threads, prior
                )
            out: list[list[csc.Correction]] = []
            for a, b in _chunks(texts, CHUNK_CHARACTERS):
                out += self._decode_detected(texts[a:b], usable, threads, prior, batch_size)
            return out
        if candidates == "model":
            candidates = self._own_candidates()
        elif isinstance(candidates, str):
            raise LlmosError(f"candidates must be 'model', a function or None, got {candidates!r}")
        return csc.predict_corrections(
            self.model,
            self._windows(texts),
            texts,
            self.vocab,
            spec.threshold if threshold is None else threshold,
            self.ids["pad"] or 0,
            batch_size,
            candidates,
            self.ids["mask"] if spec.mask_correct else None,
        )

    def _decode_detected(
        self,
        texts: list[str],
        usable: Callable[[str], list[str]],
        threads: int,
        prior: ChannelPrior | None,
        batch_size: int,
    ) -> list[list[csc.Correction]]:
        """The LM decoding of a checkpoint whose fitted alpha is 0: the search reads only the
        detection logits, so the correction head runs only where an edit is accepted (for
        its ``prob``), not at every position (~20 % of the model's time)."""
        assert self._lm is not None and self.spec.lm is not None
        windows = self._windows(texts)
        pad_id = self.ids["pad"] or 0
        found, states = csc.position_states(self.model, windows, texts, pad_id, usable, batch_size)
        row = {(t, off): n for n, (t, off, _) in enumerate(found)}
        evidence: list[dict[int, csc_lm.Evidence]] = [{} for _ in texts]
        for t, off, logit in found:
            evidence[t][off] = (logit, None)

        def logprobs(edits: list[tuple[int, int, str]]) -> list[float]:
            at = torch.tensor([row[t, off] for t, off, _ in edits], dtype=torch.long)
            chars = [c for _, _, c in edits]
            return csc.correction_logprobs(self.model, states[at], self.vocab, chars)

        return csc_lm.lm_corrections(
            self._lm, texts, evidence, usable, self.spec.lm, threads, prior, logprobs
        )

    def _prior(self, lm: CharNgramLM) -> ChannelPrior | None:
        """The noisy-channel prior the checkpoint decodes with (``lm.channel`` in task.json,
        the lexicon in ``confusion/``), built once; None without one."""
        how = self.spec.lm
        if how is None or how.channel is None:
            return None
        if self._channel is None:
            try:
                weights = ChannelWeights(how.channel["weights"], how.channel["constant"])
            except ValueError as e:
                raise CheckpointError(f"{self.path / 'task.json'}: lm.channel: {e}") from None
            self._channel = ChannelPrior(channel_features(self.path / "confusion", lm), weights)
        return self._channel

    def evidence(self, texts: list[str], batch_size: int = 32) -> list[dict[int, csc_lm.Evidence]]:
        """The model's evidence for decoding with an n-gram LM, per text: at each character
        with candidates in the checkpoint's confusion sets, the detection logit and the
        correction log-probabilities of [the character, *its candidates]
        (:func:`~llmos.inference.correct.position_evidence`)."""
        return csc.position_evidence(
            self.model,
            self._windows(texts),
            texts,
            self.vocab,
            self.ids["pad"] or 0,
            self.candidates(),
            batch_size,
        )

    def candidates(self) -> Callable[[str], list[str]]:
        """What a character may become when decoding with an n-gram LM: the single Chinese
        characters of the confusion sets saved with the checkpoint."""
        if self._usable is None:
            own = self._own_candidates()
            if own is None:
                raise LlmosError(f"{self.path}: no confusion sets saved with it")
            self._usable = csc_lm.usable_candidates(own)
        return self._usable

    def _own_candidates(self) -> Callable[[str], Sequence[str]] | None:
        """The confusion sets saved with the checkpoint (``confusion/``), read once."""
        if self._confusion is None:
            folder = self.path / "confusion"
            self._confusion = read_confusion(folder).candidates if folder.is_dir() else False
        return self._confusion or None
