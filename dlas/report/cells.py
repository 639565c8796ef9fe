"""Derived quantities the tables, plots and observations share.

A *cell* is one (model, device, compression, algorithm, tuning) combination; when several runs
fill one cell (repeats, other thread counts or pruning amounts) the fastest finished run stands
for it. *Effective* cost counts what the compressed model really computes and stores: a
weight-pruned model's MACs and parameters scaled by its density (``1 - model/sparsity``; exact
for layer-wise pruning, whose sparsity is the same in every conv/linear layer), and fp16/int8
weights at 2/1 bytes. The expected (MACs-proportional) speedup is dense MACs / effective MACs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

UNTUNED = "untuned"
# Tuning options that run outside TVM: the algorithm layer does not apply to them.
BASELINE_TUNINGS = ("pytorch", "torch_compile", "onnxruntime")
DENSE = "dense"
PRUNINGS = ("weight_pruning", "channel_pruning")
QUANTIZATIONS = ("fp16", "int8")
REFERENCE_ALGORITHM = "direct"
# Inputs up to this size are CIFAR-size models (dlas builds the CIFAR variants up to 64 px);
# larger ones are ImageNet-size.
SMALL_IMAGE = 64
CELL = ["model_id", "device", "compression", "algorithm", "tuning"]
DTYPE_BYTES_FACTOR = {"fp16": 0.5, "int8": 0.25}  # vs the float32 weights size_bytes counts


def finished(table: pd.DataFrame) -> pd.DataFrame:
    """Finished runs that measured a latency, with the derived columns."""
    done = table[(table["status"] == "FINISHED") & table["latency_ms"].notna()].copy()
    return derive(done)


def derive(table: pd.DataFrame) -> pd.DataFrame:
    t = table.copy()
    size = t["image_size"].map(lambda v: "" if pd.isna(v) else f" {int(v)}px")
    t["model_id"] = t["model"].astype(str) + " · " + t["dataset"].astype(str) + size
    t["large"] = t["image_size"] > SMALL_IMAGE
    t["tvm"] = ~t["tuning"].isin(BASELINE_TUNINGS)
    t["tuned"] = t["tvm"] & (t["tuning"] != UNTUNED)
    t["sparse_algorithm"] = t["algorithm"].astype(str).str.startswith("sparse_")
    density = 1 - t["sparsity"].fillna(0.0)
    t["eff_macs"] = t["macs"] * density
    t["eff_params"] = t["params"] * density
    t["eff_size"] = t["size_bytes"] * density * t["compression"].map(DTYPE_BYTES_FACTOR).fillna(1.0)
    dense_macs = t["dense_macs"].fillna(_dense_value(t, "macs"))
    t["expected_speedup"] = dense_macs / t["eff_macs"]
    # Drop in points of top-1: logged by compressed runs; else vs the best dense run.
    dense_acc = _dense_value(t, "accuracy", best=max)
    t["drop"] = t["drop"].fillna(100 * (dense_acc - t["accuracy"]))
    ref = t[
        (t["compression"] == DENSE)
        & (t["algorithm"] == REFERENCE_ALGORITHM)
        & (t["tuning"] == UNTUNED)
    ]
    ref_lat = ref.groupby(["model_id", "device"])["latency_ms"].min()
    keys = list(zip(t["model_id"], t["device"], strict=True))
    t["reference_ms"] = [ref_lat.get(k, np.nan) for k in keys]
    t["speedup"] = t["reference_ms"] / t["latency_ms"]
    return t


def _dense_value(t: pd.DataFrame, column: str, best=min) -> pd.Series:
    """Per row: ``column`` of the dense runs of the same model (NaN where there are none)."""
    dense = t[t["compression"] == DENSE].groupby("model_id")[column]
    values = dense.max() if best is max else dense.min()
    return t["model_id"].map(values)


def cells(table: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: the fastest finished run of each (model, device, compression,
    algorithm, tuning)."""
    done = finished(table)
    if done.empty:
        return done
    idx = done.groupby(CELL, dropna=False)["latency_ms"].idxmin()
    return done.loc[idx.values].reset_index(drop=True)


def best(cells_: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """The fastest cell of each ``by`` group."""
    if cells_.empty:
        return cells_
    idx = cells_.groupby(by, dropna=False)["latency_ms"].idxmin()
    return cells_.loc[idx.values].reset_index(drop=True)


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other beats: lower latency and higher accuracy, by latency."""
    front = []
    for i, (lat, acc) in enumerate(points):
        beaten = any(lo <= lat and ao >= acc and (lo < lat or ao > acc) for lo, ao in points)
        if not beaten:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])
