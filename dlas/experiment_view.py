"""How MLflow's UI opens a dlas experiment: on the runs table, not on the GenAI overview.

Two switches decide it, checked in a headless Chromium against MLflow 3.17.2's UI:

- the experiment tag ``mlflow.experimentKind`` (values of the UI's ``ExperimentKind`` enum;
  ``custom_model_development`` is "Machine learning"), which MLflow 3 UIs before the global
  GenAI / Model-training switch read to pick the landing page, and which the REST API and
  ``mlflow.search_experiments`` expose;
- from 3.17 on, the UI takes the kind from a browser-wide switch (local storage key
  ``mlflow.workflowType``, default ``genai``) that the URL parameter
  ``workflowType=machine_learning`` overrides: :func:`runs_view_url` is the address to open.

Which columns the runs table shows is browser state too (local storage, saved "Views"); 3.17.2
offers no server-side default (a shared-view experiment tag and sort parameters in the URL were
both tried and ignored), so dlas does not set one.
"""

from __future__ import annotations

from collections.abc import Mapping

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
WORKFLOW_PARAM = "workflowType=machine_learning"


def experiment_tags() -> dict[str, str]:
    return {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}


def mark_experiment(experiment_id: str, tags: Mapping[str, str]) -> None:
    """Tag an experiment made before dlas set the kind; one a user switched to another kind
    keeps it."""
    from mlflow import MlflowClient

    if EXPERIMENT_KIND_TAG not in tags:
        MlflowClient().set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


def runs_view_url(base_url: str, experiment_id: str | None = None) -> str:
    """The UI's address of an experiment's runs table (or of the experiment list)."""
    base = base_url.rstrip("/")
    if experiment_id is None:
        return f"{base}/#/experiments?{WORKFLOW_PARAM}"
    return f"{base}/#/experiments/{experiment_id}/runs?{WORKFLOW_PARAM}"
