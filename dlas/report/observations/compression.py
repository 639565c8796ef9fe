"""Observations about compression: II (tuned sparse vs dense by model size), IV (weight vs
channel pruning), V (quantization speedup across hardware and data types), X (pruned models vs
their expected speedup)."""

from __future__ import annotations

import pandas as pd

from dlas.report.cells import DENSE, PRUNINGS, QUANTIZATIONS, best, cells
from dlas.report.observations.base import (
    Finding,
    Observation,
    fmt,
    geomean,
    observation,
    verdict,
)

VARIES = 1.2  # speedups that differ by more than 20% "vary"
REACHED = 0.95  # achieved >= 95% of the expected speedup counts as reaching it
RARELY = 0.25  # "rarely": in at most a quarter of the cases


def _majority(flags: list[bool]) -> bool:
    return sum(flags) > len(flags) / 2


@observation(
    "II",
    "Tuned sparse models are faster than dense for small (CIFAR-size) models but not for large "
    "(ImageNet-size) ones.",
)
def tuned_sparse_vs_dense(table: pd.DataFrame, obs: Observation) -> Finding:
    test = (
        "per (model, device): fastest tuned weight-pruned cell with a sparse algorithm vs "
        "fastest tuned dense cell; holds if the sparse one is faster for most CIFAR-size models "
        "(input <= 64 px) and not faster for most ImageNet-size ones"
    )
    c = cells(table)
    c = c[c["tuned"]]
    sparse = best(
        c[(c["compression"] == "weight_pruning") & c["sparse_algorithm"]], ["model_id", "device"]
    )
    dense = best(c[c["compression"] == DENSE], ["model_id", "device"])
    pairs = sparse.merge(dense, on=["model_id", "device"], suffixes=("", "_dense"))
    if pairs.empty:
        return obs.untestable(
            test,
            "needs tuned sparse runs (compression=weight_pruning algorithm=sparse_* "
            "tuning=metaschedule) and tuned dense runs of the same model and device",
        )
    pairs["speedup"] = pairs["latency_ms_dense"] / pairs["latency_ms"]
    small, large = pairs[~pairs["large"]], pairs[pairs["large"]]
    ok, parts, missing = True, [], []
    for name, group, want_faster in (("CIFAR-size", small, True), ("ImageNet-size", large, False)):
        if group.empty:
            missing.append(f"needs tuned sparse and dense runs of {name} models")
            continue
        faster = [bool(s > 1) for s in group["speedup"]]
        ok &= _majority(faster) if want_faster else not _majority(faster)
        parts.append(
            f"{name}: sparse faster for {sum(faster)}/{len(faster)} "
            f"(geomean speedup {fmt(geomean(group['speedup']))}x)"
        )
    detail = ", ".join(
        f"{r.model_id} on {r.device}: {r.algorithm} {fmt(r.latency_ms)} ms vs dense "
        f"{r.algorithm_dense} {fmt(r.latency_ms_dense)} ms"
        for r in pairs.itertuples()
    )
    return obs.finding(
        verdict(ok),
        test,
        "; ".join(parts),
        f"{'; '.join(parts)}. {detail}.",
        numbers={f"speedup {r.model_id} {r.device}": r.speedup for r in pairs.itertuples()},
        missing=missing,
        run_ids=list(pairs["run_id"]) + list(pairs["run_id_dense"]),
    )


def _per_compression(c: pd.DataFrame, comps: tuple[str, ...], by: list[str]) -> pd.DataFrame:
    """Fastest TVM cell of dense and each of ``comps`` per ``by`` group, side by side."""
    fastest = best(c[c["tvm"] & c["compression"].isin((DENSE, *comps))], [*by, "compression"])
    return fastest.set_index([*by, "compression"]).unstack("compression")


@observation(
    "IV",
    "Weight pruning gives better compression ratios and speedups than channel pruning but "
    "achieves less of its expected (MACs-proportional) speedup.",
)
def weight_vs_channel_pruning(table: pd.DataFrame, obs: Observation) -> Finding:
    test = (
        "per (model, device), fastest TVM cell of dense, weight_pruning (WP) and channel_pruning "
        "(CP): compression ratio = dense / effective parameters, speedup = dense / pruned "
        "latency, efficiency = speedup / expected (dense MACs / effective MACs); holds if, for "
        "most pairs, WP has the higher ratio, the higher speedup and the lower efficiency"
    )
    c = cells(table)
    wide = _per_compression(c, PRUNINGS, ["model_id", "device"])
    need = [(col, comp) for col in ("latency_ms", "eff_params") for comp in (DENSE, *PRUNINGS)]
    if wide.empty or any(k not in wide.columns for k in need):
        return obs.untestable(
            test,
            "needs dense, weight_pruning and channel_pruning runs of the same model and device",
        )
    wide = wide.dropna(subset=need)
    if wide.empty:
        return obs.untestable(
            test,
            "needs dense, weight_pruning and channel_pruning runs of the same model and device",
        )
    stats = {}
    for comp in PRUNINGS:
        ratio = wide[("eff_params", DENSE)] / wide[("eff_params", comp)]
        speedup = wide[("latency_ms", DENSE)] / wide[("latency_ms", comp)]
        stats[comp] = (ratio, speedup, speedup / wide[("expected_speedup", comp)])
    (wr, ws, we), (cr, cs, ce) = stats["weight_pruning"], stats["channel_pruning"]
    claims = {
        "ratio": _majority(list(wr > cr)),
        "speedup": _majority(list(ws > cs)),
        "efficiency": _majority(list(we < ce)),
    }
    headline = (
        f"WP vs CP (geomean over {len(wide)}): ratio {fmt(geomean(wr))}x vs {fmt(geomean(cr))}x, "
        f"speedup {fmt(geomean(ws))}x vs {fmt(geomean(cs))}x, achieved/expected "
        f"{fmt(geomean(we), 2)} vs {fmt(geomean(ce), 2)}"
    )
    failed = [k for k, ok in claims.items() if not ok]
    sentence = headline + (
        "." if not failed else f". Not borne out: WP's {', '.join(failed)} claim."
    )
    run_ids = [rid for comp in (DENSE, *PRUNINGS) for rid in wide[("run_id", comp)]]
    return obs.finding(
        verdict(not failed),
        test,
        headline,
        sentence,
        numbers={
            "WP ratio": geomean(wr),
            "CP ratio": geomean(cr),
            "WP speedup": geomean(ws),
            "CP speedup": geomean(cs),
            "WP efficiency": geomean(we),
            "CP efficiency": geomean(ce),
        },
        run_ids=run_ids,
    )


@observation("V", "Quantization's speedup varies with hardware and data type.")
def quantization_speedup(table: pd.DataFrame, obs: Observation) -> Finding:
    test = (
        f"speedup = fastest dense / fastest fp16 or int8 TVM cell per (model, device): "
        f"(a) data type: fp16 and int8 speedups differ by > {round((VARIES - 1) * 100)}% for most "
        f"(model, device); (b) hardware: one data type's speedup differs by > "
        f"{round((VARIES - 1) * 100)}% across devices for most (model, data type)"
    )
    c = cells(table)
    wide = _per_compression(c, QUANTIZATIONS, ["model_id", "device"])
    if wide.empty or ("latency_ms", DENSE) not in wide.columns:
        return obs.untestable(test, "needs dense and fp16/int8 runs of the same model and device")
    speedups = pd.DataFrame(
        {
            q: wide[("latency_ms", DENSE)] / wide[("latency_ms", q)]
            for q in QUANTIZATIONS
            if ("latency_ms", q) in wide.columns
        }
    )
    if speedups.dropna(how="all").empty:
        return obs.untestable(test, "needs dense and fp16/int8 runs of the same model and device")
    parts, missing, ok, numbers = [], [], True, {}
    both = speedups.dropna() if len(speedups.columns) == 2 else speedups.iloc[0:0]
    if not both.empty:
        spread = both.max(axis=1) / both.min(axis=1)
        varies = [bool(s > VARIES) for s in spread]
        ok &= _majority(varies)
        numbers["fp16 speedup"], numbers["int8 speedup"] = (
            geomean(both["fp16"]),
            geomean(both["int8"]),
        )
        parts.append(
            f"(a) fp16 {fmt(geomean(both['fp16']))}x vs int8 {fmt(geomean(both['int8']))}x "
            f"(geomean); differ > {round((VARIES - 1) * 100)}% in {sum(varies)}/{len(varies)}"
        )
    else:
        missing.append("part (a) needs fp16 and int8 runs of the same model and device")
    long = speedups.stack().dropna().rename("speedup").reset_index()
    long.columns = ["model_id", "device", "dtype", "speedup"]
    multi = [g for _, g in long.groupby(["model_id", "dtype"]) if g["device"].nunique() >= 2]
    if multi:
        varies = [bool(g["speedup"].max() / g["speedup"].min() > VARIES) for g in multi]
        ok &= _majority(varies)
        parts.append(f"(b) differs across devices in {sum(varies)}/{len(varies)}")
    else:
        missing.append("part (b) needs fp16 or int8 runs of one model on >= 2 devices")
    if not parts:
        return obs.untestable(test, *missing)
    detail = ", ".join(
        f"{m} on {d} {q} {fmt(s)}x" for (m, d), row in speedups.iterrows() for q, s in row.items()
    )
    return obs.finding(
        verdict(ok),
        test,
        "; ".join(parts),
        f"{'; '.join(parts)}. Speedups vs dense: {detail}.",
        numbers=numbers,
        missing=missing,
        run_ids=[
            r
            for comp in (DENSE, *QUANTIZATIONS)
            if ("run_id", comp) in wide.columns
            for r in wide[("run_id", comp)].dropna()
        ],
    )


@observation("X", "Pruned models rarely reach their expected speedup over dense.")
def pruned_expected_speedup(table: pd.DataFrame, obs: Observation) -> Finding:
    test = (
        "per (model, device, pruning, tuning), fastest pruned TVM cell vs fastest dense cell of "
        f"the same tuning: reached if speedup >= {REACHED} x expected (dense MACs / effective "
        f"MACs); holds if at most {int(RARELY * 100)}% reach it"
    )
    c = cells(table)
    c = c[c["tvm"]]
    by = ["model_id", "device", "tuning"]
    pruned = best(c[c["compression"].isin(PRUNINGS)], [*by, "compression"])
    dense = best(c[c["compression"] == DENSE], by)
    pairs = pruned.merge(dense, on=by, suffixes=("", "_dense")).dropna(subset=["expected_speedup"])
    if pairs.empty:
        return obs.untestable(
            test, "needs pruned and dense runs of the same model, device and tuning"
        )
    pairs["achieved"] = pairs["latency_ms_dense"] / pairs["latency_ms"]
    pairs["efficiency"] = pairs["achieved"] / pairs["expected_speedup"]
    reached = int((pairs["efficiency"] >= REACHED).sum())
    frac = reached / len(pairs)
    detail = ", ".join(
        f"{r.model_id} {r.compression} {r.tuning} on {r.device}: {fmt(r.achieved)}x of "
        f"{fmt(r.expected_speedup)}x"
        for r in pairs.itertuples()
    )
    headline = (
        f"{reached}/{len(pairs)} reach the expected speedup; median achieved/expected "
        f"{fmt(pairs['efficiency'].median(), 2)}"
    )
    return obs.finding(
        verdict(frac <= RARELY),
        test,
        headline,
        f"{headline}. {detail}.",
        numbers={
            "reached fraction": frac,
            "median efficiency": float(pairs["efficiency"].median()),
        },
        run_ids=list(pairs["run_id"]) + list(pairs["run_id_dense"]),
    )
