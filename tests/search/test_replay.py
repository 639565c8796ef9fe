"""The guided sweep's loop on recorded results (no runs): dense baselines are enqueued when a
drop cannot be judged, duplicates cost nothing, and the replay finds the best configuration."""

from __future__ import annotations

import itertools

import optuna
import pytest

from dlas.search.replay import (
    Recorded,
    RecordedOracle,
    ReplaySweep,
    TargetReached,
    ground_truth,
)
from dlas.search.space import parse_space
from dlas.search.sweeper import SweeperSettings

SPACE = [
    "model=m1,m2",
    "compression=dense,int8,pruned",
    "algorithm=a,b,c,sparse",
    "device.num_threads=1,2",
]


def synthetic_records() -> list[Recorded]:
    """A made-up exhaustive sweep: sparse needs pruned; int8 of m2 loses 5 points; one
    configuration failed."""
    records = []
    for model, comp, algo, threads in itertools.product(
        ["m1", "m2"], ["dense", "int8", "pruned"], ["a", "b", "c", "sparse"], ["1", "2"]
    ):
        if algo == "sparse" and comp != "pruned":
            continue
        latency = (
            {"m1": 10.0, "m2": 6.0}[model]
            * {"dense": 1.0, "int8": 0.4, "pruned": 0.8}[comp]
            * {"a": 1.0, "b": 0.7, "c": 1.3, "sparse": 0.6}[algo]
            / (1.6 if threads == "2" else 1.0)
        )
        accuracy = (
            0.95
            - (0.05 if (model, comp) == ("m2", "int8") else 0.0)
            - (0.004 if comp == "pruned" else 0.0)
        )
        a = {"model": model, "compression": comp, "algorithm": algo, "device.num_threads": threads}
        status = (
            "FAILED" if (model, comp, algo, threads) == ("m1", "int8", "c", "1") else "FINISHED"
        )
        metrics = (
            {"latency/median_ms": latency, "accuracy/top1": accuracy}
            if status == "FINISHED"
            else {}
        )
        records.append(Recorded(a, status, metrics))
    return records


def test_ground_truth_uses_the_dense_run_of_the_same_model() -> None:
    best, truth = ground_truth(synthetic_records(), max_drop=1.0)
    # m2 int8 b threads=2 would be fastest (1.05 ms) but loses 5 points: the best feasible is
    # m1 int8 b threads=2.
    assert best == pytest.approx(10.0 * 0.4 * 0.7 / 1.6)
    assert sum(ok for _, ok in truth.values()) == len(truth) - 6  # m2 int8 x 3 algos x 2 threads


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_replay_reaches_the_best_and_never_runs_twice(sampler: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    records = synthetic_records()
    _, params = parse_space(SPACE)
    best, truth = ground_truth(records, 1.0)
    sweep = ReplaySweep(
        SweeperSettings(sampler=sampler, seed=3, n_trials=500, n_startup_trials=4),
        records,
        best * 1.0001,
        truth,
    )
    with pytest.raises(TargetReached) as hit:
        sweep.explore([], params, RecordedOracle(records), None, "t")
    runs = hit.value.args[0]
    assert runs == len(sweep.launched) <= len(records)
    assert len(set(sweep.launched)) == len(sweep.launched)  # no configuration ran twice
    trials = sweep.study.trials
    assert all(
        "sparse" not in t.user_attrs["dlas.overrides"][2]
        or "compression=pruned" in t.user_attrs["dlas.overrides"]
        for t in trials
    )
    # Every judged trial was judged against its own model's dense run.
    for t in trials:
        if t.state.name == "COMPLETE":
            assert "accuracy_drop" in t.constraints
            overrides = t.user_attrs["dlas.overrides"]
            if "model=m2" in overrides and "compression=int8" in overrides:
                assert t.constraints["accuracy_drop"] > 0  # infeasible


@pytest.mark.parametrize("objective", ["latency", "pareto"])
def test_study_artifacts_for_both_objectives(objective: str) -> None:
    from dlas.search.objectives import create_objective
    from dlas.search.report import best_text, study_artifacts

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    records = synthetic_records()
    _, params = parse_space(SPACE)
    _, truth = ground_truth(records, 1.0)
    settings = SweeperSettings(
        sampler="tpe" if objective == "latency" else "nsga2",
        seed=0,
        n_trials=16,
        n_startup_trials=4,
        objective=objective,
    )
    sweep = ReplaySweep(settings, records, -1.0, truth)  # a target never reached: run it all
    study = sweep.explore([], params, RecordedOracle(records), None, "t")
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert done and all(len(t.values) == (2 if objective == "pareto" else 1) for t in done)
    files = study_artifacts(study, create_objective(objective))
    assert files["trials.csv"].count("\n") == len(study.trials) + 1
    assert {"pareto_front.html", "optimization_history.html"} <= set(files)
    text = best_text(study, create_objective(objective))
    assert ("Pareto" in text) if objective == "pareto" else ("best feasible" in text)
