"""End to end: compressed runs down the whole stack, read back through MLflow."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from dlas import pipeline
from dlas.tracking import tracking_uri


@pytest.fixture(autouse=True)
def _no_leaked_active_run():
    yield
    while mlflow.active_run():
        mlflow.end_run()


def _last_run(cfg):
    client = MlflowClient(tracking_uri(cfg))
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])[0]


def test_weight_pruning_run_logs_sparsity_and_drop_vs_the_cached_dense_run(compose_cfg, tiny):
    dense = pipeline.run(compose_cfg(*tiny()))
    pruned_cfg = compose_cfg(
        *tiny(
            "compression=weight_pruning", "compression.amount=0.5", "compression.finetune_epochs=1"
        )
    )
    pruned = pipeline.run(pruned_cfg)

    assert pruned["compression/sparsity"] == pytest.approx(0.5, abs=1e-4)
    assert pruned["model/sparsity"] == pytest.approx(0.5, abs=1e-4)
    assert pruned["compression/cache_hit"] == 0.0
    # Against the dense run's compiled accuracy, cached by the dense run (not retrained).
    assert pruned["accuracy/dense_top1"] == dense["accuracy/top1"]
    assert pruned["accuracy/drop_vs_dense"] == pytest.approx(
        100 * (dense["accuracy/top1"] - pruned["accuracy/top1"])
    )
    run = _last_run(pruned_cfg)
    assert run.data.tags["accuracy.dense_reference"] == "compiled"
    assert run.data.metrics["accuracy/drop_vs_dense"] == pytest.approx(
        pruned["accuracy/drop_vs_dense"]
    )
    client = MlflowClient(tracking_uri(pruned_cfg))
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "compression")}
    assert "compression/sparsity_per_layer.json" in logged


def test_int8_run_reports_quantized_layers_also_from_a_cached_build(compose_cfg, tiny):
    cfg = compose_cfg(*tiny("compression=int8", "compression.calibration_batches=2"))
    first = pipeline.run(cfg)
    # tiny_cnn: every conv and the classifier are quantized.
    assert first["compression/int8_layers"] >= 5 and first["compression/float_layers"] == 0
    assert first["compression/calibration_samples"] == 64
    # No dense run yet: the reference is the dense PyTorch model on the same test samples.
    assert _last_run(cfg).data.tags["accuracy.dense_reference"] == "pytorch"
    assert "accuracy/drop_vs_dense" in first

    second = pipeline.run(cfg)
    run = _last_run(cfg)
    assert run.data.tags["compile.cache_hit"] == "true"
    assert second["compression/int8_layers"] == first["compression/int8_layers"]
    assert second["accuracy/top1"] == first["accuracy/top1"]
