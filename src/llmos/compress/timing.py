"""One way to say "x times faster": the same work timed on each model, in turns, the median.

Every speed-up that a compression report states (pruned vs original, student vs teacher, int8
vs fp32) comes from :func:`compare_speed`:

1. warm-up: each run once, untimed as a result (first calls pay for allocation, lazy init,
   kernel selection); its duration sets how many timed rounds fit ``min_seconds``;
2. rounds: every run once per round, in turns, so that a slower moment of a shared machine
   hits all of them alike instead of one;
3. the median of each run's rounds (robust to the odd slow round, unlike the mean; unlike the
   best, it does not reward one lucky round).

No torch here: the runs are plain callables (wrap them in ``torch.inference_mode()`` yourself).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class SpeedComparison:
    """Median seconds per run, and how many timed rounds each had."""

    seconds: dict[str, float]
    rounds: int

    def ratio(self, baseline: str, candidate: str) -> float:
        """How many times faster ``candidate`` is than ``baseline`` (> 1: faster)."""
        return self.seconds[baseline] / max(self.seconds[candidate], 1e-12)

    @property
    def speedup(self) -> float:
        """For two runs: the first's time over the second's (baseline first, as in
        ``{"original": ..., "pruned": ...}``)."""
        if len(self.seconds) != 2:
            raise ValueError(f"speedup compares two runs; there are {len(self.seconds)}")
        baseline, candidate = self.seconds
        return self.ratio(baseline, candidate)


def compare_speed(
    runs: Mapping[str, Callable[[], object]],
    *,
    rounds: int | None = None,
    min_rounds: int = 3,
    max_rounds: int = 20,
    min_seconds: float = 5.0,
    clock: Callable[[], float] = time.perf_counter,
) -> SpeedComparison:
    """Time each of ``runs`` (the same work on each model) in turns and take the medians.

    Args:
        runs: name -> a callable doing one pass of the work; baseline first.
        rounds: timed rounds; by default as many as fit ``min_seconds`` of timing in all,
            judged from the warm-up, within ``[min_rounds, max_rounds]``.
        min_rounds: fewest rounds when ``rounds`` is not given.
        max_rounds: most rounds when ``rounds`` is not given.
        min_seconds: about how long all timed rounds take together when ``rounds`` is not given.
        clock: seconds, monotonic (a fake one in tests).

    Returns:
        The median seconds per run and the number of rounds.
    """
    if not runs:
        raise ValueError("no runs to compare")
    warm = 0.0
    for run in runs.values():
        start = clock()
        run()
        warm += clock() - start
    if rounds is None:
        fit = math.ceil(min_seconds / max(warm, 1e-6))
        rounds = min(max_rounds, max(min_rounds, fit))
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = clock()
            run()
            times[name].append(clock() - start)
    return SpeedComparison({name: statistics.median(t) for name, t in times.items()}, rounds)
