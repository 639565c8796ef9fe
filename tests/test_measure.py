"""The latency protocol's statistics: a bootstrap interval of the median, the noise verdict, and
side-by-side timing (round-robin blocks, a speedup's interval)."""

from __future__ import annotations

import numpy as np
import pytest

from dlas import metrics as m
from dlas.devices import Runner
from dlas.measure import latency_stats, median_interval, noise, round_robin, speedup


def test_median_interval_brackets_the_median_and_narrows_with_more_samples():
    rng = np.random.default_rng(1)
    few = rng.normal(10, 1, size=20)
    many = rng.normal(10, 1, size=2000)
    low, high = median_interval(few)
    assert low < np.median(few) < high
    wide, narrow = high - low, np.subtract(*median_interval(many)[::-1])
    assert narrow < wide / 3  # ~1/sqrt(n): the interval really depends on the data


def test_stats_report_p99_and_the_interval():
    stats = latency_stats([1.0] * 98 + [5.0, 9.0])
    assert stats[m.LATENCY] == 1.0 and stats["latency/p99_ms"] > 5.0
    assert stats[m.LATENCY_CI_LOW] == stats[m.LATENCY_CI_HIGH] == 1.0


@pytest.mark.parametrize(
    ("samples", "loads", "expected"),
    [
        ([10.0, 10.1, 9.9, 10.0] * 25, (0.2, 0.3), ""),
        (list(np.random.default_rng(2).uniform(5, 15, size=12)), (0.2, 0.3), "interval"),
        ([10.0, 10.1, 9.9, 10.0] * 25, (0.2, 3.5), "load average"),
    ],
    ids=["quiet", "wide", "loaded"],
)
def test_noise_says_why(samples, loads, expected):
    why = noise(latency_stats(samples), loads, ci_fraction=0.1, max_load=1.0)
    assert (expected in why) if expected else why == ""


class _Clock(Runner):
    """A runner whose every call takes ``ms``; it logs each call's kind."""

    def __init__(self, name: str, ms: float, log: list[tuple[str, int, int]]) -> None:
        self.name, self.ms, self.log = name, ms, log

    def run(self, x: np.ndarray) -> np.ndarray:
        raise AssertionError("timing only")

    def time(self, x: np.ndarray, warmup: int, repeat: int) -> list[float]:
        self.log.append((self.name, warmup, repeat))
        return [self.ms] * repeat


def test_round_robin_takes_turns_and_warms_each_block_up_for_the_same_time():
    log: list[tuple[str, int, int]] = []
    runners = {"slow": _Clock("slow", 10.0, log), "fast": _Clock("fast", 0.5, log)}
    times = round_robin(runners, None, rounds=3, calls=4, warmup=2, warmup_s=0.1)
    assert {k: len(v) for k, v in times.items()} == {"slow": 12, "fast": 12}
    # Each system's first block starts with one timed probe call that sizes its warm-up.
    assert log[:2] == [("slow", 2, 1), ("slow", 10, 4)]
    assert log[2:4] == [("fast", 2, 1), ("fast", 200, 4)]
    # Then blocks alternate, each warmed up for ~0.1 s of its own calls (at least warmup=2).
    assert log[4:] == [("slow", 10, 4), ("fast", 200, 4)] * 2
    quick = round_robin({"a": _Clock("a", 100.0, log)}, None, 1, 1, warmup=2, warmup_s=0.1)
    assert log[-1] == ("a", 2, 1) and quick == {"a": [100.0]}


def test_a_speedup_interval_keeps_each_round_pair_together() -> None:
    """The machine slows down 2x over the rounds; within every round the second system takes
    1.5x the first's time. Rounds resampled whole, the interval stays tight around 1.5; with
    the pairs broken (the second system's rounds shuffled) the same times give a wide one."""
    rounds, calls = 12, 5
    rng = np.random.default_rng(0)
    machine = np.repeat(np.linspace(1.0, 2.0, rounds), calls)
    fast = machine * (1 + 0.01 * rng.standard_normal(rounds * calls))
    slow = 1.5 * machine * (1 + 0.01 * rng.standard_normal(rounds * calls))
    paired = speedup(fast, slow, calls)
    assert 1.45 < paired.low <= paired.ratio <= paired.high < 1.55, paired
    shuffled = slow.reshape(rounds, calls)[rng.permutation(rounds)].ravel()
    broken = speedup(fast, shuffled, calls)
    assert broken.ratio == pytest.approx(paired.ratio)  # same times, same medians
    assert broken.high - broken.low > 5 * (paired.high - paired.low), (paired, broken)
    assert str(paired).startswith(f"x{paired.ratio:.2f} (95%: ")
