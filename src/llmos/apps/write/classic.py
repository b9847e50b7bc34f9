"""The classic spelling-correction baseline (pycorrector's "classic" method): each Chinese
character's confusion-set candidates (same pinyin, similar shape), ranked by a character n-gram
language model (:class:`~llmos.models.ngram.CharNgramLM`).

For every position whose character is CJK and has candidates, the gain of a candidate is the
change of the sentence's log-probability when it replaces the character, computed on the
window of tokens whose n-gram covers the position (:meth:`CharNgramLM.substitution_logprobs`).
Edits are accepted greedily, best gain first, while the best gain exceeds ``threshold``; after
each one, the positions within N-1 of it are re-scored with the new character in place, so no
accepted edit relies on a context that another edit has changed. A corrected position is not
changed again.

Because an edit is accepted only while the best *current* gain exceeds the threshold, the run
at a higher threshold is a prefix of the run at a lower one: :meth:`ClassicCorrector.fit_threshold`
runs each sentence once, at the lowest threshold of the grid, and scores every threshold from
the recorded gains.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from llmos.apps.write.edits import Edit, apply_edits
from llmos.models.ngram import CharNgramLM
from llmos.text.cjk import is_hanzi
from llmos.text.csc_metrics import sentence_scores


class ClassicCorrector:
    """Confusion-set candidates ranked by an n-gram language model.

    Args:
        lm: the character language model.
        candidates: a character's replacements to try (its confusion set); only single CJK
            characters other than itself are used.
        threshold: the least log-probability gain (natural log) for an edit.
    """

    def __init__(
        self, lm: CharNgramLM, candidates: Callable[[str], Sequence[str]], threshold: float
    ) -> None:
        self.lm, self.candidates, self.threshold = lm, candidates, threshold
        self._options: dict[str, list[str]] = {}

    def _candidates(self, ch: str) -> list[str]:
        """``ch``'s usable candidates (cached: the confusion sets are fixed)."""
        if ch not in self._options:
            found = dict.fromkeys(self.candidates(ch)) if is_hanzi(ch) else {}
            self._options[ch] = [c for c in found if c != ch and len(c) == 1 and is_hanzi(c)]
        return self._options[ch]

    def _best(self, chars: list[str], positions: list[int]) -> dict[int, tuple[float, str]]:
        """Each position's best candidate and its gain over the current character."""
        text = "".join(chars)
        options = [(i, [chars[i], *self._candidates(text[i])]) for i in positions]
        if not options:
            return {}
        sums = self.lm.substitution_logprobs(text, options)
        best = {}
        for (i, opts), s in zip(options, sums, strict=True):
            k = int(s[1:].argmax()) + 1
            best[i] = (float(s[k] - s[0]), opts[k])
        return best

    def _greedy(self, text: str, threshold: float) -> list[Edit]:
        """The accepted edits in the order they were accepted (score = gain at the time)."""
        chars = list(text)
        gains = self._best(chars, [i for i, ch in enumerate(text) if self._candidates(ch)])
        reach = self.lm.order - 1
        edits = []
        while gains:
            i = max(gains, key=lambda j: gains[j][0])  # ties: the leftmost
            gain, suggestion = gains.pop(i)
            if gain <= threshold:
                break
            edits.append(Edit(i, i + 1, text[i], suggestion, gain, "spelling"))
            chars[i] = suggestion
            gains |= self._best(chars, [j for j in range(i - reach, i + reach + 1) if j in gains])
        return edits

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
        if not grid or not pairs:
            raise ValueError("fit_threshold needs a non-empty grid and some pairs")
        runs = [self._greedy(src, min(grid)) for src, _ in pairs]
        sources = [src for src, _ in pairs]
        targets = [tgt for _, tgt in pairs]

        def f1(t: float) -> float:
            predictions = []
            for src, run in zip(sources, runs, strict=True):
                k = next((k for k, e in enumerate(run) if e.score <= t), len(run))
                predictions.append(apply_edits(src, run[:k]))
            return sentence_scores(sources, predictions, targets)["sentence_f1"]

        self.threshold = max(sorted(grid, reverse=True), key=f1)
        return self.threshold
