"""The latency protocol's statistics: a bootstrap interval of the median and the noise verdict."""

from __future__ import annotations

import numpy as np
import pytest

from dlas import metrics as m
from dlas.measure import latency_stats, median_interval, noise


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
