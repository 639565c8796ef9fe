"""``hydra/sweeper=dlas_optuna``: guided design-space exploration with Optuna.

The work is done by :class:`dlas.search.sweeper.GuidedSweep`; Hydra requires plugin classes to
live in the ``hydra_plugins`` package, hence this thin shell.
"""

# No `from __future__ import annotations`: Hydra's plugin scan executes this module outside
# sys.modules, where dataclasses cannot resolve string annotations.
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class DlasOptunaSweeperConf:
    _target_: str = "hydra_plugins.dlas_sweeper.dlas_optuna_sweeper.DlasOptunaSweeper"
    # tpe | nsga2 | random | grid (every valid configuration, in one study)
    sampler: str = "tpe"
    # Total trials of the study (a resumed study counts the stored ones).
    n_trials: int = 20
    # Trials launched together (Hydra's launcher runs them; the basic one sequentially).
    n_jobs: int = 1
    seed: int | None = None
    # Random trials before TPE (or the NSGA-II population size) starts modelling.
    n_startup_trials: int = 10
    # null: derived from the command, so rerunning the same command resumes its study.
    study_name: str | None = None
    # null: sqlite:///<paths.mlruns_dir>/optuna.db; any Optuna RDB URL for several workers.
    storage: str | None = None
    # latency: minimise latency with accuracy drop <= max_accuracy_drop (a constraint);
    # pareto: the latency / accuracy Pareto front.
    objective: str = "latency"
    # Accuracy drop vs the dense model in points of top-1 (accuracy/drop_vs_dense); null: none.
    max_accuracy_drop: float | None = 1.0
    latency_metric: str = "latency/median_ms"
    accuracy_metric: str = "accuracy/top1"
    # The search space in Hydra sweep syntax (merged with the command line's sweep overrides).
    params: dict[str, str] | None = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="dlas_optuna", node=DlasOptunaSweeperConf, provider="dlas"
)


class DlasOptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        from dlas.search.sweeper import GuidedSweep, settings_from_config

        self.impl = GuidedSweep(settings_from_config(settings))

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.impl.sweep(arguments)
