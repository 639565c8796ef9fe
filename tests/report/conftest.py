"""Hand-made run tables: one helper per run, so each test states the numbers it judges."""

from __future__ import annotations

from typing import Any

import pandas as pd

from dlas.report import make_table

_counter = iter(range(10**9))


def run(
    model: str = "m",
    compression: str = "dense",
    algorithm: str = "direct",
    tuning: str = "untuned",
    device: str = "local_cpu",
    latency: float = 1.0,
    accuracy: float | None = 0.9,
    macs: float = 1e8,
    params: float = 1e6,
    image_size: int = 32,
    **extra: Any,
) -> dict[str, Any]:
    row = {
        "run_id": f"{next(_counter):032x}",
        "experiment_id": "1",
        "run_name": f"{model}-{compression}-{algorithm}-{tuning}-{device}",
        "status": "FINISHED",
        "dataset": "digits",
        "model": model,
        "compression": compression,
        "algorithm": algorithm,
        "tuning": tuning,
        "device": device,
        "latency_ms": latency,
        "accuracy": accuracy,
        "macs": macs,
        "dense_macs": macs,
        "params": params,
        "size_bytes": 4 * params,
        "sparsity": 0.0,
        "image_size": image_size,
        "target_kind": "cuda" if device == "cuda" else "llvm",
    }
    row.update(extra)
    return row


def table(*rows: dict[str, Any]) -> pd.DataFrame:
    return make_table(list(rows))
