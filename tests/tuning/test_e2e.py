"""End-to-end: MetaSchedule through dlas.pipeline.run on tiny_cnn, records reuse, baselines."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from dlas import pipeline
from tests.conftest import tiny_overrides

# Small enough for the default suite: a handful of trials on small candidate populations,
# no cost-model training (what is under test is the plumbing, not the search).
TUNE = (
    "tuning=metaschedule",
    "tuning.trials=8",
    "tuning.trials_per_iter=4",
    "tuning.cost_model=random",
    "++tuning.strategy_options={population_size:32,init_min_unmeasured:8}",
)


def run(compose_cfg, tmp: Path, *extra: str) -> tuple[dict[str, float], str]:
    metrics = pipeline.run(compose_cfg(*tiny_overrides(tmp, *extra)))
    return metrics, mlflow.last_active_run().info.run_id


def library_logits(cache: Path, tuning: dict, x: np.ndarray) -> np.ndarray:
    """Run the library the compile cache holds for this tuning config on ``x``."""
    import tvm
    from tvm import relax

    for spec_file in (cache / "compiled").glob("*/spec.json"):
        if json.loads(spec_file.read_text())["tuning"] == tuning:
            vm = relax.VirtualMachine(
                tvm.runtime.load_module(str(spec_file.parent / "model.so")), tvm.cpu()
            )
            vm.set_input("main", tvm.runtime.tensor(x, tvm.cpu()))
            vm.invoke_stateful("main")
            out = vm.get_outputs("main")
            while isinstance(out, tuple):
                out = out[0]
            return out.numpy()
    raise AssertionError(f"no library built for tuning={tuning}")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A cache and MLflow store shared by this module's runs: tiny_cnn is trained once."""
    from hydra import compose, initialize_config_module

    def compose_cfg(*overrides):
        with initialize_config_module("dlas.conf", version_base="1.3"):
            return compose("config", overrides=list(overrides))

    return compose_cfg, tmp_path_factory.mktemp("tuning-e2e")


@pytest.fixture(scope="module")
def tuned(workspace):
    """One tuned run shared by the tests below (export and tuning are the cost)."""
    compose_cfg, tmp = workspace
    metrics, run_id = run(compose_cfg, tmp, *TUNE)
    return compose_cfg, tmp, metrics, run_id


def test_tuned_build_tunes_logs_and_matches_pytorch(tuned):
    _, tmp, metrics, run_id = tuned
    assert metrics["tune/new_trials"] > 0
    assert metrics["tune/trials"] >= metrics["tune/new_trials"]
    assert metrics["tune/tasks_with_records"] >= 1
    assert metrics["compare/max_abs_logit_diff"] < 1e-3
    client = mlflow.tracking.MlflowClient()
    files = {f.path for f in client.list_artifacts(run_id, "tuning")}
    assert {
        "tuning/database_workload.json",
        "tuning/database_tuning_record.json",
        "tuning/tasks.json",
    } <= files
    rows = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path="tuning/tasks.json", dst_path=str(tmp / "dl")
            )
        ).read_text()
    )
    assert sum(r["new_trials"] for r in rows) == metrics["tune/new_trials"]
    assert any(r["source"] == "tuned" and r["best_us"] > 0 for r in rows)
    # The default schedule stays a candidate: no task is built slower than its default, as
    # measured by the same runner.
    seeded = [r for r in rows if r["default_schedule_us"] is not None]
    assert seeded and all(r["best_us"] <= r["default_schedule_us"] for r in seeded)
    # Where the records changed the build, it was timed whole against the untuned one.
    if "tune/model_speedup" in metrics:
        assert metrics["tune/kept_untuned"] == float(metrics["tune/model_speedup"] <= 1.0)
    # The shared database lives under the cache, per target.
    assert list((tmp / "cache" / "tuning").glob("*/database_tuning_record.json"))


def test_rerun_of_a_tuned_configuration_shows_the_reuse(tuned):
    compose_cfg, tmp, first, _ = tuned
    metrics, run_id = run(compose_cfg, tmp, *TUNE)  # same config: a compile-cache hit
    tags = mlflow.tracking.MlflowClient().get_run(run_id).data.tags
    assert tags["compile.cache_hit"] == "true"
    assert metrics["tune/new_trials"] == 0 and metrics["tune/seconds"] == 0
    assert metrics["tune/trials"] == first["tune/trials"]
    assert metrics["tune/tasks_with_records"] == first["tune/tasks_with_records"]


def test_tuned_untuned_and_pytorch_logits_agree(tuned):
    compose_cfg, tmp, _, _ = tuned
    run(compose_cfg, tmp, "tuning=untuned")
    cfg = compose_cfg(*tiny_overrides(tmp, *TUNE))
    untuned_cfg = compose_cfg(*tiny_overrides(tmp, "tuning=untuned"))
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    tuned_out = library_logits(tmp / "cache", _tuning_spec(cfg), x)
    untuned_out = library_logits(tmp / "cache", _tuning_spec(untuned_cfg), x)
    model = _checkpoint_model(cfg, tmp)
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()
    assert np.abs(tuned_out - reference).max() < 1e-3
    assert np.abs(tuned_out - untuned_out).max() < 1e-3
    assert np.abs(reference).max() > 1e-2  # the comparison is not between zeros


def test_reapplying_logged_records_needs_no_trials(tuned):
    compose_cfg, tmp, first, run_id = tuned
    metrics, _ = run(compose_cfg, tmp, "tuning=metaschedule", f"tuning.records={run_id}")
    assert metrics["tune/new_trials"] == 0
    # The logged records rebuild the build the run kept: none if the untuned one ran faster.
    kept_untuned = first.get("tune/kept_untuned", 0.0) == 1.0
    assert metrics["tune/tasks_with_records"] == (
        0 if kept_untuned else first["tune/tasks_with_records"]
    )
    cfg = compose_cfg(*tiny_overrides(tmp, *TUNE))
    applied = compose_cfg(*tiny_overrides(tmp, "tuning=metaschedule", f"tuning.records={run_id}"))
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(
        library_logits(tmp / "cache", _tuning_spec(applied), x),
        library_logits(tmp / "cache", _tuning_spec(cfg), x),
    )


def test_second_run_reuses_the_shared_database(tuned):
    compose_cfg, tmp, first, _ = tuned
    # Another seed: a different build (no compile-cache hit), the same workloads and budget.
    metrics, _ = run(compose_cfg, tmp, *TUNE, "tuning.seed=1")
    assert metrics["tune/new_trials"] == 0
    assert metrics["tune/trials"] == first["tune/trials"]
    assert metrics["tune/tasks_with_records"] == first["tune/tasks_with_records"]


def test_tuning_stops_when_tasks_stop_improving(tuned):
    # After the reuse tests: its trials add records to the shared database.
    compose_cfg, tmp, _, _ = tuned
    overrides = [o for o in TUNE if not o.startswith(("tuning.trials=", "tuning.trials_per_iter"))]
    # Rounds of 1 trial: a task that has not improved by 90% in its second round is done.
    stopping = (
        "tuning.stop_patience=1",
        "tuning.stop_min_improvement=0.9",
        "tuning.trials=32",
        "tuning.trials_per_iter=1",
    )
    metrics, _ = run(compose_cfg, tmp, *overrides, *stopping, "tuning.seed=3")
    assert metrics["tune/tasks_stopped_early"] >= 1
    assert 0 < metrics["tune/new_trials"] < 32
    assert metrics["compare/max_abs_logit_diff"] < 1e-3


@pytest.mark.parametrize("baseline", ["pytorch", "onnxruntime"])
def test_baseline_runs_outside_tvm_and_says_so(baseline, workspace, caplog):
    compose_cfg, tmp = workspace
    with caplog.at_level(logging.WARNING, logger="dlas.pipeline"):
        metrics, run_id = run(compose_cfg, tmp, f"tuning={baseline}", "algorithm=direct")
    assert metrics["compare/max_abs_logit_diff"] < 1e-3
    assert metrics["latency/median_ms"] > 0
    assert not any(k.startswith("tune/") for k in metrics)
    tags = mlflow.get_run(run_id).data.tags
    assert tags["dlas.algorithm.applies"] == "false"
    assert "algorithm=direct does not apply" in caplog.text


@pytest.mark.slow
def test_torch_compile_baseline(workspace):
    metrics, _ = run(*workspace, "tuning=torch_compile")
    assert metrics["compare/max_abs_logit_diff"] < 1e-3


def _tuning_spec(cfg) -> dict:
    from dlas.config import validate

    return json.loads(json.dumps(vars(validate(cfg).tuning), default=str))


def _checkpoint_model(cfg, tmp: Path) -> torch.nn.Module:
    from dlas.cache import Cache
    from dlas.config import validate
    from dlas.data import load_dataset
    from dlas.models import load_or_train

    typed = validate(cfg)
    data = load_dataset(typed.dataset)
    model, _ = load_or_train(typed.model, typed.dataset, data, Cache(tmp / "cache"))
    return model.eval()
