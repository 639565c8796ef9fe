"""The winner of a sweep or study, registered in the MLflow Model Registry.

Convention:

- one registered model per model and device: ``dlas-<model>-<device>`` (``model=custom`` and
  ``model=onnx`` add the callable's or the file's name), since latency only compares on one
  device and accuracy only on one model;
- the candidate is the lowest ``latency/median_ms`` among the finished runs whose accuracy drop
  vs the dense model is known and within the sweep's limit (the summary's "best feasible");
- the alias ``champion`` names the best version so far. A sweep whose candidate is faster than
  the champion adds a new version and moves the alias; a slower (or equally fast) one registers
  nothing, and says so. A run that already is a version is never registered twice, so the grid
  callback and the Optuna sweeper may both call :func:`register_best`.

Each version carries tags: the source run, the sweep's parent run, the study name, the layer
choices (``dlas.<layer>``), the overrides and the metrics it won with. Failures are warnings:
registering never fails the sweep.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dlas.metrics import DROP
from dlas.search.summary import ACCURACY, LATENCY, JobRecord, accuracy_drops

log = logging.getLogger(__name__)

ALIAS = "champion"
LAYERS = ("dataset", "model", "compression", "algorithm", "tuning", "device")


@dataclass
class Candidate:
    run_id: str
    metrics: dict[str, float]
    drop: float | None
    overrides: list[str] = field(default_factory=list)


def from_records(records: Sequence[JobRecord], accuracy: str = ACCURACY) -> list[Candidate]:
    """A grid sweep's finished jobs (with the summary's accuracy drops)."""
    drops = accuracy_drops(records, accuracy)
    return [
        Candidate(r.run_id, r.metrics, drops.get(r.num), list(r.overrides))
        for r in records
        if r.status == "FINISHED" and r.run_id
    ]


def from_study(study: Any) -> list[Candidate]:
    """An Optuna study's completed trials (drops as the sweeper recorded them)."""
    from optuna.trial import TrialState

    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        attrs = t.user_attrs
        if not attrs.get("mlflow_run_id") or attrs.get("dlas.latency") is None:
            continue
        metrics = {LATENCY: float(attrs["dlas.latency"])}
        if attrs.get("dlas.accuracy") is not None:
            metrics[ACCURACY] = float(attrs["dlas.accuracy"])
        out.append(
            Candidate(
                str(attrs["mlflow_run_id"]),
                metrics,
                attrs.get("dlas.accuracy_drop"),
                list(attrs.get("dlas.overrides") or []),
            )
        )
    return out


def feasible(
    candidates: Sequence[Candidate], max_accuracy_drop: float | None, latency: str = LATENCY
) -> list[Candidate]:
    return [
        c
        for c in candidates
        if latency in c.metrics
        and (max_accuracy_drop is None or (c.drop is not None and c.drop <= max_accuracy_drop))
    ]


def registered_name(run: Any) -> str:
    tags, params = run.data.tags, run.data.params
    model = tags.get("dlas.model", "model")
    if params.get("model.source"):
        model += "-" + params["model.source"].rsplit(":", 1)[-1]
    elif params.get("model.path"):
        model += "-" + re.sub(r"\.onnx$", "", params["model.path"].rsplit("/", 1)[-1])
    name = f"dlas-{model}-{tags.get('dlas.device', 'device')}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def register_best(
    cfg: Any,
    candidates: Sequence[Candidate],
    max_accuracy_drop: float | None,
    *,
    latency: str = LATENCY,
    parent_run_id: str | None = None,
    study_name: str | None = None,
) -> list[Any]:
    """Register each model-and-device group's best feasible run if it beats the champion;
    returns the versions created. Never raises."""
    if not cfg.tracking.register_best:
        return []
    try:
        return _register(cfg, candidates, max_accuracy_drop, latency, parent_run_id, study_name)
    except Exception as exc:  # noqa: BLE001 - a registry problem must not fail the sweep
        log.warning("could not register the sweep's best model: %s: %s", type(exc).__name__, exc)
        return []


def _register(
    cfg: Any,
    candidates: Sequence[Candidate],
    max_accuracy_drop: float | None,
    latency: str,
    parent_run_id: str | None,
    study_name: str | None,
) -> list[Any]:
    from mlflow import MlflowClient

    from dlas import tracking

    uri = tracking.tracking_uri(cfg)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    best: dict[str, tuple[Candidate, Any]] = {}
    for cand in feasible(candidates, max_accuracy_drop, latency):
        run = client.get_run(cand.run_id)
        name = registered_name(run)
        if name not in best or cand.metrics[latency] < best[name][0].metrics[latency]:
            best[name] = (cand, run)
    if not best:
        log.info("model registry: no finished run within the accuracy limit; nothing registered")
    created = []
    for name, (cand, run) in sorted(best.items()):
        version = _register_one(
            client, name, cand, run, latency, max_accuracy_drop, parent_run_id, study_name
        )
        if version is not None:
            created.append(version)
    return created


def _register_one(
    client: Any,
    name: str,
    cand: Candidate,
    run: Any,
    latency: str,
    max_accuracy_drop: float | None,
    parent_run_id: str | None,
    study_name: str | None,
) -> Any:
    from mlflow.exceptions import MlflowException

    model_uri = run.data.tags.get("dlas.model.uri")
    if not model_uri:
        reason = run.data.tags.get("dlas.model.logged", "tracking.log_model=false")
        log.warning(
            "model registry: best run %s of %s has no model (%s)", run.info.run_id, name, reason
        )
        return None
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name,
            tags={
                "dlas.model": run.data.tags.get("dlas.model", ""),
                "dlas.device": run.data.tags.get("dlas.device", ""),
            },
            description=(
                f"dlas: the fastest configuration of {run.data.tags.get('dlas.model')} on "
                f"{run.data.tags.get('dlas.device')} within the accuracy limit of its sweep; "
                f"alias '{ALIAS}' names the best version so far."
            ),
        )
    versions = client.search_model_versions(f"name = '{name}'")
    if any(v.run_id == run.info.run_id for v in versions):
        log.info("model registry: %s already holds run %s", name, run.info.run_id)
        return None
    mine = cand.metrics[latency]
    champion = _champion(client, name)
    if champion is not None:
        held = float(champion.tags.get(latency, "inf"))
        if mine >= held:
            log.info(
                "model registry: %s stays at version %s (%.4g ms); this sweep's best is %.4g ms",
                name,
                champion.version,
                held,
                mine,
            )
            return None
    tags = {
        "dlas.source_run_id": run.info.run_id,
        "dlas.sweep.parent_run_id": parent_run_id or "",
        "optuna.study_name": study_name or "",
        "dlas.overrides": json.dumps(cand.overrides)[:5000],
        "dlas.max_accuracy_drop": "" if max_accuracy_drop is None else str(max_accuracy_drop),
        **{f"dlas.{layer}": run.data.tags.get(f"dlas.{layer}", "") for layer in LAYERS},
        **{
            k: str(v)
            for k, v in run.data.metrics.items()
            if k in (latency, ACCURACY, DROP, "latency/speedup_vs_eager", "accuracy/top5")
        },
    }
    if cand.drop is not None:
        tags[DROP] = str(cand.drop)
    model_id = model_uri.removeprefix("models:/")
    version = client.create_model_version(
        name, source=model_uri, run_id=run.info.run_id, tags=tags, model_id=model_id
    )
    client.set_registered_model_alias(name, ALIAS, version.version)
    log.info(
        "model registry: %s version %s (%.4g ms, run %s) is the new %s",
        name,
        version.version,
        mine,
        run.info.run_id,
        ALIAS,
    )
    return version


def _champion(client: Any, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, ALIAS)
    except MlflowException:
        return None
