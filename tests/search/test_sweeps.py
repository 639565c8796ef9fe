"""End to end: ``-m`` grid and Optuna sweeps with real MLflow and Optuna stores in tmp_path.

Space: dataset=digits,cifar10 (cifar10 at a path that does not exist → the job fails) x
device.warmup_runs=0,1,2 (2 forbidden by a test rule added to dlas.validity).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from tests.search.conftest import (
    TEST_RULE,
    artifact_text,
    base_args,
    children_of,
    dead_pid,
    mlflow_runs,
    parents,
    run_dlas,
)

SPACE = ["dataset=digits,cifar10", "dataset.root=/nonexistent", "device.warmup_runs=0,1,2"]


def test_grid_sweep_nests_skips_and_survives_failures(tmp_path, shared_cache, warmup_rule) -> None:
    cold = not any(shared_cache.iterdir())
    run_dlas(["-m", *base_args(tmp_path, shared_cache), *SPACE])

    runs = mlflow_runs(tmp_path)
    (parent,) = parents(runs)
    kids = children_of(runs, parent.info.run_id)
    assert len(runs) == 1 + len(kids)
    assert len(kids) == 4  # 6 jobs, 2 skipped
    by_status = {}
    for r in kids:
        by_status.setdefault(r.info.status, []).append(r)
        assert r.data.params["device.warmup_runs"] != "2"  # the invalid ones never ran
    assert {r.data.params["dataset.name"] for r in by_status["FINISHED"]} == {"digits"}
    assert {r.data.params["dataset.name"] for r in by_status["FAILED"]} == {"cifar10"}
    assert len(by_status["FINISHED"]) == len(by_status["FAILED"]) == 2
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["sweep/skipped"] == 2 and parent.data.metrics["sweep/failed"] == 2

    summary = artifact_text(tmp_path, parent.info.run_id, "summary.txt")
    assert summary.count(TEST_RULE) == 2 and "skipped" in summary
    assert "DataNotFoundError" in summary

    # Two jobs share one model and one build: trained at most once, compiled at most once
    # (exactly once when this test is the first of the session to fill the cache).
    done = by_status["FINISHED"]
    for tag in ("model.checkpoint_cache_hit", "compile.cache_hit"):
        hits = sorted(r.data.tags[tag] for r in done)
        assert hits == (["false", "true"] if cold else ["true", "true"])


def optuna_args(tmp_path, cache, *extra: str) -> list[str]:
    return [
        "-m",
        "hydra/sweeper=dlas_optuna",
        "hydra.sweeper.seed=1",
        "hydra.sweeper.n_startup_trials=3",
        "hydra.sweeper.study_name=e2e",
        *base_args(tmp_path, cache),
        *extra,
    ]


def load_study(tmp_path, name: str = "e2e") -> optuna.Study:
    return optuna.load_study(
        study_name=name, storage=f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}"
    )


def test_optuna_sweep(tmp_path, shared_cache, warmup_rule) -> None:
    run_dlas(optuna_args(tmp_path, shared_cache, "hydra.sweeper.n_trials=8", *SPACE))

    study = load_study(tmp_path)
    trials = study.trials
    assert 4 <= len(trials) <= 8  # it stops early once the 4 valid configurations all ran
    assert all(t.user_attrs["dlas.overrides"] for t in trials)
    assert not any("device.warmup_runs=2" in t.user_attrs["dlas.overrides"] for t in trials)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    repeats = [t for t in trials if t.state == TrialState.PRUNED]
    assert failed and complete and len(failed) + len(complete) + len(repeats) == len(trials)
    assert all("dlas.duplicate_of" in t.user_attrs for t in repeats)
    ran = [" ".join(t.user_attrs["dlas.overrides"]) for t in failed + complete]
    assert len(ran) == len(set(ran))  # not even a failed configuration is run twice
    assert all("dataset=cifar10" in t.user_attrs["dlas.overrides"] for t in failed)
    assert all("dataset=digits" in t.user_attrs["dlas.overrides"] for t in complete)
    # Feasibility: drop (points, vs the dense model) minus the 1-point limit.
    for t in complete:
        assert t.constraints["accuracy_drop"] == pytest.approx(
            t.user_attrs["dlas.accuracy_drop"] - 1.0
        )

    runs = mlflow_runs(tmp_path)
    (parent,) = parents(runs)
    assert parent.data.tags["optuna.study_name"] == "e2e"
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    kids = {r.info.run_id: r for r in children_of(runs, parent.info.run_id)}
    ran = [t for t in trials if "mlflow_run_id" in t.user_attrs]
    assert len(kids) == len(ran) == len(failed) + len(complete) == len(runs) - 1
    for t in ran:
        run = kids[t.user_attrs["mlflow_run_id"]]
        assert run.data.tags["optuna.trial_number"] == str(t.number)
        assert run.info.status == ("FAILED" if t.state == TrialState.FAIL else "FINISHED")

    # Trials that share a model train it at most once and build it at most once (the cache
    # may already hold them from an earlier test of this session).
    finished = [r for r in kids.values() if r.info.status == "FINISHED"]
    assert len(finished) >= 2
    for tag in ("model.checkpoint_cache_hit", "compile.cache_hit"):
        assert [r.data.tags[tag] for r in finished].count("false") <= 1

    space = json.loads(artifact_text(tmp_path, parent.info.run_id, "optuna/space.json"))
    assert len(space["invalid"]) == 2 and all(TEST_RULE in e["reasons"] for e in space["invalid"])
    csv_text = artifact_text(tmp_path, parent.info.run_id, "optuna/trials.csv")
    assert csv_text.count("\n") == len(trials) + 1
    assert "plotly" in artifact_text(tmp_path, parent.info.run_id, "optuna/pareto_front.html")


def test_optuna_resume_does_not_repeat_finished_trials(tmp_path, shared_cache) -> None:
    space = ["device.warmup_runs=0,1", "eval.compare_samples=1,2"]
    run_dlas(optuna_args(tmp_path, shared_cache, "hydra.sweeper.n_trials=2", *space))
    first = load_study(tmp_path).trials
    assert len(first) == 2

    # An interrupted worker left a RUNNING trial behind.
    study = load_study(tmp_path)
    stale = study.ask()
    stale.set_user_attr("dlas.worker", f"{socket.gethostname()}:{dead_pid()}")

    run_dlas(optuna_args(tmp_path, shared_cache, "hydra.sweeper.n_trials=20", *space))
    trials = load_study(tmp_path).trials
    assert trials[stale.number].state == TrialState.FAIL
    assert [(t.number, t.values) for t in trials[:2]] == [(t.number, t.values) for t in first]
    assert len(trials) < 20  # all 4 configurations ran: the study stopped there

    runs = mlflow_runs(tmp_path)
    (parent,) = parents(runs)  # the resumed session continued the study's parent run
    kids = children_of(runs, parent.info.run_id)
    assert len(kids) == len(runs) - 1
    configs = [
        (r.data.params["device.warmup_runs"], r.data.params["eval.compare_samples"]) for r in kids
    ]
    assert len(configs) == len(set(configs)) == 4  # each configuration ran exactly once
    ran = {t.user_attrs["mlflow_run_id"] for t in trials if "mlflow_run_id" in t.user_attrs}
    assert ran == {r.info.run_id for r in kids}
    assert_registry_after_two_sweeps(tmp_path, kids)


def assert_registry_after_two_sweeps(root, kids) -> None:
    """Each session registered its best run only if it beat the champion (dlas.serving)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    versions = sorted(
        client.search_model_versions("name = 'dlas-tiny_cnn-local_cpu'"),
        key=lambda v: int(v.version),
    )
    assert 1 <= len(versions) <= 2  # the first session's best; a second only if faster
    latencies = [float(v.tags["latency/median_ms"]) for v in versions]
    assert latencies == sorted(latencies, reverse=True)  # every new version is faster
    champion = client.get_model_version_by_alias("dlas-tiny_cnn-local_cpu", "champion")
    assert champion.version == versions[-1].version
    assert champion.run_id in {r.info.run_id for r in kids}
    assert champion.tags["dlas.sweep.parent_run_id"] and champion.tags["dlas.model"] == "tiny_cnn"


@pytest.mark.slow
def test_cli_study_interrupted_by_ctrl_c_resumes(tmp_path, shared_cache) -> None:
    """The real command line: Ctrl-C in the middle of a study, then the same command again."""
    space = ["device.warmup_runs=0,1", "eval.compare_samples=1,2"]
    cmd = [
        sys.executable,
        "-m",
        "dlas.run",
        *optuna_args(tmp_path, shared_cache, "hydra.sweeper.n_trials=4", *space),
    ]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(2)
            if not (tmp_path / "mlruns" / "optuna.db").exists():
                continue
            try:
                states = [t.state for t in load_study(tmp_path).trials]
            except KeyError:  # the study is not created yet
                continue
            if TrialState.COMPLETE in states and states[-1] == TrialState.RUNNING:
                proc.send_signal(signal.SIGINT)
                break
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    interrupted = [t for t in load_study(tmp_path).trials if t.state == TrialState.RUNNING]
    assert len(interrupted) == 1, (tmp_path / "first.log").read_text()[-3000:]

    subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True, timeout=900)
    trials = load_study(tmp_path).trials
    assert trials[interrupted[0].number].state == TrialState.FAIL
    # n_trials counts configurations: the interrupted trial's was retried, so 4 ran.
    ran = {t.user_attrs["dlas.signature"] for t in trials if t.state == TrialState.COMPLETE}
    assert len(ran) == 4
    runs = mlflow_runs(tmp_path)
    (parent,) = parents(runs)
    assert parent.info.status == "FINISHED"
    done = [r for r in children_of(runs, parent.info.run_id) if r.info.status == "FINISHED"]
    configs = [
        (r.data.params["device.warmup_runs"], r.data.params["eval.compare_samples"]) for r in done
    ]
    assert len(configs) == len(set(configs))


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2+ cores to tell 1 thread from all")
def test_a_jobs_thread_setting_does_not_leak_into_the_next(tmp_path, shared_cache) -> None:
    import torch

    torch_threads = torch.get_num_threads()
    run_dlas(["-m", *base_args(tmp_path, shared_cache), "device.num_threads=1,null"])

    (parent,) = parents(runs := mlflow_runs(tmp_path))
    used = {
        r.data.params["device.num_threads"]: r.data.metrics["device/threads"]
        for r in children_of(runs, parent.info.run_id)
    }
    assert used == {"1": 1.0, "None": float(os.cpu_count())}
    assert torch.get_num_threads() == torch_threads  # restored after the sweep
