"""Sweep summary and the accuracy-drop bookkeeping (no runs)."""

from __future__ import annotations

import math

from dlas.search.objectives import Baselines, create_objective
from dlas.search.report import pareto_front
from dlas.search.summary import JobRecord, accuracy_drops, records_csv, summarize


def rec(num, status, comp="dense", model="resnet18", lat=None, acc=None, reason="", **extra):
    metrics = {
        k: v for k, v in {"latency/median_ms": lat, "accuracy/top1": acc}.items() if v is not None
    }
    metrics.update(extra)
    return JobRecord(
        num=num,
        overrides=[f"model={model}", f"compression={comp}", "x=1"],
        status=status,
        reason=reason,
        choices={"model": model, "compression": comp, "dataset": "digits"},
        metrics=metrics,
    )


def test_drop_from_dense_jobs_of_the_same_model() -> None:
    records = [
        rec(0, "FINISHED", "dense", lat=5.0, acc=0.90),
        rec(1, "FINISHED", "int8", lat=2.0, acc=0.85),
        rec(2, "FINISHED", "fp16", lat=3.0, acc=0.895),
        rec(3, "FINISHED", "int8", "mobilenet_v2", lat=1.0, acc=0.5),
        rec(
            4,
            "FINISHED",
            "fp16",
            "mobilenet_v2",
            lat=1.5,
            acc=0.4,
            **{"accuracy/drop_vs_dense": 0.2},
        ),
    ]
    drops = accuracy_drops(records)
    assert math.isclose(drops[1], 5.0) and math.isclose(drops[2], 0.5)  # points
    assert drops[0] == 0 and 3 not in drops  # no dense mobilenet_v2 in the sweep
    assert drops[4] == 0.2  # the run's own metric wins


def test_summary_lists_best_skipped_and_failed() -> None:
    records = [
        rec(0, "FINISHED", "dense", lat=5.0, acc=0.90),
        rec(1, "FINISHED", "int8", lat=2.0, acc=0.85),
        rec(2, "FINISHED", "fp16", lat=3.0, acc=0.895),
        rec(3, "SKIPPED", "fp16", reason="sparse needs zeros"),
        rec(4, "FAILED", "int8", reason="boom"),
    ]
    text, metrics = summarize(records, max_accuracy_drop=1.0)
    assert metrics["sweep/skipped"] == 1 and metrics["sweep/failed"] == 1
    assert metrics["best/latency_ms"] == 2.0
    assert metrics["best/feasible_latency_ms"] == 3.0  # int8 lost 5 points
    assert "sparse needs zeros" in text and "boom" in text
    assert "x=1" not in text  # the shared part of the command is not repeated per job
    assert records_csv(records).count("\n") == 6


def test_baselines_and_objectives() -> None:
    b = Baselines()
    b.add("k", "int8", 0.5)
    assert b.drop("k", {"accuracy/top1": 0.5}, "accuracy/top1") is None
    b.add("k", "dense", 0.9)
    b.add("k", "dense", 0.8)
    assert math.isclose(b.drop("k", {"accuracy/top1": 0.85}, "accuracy/top1"), 5.0)
    assert b.drop("k", {"accuracy/drop_vs_dense": 0.3}, "accuracy/top1") == 0.3
    latency = create_objective("latency", max_accuracy_drop=1.0)
    assert latency.constrained and latency.directions == ("minimize",)
    assert not create_objective("latency", max_accuracy_drop=None).constrained
    pareto = create_objective("pareto")
    assert pareto.values({"latency/median_ms": 2.0, "accuracy/top1": 0.5}) == [2.0, 0.5]


def test_pareto_front() -> None:
    points = [(1.0, 0.5), (2.0, 0.9), (1.5, 0.4), (3.0, 0.9), (0.5, 0.1)]
    assert pareto_front(points) == [4, 0, 1]


def test_study_name_and_storage_helpers(tmp_path) -> None:
    from dlas.search.study import default_storage, default_study_name, redact

    a = default_study_name(["x=1"], ["m=a,b"], "latency", 1.0)
    assert a == default_study_name(["x=1"], ["m=a,b"], "latency", 1.0)  # rerun → same study
    assert a != default_study_name(["x=2"], ["m=a,b"], "latency", 1.0)
    assert redact("postgresql://me:secret@db/optuna") == "postgresql://me:***@db/optuna"
    assert default_storage(str(tmp_path / "mlruns")).endswith("mlruns/optuna.db")


def test_job_result_reads_hydra_job_returns_through_the_public_api():
    from hydra.core.utils import JobReturn, JobStatus

    from dlas.search.summary import job_result

    done = JobReturn(status=JobStatus.COMPLETED)
    done.return_value = {"status": "FINISHED", "latency/median_ms": 1.0}
    assert job_result(done) is done.return_value  # the same dict: callers annotate it
    failed = JobReturn(status=JobStatus.FAILED)
    failed.return_value = RuntimeError("board vanished")
    assert job_result(failed) == {"status": "FAILED", "reason": "RuntimeError: board vanished"}
    odd = JobReturn(status=JobStatus.COMPLETED)
    odd.return_value = 3
    assert job_result(odd)["status"] == "FAILED"
