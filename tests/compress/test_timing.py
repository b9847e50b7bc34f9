"""compare_speed on a fake clock: warm-up, rounds in turns, medians, ratio; no real timing."""

from __future__ import annotations

import pytest

from llmos.compress.timing import compare_speed


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rounds_interleave_and_the_median_is_reported() -> None:
    clock = FakeClock()
    calls: list[str] = []
    # Per call durations: the baseline's third timed round is an outlier.
    durations = {"original": iter([9.0, 4.0, 4.0, 40.0, 4.0, 4.0]), "pruned": iter([1.0] * 6)}

    def run(name: str):
        def go() -> None:
            calls.append(name)
            clock.now += next(durations[name])

        return go

    result = compare_speed(
        {"original": run("original"), "pruned": run("pruned")}, rounds=5, clock=clock
    )
    assert calls == ["original", "pruned"] * 6  # warm-up, then 5 rounds in turns
    assert result.rounds == 5
    assert result.seconds == {"original": 4.0, "pruned": 1.0}  # the 40 s round does not count
    assert result.speedup == 4.0 == result.ratio("original", "pruned")
    assert result.ratio("pruned", "original") == 0.25


def test_the_number_of_rounds_fits_the_time_budget() -> None:
    clock = FakeClock()
    count = {"a": 0, "b": 0}

    def run(name: str, seconds: float):
        def go() -> None:
            count[name] += 1
            clock.now += seconds

        return go

    runs = {"a": run("a", 0.5), "b": run("b", 0.5)}
    # Warm-up takes 1 s for both: 5 s of timing in all is 5 rounds.
    assert compare_speed(runs, min_seconds=5.0, clock=clock).rounds == 5
    assert count == {"a": 6, "b": 6}
    assert compare_speed(runs, min_seconds=1000.0, clock=clock).rounds == 20  # max_rounds
    assert compare_speed(runs, min_seconds=0.1, clock=clock).rounds == 3  # min_rounds


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="no runs"):
        compare_speed({})
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        compare_speed({"a": lambda: None}, rounds=0)
    with pytest.raises(ValueError, match="speedup compares two runs"):
        _ = compare_speed({"a": lambda: None}, rounds=1).speedup
