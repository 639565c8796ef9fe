"""Observations about convolution algorithms: VII (spatial pack on CPU, tuned), VIII (direct on
GPU, tuned), IX (GEMM best sparse algorithm on CPU, direct on GPU)."""

from __future__ import annotations

import pandas as pd

from dlas.report.cells import cells
from dlas.report.observations.base import Finding, Observation, ids, observation, verdict, winners

NOT_COMPARED = ("per_layer",)  # a mapping of algorithms, not one


def _wins_text(wins: pd.Series, total: int) -> str:
    return ", ".join(f"{a} {n}" for a, n in wins.items()) + f" (of {total} groups)"


def _best_algorithm(
    obs: Observation, table: pd.DataFrame, *, gpu: bool, sparse: bool, expected: str, tuned: bool
) -> tuple[str, bool | None, str, list[str]]:
    """(headline part, holds?, missing, run ids) for one device class."""
    c = cells(table)
    c = c[c["tvm"] & (c["gpu"] == gpu) & ~c["algorithm"].isin(NOT_COMPARED)]
    c = c[c["sparse_algorithm"] == sparse]
    if tuned:
        c = c[c["tuned"]]
    by = ["model_id", "device", "compression"] + ([] if tuned else ["tuning"])
    groups = [g for _, g in c.groupby(by) if expected in set(g["algorithm"])]
    frame = pd.concat(groups) if groups else c.iloc[0:0]
    wins, total = winners(frame, by)
    where = "a GPU" if gpu else "a CPU"
    if total == 0:
        kind = "sparse (weight-pruned)" if sparse else "dense"
        how = "tuned (tuning=metaschedule) " if tuned else ""
        return (
            "",
            None,
            f"needs {how}runs of {expected} and another {kind} algorithm on {where}",
            [],
        )
    top = wins.iloc[0] if len(wins) else 0
    holds = wins.get(expected, 0) == top and (wins == top).sum() == 1
    return f"on {where}: {_wins_text(wins, total)}", holds, "", ids(frame)


@observation("VII", "Spatial pack is generally the best dense algorithm on CPU when tuned.")
def spatial_pack_on_cpu(table: pd.DataFrame, obs: Observation) -> Finding:
    test = (
        "fastest dense algorithm in each (model, CPU device, compression) group of tuned TVM "
        "cells with spatial_pack and >= 1 other dense algorithm; holds if spatial_pack wins "
        "strictly the most groups"
    )
    text, holds, missing, run_ids = _best_algorithm(
        obs, table, gpu=False, sparse=False, expected="spatial_pack", tuned=True
    )
    if holds is None:
        return obs.untestable(test, missing)
    return obs.finding(
        verdict(holds), test, text, f"Best tuned dense algorithm {text}.", run_ids=run_ids
    )


@observation("VIII", "Direct is generally the best dense algorithm on GPU when tuned.")
def direct_on_gpu(table: pd.DataFrame, obs: Observation) -> Finding:
    test = (
        "fastest dense algorithm in each (model, GPU device, compression) group of tuned TVM "
        "cells with direct and >= 1 other dense algorithm; holds if direct wins strictly the "
        "most groups"
    )
    if not table["gpu"].any():
        return obs.untestable(test, "needs a GPU device (device=cuda, xavier or hikey_gpu)")
    text, holds, missing, run_ids = _best_algorithm(
        obs, table, gpu=True, sparse=False, expected="direct", tuned=True
    )
    if holds is None:
        return obs.untestable(test, missing)
    return obs.finding(
        verdict(holds), test, text, f"Best tuned dense algorithm {text}.", run_ids=run_ids
    )


@observation("IX", "GEMM is generally the best sparse algorithm on CPU (direct on GPU).")
def sparse_algorithms(table: pd.DataFrame, obs: Observation) -> Finding:
    test = (
        "fastest sparse algorithm in each (model, device, compression, tuning) group of TVM cells "
        "with >= 2 sparse algorithms: holds if sparse_gemm wins strictly the most groups on "
        "CPUs and sparse_direct on GPUs"
    )
    parts, missing, run_ids, ok = [], [], [], True
    for gpu, expected in ((False, "sparse_gemm"), (True, "sparse_direct")):
        text, holds, miss, rids = _best_algorithm(
            obs, table, gpu=gpu, sparse=True, expected=expected, tuned=False
        )
        if holds is None:
            missing.append(
                miss if not gpu or table["gpu"].any() else "the GPU part needs a GPU device"
            )
            continue
        ok &= holds
        parts.append(text)
        run_ids += rids
    if not parts:
        return obs.untestable(test, *missing)
    return obs.finding(
        verdict(ok),
        test,
        "; ".join(parts),
        f"Best sparse algorithm {'; '.join(parts)}.",
        missing=missing,
        run_ids=run_ids,
    )
