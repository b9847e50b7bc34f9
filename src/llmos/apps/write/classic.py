"""The classic spelling-correction baseline (pycorrector's "classic" method): each Chinese
character's confusion-set candidates (same pinyin, similar shape), ranked by a character n-gram
language model (:class:`~llmos.models.ngram.CharNgramLM`); the search is
:func:`llmos.inference.csc_lm.greedy_substitutions` without a spelling model's evidence,
optionally with a noisy-channel prior added to each gain
(:class:`~llmos.inference.csc_channel.ChannelPrior`: the app's default where the lexicon is
prepared).

The search, the gains and how the threshold is fitted are described there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from llmos.apps.write.edits import Edit, apply_edits
from llmos.inference.csc_lm import Prior, fit_decoding, greedy_substitutions, usable_candidates
from llmos.models.ngram import CharNgramLM


class ClassicCorrector:
    """Confusion-set candidates ranked by an n-gram language model.

    Args:
        lm: the character language model.
        candidates: a character's replacements to try (its confusion set); only single CJK
            characters other than itself are used.
        threshold: the least score (log-probability gain + prior, natural log) for an edit.
        prior: nats added to each candidate's gain (a noisy-channel prior), or None.
    """

    def __init__(
        self,
        lm: CharNgramLM,
        candidates: Callable[[str], Sequence[str]],
        threshold: float,
        prior: Prior | None = None,
    ) -> None:
        self.lm, self.candidates, self.threshold, self.prior = lm, candidates, threshold, prior
        self._candidates = usable_candidates(candidates)

    def _greedy(self, text: str, threshold: float) -> list[Edit]:
        """The accepted edits in the order they were accepted (score = gain at the time)."""
        return [
            Edit(e.offset, e.offset + 1, e.original, e.suggestion, e.score, "spelling")
            for e in greedy_substitutions(
                self.lm, text, self._candidates, threshold, prior=self.prior
            )
        ]

    def correct(self, text: str) -> list[Edit]:
        """The spelling edits of ``text``, by position; ``score`` is each one's log-probability
        gain when it was accepted."""
        return sorted(self._greedy(text, self.threshold), key=lambda e: e.start)

    def correct_text(self, text: str) -> str:
        """``text`` with :meth:`correct`'s edits applied."""
        return apply_edits(text, self.correct(text))

    def fit_threshold(self, pairs: Sequence[tuple[str, str]], grid: Sequence[float]) -> float:
        """Set and return the threshold of ``grid`` with the best sentence-level correction F1
        on (source, target) ``pairs`` (the higher threshold on a tie: fewer changes)."""
        fit = fit_decoding(self.lm, pairs, self._candidates, grid, prior=self.prior)
        self.threshold = fit.threshold
        return self.threshold
