"""Observations about models across the stack: I (MACs, accuracy, time), III (size vs accuracy,
vulnerability to compression), VI (fp16 vs int8 accuracy)."""

from __future__ import annotations

import math

import pandas as pd

from dlas.report.cells import DENSE, cells
from dlas.report.observations.base import (
    Finding,
    Observation,
    fmt,
    ids,
    observation,
    spearman,
    verdict,
)

STRONG = 0.7  # |rho| at or above this is a strong correlation
NEGLIGIBLE_DROP = 1.0  # points of top-1 (the sweeps' default accuracy-drop limit)
MIN_POINTS = 5


@observation("I", "MACs, accuracy and inference time are not strongly correlated.")
def macs_accuracy_latency(table: pd.DataFrame, obs: Observation) -> Finding:
    test = (
        f"Spearman rho (two-sided p) between effective MACs, top-1 and latency over the TVM "
        f"cells of each device (>= {MIN_POINTS} cells, >= 3 distinct MAC counts); holds if "
        f"|rho| < {STRONG} for all three pairs on every device"
    )
    c = cells(table)
    c = c[c["tvm"] & c["accuracy"].notna() & c["eff_macs"].notna()]
    results, used = [], []
    for device, g in c.groupby("device"):
        if len(g) < MIN_POINTS or g["eff_macs"].round().nunique() < 3:
            continue
        used.append(g)
        for a, b in (
            ("eff_macs", "latency_ms"),
            ("eff_macs", "accuracy"),
            ("accuracy", "latency_ms"),
        ):
            rho, p = spearman(g[a], g[b])
            results.append((device, f"{_label(a)}–{_label(b)}", rho, p, len(g)))
    if not results:
        return obs.untestable(
            test,
            f"needs >= {MIN_POINTS} finished TVM runs on one device spanning >= 3 MAC counts "
            "(several models, or channel/weight pruning)",
        )
    finite = [r for r in results if not math.isnan(r[2])]
    worst = max(finite, key=lambda r: abs(r[2])) if finite else results[0]
    strong = [r for r in finite if abs(r[2]) >= STRONG]
    numbers = {f"rho {d} {pair}": rho for d, pair, rho, _, _ in results}
    lines = "; ".join(
        f"{pair} rho={fmt(rho, 2)} (p={fmt(p, 2)}, n={n})" for _, pair, rho, p, n in results
    )
    sentence = (
        f"{'No pair is' if not strong else f'{len(strong)} of {len(results)} pairs are'} "
        f"strongly correlated: {lines}."
    )
    if c["model_id"].nunique() < 2:  # the study compared architectures; say what varied here
        sentence += " One model only: its MAC counts vary with compression, not architecture."
    return obs.finding(
        verdict(not strong),
        test,
        f"max |rho| = {fmt(abs(worst[2]), 2)} ({worst[1]}, p={fmt(worst[3], 2)}, n={worst[4]})",
        sentence,
        numbers=numbers,
        run_ids=ids(*used),
    )


def _label(col: str) -> str:
    return {"eff_macs": "MACs", "latency_ms": "latency", "accuracy": "top-1"}[col]


def _per_model(c: pd.DataFrame) -> pd.DataFrame:
    """Per model: dense params and top-1, mean drop of its compressed TVM cells."""
    rows = []
    for model, g in c[c["tvm"]].groupby("model_id"):
        dense = g[g["compression"] == DENSE]
        comp = g[(g["compression"] != DENSE) & g["drop"].notna()]
        if dense.empty or dense["params"].isna().all():
            continue
        rows.append(
            {
                "model_id": model,
                "params": dense["params"].max(),
                "accuracy": dense["accuracy"].max(),
                "mean_drop": comp["drop"].mean() if not comp.empty else math.nan,
            }
        )
    return pd.DataFrame(rows, columns=["model_id", "params", "accuracy", "mean_drop"])


@observation(
    "III",
    "Model size is not strongly correlated with accuracy; smaller models are more vulnerable "
    "to compression.",
)
def size_accuracy_vulnerability(table: pd.DataFrame, obs: Observation) -> Finding:
    test = (
        f"across models (>= 3): (a) Spearman rho between dense parameter count and dense top-1, "
        f"holds if |rho| < {STRONG}; (b) Spearman rho between dense parameter count and the mean "
        "accuracy drop (points) of the model's compressed TVM cells, holds if rho < 0"
    )
    c = cells(table)
    per = _per_model(c)
    with_acc = per[per["accuracy"].notna()]
    if len(with_acc) < 3:
        return obs.untestable(test, f"needs dense runs of >= 3 models (has {len(with_acc)})")
    rho_a, p_a = spearman(with_acc["params"], with_acc["accuracy"])
    with_drop = per[per["mean_drop"].notna()]
    numbers = {"rho size-accuracy": rho_a, "p size-accuracy": p_a}
    ok_a = not (abs(rho_a) >= STRONG)  # NaN (constant accuracy): no correlation
    parts = [f"(a) size–top-1 rho={fmt(rho_a, 2)} (p={fmt(p_a, 2)}, {len(with_acc)} models)"]
    missing, ok_b = [], True
    if len(with_drop) >= 3:
        rho_b, p_b = spearman(with_drop["params"], with_drop["mean_drop"])
        numbers.update({"rho size-drop": rho_b, "p size-drop": p_b})
        ok_b = rho_b < 0
        parts.append(
            f"(b) size–mean drop rho={fmt(rho_b, 2)} (p={fmt(p_b, 2)}, {len(with_drop)} models)"
        )
    else:
        missing.append("part (b) needs compressed runs of >= 3 models")
    detail = ", ".join(
        f"{r.model_id}: {fmt(r.params)} params, top-1 {fmt(r.accuracy)}, mean drop "
        f"{fmt(r.mean_drop, 2)} pt"
        for r in per.itertuples()
    )
    return obs.finding(
        verdict(ok_a and ok_b),
        test,
        "; ".join(parts),
        f"{'; '.join(parts)}. Per model: {detail}.",
        numbers=numbers,
        missing=missing,
        run_ids=ids(c[c["model_id"].isin(per["model_id"])]),
    )


@observation(
    "VI",
    "float16 has a negligible accuracy impact; calibrated int8 loses more, more on large models.",
)
def fp16_int8_accuracy(table: pd.DataFrame, obs: Observation) -> Finding:
    test = (
        f"per model, the median accuracy drop (points of top-1 vs dense) of its fp16 and int8 "
        f"cells: (a) every fp16 drop <= {NEGLIGIBLE_DROP}; (b) int8 drop > fp16 drop for most "
        "models; (c) mean int8 drop of ImageNet-size models > that of CIFAR-size models"
    )
    c = cells(table)
    c = c[c["tvm"] & c["drop"].notna()]
    per = c.groupby(["model_id", "compression"])["drop"].median().unstack()
    if "fp16" not in per or "int8" not in per:
        return obs.untestable(
            test, "needs fp16 and int8 runs with a dense baseline of the same model"
        )
    both = per[["fp16", "int8"]].dropna()
    if both.empty:
        return obs.untestable(test, "needs fp16 and int8 runs of the same model")
    ok_a = bool((both["fp16"] <= NEGLIGIBLE_DROP).all())
    more = int((both["int8"] > both["fp16"]).sum())
    ok_b = more > len(both) / 2
    large = c.groupby("model_id")["large"].first()
    int8_large = both["int8"][large.reindex(both.index).fillna(False).astype(bool)]
    int8_small = both["int8"][~large.reindex(both.index).fillna(False).astype(bool)]
    numbers = {
        "max fp16 drop": float(both["fp16"].max()),
        "median int8 drop": float(both["int8"].median()),
        "models int8 worse": more,
    }
    parts = [
        f"(a) fp16 drop <= {fmt(both['fp16'].max(), 2)} pt",
        f"(b) int8 loses more on {more}/{len(both)} models",
    ]
    missing, ok_c = [], True
    if len(int8_large) and len(int8_small):
        ok_c = int8_large.mean() > int8_small.mean()
        parts.append(
            f"(c) int8 drop large {fmt(int8_large.mean(), 2)} vs small {fmt(int8_small.mean(), 2)} pt"
        )
    else:
        missing.append("part (c) needs int8 runs of both CIFAR-size and ImageNet-size models")
    detail = ", ".join(
        f"{m}: fp16 {fmt(r.fp16, 2)}, int8 {fmt(r.int8, 2)}" for m, r in both.iterrows()
    )
    return obs.finding(
        verdict(ok_a and ok_b and ok_c),
        test,
        "; ".join(parts),
        f"{'; '.join(parts)}. Drops (points) per model: {detail}.",
        numbers=numbers,
        missing=missing,
        run_ids=ids(c[c["compression"].isin(["fp16", "int8"])]),
    )
