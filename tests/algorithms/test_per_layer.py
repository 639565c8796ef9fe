"""algorithm=per_layer: layers run the algorithm their index or shape is mapped to."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from dlas import pipeline
from dlas.algorithms import lower
from dlas.algorithms.per_layer import PerLayer
from dlas.config import validate
from dlas.tracking import tracking_uri
from dlas.validity import InvalidCombination, check
from tests.algorithms.util import Case, check_cases, conv_module, host_target, random_weights

# 0: 1x1, 1: 3x3 stride 1, 2: depthwise 3x3, 3: 3x3 stride 2, 4: 3x3 stride 1, 5: 5x5.
CASES = [
    Case(1, 16, 8, 8, 32, 1),
    Case(1, 16, 12, 12, 32, 3, pad=1),
    Case(1, 16, 10, 10, 16, 3, pad=1, groups=16),
    Case(2, 8, 11, 11, 24, 3, stride=2, pad=1),
    Case(1, 8, 20, 20, 16, 3, pad=1),
    Case(1, 8, 9, 9, 8, 5, pad=2),
]


def test_selectors_pick_each_layers_algorithm_and_results_match_pytorch():
    algorithm = PerLayer(
        default="gemm",
        layers={"k1": "spatial_pack", "k3s1": "gemm", "k3s2": "direct", 4: "spatial_pack"},
    )
    lowered = check_cases(algorithm, CASES, host_target())
    ran = [row["algorithm"] for row in lowered.layers]
    # An index beats a shape (4). gemm has no depthwise form: layer 2 falls back, and says so.
    assert ran == ["spatial_pack", "gemm", "direct", "direct", "spatial_pack", "gemm"]
    assert [bool(row["fallback"]) for row in lowered.layers] == [0, 0, 1, 0, 0, 0]


def test_depthwise_selector_and_the_instance_is_reusable():
    algorithm = PerLayer(default="spatial_pack", layers={"depthwise": "direct", "k5": "gemm"})
    target = host_target()
    rng = np.random.default_rng(0)
    cases = CASES[:3] + CASES[5:]
    weights = [random_weights(c, 0.0, rng) for c in cases]
    mod = conv_module(cases, weights, [np.zeros(c.oc, "float32") for c in cases])
    first = lower(mod, algorithm, target, schedule=False).layers
    second = lower(mod, algorithm, target, schedule=False).layers
    assert first == second  # a fresh layer table per lowering: indices start at 0 again
    assert [r["algorithm"] for r in first] == ["spatial_pack", "spatial_pack", "direct", "gemm"]
    assert not any(r["fallback"] for r in first)


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ({"k3x": "gemm"}, "is not a selector"),
        ({"k1": "fft"}, "cannot map a layer to 'fft'; available: direct, gemm"),
        ({"k1": "per_layer"}, "cannot map a layer to 'per_layer'"),
    ],
)
def test_bad_mappings_are_refused_before_compiling(compose_cfg, layers, message):
    cfg = compose_cfg(
        "algorithm=per_layer", *(f"+algorithm.layers.{k}={v}" for k, v in layers.items())
    )
    with pytest.raises(InvalidCombination, match=message):
        check(validate(cfg))


def test_a_sparse_mapping_needs_a_weight_pruned_model(compose_cfg):
    cfg = compose_cfg("algorithm=per_layer", "+algorithm.layers={k3s1: sparse_direct}")
    with pytest.raises(InvalidCombination, match="sparse_direct .mapped by algorithm=per_layer"):
        check(validate(cfg))
    check(
        validate(
            compose_cfg(
                "algorithm=per_layer",
                "compression=weight_pruning",
                "+algorithm.layers={k3s1: sparse_direct}",
            )
        )
    )


def test_run_logs_the_mixed_layer_table(compose_cfg, tiny):
    # tiny_cnn: 0 stem 3x3, 1 depthwise 3x3, 2 1x1, 3-4 3x3 stride 2, then the classifier.
    cfg = compose_cfg(*tiny("algorithm=per_layer", "+algorithm.layers={k1: gemm, 0: spatial_pack}"))
    metrics = pipeline.run(cfg)
    assert metrics["compare/max_abs_logit_diff"] < 1e-3 * metrics["compare/logit_spread"]
    client = MlflowClient(tracking_uri(cfg))
    (run,) = client.search_runs(
        [client.get_experiment_by_name(cfg.tracking.experiment).experiment_id]
    )
    params = run.data.params
    assert (
        params["algorithm.layers.k1"] == "gemm" and params["algorithm.layers.0"] == "spatial_pack"
    )
    table = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/algorithm/layers.json")
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    convs = [row["algorithm"] for row in rows if row["op"] == "conv2d"]
    assert convs == ["spatial_pack", "direct", "gemm", "direct", "direct"]
