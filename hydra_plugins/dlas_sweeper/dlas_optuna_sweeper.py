"""``hydra/sweeper=dlas_optuna``: guided design-space exploration with Optuna.

The work is done by :class:`dlas.search.sweeper.GuidedSweep`; Hydra requires plugin classes to
live in the ``hydra_plugins`` package, hence this thin shell. Its settings are declared once,
in :mod:`hydra_plugins.dlas_sweeper.settings`.
"""

from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.dlas_sweeper.settings import SweeperSettings

ConfigStore.instance().store(
    group="hydra/sweeper", name="dlas_optuna", node=SweeperSettings, provider="dlas"
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
