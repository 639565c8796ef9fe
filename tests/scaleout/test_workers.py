"""Many workers on one Optuna study in PostgreSQL, logging to one MLflow tracking server."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from tests.scaleout import workers as w

pytestmark = pytest.mark.scaleout


def study_runs(client: MlflowClient, study: str) -> tuple[list, list]:
    """(parent runs, child runs) of ``study`` in the dlas experiment, active ones only."""
    exp = client.get_experiment_by_name("dlas")
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    parents = [
        r
        for r in runs
        if r.data.tags.get("dlas.sweep.parent") == "true"
        and r.data.tags.get("optuna.study_name") == study
    ]
    ids = {p.info.run_id for p in parents}
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in ids]
    return parents, kids


def configurations(trials: list) -> list[str]:
    return [t.user_attrs["dlas.signature"] for t in trials if t.state == TrialState.COMPLETE]


def test_four_workers_share_one_study_and_one_parent_run(stack, scaleout_cache, tmp_path):
    storage = stack.pg.create_database("four")
    env = w.worker_env(stack.tracking.url, tmp_path / "locks")
    n_trials = 8
    procs = []
    for i in range(4):
        root = w.worker_root(tmp_path, i)
        cmd = w.optuna_command(
            root, scaleout_cache, storage, "four", f"hydra.sweeper.n_trials={n_trials}"
        )
        procs.append(w.start(cmd, env, root / "worker.log", root))
    with w.killed_on_exit(*procs):
        codes = [p.wait(timeout=900) for p in procs]
    logs = [(w.worker_root(tmp_path, i) / "worker.log").read_text() for i in range(4)]
    assert codes == [0, 0, 0, 0], "\n\n".join(log[-3000:] for log in logs)

    trials = optuna.load_study(study_name="four", storage=storage).trials
    done = configurations(trials)
    assert len(done) == n_trials, Counter(t.state.name for t in trials)
    assert len(set(done)) == n_trials  # no configuration ran twice
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert len({t.user_attrs["dlas.worker"] for t in trials if t.state == TrialState.COMPLETE}) > 1

    client = MlflowClient(tracking_uri=stack.tracking.url)
    parents, kids = study_runs(client, "four")
    assert len(parents) == 1  # the workers adopted the creator's parent run
    by_trial = Counter(r.data.tags.get("optuna.trial_number") for r in kids)
    complete = {str(t.number) for t in trials if t.state == TrialState.COMPLETE}
    assert set(by_trial) == complete and set(by_trial.values()) == {1}
    assert all(r.info.status == "FINISHED" for r in kids)
    # Artifacts went to the server's store, not to the workers' folders.
    assert len(list(stack.tracking.artifacts.rglob("config.yaml"))) >= n_trials
    assert not list(tmp_path.glob("worker*/mlruns"))


def test_worker_killed_mid_trial_is_failed_and_retried(stack, scaleout_cache, tmp_path):
    storage = stack.pg.create_database("killed")
    env = w.worker_env(stack.tracking.url, tmp_path / "locks")
    n_trials = 4
    extra = [
        f"hydra.sweeper.n_trials={n_trials}",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=10",
        "device.timed_runs=400",  # long enough to be killed in the middle of measuring
    ]
    started = time.monotonic()
    roots = [w.worker_root(tmp_path, i) for i in range(2)]
    # Both workers run together: the survivor learns of the death only through the heartbeat
    # (its start-up check of dead pids on this host is over by then), as a worker on another
    # host would.
    victim, survivor = (
        w.start(
            w.optuna_command(root, scaleout_cache, storage, "killed", *extra),
            env,
            root / "worker.log",
            root,
        )
        for root in roots
    )
    client = MlflowClient(tracking_uri=stack.tracking.url)
    with w.killed_on_exit(victim, survivor):
        killed_number = _kill_mid_trial(victim, client, storage, roots[0])
        assert survivor.wait(timeout=900) == 0, (roots[1] / "worker.log").read_text()[-3000:]
    wall = time.monotonic() - started
    print(f"failure test wall time: {wall:.0f} s")

    trials = optuna.load_study(study_name="killed", storage=storage).trials
    killed = trials[killed_number]
    assert killed.state == TrialState.FAIL and "dlas.status" not in killed.user_attrs
    done = configurations(trials)
    assert len(done) == len(set(done)) == n_trials  # the study still completed n_trials
    assert killed.user_attrs["dlas.signature"] in done  # its configuration was retried
    retry = [t for t in trials if t.user_attrs.get("dlas.retry_of") == killed_number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE

    parents, kids = study_runs(client, "killed")
    assert len(parents) == 1
    dead = [r for r in kids if r.data.tags.get("optuna.trial_number") == str(killed_number)]
    assert [r.info.status for r in dead] == ["KILLED"]
    assert "died" in dead[0].data.tags["error.message"]
    # Nothing left behind: the victim's whole process group is gone.
    with pytest.raises(ProcessLookupError):
        os.killpg(victim.pid, 0)


def _kill_mid_trial(victim, client: MlflowClient, storage: str, root) -> int:
    """SIGKILL the victim's process group once one of its trials has a RUNNING MLflow run."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        assert victim.poll() is None, (root / "worker.log").read_text()[-3000:]
        time.sleep(1)
        try:
            trials = optuna.load_study(study_name="killed", storage=storage).trials
        except KeyError:  # not created yet
            continue
        mine = {
            str(t.number)
            for t in trials
            if t.state == TrialState.RUNNING
            and t.user_attrs.get("dlas.worker", "").endswith(f":{victim.pid}")
        }
        exp = client.get_experiment_by_name("dlas")
        if not mine or exp is None:
            continue
        running = client.search_runs(
            [exp.experiment_id],
            "tags.optuna.study_name = 'killed' and attributes.status = 'RUNNING'",
        )
        hit = [r for r in running if r.data.tags.get("optuna.trial_number") in mine]
        if hit:
            time.sleep(2)  # in the middle of the trial
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait(timeout=30)
            return int(hit[0].data.tags["optuna.trial_number"])
    raise TimeoutError("the victim never started a trial")
