"""New intents from a few example utterances, without retraining the NLU model.

A shop owner adds an intent to the domain file with ``examples`` (8 or so per language).
Each such intent is represented by its centroid: the normalised mean of its examples'
sentence vectors (from the same encoder that embeds the customers' messages). A message's
few-shot intent is the one whose centroid is nearest by cosine similarity (nearest centroid,
the prototype rule of Snell et al. 2017, https://arxiv.org/abs/1703.05175, without training).
The intents the head was trained on take part through a few of their training utterances
(reference centroids): a message nearest one of those is left to the head.

:func:`combine` then decides between the trained head's intent and the few-shot one. Its
thresholds (:class:`FewShotConfig`) were chosen by ``bench/support_nlu.py`` on the intents'
validation split, with four intents left out of the NLU model's training
(``configs/finetune/support-zh.yaml``): the best accuracy over every validation utterance,
known and new (96.5 %, against 91.6 % for the first guesses 0.85 / 0.9 / 0.93); with
multilingual-e5, most pairs of short texts are above 0.8, so a useful threshold is high.
Re-run with E5's vectors and the references, the defaults give the test results of the
thresholds chosen on validation in Chinese, and one more message right in English
(docs/BENCHMARKS.md, "New intents from 8 examples: E5's vectors ...").
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmos.checkpoint.task import MultiTask


@dataclass(frozen=True)
class FewShotConfig:
    """When a few-shot intent wins over the trained head's (chosen on validation data: see
    the module docstring).

    Attributes:
        similarity: the few-shot intent's cosine similarity that wins over an unsure head...
        head_confidence: ...one whose probability is below this.
        sure_similarity: a cosine similarity that wins over any head.
        vectors: what embeds the examples and the messages: ``encoder``, the knowledge
            base's encoder (multilingual-e5 by default; the message's vector is then also
            its knowledge-base query, embedded once), or ``nlu``, the NLU model's own vector
            from its one pass. Measured (docs/BENCHMARKS.md, "New intents from 8 examples"):
            E5's vectors recognise more of a new intent's messages, the NLU model's take
            fewer of the other intents' messages for a new one.
        reference_margin: how much nearer a reference (trained) intent's centroid must be
            than the nearest few-shot intent's to leave the message to the head
            (:meth:`FewShotIntents.best`); 0 leaves it to the head whenever a reference is
            nearer.
        in_domain: per language, the least cosine similarity between a message and its
            nearest centroid (few-shot and reference intents alike) for the trained head's
            intent to stand. The head has no "none of these" and always names one of its
            intents; below this the message is out of the domain (a review, a question for
            the knowledge base) and the head's intent is dropped: no form starts and nothing
            is handed off by it (a few-shot intent has its own threshold, ``similarity``).
            Chosen on the valid split (``bench/support_gate.py``, the make-run NLU models):
            the largest threshold of a grid at which no scripted form dialogue is lost. On
            test it keeps 99.2 % (zh) / 98.0 % (en) of the intents' utterances, gates 75 % /
            97 % of the reviews, and costs 1.6 / 0.7 points of form dialogues. E5's cosines,
            so used with ``vectors="encoder"`` only; a language not listed has no gate.
            Without it the quick Chinese desk asked "要调到多亮，或者什么颜色？" (the head's
            HassLightSet) to 16 % of positive hotel and product reviews.
    """

    similarity: float = 0.90
    head_confidence: float = 0.5
    sure_similarity: float = 0.92
    vectors: str = "encoder"
    reference_margin: float = 0.0
    in_domain: Mapping[str, float] = field(default_factory=lambda: {"zh": 0.91, "en": 0.87})

    def __post_init__(self) -> None:
        if not -1.0 <= self.similarity <= self.sure_similarity <= 1.0:
            raise ValueError(
                "FewShotConfig: need -1 <= similarity <= sure_similarity <= 1; got "
                f"similarity={self.similarity}, sure_similarity={self.sure_similarity}"
            )
        if self.vectors not in ("encoder", "nlu"):
            raise ValueError(f"FewShotConfig: vectors is 'encoder' or 'nlu'; got {self.vectors!r}")
        if not 0.0 <= self.head_confidence <= 1.0:
            raise ValueError(
                f"FewShotConfig: head_confidence is a probability; got {self.head_confidence}"
            )
        for lang, gate in self.in_domain.items():
            if not -1.0 <= gate <= 1.0:
                raise ValueError(f"FewShotConfig: in_domain[{lang!r}] is a cosine; got {gate}")
        if not 0.0 <= self.reference_margin <= 2.0:
            raise ValueError(
                "FewShotConfig: reference_margin is a cosine difference in [0, 2]; got "
                f"{self.reference_margin}"
            )


def intent_examples(spec: object) -> dict[str, list[str]]:
    """The ``examples`` a multitask checkpoint's intent head keeps in task.json (a few
    training utterances per intent; empty for another spec or a checkpoint from before they
    were kept): the reference intents of :class:`FewShotIntents`."""
    head = spec.heads.get("intent") if isinstance(spec, MultiTask) else None
    examples = head.extra.get("examples", {}) if head is not None else {}
    return {str(k): [str(t) for t in v] for k, v in examples.items()}


def _normalised(vectors: np.ndarray) -> np.ndarray:
    # a zero vector stays zero (cosine 0 with everything) rather than becoming NaN
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class FewShotIntents:
    """Nearest-centroid intents from example utterances' vectors.

    Args:
        examples: each intent's example utterances, in order.
        vectors: the examples' sentence vectors, ``(n, d)`` with ``n`` the number of all
            examples, in the order of ``examples``' intents and utterances.
        reference: intents of ``examples`` that the trained head already knows (their
            examples are a few of its training utterances). A message nearest to one of
            them is not a few-shot intent's: :meth:`best` gives None, and the head decides.
            Without them, only the thresholds of :func:`combine` keep a known intent's
            message from a new intent whose examples look alike.
    """

    def __init__(
        self,
        examples: Mapping[str, Sequence[str]],
        vectors: np.ndarray,
        reference: Collection[str] = (),
    ) -> None:
        unknown = set(reference) - set(examples)
        if unknown:
            raise ValueError(f"reference intents without examples: {sorted(unknown)}")
        self.reference = frozenset(reference)
        vectors = np.asarray(vectors, dtype=np.float32)
        n = sum(len(texts) for texts in examples.values())
        if vectors.ndim != 2 or vectors.shape[0] != n:
            raise ValueError(f"expected ({n}, d) vectors for {n} examples; got {vectors.shape}")
        self.labels = tuple(examples)
        centroids, start = [], 0
        for label, texts in examples.items():
            if not texts:
                raise ValueError(f"few-shot intent {label!r} has no examples")
            mean = vectors[start : start + len(texts)].mean(axis=0)  # (d,)
            if not np.linalg.norm(mean) > 0:
                raise ValueError(f"few-shot intent {label!r}: its examples' vectors cancel out")
            centroids.append(mean)
            start += len(texts)
        d = vectors.shape[1]
        stacked = np.stack(centroids) if centroids else np.zeros((0, d), dtype=np.float32)
        self.centroids = _normalised(stacked).astype(np.float32)  # (k, d)

    @classmethod
    def from_embedder(
        cls,
        examples: Mapping[str, Sequence[str]],
        embed: Callable[[list[str]], np.ndarray],
        reference: Collection[str] = (),
    ) -> FewShotIntents:
        """Built by embedding the examples with ``embed`` (texts -> ``(n, d)`` vectors), the
        encoder that will embed the messages: centroids from another encoder mean nothing."""
        texts = [t for ts in examples.values() for t in ts]
        vectors = embed(texts) if texts else np.zeros((0, 0), dtype=np.float32)
        return cls(examples, vectors, reference)

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """Cosine similarities of messages' vectors ``(n, d)`` to the intents' centroids:
        ``(n, k)``, columns in the order of :attr:`labels`."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"expected (n, d) vectors; got {vectors.shape}")
        if not self.labels:
            return np.zeros((vectors.shape[0], 0), dtype=np.float32)
        if vectors.shape[1] != self.centroids.shape[1]:
            raise ValueError(
                f"vectors of size {vectors.shape[1]}; the examples' were "
                f"{self.centroids.shape[1]} (embed both with the same encoder)"
            )
        return _normalised(vectors) @ self.centroids.T  # (n, d) @ (d, k) -> (n, k)

    def nearest(self, vector: np.ndarray) -> float:
        """One message's vector ``(d,)``: its cosine similarity to the nearest centroid of
        all, few-shot and reference intents alike (-1 without any)."""
        row = self.scores(np.asarray(vector)[None, :])[0]
        return float(row.max()) if row.size else -1.0

    def best(self, vector: np.ndarray, margin: float = 0.0) -> tuple[str, float] | None:
        """The nearest few-shot intent to one message's vector ``(d,)`` and its cosine
        similarity; None when there is none, or when a reference intent's centroid is nearer
        than it by more than ``margin`` (``FewShotConfig.reference_margin``)."""
        few = [i for i, label in enumerate(self.labels) if label not in self.reference]
        if not few:
            return None
        row = self.scores(np.asarray(vector)[None, :])[0]  # (k,)
        i = few[int(np.argmax(row[few]))]  # the first of equals
        refs = [j for j, label in enumerate(self.labels) if label in self.reference]
        if refs and float(row[refs].max()) - float(row[i]) > margin:
            return None
        return self.labels[i], float(row[i])


def combine(
    head: Mapping[str, Any] | None,
    few: tuple[str, float] | None,
    config: FewShotConfig = FewShotConfig(),
) -> dict[str, Any] | None:
    """The message's intent from the trained head's and the few-shot one's.

    The few-shot intent wins when its cosine similarity reaches ``config.similarity`` and
    the head is unsure (its probability is below ``config.head_confidence``, or it has no
    intent), or when it reaches ``config.sure_similarity`` whatever the head says. The head
    knows only its training labels, so a confident head is still wrong about a new intent's
    message; the higher bar keeps a near-miss example from overruling it.

    Args:
        head: the NLU head's intent, ``{"label", "score", ...}`` (``score`` a probability),
            or None without one.
        few: :meth:`FewShotIntents.best`'s ``(label, cosine)``, or None.
        config: the thresholds.

    Returns:
        ``{"label", "score", "source"}`` with ``source`` ``head`` (``score`` the head's
        probability) or ``examples`` (``score`` the cosine similarity); None when neither
        gives an intent.
    """
    if few is not None:
        label, cosine = few
        head_unsure = head is None or float(head["score"]) < config.head_confidence
        if cosine >= config.sure_similarity or (cosine >= config.similarity and head_unsure):
            return {"label": label, "score": float(cosine), "source": "examples"}
    if head is None:
        return None
    return {"label": head["label"], "score": float(head["score"]), "source": "head"}
