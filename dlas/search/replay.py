"""Replay a search against recorded results: the guided sweep's own loop (sampling, validity,
duplicates, dense baselines), with the runs looked up in an exhaustive sweep's MLflow runs
instead of launched. Used by ``benchmarks/search.py`` to measure what guidance saves."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dlas.layers import MODEL_GROUPS
from dlas.metrics import BASELINE_COMPRESSION, DenseBaselines
from dlas.metrics import LATENCY as LATENCY
from dlas.metrics import TOP1 as ACCURACY
from dlas.search.oracle import Inspection, Oracle
from dlas.search.space import Param, Verdict, signature
from dlas.search.sweeper import GuidedSweep, SweeperSettings


@dataclass
class Recorded:
    assignment: dict[str, str]  # searched parameter path → value, as the job overrides said
    status: str
    metrics: dict[str, float]


def _parse(overrides: Sequence[str]) -> dict[str, str]:
    return {o.split("=", 1)[0].lstrip("+~"): o.split("=", 1)[1] for o in overrides if "=" in o}


def load_runs(tracking_uri: str, study_name: str, params: Sequence[Param]) -> list[Recorded]:
    """The child runs a study launched (tag ``optuna.study_name``), keyed by their searched
    parameters (from the ``dlas.sweep.overrides`` tag the sweep callback writes)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiments, f"tags.`optuna.study_name` = '{study_name}'", max_results=50000
    )
    paths = {p.path for p in params}
    out = []
    for run in runs:
        if "mlflow.parentRunId" not in run.data.tags:
            continue  # the parent
        given = _parse(json.loads(run.data.tags.get("dlas.sweep.overrides", "[]")))
        assignment = {k: v for k, v in given.items() if k in paths}
        status = "FINISHED" if run.info.status == "FINISHED" else "FAILED"
        out.append(Recorded(assignment, status, dict(run.data.metrics)))
    return out


def _key(assignment: dict[str, Any]) -> str:
    return signature({k: str(v) for k, v in assignment.items()})


def _model_key(assignment: dict[str, Any]) -> str:
    return json.dumps(
        {k: str(v) for k, v in sorted(assignment.items()) if k.split(".")[0] in MODEL_GROUPS}
    )


def ground_truth(
    records: Sequence[Recorded], max_drop: float, latency: str = LATENCY, accuracy: str = ACCURACY
) -> tuple[float, dict[str, tuple[float, bool]]]:
    """Best feasible latency of the exhaustive sweep, and per configuration its latency and
    whether it is feasible (accuracy drop vs the same model's dense run <= ``max_drop``
    points)."""
    baselines = DenseBaselines()
    for r in records:
        if r.status == "FINISHED":
            compression = r.assignment.get("compression", BASELINE_COMPRESSION)
            baselines.add(_model_key(r.assignment), compression, r.metrics.get(accuracy))
    table: dict[str, tuple[float, bool]] = {}
    for r in records:
        if r.status != "FINISHED" or latency not in r.metrics:
            continue
        drop = baselines.drop(_model_key(r.assignment), r.metrics, accuracy)
        feasible = drop is not None and drop <= max_drop + 1e-9
        table[_key(r.assignment)] = (r.metrics[latency], feasible)
    feasible = [lat for lat, ok in table.values() if ok]
    if not feasible:
        raise ValueError("no feasible configuration in the recorded sweep")
    return min(feasible), table


class RecordedOracle(Oracle):
    """A combination is valid iff the exhaustive sweep ran it (its validity was decided there by
    dlas.validity); a key applies iff the recorded runs of that combination set it."""

    def __init__(self, records: Sequence[Recorded]) -> None:
        self.records = [r.assignment for r in records]

    def _matching(self, overrides: Sequence[str]) -> list[dict[str, str]]:
        given = _parse(overrides)
        return [a for a in self.records if all(a.get(k) == str(v) for k, v in given.items())]

    def inspect(self, overrides: Sequence[str]) -> Inspection:
        given = _parse(overrides)
        ok = self._matching(overrides)
        return Inspection(
            [] if ok else ["not in the recorded sweep"],
            None,
            {k: v for k, v in given.items() if "." not in k},
        )

    def __call__(self, overrides: list[str], probes: Sequence[str] = ()) -> Verdict:
        ok = self._matching(overrides)
        present = {k for a in ok for k in a if k in probes}
        return Verdict([] if ok else ["not in the recorded sweep"], present)


class TargetReached(Exception):
    """The replay evaluated a configuration within the tolerance of the best one."""


class ReplaySweep(GuidedSweep):
    """:class:`GuidedSweep` whose jobs are answered from the records; counts the runs."""

    def __init__(
        self,
        settings: SweeperSettings,
        records: Sequence[Recorded],
        target_latency: float,
        truth: dict[str, tuple[float, bool]],
        max_accuracy_drop: float | None = 1.0,
    ) -> None:
        super().__init__(settings, max_accuracy_drop, track=False)
        self.results = {_key(r.assignment): r for r in records}
        self.target = target_latency
        self.truth = truth
        self.launched: list[str] = []

    def run_jobs(self, overrides: list[list[str]]) -> list[dict[str, Any]]:
        out = []
        for job in overrides:
            key = _key(_parse(job))
            self.launched.append(key)
            rec = self.results[key]
            out.append({"status": rec.status, **rec.metrics})
        for key in self.launched[-len(overrides) :]:
            latency, feasible = self.truth.get(key, (math.inf, False))
            if feasible and latency <= self.target:
                raise TargetReached(len(self.launched))
        return out
