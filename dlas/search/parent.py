"""The parent MLflow run of a sweep or study, driven through ``MlflowClient``.

The client API (not ``mlflow.start_run``) keeps the parent off MLflow's active-run stack: jobs
that run in this same process (Hydra's basic launcher) then start their own runs with
``parent_run_id`` exactly as jobs in worker processes do.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dlas.search.context import set_sweep_parent_run_id

log = logging.getLogger(__name__)

PARENT_TAG = "dlas.sweep.parent"


class SweepRun:
    """One parent run; its id is published to jobs via :mod:`dlas.search.context`."""

    _current: SweepRun | None = None

    def __init__(self, client: Any, run_id: str, experiment_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.closed = False

    @classmethod
    def open(cls, cfg: DictConfig, name: str, tags: dict[str, str]) -> SweepRun:
        from mlflow import MlflowClient

        from dlas import tracking

        experiment_id = tracking.setup(cfg)
        client = MlflowClient(tracking_uri=tracking.tracking_uri(cfg))
        run = client.create_run(experiment_id, run_name=name, tags={PARENT_TAG: "true", **tags})
        sweep = cls(client, run.info.run_id, experiment_id)
        sweep.publish()
        atexit.register(sweep._abort)
        log.info("sweep parent MLflow run %s (%s)", sweep.run_id, name)
        return sweep

    @classmethod
    def current(cls) -> SweepRun | None:
        return cls._current if cls._current and not cls._current.closed else None

    def publish(self) -> None:
        SweepRun._current = self
        set_sweep_parent_run_id(self.run_id)

    def adopt(self, run_id: str) -> bool:
        """Continue an earlier parent run (a resumed study) instead of this fresh one, which is
        deleted if nothing has been logged under it yet. False if ``run_id`` cannot be reused."""
        if run_id == self.run_id:
            return True
        try:
            old = self.client.get_run(run_id)
        except Exception:  # deleted for good, or another tracking store
            return False
        if old.info.lifecycle_stage != "active" or old.info.experiment_id != self.experiment_id:
            return False
        if not self.children():
            self.client.delete_run(self.run_id)
        else:
            self.client.set_terminated(self.run_id, "FINISHED")
        self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id
        self.publish()
        return True

    def children(self) -> list[Any]:
        return self.client.search_runs(
            [self.experiment_id], f"tags.mlflow.parentRunId = '{self.run_id}'", max_results=50000
        )

    def kill_trial_runs(self, number: int, reason: str) -> list[str]:
        """End the RUNNING child runs of Optuna trial ``number`` as KILLED: its worker died, so
        nothing else will end them."""
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.mlflow.parentRunId = '{self.run_id}' and "
            f"tags.optuna.trial_number = '{number}' and attributes.status = 'RUNNING'",
        )
        for run in runs:
            self.client.set_tag(run.info.run_id, "error.type", "WorkerDied")
            self.client.set_tag(run.info.run_id, "error.message", reason)
            self.client.set_terminated(run.info.run_id, "KILLED")
        return [r.info.run_id for r in runs]

    def set_tags(self, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_metrics(self, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.client.log_metric(self.run_id, key, float(value))

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_files(self, files: dict[str, str | bytes], artifact_path: str | None = None) -> None:
        """Write ``name → content`` into a temporary folder and log it as artifacts."""
        with tempfile.TemporaryDirectory() as tmp:
            for name, content in files.items():
                path = Path(tmp) / name
                path.write_bytes(content if isinstance(content, bytes) else content.encode())
            self.client.log_artifacts(self.run_id, tmp, artifact_path)

    def close(self, status: str = "FINISHED") -> None:
        if self.closed:
            return
        self.client.set_terminated(self.run_id, status)
        self.closed = True
        if SweepRun._current is self:
            SweepRun._current = None
            set_sweep_parent_run_id(None)
        atexit.unregister(self._abort)

    def _abort(self) -> None:
        # The sweep died before Hydra's on_multirun_end: do not leave the parent RUNNING.
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            self.close("KILLED")
