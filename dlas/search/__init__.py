"""Design-space exploration over the DLAS config groups: Hydra grid sweeps with one parent MLflow
run, and a guided (Optuna) sweeper whose search space is conditional on :mod:`dlas.validity`.

Kept import-light: ``dlas.run`` imports :mod:`dlas.search.context` on every run.
"""

from dlas.search.context import PARENT_RUN_ENV, set_sweep_parent_run_id, sweep_parent_run_id

__all__ = ["PARENT_RUN_ENV", "set_sweep_parent_run_id", "sweep_parent_run_id"]
