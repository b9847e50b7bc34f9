"""Zero- and few-shot classification over a frozen sentence encoder's vectors: labels from a
few words that describe them, or from a few examples each, with no training of the encoder.

Three methods, all on unit-length sentence vectors of one encoder (multilingual-e5 is the one
llmos ships, ``runs/e5`` / ``runs/e5-zh``):

- ``similarity`` (zero-shot): each label is the direction of its descriptions ("a positive
  review"), the normalised mean of their unit vectors; a text goes to the label whose
  direction is nearest by cosine. E5 is an asymmetric retrieval model, so a text is embedded
  as a *query* and a description as a *passage* (``query: `` / ``passage: `` prefixes): "which
  description answers this text" is the question E5 was trained on
  (https://arxiv.org/abs/2212.03533, section 4.1).
- ``centroid`` (few-shot): each label is the normalised mean of its examples' unit vectors
  (the prototype rule of Snell et al. 2017, https://arxiv.org/abs/1703.05175, without
  training). Examples are texts of the same kind as the ones classified, so they are embedded
  as queries too. A label without examples falls back to its descriptions' direction; its
  cosines are then query-passage ones, which run a little lower than query-query cosines with
  E5, so such a label is at a slight disadvantage: give every label examples when you can.
- ``logreg`` (few-shot): a multinomial logistic regression (scikit-learn) fitted on the
  examples' unit vectors; a label without examples takes its descriptions' vectors as its
  training points. It learns which directions of the space separate the labels, where the
  centroid rule weighs all 384 dimensions alike; with very few examples the two are close.

And one on a masked LM's head rather than the sentence vectors:

- ``cloze`` (zero-shot, PET's patterns and verbalizers: Schick and Schütze 2021,
  https://arxiv.org/abs/2001.07676): each text goes into a pattern with a mask slot
  (``{text}。总之很[MASK]。``), each label has a verbalizer, a word the tokenizer reads as one
  piece (``好`` / ``差``, ``great`` / ``terrible``), and a label's score is the log-probability
  the MLM head gives its verbalizer at the mask (several verbalizers: the log of their mean
  probability); a softmax over the labels makes those scores probabilities. Several patterns
  are averaged (their per-label log-probabilities). It needs an encoder with an MLM head
  (``llmos pretrain --config configs/pretrain/e5-zh-mlm.yaml`` gives e5-zh one, its
  encoder frozen: :mod:`llmos.inference.cloze`).

And one on an instruction-tuned GPT (``runs/instruct-zh/checkpoint``):

- ``instruct`` (zero-shot): each text is the input of an instruction
  (``判断下面这条评论的情感是正面还是负面。``) in the prompt the GPT was tuned with, each label
  has an answer (``正面`` / ``负面``, any number of tokens), and a label's score is the GPT's
  log-probability of its answer's tokens and the end-of-text token after the prompt (several
  answers: the log of their mean probability): a constrained choice among the labels' answers,
  not free generation (:mod:`llmos.inference.instruct`).

``similarity`` and ``centroid`` turn cosines into probabilities with a softmax over
``cosine / temperature``; ``logreg`` gives its own probabilities; ``cloze`` and ``instruct``
take a softmax of their log-probabilities (over ``temperature``, 1 by default). Either way a
result has the shape of a trained classifier's
:meth:`~llmos.inference.encoder.EncoderPipeline.classify`: ``{"label", "score", "scores":
{label: probability}}``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from llmos.errors import LlmosError
from llmos.inference.classify import label_result
from llmos.inference.cloze import check_pattern, fill
from llmos.inference.instruct import InstructChoice

log = logging.getLogger("llmos.inference")

METHODS = ("similarity", "centroid", "logreg", "cloze", "instruct")
LOG_PROB_METHODS = ("cloze", "instruct")  # scores are log-probabilities, not cosines

# Softmax temperature over cosines. E5 was trained with an InfoNCE temperature of 0.01, and its
# cosines crowd into a narrow band (most pairs of short texts sit between 0.75 and 0.9; see
# llmos.apps.support.fewshot): a plain softmax of cosines (temperature 1) would give every label
# nearly 1/k whatever the texts. At 0.05 a cosine 0.05 higher is e (2.7x) the odds, so a clear
# winner gets a clear score and two close labels stay close. Only the scores depend on it: the
# label is the nearest one at any temperature.
TEMPERATURE = 0.05

# cloze's and instruct's default temperature: their scores are already log-probabilities, so the
# softmax over the labels is the model's own distribution restricted to the verbalizers (the
# answers).
CLOZE_TEMPERATURE = 1.0

# logreg's inverse regularisation strength on unit vectors. Chosen on the valid splits with
# runs/e5-zh (3 seeds, 8 / 32 examples per class; bench/fewshot.py's sampling): C = 1 shrinks
# the weights so much that it falls below the nearest centroid on intents (intent-zh 75.4 /
# 80.0 %, intent-en 77.9 / 72.0 %), C = 10 gives 80.0 / 90.2 % and 82.2 / 89.7 %; sentiment-en
# loses at most 0.8 points to C = 1 (70.0 / 75.4 % against 70.2 / 76.2 %). C = 100 was no
# better overall. See docs/BENCHMARKS.md, "Zero- and few-shot classification from E5 vectors".
LOGREG_C = 10.0


class MaskScorer(Protocol):
    """What ``cloze`` needs of a pipeline: the MLM head's log-probabilities of some pieces at
    the mask of each text (:meth:`~llmos.inference.encoder.EncoderPipeline.mask_scores`)."""

    has_mlm_head: bool
    mask_token: str

    def word_piece(self, word: str) -> int | None: ...

    def mask_scores(
        self, texts: list[str], token_ids: Sequence[int], batch_size: int = 32
    ) -> np.ndarray: ...


class Embedder(Protocol):
    """What the classifier needs of a pipeline: sentence vectors of texts, with E5's
    ``kind`` prefixes (:meth:`~llmos.inference.encoder.EncoderPipeline.embed`)."""

    def embed(
        self, texts: list[str], *, kind: str | None = None, batch_size: int = 32
    ) -> np.ndarray: ...


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` (n, d) scaled to unit L2 length, in float32 (a zero row stays zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (n, k) logits, shifted by each row's max (no overflow)."""
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _texts(value: object, what: str) -> list[str]:
    """A label's descriptions or examples as a list of non-empty strings (one string is one
    text); a clear error naming ``what`` for anything else."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Sequence) or not all(isinstance(t, str) for t in items):
        raise LlmosError(f"{what}: expected a string or a list of strings, got {value!r}")
    texts = [t.strip() for t in items]
    if any(not t for t in texts):
        raise LlmosError(f"{what}: an empty text")
    return texts


class ZeroShotClassifier:
    """Classify texts into labels given by descriptions and/or examples, over an encoder's
    sentence vectors (see the module docstring for the methods).

    Args:
        pipe: an encoder pipeline (``llmos.load("runs/e5-zh")``), or anything with its
            ``embed(texts, kind=..., batch_size=...)`` (``cloze``: its ``mask_scores``);
            for ``instruct``, a GPT pipeline (``llmos.load("runs/instruct-zh/checkpoint")``).
        labels: each label's descriptions (a string, or several: their unit vectors are
            averaged and renormalised). A label with no description (``[]``) needs examples.
            For ``cloze``, each label's verbalizer(s) instead: a word of one piece each; for
            ``instruct``, its answer(s): ``{"pos": ["正面"], "neg": ["负面"]}``.
        examples: each label's example texts (few-shot). A label may appear here only; the
            labels are those of ``labels`` then the new ones of ``examples``, in order.
        method: ``similarity``, ``centroid``, ``logreg``, ``cloze`` or ``instruct``; None:
            ``centroid`` when there are examples, else ``similarity``.
        temperature: the softmax temperature over cosines (``similarity``, ``centroid``; see
            :data:`TEMPERATURE` for why 0.05) or over ``cloze``'s and ``instruct``'s
            log-probabilities (1). None: the method's.
        C: ``logreg``'s inverse regularisation strength (scikit-learn's ``C``); see
            :data:`LOGREG_C` for why 10.
        batch_size: texts per forward pass when embedding.
        unlabelled: texts of the kind to classify, without labels (a few hundred to a few
            thousand). With them, ``similarity`` and ``centroid`` subtract from each label's
            cosine its mean over these texts: the encoder's own lean toward a label (a
            description that sits nearer to every review) no longer decides. This is the
            idea of Zhao et al. 2021's contextual calibration
            (https://arxiv.org/abs/2102.09690), with a pool of real texts in place of a
            content-free input. Measured (docs/BENCHMARKS.md, "Zero- and few-shot
            classification from E5 vectors"): zero-shot sentiment-zh 78.14 -> 81.36 %,
            sentiment-en 76.83 -> 77.33 % with 2,000 training texts. Not used by ``logreg``,
            whose intercepts already learn the labels' priors. With ``cloze`` and
            ``instruct``, each label's mean log-probability (after the softmax over the
            labels) over these texts is subtracted: the same correction on the model's scores.
        patterns: ``cloze``'s pattern, or several (their scores are averaged): ``{text}``
            where the text goes, ``[MASK]`` where the verbalizer is predicted.
        instruction: ``instruct``'s question, asked of each text (the text is its input).

    Raises:
        LlmosError: fewer than two labels, a label with nothing to go by (no description for
            ``similarity``; neither descriptions nor examples otherwise), examples given to
            ``similarity`` or ``cloze``, an unknown method, a checkpoint that cannot embed (a
            GPT), or for ``cloze``: no pattern, a pattern without ``{text}`` or ``[MASK]``, a
            verbalizer that is not one piece of the vocabulary (the error names it and its
            label), or a checkpoint without an MLM head; for ``instruct``: no instruction, a
            label without an answer, or a checkpoint that is not a GPT.
    """

    def __init__(
        self,
        pipe: Embedder,
        labels: Mapping[str, str | Sequence[str]],
        examples: Mapping[str, Sequence[str]] | None = None,
        *,
        method: str | None = None,
        temperature: float | None = None,
        C: float = LOGREG_C,
        batch_size: int = 32,
        unlabelled: Sequence[str] | None = None,
        patterns: str | Sequence[str] | None = None,
        instruction: str | None = None,
    ) -> None:
        if not isinstance(labels, Mapping) or not isinstance(examples or {}, Mapping):
            raise LlmosError(
                "labels (and examples) map each label to its texts: {'positive': "
                "['a positive review'], ...}"
            )
        examples = dict(examples or {})
        method = _check_options(method, bool(any(examples.values())), temperature, C, instruction)
        _check_pipe(pipe, method)
        if (patterns is not None) != (method == "cloze"):
            raise LlmosError(
                "method cloze needs a pattern ('{text} All in all, it was [MASK].')"
                if method == "cloze"
                else f"patterns are for method cloze, not {method}"
            )
        pool = None if unlabelled is None else _texts(list(unlabelled), "unlabelled texts")
        if pool is not None and method == "logreg":  # checked before anything is embedded
            raise LlmosError("unlabelled texts correct similarity and centroid, not logreg")
        if pool is not None and not pool:
            raise LlmosError("unlabelled texts: none given")
        names = list(dict.fromkeys([*labels, *examples]))
        if any(not isinstance(n, str) or not n.strip() for n in names):
            raise LlmosError(f"labels must be non-empty strings, got {names!r}")
        if len(names) < 2:
            raise LlmosError(
                f"need at least two labels, got {names or 'none'}: give each label a "
                "description ({'positive': 'a positive review', ...}) or examples"
            )
        if temperature is None:
            temperature = CLOZE_TEMPERATURE if method in LOG_PROB_METHODS else TEMPERATURE
        self.pipe, self.method, self.temperature = pipe, method, temperature
        self.batch_size = batch_size
        self.labels: tuple[str, ...] = tuple(names)
        what = {"cloze": "verbalizers", "instruct": "answers"}.get(method, "descriptions")
        self.descriptions = {n: _texts(labels.get(n, []), f"label {n!r}'s {what}") for n in names}
        self.prototypes: np.ndarray | None = None  # (k, d) unit rows: similarity, centroid
        self.model: Any = None  # the fitted LogisticRegression: logreg
        self.scorer: Cloze | InstructChoice | None = None  # cloze, instruct: log-probabilities
        self.prior = np.zeros(len(self.labels))  # subtracted before the softmax (unlabelled)
        if method == "cloze":
            assert patterns is not None
            self.scorer = Cloze(pipe, self.descriptions, patterns)  # type: ignore[arg-type]
        elif method == "instruct":
            assert instruction is not None
            self.scorer = InstructChoice(pipe, self.descriptions, instruction)  # type: ignore[arg-type]
        if self.scorer is not None:
            if pool is not None:
                self.prior = self.scorer.scores(pool, batch_size).mean(axis=0)
            return
        self.examples = {n: _texts(examples.get(n, []), f"label {n!r}'s examples") for n in names}
        for n in names:
            if method == "similarity" and not self.descriptions[n]:
                raise LlmosError(f"label {n!r} has no description (method similarity needs one)")
            if not self.descriptions[n] and not self.examples[n]:
                raise LlmosError(f"label {n!r} has neither a description nor examples")
        # What each label goes by: its examples (embedded as queries, like the texts it will
        # classify) when it has some, else its descriptions (passages).
        by_examples = {n: bool(self.examples[n]) and method != "similarity" for n in names}
        points = {n: self.examples[n] if by_examples[n] else self.descriptions[n] for n in names}
        vectors = self._label_vectors(points, by_examples)
        if method == "logreg":
            self.model = _fit_logreg(vectors, C)
        else:
            self.prototypes = np.stack([_direction(n, v) for n, v in vectors.items()])
        # (k,) each label's mean cosine over the unlabelled texts
        if pool is not None:
            x = unit_rows(pipe.embed(pool, kind="query", batch_size=batch_size))
            assert self.prototypes is not None
            self.prior = (x @ self.prototypes.T).astype(np.float64).mean(axis=0)

    def _label_vectors(
        self, points: dict[str, list[str]], as_query: dict[str, bool]
    ) -> dict[str, np.ndarray]:
        """Each label's unit vectors (one row per description or example), from two embed
        calls: the examples as queries, the descriptions as passages."""
        out: dict[str, np.ndarray] = {}
        for query in (True, False):
            names = [n for n in self.labels if as_query[n] == query]
            texts = [t for n in names for t in points[n]]
            if not texts:
                continue
            kind = "query" if query else "passage"
            vectors = unit_rows(self.pipe.embed(texts, kind=kind, batch_size=self.batch_size))
            start = 0
            for n in names:
                out[n] = vectors[start : start + len(points[n])]
                start += len(points[n])
        return {n: out[n] for n in self.labels}

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """(n, k) label probabilities of texts' sentence vectors (n, d) (embedded as queries;
        any length: they are normalised here), columns in the order of :attr:`labels`."""
        if self.scorer is not None:
            raise LlmosError(f"method {self.method} reads texts, not vectors: use classify(texts)")
        x = unit_rows(vectors)
        if self.model is not None:
            return self.model.predict_proba(x).astype(np.float64)
        assert self.prototypes is not None
        cosines = (x @ self.prototypes.T).astype(np.float64) - self.prior
        return softmax(cosines / self.temperature)

    def classify(
        self, texts: list[str] | str, batch_size: int | None = None
    ) -> list[dict[str, Any]]:
        """Classify texts.

        Returns:
            ``[{"label", "score", "scores": {label: probability}}, ...]`` in input order, the
            shape of a trained classifier's results. Texts longer than the encoder's
            ``max_length`` are truncated (with a warning), as ``embed`` does.
        """
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            return []
        size = batch_size or self.batch_size
        if self.scorer is not None:
            scores = self.scorer.scores(list(texts), size) - self.prior
            probs = softmax(scores / self.temperature)
        else:
            vectors = self.pipe.embed(list(texts), kind="query", batch_size=size)
            probs = self.probabilities(vectors)
        return [label_result(self.labels, row) for row in probs.tolist()]


class Cloze:
    """``cloze``'s scores: each label's log-probability at the mask of the patterns, from the
    MLM head's log-probabilities of the labels' verbalizers (module docstring).

    Args:
        pipe: an encoder pipeline with an MLM head (``has_mlm_head``).
        verbalizers: each label's verbalizers, in label order: words of one piece each.
        patterns: one pattern or several, each with ``{text}`` and ``[MASK]`` once.

    Raises:
        LlmosError: a pattern without ``{text}`` or its mask slot, no pattern, a verbalizer
            that is not one piece (naming it and its label), or one given to two labels.
    """

    def __init__(
        self,
        pipe: MaskScorer,
        verbalizers: Mapping[str, Sequence[str]],
        patterns: str | Sequence[str],
    ) -> None:
        self.pipe = pipe
        self.patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        if not self.patterns:
            raise LlmosError("method cloze needs a pattern ('{text} All in all, it was [MASK].')")
        self.mask_token = pipe.mask_token
        for pattern in self.patterns:
            check_pattern(pattern, self.mask_token)
        self.piece_ids: list[int] = []  # every verbalizer's piece, label by label
        self.owner: list[int] = []  # the label (index) of each piece
        seen: dict[int, str] = {}
        for i, (label, words) in enumerate(verbalizers.items()):
            if not words:
                raise LlmosError(f"label {label!r} has no verbalizer (method cloze needs one)")
            for word in words:
                piece = pipe.word_piece(word)
                if piece is None:
                    raise LlmosError(
                        f"label {label!r}: the verbalizer {word!r} is not one token of this "
                        "model's vocabulary (it reads as several pieces); pick a word that is "
                        "(a single Chinese character, a common English word)"
                    )
                if piece in seen and seen[piece] != label:
                    raise LlmosError(
                        f"the verbalizer {word!r} is given to two labels, {seen[piece]!r} and "
                        f"{label!r}"
                    )
                seen[piece] = label
                self.piece_ids.append(piece)
                self.owner.append(i)
        self.num_labels = len(verbalizers)

    def scores(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """(n, k) each label's log-probability given each text: per pattern, the log of the
        mean probability of its verbalizers at the mask, normalised over the labels (a log
        softmax); then the mean over the patterns."""
        owner = np.array(self.owner)
        total = np.zeros((len(texts), self.num_labels))
        for pattern in self.patterns:
            filled = [fill(pattern, t, self.mask_token) for t in texts]
            logp = self.pipe.mask_scores(filled, self.piece_ids, batch_size).astype(np.float64)
            label = np.stack(
                [_log_mean_exp(logp[:, owner == i]) for i in range(self.num_labels)], axis=1
            )
            total += label - _log_sum_exp(label)[:, None]
        return total / len(self.patterns)


def _log_sum_exp(x: np.ndarray) -> np.ndarray:
    """log(sum(exp(x))) over the last axis, shifted by its max (no overflow)."""
    top = x.max(axis=-1)
    return top + np.log(np.exp(x - top[..., None]).sum(axis=-1))


def _log_mean_exp(x: np.ndarray) -> np.ndarray:
    """log(mean(exp(x))) over the last axis."""
    return _log_sum_exp(x) - np.log(x.shape[-1])


def _check_pipe(pipe: Any, method: str) -> None:
    """The pipeline can do what ``method`` needs: embed texts, read its MLM head (``cloze``),
    or score a GPT's answers (``instruct``)."""
    what = pipe.describe() if hasattr(pipe, "describe") else type(pipe).__name__
    gpt = hasattr(pipe, "answer_scores")  # an encoder pipeline raises AttributeError for it
    instead = "; with a GPT, use method instruct (runs/instruct-zh/checkpoint)" if gpt else ""
    if method == "instruct":
        if not gpt:
            raise LlmosError(
                f"this checkpoint is {what}: method instruct asks an instruction-tuned GPT "
                "(`llmos finetune --config configs/finetune/instruct-zh.yaml`, then use "
                "runs/instruct-zh/checkpoint); with an encoder, use method similarity, "
                "centroid or logreg, or cloze with an MLM head"
            )
        if getattr(pipe, "spec", None) is not None and pipe.spec.kind != "instruct":
            log.warning(
                "this checkpoint is %s, not instruction-tuned: it reads the instruction "
                "prompt as plain text",
                what,
            )
    elif method == "cloze":
        if not getattr(pipe, "has_mlm_head", False):
            raise LlmosError(
                f"this checkpoint is {what} without a masked-LM head: method cloze needs one "
                "(a BERT pretrained with MLM; give e5-zh one with `llmos pretrain --config "
                f"configs/pretrain/e5-zh-mlm.yaml`, then use runs/e5-zh-mlm/checkpoint)"
                f"{instead}"
            )
    elif not hasattr(pipe, "embed"):  # a GPT pipeline raises AttributeError for embed
        raise LlmosError(
            f"this checkpoint is {what}: zero-shot classification needs an encoder that "
            f"embeds texts (e.g. runs/e5-zh, multilingual-e5){instead}"
        )


def _check_options(
    method: str | None,
    has_examples: bool,
    temperature: float | None,
    C: float,
    instruction: str | None = None,
) -> str:
    """The method to use (None: ``centroid`` with examples, else ``similarity``), once the
    options are known to be valid: before anything is embedded."""
    method = method or ("centroid" if has_examples else "similarity")
    if method not in METHODS:
        raise LlmosError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if temperature is not None and not temperature > 0:
        raise LlmosError(f"temperature must be > 0, got {temperature}")
    if method in LOG_PROB_METHODS and has_examples:
        what = "verbalizers" if method == "cloze" else "answers"
        raise LlmosError(
            f"method {method} is zero-shot: it reads the labels' {what}; examples are for "
            "method centroid or logreg"
        )
    if (instruction is not None) != (method == "instruct"):
        raise LlmosError(
            "method instruct needs an instruction, the question asked of each text "
            "('判断下面这条评论的情感是正面还是负面。')"
            if method == "instruct"
            else f"an instruction is for method instruct, not {method}"
        )
    if not C > 0:
        raise LlmosError(f"C must be > 0, got {C}")
    if method == "similarity" and has_examples:
        raise LlmosError(
            "method similarity reads only the labels' descriptions; examples are for "
            "method centroid or logreg"
        )
    return method


def _direction(label: str, vectors: np.ndarray) -> np.ndarray:
    """The normalised mean of a label's unit vectors (d,): its prototype."""
    mean = vectors.mean(axis=0)
    if not np.linalg.norm(mean) > 1e-6:
        raise LlmosError(f"label {label!r}: its texts' vectors cancel out (no direction)")
    return unit_rows(mean[None, :])[0]


def _fit_logreg(vectors: Mapping[str, np.ndarray], C: float) -> Any:
    """A multinomial logistic regression on the labels' unit vectors; class i is the i-th
    label, so ``predict_proba``'s columns are in label order."""
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:  # a dev dependency: the other two methods do without it
        raise LlmosError(
            "method logreg needs scikit-learn: pip install 'llmos[fewshot]' (or scikit-learn)"
        ) from None
    x = np.concatenate(list(vectors.values()))
    y = np.concatenate([np.full(len(v), i) for i, v in enumerate(vectors.values())])
    return LogisticRegression(C=C, max_iter=1000).fit(x, y)
