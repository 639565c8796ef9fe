"""``hydra.sweeper.*`` of ``hydra/sweeper=dlas_optuna``: the one declaration of the sweeper's
settings, used both as Hydra's config node (the plugin) and by :mod:`dlas.search.sweeper`.

Hydra scans ``hydra_plugins`` on every start, so this module imports nothing but the standard
library. The accuracy-drop limit is not here: it is ``hydra.callbacks.dlas_sweep.max_accuracy_drop``,
one knob for the sweep summary of every sweeper and for this sweeper's constraint.
"""

# No `from __future__ import annotations`: Hydra's plugin scan executes this module outside
# sys.modules, where dataclasses cannot resolve string annotations.
from dataclasses import dataclass, fields
from typing import Any

TARGET = "hydra_plugins.dlas_sweeper.dlas_optuna_sweeper.DlasOptunaSweeper"


@dataclass
class SweeperSettings:
    _target_: str = TARGET
    # tpe | nsga2 | random | grid (every valid configuration, in one study)
    sampler: str = "tpe"
    # Configurations the study evaluates in total, over all its workers and sessions: each
    # distinct configuration run (finished, failed, or found invalid) or running now counts
    # once; repeated proposals and trials whose worker died (retried) do not count. Dense
    # baselines requested by the accuracy constraint may add at most one per model.
    n_trials: int = 20
    # Trials launched together by this worker (Hydra's launcher runs them: the basic one one
    # after the other, joblib / submitit in parallel).
    n_jobs: int = 1
    seed: int | None = None
    # Random trials before TPE (or the NSGA-II population size) starts modelling.
    n_startup_trials: int = 10
    # null: derived from the command, so rerunning the same command resumes its study.
    study_name: str | None = None
    # null: sqlite:///<paths.mlruns_dir>/optuna.db; any Optuna RDB URL (postgresql://...) for
    # several workers on one study.
    storage: str | None = None
    # latency: minimise latency with accuracy drop <= hydra.callbacks.dlas_sweep.max_accuracy_drop
    # (a constraint); pareto: the latency / accuracy Pareto front.
    objective: str = "latency"
    latency_metric: str = "latency/median_ms"
    accuracy_metric: str = "accuracy/top1"
    # The search space in Hydra sweep syntax (merged with the command line's sweep overrides).
    params: dict[str, str] | None = None
    # Optuna's heartbeat: each running trial's worker records one every heartbeat_interval
    # seconds; a trial without one for grace_period seconds (null: 6 x interval) is failed by
    # any other worker and its configuration retried, up to max_retry times.
    heartbeat_interval: int = 10
    grace_period: int | None = None
    max_retry: int = 2


def settings_from_dict(values: dict[str, Any]) -> SweeperSettings:
    """Settings from ``hydra.sweeper`` (a resolved dict), with a clear error for unknown keys."""
    known = {f.name for f in fields(SweeperSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        hint = (
            " (the accuracy-drop limit is hydra.callbacks.dlas_sweep.max_accuracy_drop)"
            if "max_accuracy_drop" in unknown
            else ""
        )
        raise ValueError(
            f"hydra.sweeper: unknown setting(s) {', '.join(unknown)}{hint}; allowed: "
            + ", ".join(sorted(known - {"_target_"}))
        )
    return SweeperSettings(**values)
