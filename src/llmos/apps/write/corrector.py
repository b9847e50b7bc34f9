"""The writing assistant's spelling correction: a spelling checkpoint (MacBERT4CSC-style,
``llmos finetune`` with ``task: spelling``) or the classic n-gram baseline, under the user's
own dictionary.

Both answer the same :class:`~llmos.apps.write.edits.Edit` list per text (start, end,
original, suggestion, score, kind), so the CLI, the server and the benchmark read them alike.

A spelling model replaces a character by the best of its confusion set (same pinyin, similar
shape: pycorrector's ``same_pinyin.txt`` and ``same_stroke.txt``, which the checkpoint keeps
in ``confusion/`` when it was trained with them) by default, not by the best of every
character it knows: docs/BENCHMARKS.md ("Spelling correction") measures both.

Where no spelling model is built (``make run`` does not build ``csc-zh``: it is an hour of
training), :func:`classic_corrector` builds the classic method from the prepared data in
seconds: the server and ``llmos write correct`` fall back to it. With pycorrector's word lexicon
prepared beside the confusion sets it adds a noisy-channel prior to every gain
(:mod:`llmos.inference.csc_channel`), with the weights :data:`CLASSIC_CHANNEL` fitted by
``bench/write_eval.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from llmos.apps.write.classic import ClassicCorrector
from llmos.apps.write.dictionary import UserDictionary
from llmos.apps.write.edits import Edit
from llmos.apps.write.english import EnglishSpeller, build_frequencies
from llmos.checkpoint.task import Spelling
from llmos.data.spelling import read_confusion
from llmos.errors import LlmosError
from llmos.inference.csc_channel import (
    CHANNEL_FILES,
    ChannelPrior,
    ChannelWeights,
    channel_features,
)
from llmos.inference.encoder import EncoderPipeline
from llmos.inference.load import load_pipeline
from llmos.models.ngram import CharNgramLM

log = logging.getLogger("llmos.apps.write")
ENGLISH_ORDER = 6  # the English speller's character LM (bench/write_en_eval.py: 6 vs 5 and 7)
CLASSIC_ORDER = 4  # the classic corrector's character LM (orders 3, 5, 6 did no better)
# Its least gain for an edit, in nats: the threshold bench/write_eval.py fits on 1,000 valid
# pairs under the 5 % cap on changed clean sentences (BENCHMARKS "Spelling correction: the model
# decoded with an n-gram LM beside it": test sentence F1 0.688, 4.0 % of clean sentences
# changed; 6.0, fitted for F1 alone, gives 0.718 but changes 8.7 %).
CLASSIC_THRESHOLD = 7.5
# The noisy-channel prior's weights (nats per unit of each feature) and the threshold of the
# classic method with it: fitted by bench/write_eval.py (the prior on the valid pairs after the
# first 1,000, the threshold on those 1,000 under the 5 % cap; BENCHMARKS "Spelling correction:
# a noisy-channel prior"), on the prepared corpus's 4-gram LM.
CLASSIC_CHANNEL = ChannelWeights(
    weights={
        "same_tone": 2.871173564681101,
        "same_tone_log_size": -0.8441073802900259,
        "other_tone": 2.0541467602371895,
        "other_tone_log_size": -0.7404683944782506,
        "shape": 2.4521471232549588,
        "shape_log_size": -0.7431918560679703,
        "log_candidates": -0.7910057013143528,
        "log_freq_suggestion": 0.4171834417756482,
        "log_freq_original": 0.3022186148007303,
        "word_gain": 0.06048737312782326,
        "word_after": 1.3204940505184135,
        "word_before": -1.8304816472504206,
        "name_gain": 0.1169915170967166,
        "name_before": 0.26444987410072734,
        "common_original": 11.60444472279569,
        "common_suggestion": 2.4372478786259455,
        "starts_clause": 0.026716810262894533,
        "ends_clause": 0.0012352025868599236,
    },
    constant=-3.7706518133952827,
)
CLASSIC_CHANNEL_THRESHOLD = 10.5


class TextCorrector(Protocol):
    """A corrector of one text at a time: the classic baseline, the English speller."""

    def correct(self, text: str) -> list[Edit]: ...


def corpus_lines(corpus: Path, language: str) -> list[str]:
    """The non-empty lines of a corpus file, or an LlmosError naming it."""
    try:
        lines = [ln.strip() for ln in Path(corpus).read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise LlmosError(
            f"{corpus}: cannot read the {language} corpus ({e}; llmos data prepare)"
        ) from e
    lines = [ln for ln in lines if ln]
    if not lines:
        raise LlmosError(f"{corpus}: no {language} sentences (llmos data prepare)")
    return lines


def english_speller(corpus: Path) -> EnglishSpeller:
    """The English speller over a corpus file (one sentence per line): its word counts and a
    character 6-gram LM, built in seconds (2.2 MB of English: ~10 s here)."""
    lines = corpus_lines(corpus, "English")
    lm = CharNgramLM.train(lines, order=ENGLISH_ORDER, progress=False)
    return EnglishSpeller(build_frequencies(lines), lm)


def classic_corrector(
    corpus: Path, confusion: Path, threshold: float | None = None, channel: bool = True
) -> ClassicCorrector:
    """The classic Chinese corrector: the confusion sets in the directory ``confusion``
    (``tasks/csc-zh/confusion`` after ``llmos data prepare``) ranked by a character 4-gram LM
    trained on ``corpus`` (one sentence per line), with the noisy-channel prior
    :data:`CLASSIC_CHANNEL` where the directory also holds the lexicon (``channel``: unless
    False). Built in seconds from the prepared Chinese corpus: 2.6-3.4 s without the prior,
    3.8-3.9 s with it (one thread of an AMD EPYC with AVX-512, two builds each).

    Args:
        threshold: the least score of an edit (default: :data:`CLASSIC_CHANNEL_THRESHOLD` with
            the prior, :data:`CLASSIC_THRESHOLD` without).

    Raises:
        LlmosError: the corpus or a confusion file is missing or unreadable.
    """
    confusion = Path(confusion)
    candidates = read_confusion(confusion).candidates
    lm = CharNgramLM.train(corpus_lines(corpus, "Chinese"), order=CLASSIC_ORDER, progress=False)
    if channel and all((confusion / name).is_file() for name in CHANNEL_FILES):
        prior = ChannelPrior(channel_features(confusion, lm), CLASSIC_CHANNEL)
        chosen = CLASSIC_CHANNEL_THRESHOLD if threshold is None else threshold
        return ClassicCorrector(lm, candidates, chosen, prior)
    if channel:
        log.warning(
            "%s: no %s; the classic corrector runs without its noisy-channel prior "
            "(llmos data prepare copies it)",
            confusion,
            " / ".join(CHANNEL_FILES),
        )
    return ClassicCorrector(lm, candidates, CLASSIC_THRESHOLD if threshold is None else threshold)


class Corrector:
    """Spelling correction with one model, for any user's dictionary.

    Args:
        model: a spelling checkpoint's pipeline, or a corrector of one text at a time (the
            classic baseline, the English speller).
        threshold: a spelling model's detection threshold (default: the checkpoint's own).
        candidates: the characters a spelling model may put in place of one: ``"model"`` the
            confusion sets saved with the checkpoint (if any), a function of the character,
            or None for any character it knows.
    """

    def __init__(
        self,
        model: EncoderPipeline | TextCorrector,
        threshold: float | None = None,
        candidates: Callable[[str], Sequence[str]] | str | None = "model",
    ) -> None:
        if isinstance(model, EncoderPipeline) and not isinstance(model.spec, Spelling):
            raise LlmosError(f"{model.checkpoint.path} is {model.describe()}, not a spelling model")
        self.model, self.threshold, self.candidates = model, threshold, candidates

    @classmethod
    def load(
        cls,
        path: str | Path,
        threshold: float | None = None,
        confusion: str | Path | None = "model",
        precision: str = "fp32",
    ) -> Corrector:
        """A spelling checkpoint as a corrector whose replacements come from the confusion
        sets in the directory ``confusion`` (``"model"``: the checkpoint's own, if it has
        them; None: any character). ``precision``: the model's weights (``fp32``, ``bf16``
        or ``auto``, :func:`~llmos.inference.load.load_model`); on a CPU with AVX512-BF16,
        bf16 decodes 1.4x as many sentences a second (the model alone 1.7x) with the same
        edits on 99.94 % of the test sentences (docs/BENCHMARKS.md)."""
        pipe = load_pipeline(path, precision=precision)
        if not isinstance(pipe, EncoderPipeline):
            raise LlmosError(f"{path} is {pipe.describe()}, not a spelling model")
        if confusion is None or confusion == "model":
            return cls(pipe, threshold, confusion)
        return cls(pipe, threshold, read_confusion(Path(confusion)).candidates)

    def correct(
        self,
        texts: Sequence[str],
        dictionary: UserDictionary | None = None,
        batch_size: int = 32,
    ) -> list[list[Edit]]:
        """The edits of every text, by start: the model's, then the dictionary's protected
        terms and pairs applied (:meth:`UserDictionary.apply`)."""
        texts = list(texts)
        if not isinstance(self.model, EncoderPipeline):
            found = [self.model.correct(t) for t in texts]
        else:
            found = [
                [
                    Edit(c.offset, c.offset + 1, c.original, c.suggestion, round(c.detect, 4))
                    for c in row
                ]
                for row in self.model.correct(
                    texts,
                    threshold=self.threshold,
                    candidates=self.candidates,
                    batch_size=batch_size,
                )
            ]
        if dictionary is None or not len(dictionary):
            return found
        return [dictionary.apply(t, e) for t, e in zip(texts, found, strict=True)]
