"""How a sweep's parent MLflow run reaches its jobs.

Jobs may run in this process (basic launcher) or in worker processes (joblib, submitit), so the
parent run id travels in an environment variable that the sweep sets before any job starts.
"""

from __future__ import annotations

import os

PARENT_RUN_ENV = "DLAS_PARENT_RUN_ID"


def sweep_parent_run_id() -> str | None:
    """The parent MLflow run of the sweep this process is running a job for, if any."""
    return os.environ.get(PARENT_RUN_ENV) or None


def set_sweep_parent_run_id(run_id: str | None) -> None:
    if run_id:
        os.environ[PARENT_RUN_ENV] = run_id
    else:
        os.environ.pop(PARENT_RUN_ENV, None)
