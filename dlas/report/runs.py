"""A sweep's runs as one plain table: MLflow runs → a pandas DataFrame, one row per run.

The target is a parent run id, an Optuna study name (the ``optuna.study_name`` tag of a study's
parent run) or an experiment name (every run in it but sweep parents). Columns: the six layer
choices (tags ``dlas.<layer>``), the metrics the observations read, a few params, run id and
status. Hand-made tables (tests, a user's own data) go through :func:`make_table`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

LAYERS = ("dataset", "model", "compression", "algorithm", "tuning", "device")
PARENT_TAG = "dlas.sweep.parent"
STUDY_TAG = "optuna.study_name"

# column → MLflow metric
METRICS = {
    "latency_ms": "latency/median_ms",
    "accuracy": "accuracy/top1",
    "drop": "accuracy/drop_vs_dense",  # points of top-1
    "dense_top1": "accuracy/dense_top1",
    "macs": "model/macs",
    "dense_macs": "model/dense_macs",
    "params": "model/params",
    "size_bytes": "model/size_bytes",
    "sparsity": "model/sparsity",
}
# column → MLflow param (strings; converted below)
PARAMS = {
    "image_size": "dataset.image_size",
    "target_kind": "device.target.kind",
    "num_threads": "device.num_threads",
    "amount": "compression.amount",
    "tuning_trials": "tuning.trials",
}
COLUMNS = (
    ["run_id", "experiment_id", "run_name", "status", *LAYERS]
    + list(METRICS)
    + list(PARAMS)
    + ["error"]
)
GPU_TARGETS = ("cuda", "opencl", "vulkan", "rocm", "metal")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class ReportTargetError(LookupError):
    """The target names no run, study or experiment in this tracking store."""


def make_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A run table from plain dicts (missing columns are empty; extra ones are kept)."""
    table = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in table:
            table[col] = None
    for col in list(METRICS) + ["image_size"]:
        table[col] = pd.to_numeric(table[col], errors="coerce")
    if table["status"].isna().all():
        table["status"] = "FINISHED"
    table["run_id"] = [
        rid if isinstance(rid, str) and rid else f"row{i}" for i, rid in enumerate(table["run_id"])
    ]
    table["gpu"] = table["target_kind"].isin(GPU_TARGETS) | table["device"].isin(
        ["cuda", "hikey_gpu", "xavier"]
    )
    return table


def row_of(run: Any) -> dict[str, Any]:
    """One MLflow run → one row of the run table."""
    tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
    row: dict[str, Any] = {
        "run_id": run.info.run_id,
        "experiment_id": run.info.experiment_id,
        "run_name": tags.get("mlflow.runName", ""),
        "status": run.info.status,
        "error": tags.get("error.message", ""),
    }
    for layer in LAYERS:
        row[layer] = tags.get(f"dlas.{layer}") or params.get(f"{layer}.name")
    for col, key in METRICS.items():
        value = metrics.get(key)
        row[col] = value if value is not None and math.isfinite(value) else None
    for col, key in PARAMS.items():
        value = params.get(key)
        row[col] = None if value in (None, "None", "null") else value
    return row


@dataclass
class Source:
    """Where a report's runs came from."""

    tracking_uri: str
    description: str  # "parent run ... (study ...)" / "experiment ..."
    parent_run_id: str | None
    experiment_ids: list[str]
    runs: list[Any] = field(default_factory=list)
    client: Any = None
    parent: Any = None  # the parent MLflow run, when there is one

    @property
    def experiment_id(self) -> str | None:
        return self.experiment_ids[0] if self.experiment_ids else None


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else dlas's default store (``mlruns/mlflow.db`` here)."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{os.path.abspath('mlruns')}/mlflow.db"
    )


def find_source(target: str, tracking_uri: str | None = None, client: Any = None) -> Source:
    """Resolve a parent run id / Optuna study name / experiment name to its runs."""
    from mlflow import MlflowClient

    uri = tracking_uri or (client.tracking_uri if client is not None else default_tracking_uri())
    client = client or MlflowClient(tracking_uri=uri)
    experiments = client.search_experiments()
    exp_ids = [e.experiment_id for e in experiments]

    if _RUN_ID.match(target):
        try:
            parent = client.get_run(target)
        except Exception:  # noqa: BLE001 - MLflow raises its own error for unknown ids
            parent = None
        if parent is not None:
            return _from_parent(client, uri, parent, f"parent run {target}")
    if exp_ids:
        studies = client.search_runs(
            exp_ids, f"tags.`{STUDY_TAG}` = '{_quote(target)}' and tags.`{PARENT_TAG}` = 'true'"
        )
        if studies:
            parent = max(studies, key=lambda r: r.info.start_time)
            return _from_parent(client, uri, parent, f"Optuna study {target!r}")
    exp = client.get_experiment_by_name(target)
    if exp is not None:
        runs = [
            r
            for r in client.search_runs([exp.experiment_id], max_results=50000)
            if r.data.tags.get(PARENT_TAG) != "true"
        ]
        return Source(uri, f"experiment {target!r}", None, [exp.experiment_id], runs, client)
    raise ReportTargetError(
        f"{target!r} is neither a run id, an Optuna study name (tag {STUDY_TAG} of a sweep's "
        f"parent run) nor an experiment name in the MLflow store {uri}; experiments there: "
        f"{', '.join(sorted(e.name for e in experiments)) or 'none'} "
        "(set MLFLOW_TRACKING_URI or --tracking-uri for another store)"
    )


def _from_parent(client: Any, uri: str, parent: Any, description: str) -> Source:
    exp_id = parent.info.experiment_id
    runs = client.search_runs(
        [exp_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'", max_results=50000
    )
    if not runs and parent.data.tags.get(PARENT_TAG) != "true":
        up = parent.data.tags.get("mlflow.parentRunId")
        raise ReportTargetError(
            f"run {parent.info.run_id} has no nested runs: it is one run, not a sweep's parent"
            + (f" (its parent run is {up})" if up else "")
        )
    study = parent.data.tags.get(STUDY_TAG)
    if study and "study" not in description:
        description += f" (Optuna study {study!r})"
    return Source(uri, description, parent.info.run_id, [exp_id], list(runs), client, parent)


def _quote(text: str) -> str:
    return text.replace("'", "\\'")


def load_table(source: Source) -> pd.DataFrame:
    return make_table([row_of(r) for r in source.runs])
