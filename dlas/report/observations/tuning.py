"""Observations about auto-tuning: XI (tuning accelerates dramatically, can change the best
choice), XII (pruned and quantized models gain less from tuning)."""

from __future__ import annotations

import pandas as pd

from dlas.report.cells import DENSE, PRUNINGS, QUANTIZATIONS, UNTUNED, best, cells
from dlas.report.observations.base import (
    Finding,
    Observation,
    fmt,
    geomean,
    mann_whitney_less,
    observation,
    verdict,
)

DRAMATIC = 2.0  # geometric-mean tuning speedup that counts as dramatic
SAME = ["model_id", "device", "compression", "algorithm"]


def tuning_pairs(table: pd.DataFrame) -> pd.DataFrame:
    """Per (model, device, compression, algorithm): the untuned cell and the fastest tuned cell,
    with ``gain`` = untuned / tuned latency."""
    c = cells(table)
    c = c[c["tvm"]]
    untuned = c[c["tuning"] == UNTUNED]
    tuned = best(c[c["tuned"]], SAME)
    pairs = untuned.merge(tuned, on=SAME, suffixes=("", "_tuned"))
    pairs["gain"] = pairs["latency_ms"] / pairs["latency_ms_tuned"]
    return pairs


@observation(
    "XI",
    "Auto-tuning accelerates inference dramatically and can change the best algorithm or "
    "compression.",
)
def tuning_accelerates(table: pd.DataFrame, obs: Observation) -> Finding:
    test = (
        f"gain = untuned / tuned latency per (model, device, compression, algorithm): holds if "
        f"the geometric-mean gain >= {DRAMATIC}x and the fastest (compression, algorithm) of "
        "some (model, device), or the fastest algorithm of some (model, device, compression), "
        "differs between untuned and tuned cells"
    )
    pairs = tuning_pairs(table)
    if pairs.empty:
        return obs.untestable(
            test, "needs untuned and tuned (tuning=metaschedule) runs of the same configuration"
        )
    gain = geomean(pairs["gain"])
    changed, groups = 0, 0
    for by in (["model_id", "device"], ["model_id", "device", "compression"]):
        for _, g in pairs.groupby(by):
            if len(g) < 2:
                continue
            groups += 1
            pick = ["compression", "algorithm"]
            before = tuple(g.loc[g["latency_ms"].idxmin(), pick])
            after = tuple(g.loc[g["latency_ms_tuned"].idxmin(), pick])
            changed += before != after
    headline = (
        f"geomean tuning gain {fmt(gain)}x over {len(pairs)} configurations (max "
        f"{fmt(pairs['gain'].max())}x); best choice changed in {changed}/{groups} groups"
    )
    missing = (
        [] if groups else ["the 'changes the best' part needs >= 2 tuned configurations per model"]
    )
    return obs.finding(
        verdict(gain >= DRAMATIC and changed > 0),
        test,
        headline,
        headline + ".",
        numbers={"geomean gain": gain, "best changed": changed, "groups": groups},
        missing=missing,
        run_ids=list(pairs["run_id"]) + list(pairs["run_id_tuned"]),
    )


@observation("XII", "Pruned (and quantized) models gain less from tuning.")
def compressed_gain_less(table: pd.DataFrame, obs: Observation) -> Finding:
    test = (
        "gain = untuned / tuned latency per configuration; holds if the median gain of pruned "
        "configurations is below that of dense ones (and, where tested, quantized below dense); "
        "one-sided Mann-Whitney U p-values given"
    )
    pairs = tuning_pairs(table)
    dense = pairs[pairs["compression"] == DENSE]["gain"]
    pruned = pairs[pairs["compression"].isin(PRUNINGS)]["gain"]
    quant = pairs[pairs["compression"].isin(QUANTIZATIONS)]["gain"]
    if dense.empty or pruned.empty:
        return obs.untestable(
            test, "needs untuned and tuned runs of dense and pruned models (same configuration)"
        )
    ok = pruned.median() < dense.median()
    parts = [
        f"median gain dense {fmt(dense.median())}x vs pruned {fmt(pruned.median())}x "
        f"(p={fmt(mann_whitney_less(pruned, dense), 2)})"
    ]
    missing = []
    if quant.empty:
        missing.append("the quantized part needs untuned and tuned fp16/int8 runs")
    else:
        ok &= quant.median() < dense.median()
        parts.append(
            f"quantized {fmt(quant.median())}x (p={fmt(mann_whitney_less(quant, dense), 2)})"
        )
    return obs.finding(
        verdict(bool(ok)),
        test,
        "; ".join(parts),
        "; ".join(parts) + f" (n = {len(dense)}, {len(pruned)}, {len(quant)}).",
        numbers={
            "dense gain": float(dense.median()),
            "pruned gain": float(pruned.median()),
            "quantized gain": float(quant.median()) if len(quant) else float("nan"),
        },
        missing=missing,
        run_ids=list(pairs["run_id"]) + list(pairs["run_id_tuned"]),
    )
