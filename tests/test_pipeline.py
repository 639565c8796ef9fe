"""End to end: one tiny run down the whole stack, read back through the MLflow client."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from dlas import pipeline
from dlas.config import ConfigError
from dlas.tracking import tracking_uri
from dlas.validity import InvalidCombination


def _runs(cfg) -> list:
    client = MlflowClient(tracking_uri(cfg))
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


@pytest.fixture(autouse=True)
def _no_leaked_active_run():
    yield
    while mlflow.active_run():
        mlflow.end_run()


def test_one_run_records_params_metrics_and_artifacts(compose_cfg, tiny):
    cfg = compose_cfg(*tiny())
    metrics = pipeline.run(cfg)

    (run,) = _runs(cfg)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "tiny_cnn-dense-direct-untuned-local_cpu"
    params = run.data.params
    assert params["model.name"] == "tiny_cnn" and params["device.timed_runs"] == "5"
    tags = run.data.tags
    assert tags["dlas.algorithm"] == "direct" and tags["version.apache-tvm"].startswith("0.27")
    logged = run.data.metrics
    for key in (
        "accuracy/top1",
        "accuracy/top5",
        "accuracy/pytorch_top1",
        "latency/median_ms",
        "latency/p90_ms",
        "latency/std_ms",
        "latency/p99_ms",
        "latency/median_ci_low_ms",
        "latency/median_ci_high_ms",
        "latency/noisy",
        "device/threads",
        "compile/seconds",
        "model/macs",
        "model/params",
        "compare/max_abs_logit_diff",
        "latency/pytorch_eager_median_ms",
        "latency/speedup_vs_eager",
    ):
        assert key in logged, key
    assert logged["algorithm/schedule_fallbacks"] == 0  # every kernel ran its own schedule
    # PyTorch eager timed in blocks alternating with the program's: the ratio of the two
    # medians, inside its interval.
    eager, speedup = logged["latency/pytorch_eager_median_ms"], logged["latency/speedup_vs_eager"]
    assert speedup == pytest.approx(eager / logged["latency/median_ms"])
    assert logged["latency/speedup_vs_eager_ci_low"] <= speedup
    assert speedup <= logged["latency/speedup_vs_eager_ci_high"]
    assert logged["latency/median_ms"] == pytest.approx(metrics["latency/median_ms"])
    assert logged["latency/median_ci_low_ms"] <= logged["latency/median_ms"]
    assert logged["latency/median_ms"] <= logged["latency/median_ci_high_ms"]
    assert (
        tags["latency.noisy"] == "false" if not logged["latency/noisy"] else tags["latency.noisy"]
    )
    assert tags["model.variant"] == "cifar"
    assert 0 <= logged["accuracy/top1"] <= 1
    # The compiled module computes what PyTorch computes, on logits that vary with the input.
    assert logged["compare/logit_spread"] > 1e-3
    assert logged["compare/max_abs_logit_diff"] < 1e-2 * logged["compare/logit_spread"]
    assert abs(logged["accuracy/top1"] - logged["accuracy/pytorch_top1"]) < 1e-9

    client = MlflowClient(tracking_uri(cfg))
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "latency", "compiled", "ir", "algorithm"} <= names
    samples = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/latency/samples.json")
    assert len(samples["samples"]) == len(samples["pytorch_eager_samples"]) == 5


def test_second_run_reuses_checkpoint_and_library(compose_cfg, tiny):
    pipeline.run(compose_cfg(*tiny()))
    cfg = compose_cfg(*tiny("device.timed_runs=3"))
    pipeline.run(cfg)
    newest = max(_runs(cfg), key=lambda r: r.info.start_time)
    assert newest.data.tags["model.checkpoint_cache_hit"] == "true"
    assert newest.data.tags["compile.cache_hit"] == "true"


def test_synthetic_data_logs_latency_but_never_accuracy(compose_cfg, tiny):
    cfg = compose_cfg(*tiny("dataset=synthetic"))
    pipeline.run(cfg)
    (run,) = _runs(cfg)
    assert "latency/median_ms" in run.data.metrics
    assert not any(k.startswith("accuracy/") for k in run.data.metrics)


def test_missing_dataset_is_a_failed_run_naming_the_path(compose_cfg, tiny, tmp_path):
    cfg = compose_cfg(*tiny("dataset=cifar10", f"dataset.root={tmp_path / 'none'}"))
    with pytest.raises(FileNotFoundError, match="dataset.download=true"):
        pipeline.run(cfg)
    (run,) = _runs(cfg)
    assert run.info.status == "FAILED"
    assert str(tmp_path / "none") in run.data.tags["error.message"]
    assert "latency/median_ms" not in run.data.metrics


def test_unknown_model_is_refused_before_any_run_listing_models(compose_cfg, tiny):
    cfg = compose_cfg(*tiny("model.name=nope"))
    with pytest.raises(InvalidCombination, match="model.name='nope'") as err:
        pipeline.run(cfg)
    assert "resnet18" in str(err.value) and "model=torchvision model.name=" in str(err.value)
    assert _runs(cfg) == []


def test_out_of_range_value_records_nothing(compose_cfg, tiny):
    cfg = compose_cfg(*tiny("device.timed_runs=0"))
    with pytest.raises(ConfigError, match="device.timed_runs"):
        pipeline.run(cfg)
    assert _runs(cfg) == []
