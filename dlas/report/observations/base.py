"""What an observation is: a function of the run table that returns a :class:`Finding`.

Register one with ``@observation("XIV", "claim in one sentence")``; the report runs every
registered observation in order (see docs/report.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import pandas as pd

from dlas.registry import Registry


class Verdict(str, Enum):
    HOLDS = "holds"
    FAILS = "does not hold"
    UNTESTABLE = "not testable"


@dataclass
class Finding:
    """What one observation found in the runs."""

    key: str  # "I" … "XIII", or the user's own
    claim: str
    verdict: Verdict
    test: str  # the test applied, stated precisely
    headline: str  # the key number(s), as text
    sentence: str  # the answer in words
    numbers: dict[str, float] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # what the runs lack (parts untested)
    run_ids: list[str] = field(default_factory=list)


@dataclass
class Observation:
    key: str
    claim: str
    check: Callable[[pd.DataFrame, Observation], Finding]

    def __call__(self, table: pd.DataFrame) -> Finding:
        return self.check(table, self)

    def finding(self, verdict: Verdict, test: str, headline: str, sentence: str, **kw) -> Finding:
        return Finding(self.key, self.claim, verdict, test, headline, sentence, **kw)

    def untestable(self, test: str, *missing: str, sentence: str = "") -> Finding:
        return self.finding(
            Verdict.UNTESTABLE,
            test,
            "—",
            sentence or f"Not testable with these runs: {'; '.join(missing)}.",
            missing=list(missing),
        )


OBSERVATIONS: Registry[Observation] = Registry("observation")
_ORDER: list[str] = []


def observation(key: str, claim: str) -> Callable:
    """Register ``fn(table, obs) -> Finding`` as observation ``key``."""

    def add(fn: Callable[[pd.DataFrame, Observation], Finding]) -> Callable:
        OBSERVATIONS.register(key)(Observation(key, claim, fn))
        _ORDER.append(key)
        return fn

    return add


def ordered() -> list[Observation]:
    """Roman-numbered observations in numeric order (the study's), then the others as added."""
    return sorted(
        (OBSERVATIONS.get(k) for k in _ORDER), key=lambda o: (_roman(o.key), _ORDER.index(o.key))
    )


def _roman(key: str) -> int:
    values = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100}
    if not key or any(ch not in values for ch in key):
        return 10**6
    total = 0
    for ch, nxt in zip(key, key[1:] + " ", strict=True):
        v = values[ch]
        total += -v if nxt in values and values[nxt] > v else v
    return total


def run_all(table: pd.DataFrame, keys: Iterable[str] | None = None) -> list[Finding]:
    """Every registered observation on ``table``; one that raises is reported untestable."""
    out = []
    for obs in ordered() if keys is None else [OBSERVATIONS.get(k) for k in keys]:
        try:
            out.append(obs(table))
        except Exception as exc:  # noqa: BLE001 - one broken observation must not sink the report
            out.append(obs.untestable("(the check failed)", f"{type(exc).__name__}: {exc}"))
    return out


# --- statistics ------------------------------------------------------------------------------
def spearman(x: Iterable[float], y: Iterable[float]) -> tuple[float, float]:
    """Spearman's rho and its two-sided p-value (NaN when an input is constant)."""
    from scipy import stats

    xs, ys = np.asarray(list(x), float), np.asarray(list(y), float)
    if len(xs) < 3 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return math.nan, math.nan
    res = stats.spearmanr(xs, ys)
    return float(res.statistic), float(res.pvalue)


def mann_whitney_less(a: Iterable[float], b: Iterable[float]) -> float:
    """One-sided p-value that ``a`` tends to be smaller than ``b`` (NaN if either is empty)."""
    from scipy import stats

    a, b = list(a), list(b)
    if not a or not b:
        return math.nan
    return float(stats.mannwhitneyu(a, b, alternative="less").pvalue)


def geomean(values: Iterable[float]) -> float:
    vals = [v for v in values if v and v > 0 and math.isfinite(v)]
    return float(math.exp(sum(map(math.log, vals)) / len(vals))) if vals else math.nan


def fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}g}"


def ids(*frames: pd.DataFrame) -> list[str]:
    out: list[str] = []
    for f in frames:
        out.extend(rid for rid in f["run_id"] if rid not in out)
    return out


def verdict(ok: bool) -> Verdict:
    return Verdict.HOLDS if ok else Verdict.FAILS


def winners(frame: pd.DataFrame, by: list[str]) -> tuple[pd.Series, int]:
    """How often each algorithm is the fastest in a ``by`` group with >= 2 algorithms."""
    groups = [g for _, g in frame.groupby(by, dropna=False) if g["algorithm"].nunique() >= 2]
    wins = [g.loc[g["latency_ms"].idxmin(), "algorithm"] for g in groups]
    return pd.Series(wins, dtype=object).value_counts(), len(groups)
