"""Hydra's joblib launcher: a grid sweep as 2 parallel jobs, timed one at a time."""

from __future__ import annotations

import sys

import pytest
from mlflow import MlflowClient

from tests.scaleout import workers as w
from tests.search.conftest import base_args

pytestmark = pytest.mark.scaleout


def test_joblib_grid_records_every_job_and_times_them_one_at_a_time(
    stack, scaleout_cache, tmp_path
):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    env = w.worker_env(stack.tracking.url, tmp_path / "locks")
    cmd = [
        sys.executable, "-m", "dlas.run", "-m",
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
        *base_args(tmp_path, scaleout_cache),
        "tracking.experiment=joblib",
        "device.timed_runs=3000",  # timing long enough for the two jobs to collide
        "device.warmup_runs=0,1",
    ]  # fmt: skip
    proc = w.start(cmd, env, tmp_path / "sweep.log", tmp_path)
    with w.killed_on_exit(proc):
        assert proc.wait(timeout=900) == 0, (tmp_path / "sweep.log").read_text()[-3000:]

    client = MlflowClient(tracking_uri=stack.tracking.url)
    exp = client.get_experiment_by_name("joblib")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("dlas.sweep.parent") == "true"]
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.params["device.warmup_runs"] for r in kids) == ["0", "1"]
    assert all(r.info.status == "FINISHED" for r in kids)
    assert parent.info.status == "FINISHED" and parent.data.metrics["sweep/finished"] == 2
    # The jobs ran in parallel processes, but their timing never overlapped: each held the
    # host CPU's lock from its first to its last timed call, and waited for the other's.
    spans = sorted(
        (m["latency/lock_first_held_unix"], m["latency/lock_last_released_unix"])
        for m in (r.data.metrics for r in kids)
    )
    assert spans[0][1] <= spans[1][0], spans
    waits = [r.data.metrics["latency/lock_wait_s"] for r in kids]
    assert all(wt >= 0 for wt in waits)


@pytest.mark.parametrize("sweeper", ["grid", "optuna"])
def test_submitit_local_runs_grid_and_optuna_sweeps(stack, scaleout_cache, tmp_path, sweeper):
    """``hydra/launcher=submitit_local``: each job is a submitit process of its own (as on
    SLURM), finding the sweep's parent run through the environment it inherits."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    env = w.worker_env(stack.tracking.url, tmp_path / "locks")
    experiment = f"submitit-{sweeper}"
    common = [
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=15",
        *base_args(tmp_path, scaleout_cache),
        f"tracking.experiment={experiment}",
    ]
    if sweeper == "grid":
        cmd = [sys.executable, "-m", "dlas.run", "-m", *common, "device.warmup_runs=0,1"]
    else:
        storage = stack.pg.create_database(experiment.replace("-", "_"))
        cmd = w.optuna_command(
            tmp_path,
            scaleout_cache,
            storage,
            experiment,
            *common,
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.n_jobs=2",
        )
    proc = w.start(cmd, env, tmp_path / "sweep.log", tmp_path)
    with w.killed_on_exit(proc):
        assert proc.wait(timeout=900) == 0, (tmp_path / "sweep.log").read_text()[-3000:]

    client = MlflowClient(tracking_uri=stack.tracking.url)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("dlas.sweep.parent") == "true"]
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(kids) == (2 if sweeper == "grid" else 3)
    assert all(r.info.status == "FINISHED" for r in kids)
    # Every job ran in a submitit process of its own, not in the sweep's process.
    assert len(list((tmp_path / "multirun" / ".submitit").glob("*/*_result.pkl"))) == len(kids)
