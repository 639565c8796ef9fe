"""Hydra callback that turns any ``-m`` sweep into one parent MLflow run with a nested child per
job, and ends it with a summary table (best per objective, skipped, failed).

Configured in ``conf/config.yaml`` under ``hydra.callbacks``; it works with any sweeper
(Hydra's grid or ``hydra/sweeper=dlas_optuna``) and any launcher: the parent run id reaches jobs
through the environment, and each job leaves a ``dlas_job.json`` record in its output folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dlas.search.context import sweep_parent_run_id
from dlas.search.summary import JobRecord, job_result, numeric_metrics, records_csv, summarize
from dlas.tracking import LAYERS

log = logging.getLogger(__name__)

RECORD_FILE = "dlas_job.json"


def _last_run_id() -> str | None:
    import mlflow

    try:
        run = mlflow.last_active_run()
    except Exception:  # noqa: BLE001 - no store configured yet in this process
        return None
    return run.info.run_id if run else None


class SweepTracking(Callback):
    def __init__(
        self,
        max_accuracy_drop: float | None = 1.0,
        latency_metric: str = "latency/median_ms",
        accuracy_metric: str = "accuracy/top1",
    ) -> None:
        self.max_accuracy_drop = max_accuracy_drop
        self.latency_metric = latency_metric
        self.accuracy_metric = accuracy_metric
        self.parent: Any = None
        self.records: list[JobRecord] = []
        self._run_before_job: str | None = None

    # --- main process -----------------------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from dlas.search.parent import SweepRun

        sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_", default="")).split(".")
        overrides = list(OmegaConf.select(config, "hydra.overrides.task", default=[]) or [])
        self.records = []
        self.parent = SweepRun.open(
            config,
            name=f"sweep-{Path(config.hydra.sweep.dir).name}",
            tags={
                "dlas.sweep.sweeper": sweeper[-1],
                "dlas.sweep.dir": str(config.hydra.sweep.dir),
                "dlas.sweep.command": " ".join(overrides)[:5000],
            },
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent is None or self.parent.closed:
            return
        records = self.records or self._records_from_files(Path(config.hydra.sweep.dir))
        text, metrics = summarize(
            records, self.max_accuracy_drop, self.latency_metric, self.accuracy_metric
        )
        print(text, flush=True)  # the user's answer to "what did the sweep find?"
        self.parent.log_metrics(metrics)
        self.parent.log_files(
            {"summary.txt": text, "jobs.csv": records_csv(records, self.accuracy_metric)}
        )
        # The best feasible run in the Model Registry (dlas.serving; never fails the sweep).
        from dlas.serving import champion

        candidates = champion.from_records(records, self.accuracy_metric)
        champion.register_best(
            config, candidates, self.max_accuracy_drop,
            latency=self.latency_metric, parent_run_id=self.parent.run_id,
        )  # fmt: skip

        from dlas.report import report_sweep  # the study report; a failure is only a warning

        report_sweep(
            self.parent.client, self.parent.run_id, Path(config.hydra.sweep.dir) / "report"
        )
        self.parent.close("FINISHED")

    def _records_from_files(self, sweep_dir: Path) -> list[JobRecord]:
        # Jobs ran in other processes (joblib, submitit): their records are on disk.
        out = []
        for path in sweep_dir.glob(f"**/{RECORD_FILE}"):
            record = JobRecord.from_json(path.read_text())
            if record.parent_run_id == self.parent.run_id:
                out.append(record)
        return out

    # --- job process (the same one for Hydra's basic launcher) -----------------------------
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if sweep_parent_run_id():
            self._run_before_job = _last_run_id()

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        parent_id = sweep_parent_run_id()
        if not parent_id:
            return  # a single run, not a sweep
        value = job_result(job_return)
        status, reason = str(value.get("status", "FINISHED")), str(value.get("reason", ""))
        after = _last_run_id()
        run_id = after if after and after != self._run_before_job else None
        choices = OmegaConf.to_container(config.hydra.runtime.choices)
        record = JobRecord(
            num=int(config.hydra.job.num),
            overrides=list(config.hydra.overrides.task),
            status=status,
            reason=reason,
            run_id=run_id,
            parent_run_id=parent_id,
            choices={k: str(v) for k, v in choices.items() if k in LAYERS},
            metrics=numeric_metrics(value),
        )
        if run_id:
            value["mlflow_run_id"] = run_id  # lets the sweeper find the child run
            self._tag_child(run_id, record)
        out_dir = Path(config.hydra.runtime.output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / RECORD_FILE).write_text(record.to_json())
        self.records.append(record)

    @staticmethod
    def _tag_child(run_id: str, record: JobRecord) -> None:
        from mlflow import MlflowClient

        client = MlflowClient()  # the job has just used the same store
        client.set_tag(run_id, "dlas.sweep.job", str(record.num))
        client.set_tag(run_id, "dlas.sweep.overrides", json.dumps(record.overrides)[:7900])
