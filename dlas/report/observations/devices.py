"""Observation XIII: faster hardware is faster across the board."""

from __future__ import annotations

import itertools

import pandas as pd

from dlas.report.cells import cells
from dlas.report.observations.base import (
    Finding,
    Observation,
    fmt,
    geomean,
    ids,
    observation,
    verdict,
)

CONSISTENT = 0.9  # share of shared configurations that must follow the overall device ranking
CONFIG = ["model_id", "compression", "algorithm", "tuning"]


@observation("XIII", "Faster hardware is faster across the board (device ranking is consistent).")
def device_ranking(table: pd.DataFrame, obs: Observation) -> Finding:
    test = (
        "for each pair of devices, the overall faster one (geomean latency ratio over the "
        "configurations both ran) must be faster in each shared configuration; holds if >= "
        f"{int(CONSISTENT * 100)}% of all (pair, configuration) comparisons agree"
    )
    c = cells(table)
    wide = c.pivot_table(index=CONFIG, columns="device", values="latency_ms", aggfunc="min")
    agree, total, parts = 0, 0, []
    for a, b in itertools.combinations(wide.columns, 2):
        shared = wide[[a, b]].dropna()
        if shared.empty:
            continue
        ratio = geomean(shared[a] / shared[b])  # > 1: b faster overall
        faster_b = ratio > 1
        wins = int(((shared[b] < shared[a]) if faster_b else (shared[a] < shared[b])).sum())
        agree, total = agree + wins, total + len(shared)
        fast, slow = (b, a) if faster_b else (a, b)
        parts.append(
            f"{fast} faster than {slow} in {wins}/{len(shared)} ({fmt(max(ratio, 1 / ratio))}x)"
        )
    if total == 0:
        return obs.untestable(
            test,
            "needs the same configurations run on >= 2 devices (e.g. device=local_cpu,i7, or a GPU)",
        )
    share = agree / total
    return obs.finding(
        verdict(share >= CONSISTENT),
        test,
        f"{agree}/{total} comparisons follow the device ranking ({fmt(share * 100)}%)",
        "; ".join(parts) + ".",
        numbers={"consistent share": share},
        run_ids=ids(c[c["device"].isin(wide.columns)]),
    )
