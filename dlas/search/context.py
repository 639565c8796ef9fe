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


# A guided sweep's job learns its Optuna trial through the environment (Hydra's
# ``hydra.job.env_set``, set for the job's duration in whichever process runs it), so that its
# MLflow run carries the trial from its start: a worker that fails the trial of a dead one finds
# the run and ends it.
TRIAL_ENV = "DLAS_OPTUNA_TRIAL"
STUDY_ENV = "DLAS_OPTUNA_STUDY"


def trial_env_overrides(study_name: str, number: int) -> list[str]:
    """Hydra overrides that set the job's trial environment."""
    quoted = "'" + study_name.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return [f"+hydra.job.env_set.{STUDY_ENV}={quoted}", f"+hydra.job.env_set.{TRIAL_ENV}={number}"]


def sweep_job_tags() -> dict[str, str]:
    """Tags for this job's MLflow run: its Optuna study and trial, when it is one."""
    if not os.environ.get(TRIAL_ENV):
        return {}
    return {
        "optuna.study_name": os.environ.get(STUDY_ENV, ""),
        "optuna.trial_number": os.environ[TRIAL_ENV],
    }
