"""The MetaSchedule tuner without a real search: budgets, reuse, defaults for the rest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tvm.s_tir import meta_schedule as ms

from dlas.cache import Cache
from dlas.config.schema import MetaScheduleTuningConfig
from dlas.tuning import TuneContext, create_tuner
from dlas.tuning.metaschedule import MetaSchedule
from dlas.tuning.records import RecordStore
from tests.tuning.helpers import host_target, lowered, mlp_module, run_module


def make(tmp: Path, **fields) -> tuple[MetaSchedule, TuneContext]:
    cfg = MetaScheduleTuningConfig(name="metaschedule", progress=False, **fields)
    return create_tuner(cfg), TuneContext(cache=Cache(tmp), work_dir=tmp / "work")


def reference(mod, x: np.ndarray) -> np.ndarray:
    import tvm

    return run_module(tvm.compile(mod, host_target()), x)


def test_share_spreads_the_budget_and_respects_the_cap(tmp_path):
    tuner, _ = make(tmp_path, trials=100)
    assert tuner.share(4) == 25
    tuner, _ = make(tmp_path, trials=100, trials_per_task=10)
    assert tuner.share(4) == 10


def test_small_budgets_evolve_small_populations(tmp_path):
    """16 candidates per trial a task gets, at least 32, at most the configured population."""
    tuner, _ = make(tmp_path)
    assert [tuner.strategy_options(s)["population_size"] for s in (16 / 18, 4, 100)] == [
        32,
        64,
        256,
    ]
    tuner, _ = make(tmp_path, population_per_trial=None)
    assert tuner.strategy_options(1)["population_size"] == 256
    tuner, _ = make(tmp_path, strategy="replay-trace", strategy_options={})
    assert tuner.strategy_options(1) == {}


def test_tasks_tuned_with_enough_budget_are_skipped(tmp_path, monkeypatch):
    """Only tasks whose workloads lack records for this budget reach the search."""
    calls = []

    def fake_tune(self, todo, target, store, share, ctx, builder, runner):
        calls.append(sorted(t.task_name for t in todo))
        return {t.task_name: 0 for t in todo}

    monkeypatch.setattr(MetaSchedule, "_tune", fake_tune)
    mod, target = mlp_module(), host_target()
    tuner, ctx = make(tmp_path, trials=8)
    tuner.compile(lowered(mod), target, ctx)
    assert calls == [["dense1", "fused_dense_relu"]]
    tuner.compile(lowered(mod), target, ctx)  # same budget: nothing to tune
    assert len(calls) == 1 and ctx.metrics["tune/new_trials"] == 0
    tuner, ctx = make(tmp_path, trials=4)  # a smaller budget is covered as well
    tuner.compile(lowered(mod), target, ctx)
    assert len(calls) == 1
    tuner, ctx = make(tmp_path, trials=32)  # a bigger one is not
    tuner.compile(lowered(mod), target, ctx)
    assert calls[-1] == ["dense1", "fused_dense_relu"]
    # A model sharing one workload (the same first layer) only tunes its new one.
    other = mlp_module(sizes=(64, 32, 8))
    tuner.compile(lowered(other), target, ctx)
    assert calls[-1] == ["dense1"]


def test_without_records_every_function_gets_default_schedules(tmp_path):
    mod, target = mlp_module(), host_target()
    tuner, ctx = make(tmp_path, trials=0)
    program = tuner.compile(lowered(mod), target, ctx)
    assert ctx.metrics["tune/new_trials"] == 0
    assert ctx.metrics["tune/tasks_default_schedule"] == ctx.metrics["tune/tasks"] == 2
    x = np.random.default_rng(0).standard_normal((1, 64)).astype("float32")
    np.testing.assert_allclose(
        run_module(program.executable, x), reference(mod, x), rtol=1e-5, atol=1e-5
    )
    assert (ctx.artifacts["tuning"] / "tasks.json").exists()


def test_records_folder_is_applied_without_tuning(tmp_path, monkeypatch):
    monkeypatch.setattr(MetaSchedule, "_tune", lambda *a: pytest.fail("must not tune"))
    store = RecordStore(tmp_path / "records")
    tuner, ctx = make(tmp_path, records=str(tmp_path / "records"))
    tuner.compile(lowered(mlp_module()), host_target(), ctx)
    assert ctx.metrics["tune/new_trials"] == 0
    assert store.path.exists()


def test_missing_records_are_a_clear_error(tmp_path):
    tuner, ctx = make(tmp_path, records=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="neither a folder"):
        tuner.compile(lowered(mlp_module()), host_target(), ctx)


@pytest.mark.parametrize("runner", ["inprocess", "local"])
def test_real_search_records_and_matches(tmp_path, runner):
    """A few real trials through both runners: records land in the shared database, the
    artifact holds the applied ones, and the tuned build computes the same numbers."""
    mod, target = mlp_module(sizes=(256, 128, 64)), host_target()
    tuner, ctx = make(
        tmp_path,
        trials=8,
        trials_per_iter=4,
        cost_model="random",
        runner=runner,
        strategy_options={"population_size": 16, "init_min_unmeasured": 4},
    )
    program = tuner.compile(lowered(mod), target, ctx)
    assert ctx.metrics["tune/new_trials"] > 0
    assert ctx.metrics["tune/tasks_with_records"] >= 1
    x = np.random.default_rng(0).standard_normal((1, 256)).astype("float32")
    np.testing.assert_allclose(
        run_module(program.executable, x), reference(mod, x), rtol=1e-4, atol=1e-4
    )
    exported = ms.database.JSONDatabase(work_dir=str(ctx.artifacts["tuning"]))
    assert len(exported.get_all_tuning_records()) == ctx.metrics["tune/tasks_with_records"]
    # Every tuned task was seeded with its default schedule, and the build keeps the faster.
    rows = json.loads((ctx.artifacts["tuning"] / "tasks.json").read_text())
    assert all(r["default_schedule_us"] > 0 for r in rows)
    assert all(r["best_us"] <= r["default_schedule_us"] for r in rows)
    # Records: each task's default plus the new trials that succeeded; a failed trial is spent
    # but leaves no record (a full run here lost one after 82 s, likely the 60-s timeout).
    assert len(rows) < ctx.metrics["tune/trials"] <= ctx.metrics["tune/new_trials"] + len(rows)
