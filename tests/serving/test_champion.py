"""The winner of a sweep in the Model Registry: a better sweep adds a version and moves the
``champion`` alias; a worse one, an infeasible one or a repeated one adds nothing."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from dlas import pipeline
from dlas.metrics import DROP
from dlas.search.summary import LATENCY, JobRecord
from dlas.serving import champion
from tests.serving.conftest import compose_tiny


def _record(num: int, run_id: str, latency: float, drop: float) -> JobRecord:
    return JobRecord(
        num=num,
        overrides=[f"device.timed_runs={num + 3}"],
        status="FINISHED",
        run_id=run_id,
        choices={"model": "tiny_cnn", "compression": "dense"},
        metrics={LATENCY: latency, DROP: drop},
    )


@pytest.fixture(scope="module")
def second_run(logged_run) -> str:
    # Same store and caches: the checkpoint and the library are reused (seconds).
    pipeline.run(compose_tiny(logged_run.root, "device.timed_runs=3"))
    return mlflow.last_active_run().info.run_id


def test_better_sweeps_add_versions_and_worse_ones_do_not(logged_run, second_run):
    cfg = compose_tiny(logged_run.root)
    client = MlflowClient(logged_run.uri, logged_run.uri)
    first = [_record(0, logged_run.run_id, 5.0, 0.0), _record(1, second_run, 1.0, 3.0)]

    def register(records, limit=1.0):
        return champion.register_best(
            cfg, champion.from_records(records), limit, parent_run_id="parent-1"
        )

    # Job 1 is faster but loses 3 points of top-1: over the 1-point limit.
    (v1,) = register(first)
    name = "dlas-tiny_cnn-local_cpu"
    assert v1.name == name and v1.run_id == logged_run.run_id
    held = client.get_model_version_by_alias(name, "champion")
    assert held.version == v1.version
    tags = held.tags
    assert tags["dlas.algorithm"] == "direct" and tags["dlas.sweep.parent_run_id"] == "parent-1"
    assert float(tags[LATENCY]) > 0 and "accuracy/top1" in tags

    assert register([_record(0, second_run, 1e9, 0.0)]) == []  # slower: nothing new
    assert register(first) == []  # the same run again: nothing new
    assert len(client.search_model_versions(f"name = '{name}'")) == 1

    (v2,) = register([_record(0, second_run, 1e-6, 0.0)])  # faster than the champion
    assert client.get_model_version_by_alias(name, "champion").version == v2.version
    assert len(client.search_model_versions(f"name = '{name}'")) == 2
    # The registered version loads like the run's own model.
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert model.metadata.flavors["dlas"]["library"] == "data/model.so"


def test_opt_out_and_empty_sweeps_register_nothing(logged_run):
    off = compose_tiny(logged_run.root, "tracking.register_best=false")
    records = champion.from_records([_record(0, logged_run.run_id, 1e-9, 0.0)])
    assert champion.register_best(off, records, 1.0) == []
    on = compose_tiny(logged_run.root)
    assert champion.register_best(on, [], 1.0) == []
    assert champion.register_best(on, records, None, latency="no/such_metric") == []
