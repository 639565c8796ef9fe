"""Paper-style tables: per model and device, one row per compression × algorithm × tuning cell,
with the best value of each column marked."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

COMPRESSION_ORDER = ["dense", "weight_pruning", "channel_pruning", "fp16", "int8"]


@dataclass
class Column:
    title: str
    value: Callable[[pd.Series], float]
    fmt: str
    better: str | None  # "min" | "max" | None (not marked)


COLUMNS = [
    Column("latency (ms)", lambda r: r["latency_ms"], "{:.4g}", "min"),
    Column("speedup", lambda r: r["speedup"], "{:.3g}x", "max"),
    Column("top-1 (%)", lambda r: 100 * r["accuracy"], "{:.2f}", "max"),
    Column("drop (pt)", lambda r: r["drop"], "{:.2f}", "min"),
    Column("MACs (M)", lambda r: r["eff_macs"] / 1e6, "{:.4g}", "min"),
    Column("params (k)", lambda r: r["eff_params"] / 1e3, "{:.4g}", "min"),
    Column("size (KiB)", lambda r: r["eff_size"] / 1024, "{:.4g}", "min"),
]


@dataclass
class Table:
    title: str  # "resnet18 · digits 32px on local_cpu"
    keys: list[tuple[str, str, str]]  # (compression, algorithm, tuning) per row
    values: list[list[float]]  # per row, per COLUMNS
    best: list[set[int]]  # per column: the rows holding its best value
    run_ids: list[str]
    experiment_ids: list[str]

    def cell(self, row: int, col: int) -> str:
        v = self.values[row][col]
        return "–" if v is None or not math.isfinite(v) else COLUMNS[col].fmt.format(v)


def _order(row: pd.Series) -> tuple:
    comp = row["compression"]
    rank = COMPRESSION_ORDER.index(comp) if comp in COMPRESSION_ORDER else len(COMPRESSION_ORDER)
    return (rank, comp, str(row["algorithm"]), row["tuning"] != "untuned", str(row["tuning"]))


def paper_tables(cells_: pd.DataFrame) -> list[Table]:
    out = []
    for (model, device), g in cells_.groupby(["model_id", "device"]):
        rows = sorted((r for _, r in g.iterrows()), key=_order)
        values = [[float(col.value(r)) for col in COLUMNS] for r in rows]
        best = []
        for j, col in enumerate(COLUMNS):
            finite = [v[j] for v in values if math.isfinite(v[j])]
            if not finite or col.better is None or len(set(finite)) < 2:
                best.append(set())
                continue
            target = min(finite) if col.better == "min" else max(finite)
            best.append({i for i, v in enumerate(values) if v[j] == target})
        out.append(
            Table(
                f"{model} on {device}",
                [(r["compression"], str(r["algorithm"]), r["tuning"]) for r in rows],
                values,
                best,
                [r["run_id"] for r in rows],
                [str(r["experiment_id"]) for r in rows],
            )
        )
    return out
