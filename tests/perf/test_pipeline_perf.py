"""A TVM run logs perf/gflops, perf/fraction_of_peak and the profile/layers table."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from dlas import pipeline
from dlas.devices import roofline as rl
from dlas.tracking import tracking_uri


@pytest.fixture(autouse=True)
def _no_leaked_active_run():
    yield
    while mlflow.active_run():
        mlflow.end_run()


def test_run_logs_roofline_fraction_and_profile(compose_cfg, tiny, monkeypatch):
    fake = rl.Roofline(2, "cpu", {"float32": 100.0}, {"memory": 10.0, "cache": 50.0})
    monkeypatch.setattr(rl, "measure", lambda threads, target=None: fake)
    cfg = compose_cfg(*tiny("eval.roofline=true"))
    metrics = pipeline.run(cfg)

    expected = 2 * metrics["model/macs"] / (metrics["latency/median_ms"] * 1e-3) / 1e9
    assert metrics["perf/gflops"] == pytest.approx(expected)
    assert metrics["perf/fraction_of_peak"] == pytest.approx(expected / 100.0)
    client = MlflowClient(tracking_uri(cfg))
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    (run,) = client.search_runs([exp.experiment_id])
    logged = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/profile/layers.json")
    table = dict(zip(logged["columns"], zip(*logged["data"], strict=True), strict=True))
    assert any("conv2d" in k for k in table["kernel"])
    assert abs(sum(table["share"]) - 1) < 0.01
    assert any(g for g in table["gflops"] if g)
