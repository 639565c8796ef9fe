"""The guided sweep behind ``hydra/sweeper=dlas_optuna``: one Optuna trial = one dlas run.

Ask/tell loop: each trial samples a valid configuration (:class:`~dlas.search.space.SpacePlan`),
Hydra's launcher runs the batch (``n_jobs`` at a time), the results are told back. A trial whose
accuracy drop cannot be judged yet (no dense run of its model so far) waits while the dense
baseline is enqueued as a trial of its own. ``sampler=grid`` walks every valid configuration.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from dlas.search import report
from dlas.search.objectives import DROP_CONSTRAINT, Baselines, create_objective
from dlas.search.oracle import ComposeOracle, Oracle, sweep_compose
from dlas.search.parent import SweepRun
from dlas.search.space import Assignment, Categorical, SpacePlan, parse_space, signature
from dlas.search.study import (
    counted_trials,
    create_sampler,
    default_storage,
    default_study_name,
    fail_interrupted,
    finished_by_signature,
    has_waiting,
    open_study,
    redact,
    worker_id,
)
from dlas.search.summary import (
    ACCURACY,
    BASELINE_COMPRESSION,
    LATENCY,
    MODEL_LAYERS,
    model_key,
    numeric_metrics,
)

log = logging.getLogger(__name__)


@dataclass
class SweeperSettings:
    """``hydra.sweeper.*`` of ``hydra/sweeper=dlas_optuna`` (see hydra_plugins.dlas_sweeper)."""

    sampler: str = "tpe"
    n_trials: int = 20
    n_jobs: int = 1
    seed: int | None = None
    n_startup_trials: int = 10
    study_name: str | None = None
    storage: str | None = None
    objective: str = "latency"
    max_accuracy_drop: float | None = 1.0  # points of top-1
    latency_metric: str = LATENCY
    accuracy_metric: str = ACCURACY
    params: dict[str, str] | None = None


# After this many proposals in a row that repeat evaluated configurations, the next trial is a
# random unevaluated one: TPE on a small discrete space otherwise keeps proposing its favourite.
DUPLICATE_STREAK = 3


@dataclass
class Candidate:
    """A configuration on its way through the launcher."""

    trial: optuna.Trial
    assignment: Assignment
    overrides: list[str]
    model_key: str
    compression: str | None
    metrics: dict[str, float] = field(default_factory=dict)


class GuidedSweep:
    def __init__(self, settings: SweeperSettings, track: bool = True) -> None:
        self.s = settings
        self.track = track  # parent MLflow run, child tags, study artifacts
        self.objective = create_objective(
            settings.objective,
            latency=settings.latency_metric,
            accuracy=settings.accuracy_metric,
            max_accuracy_drop=settings.max_accuracy_drop,
        )
        self.baselines = Baselines()
        self.inflight: dict[str, Candidate] = {}  # launched or waiting for a baseline
        self.pending: list[Candidate] = []  # ran; waiting for their dense baseline
        self.requested: set[str] = set()  # model keys whose baseline is enqueued
        self.job_idx = 0
        self.own_parent = False
        self.duplicate_streak = 0
        self.rng = random.Random(settings.seed)

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # --- the sweep ---------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> list[dict[str, Any]]:
        loader = self.hydra_context.config_loader
        declared = [f"{k}={v}" for k, v in (self.s.params or {}).items()]
        fixed, params = parse_space(declared + list(arguments), loader)
        oracle = ComposeOracle(sweep_compose(loader, self.config), fixed)
        storage = self.s.storage or default_storage(self.config.paths.mlruns_dir)
        name = self.s.study_name or default_study_name(
            fixed,
            [o for o in declared + list(arguments) if o not in fixed],
            self.s.objective,
            self.s.max_accuracy_drop,
        )
        study = self.explore(fixed, params, oracle, storage, name)
        return [
            {
                "number": t.number,
                "state": t.state.name,
                "values": t.values,
                "config": t.user_attrs.get("dlas.overrides"),
            }
            for t in study.trials
        ]

    def explore(
        self, fixed: list[str], params: list[Any], oracle: Oracle, storage: str | None, name: str
    ) -> optuna.Study:
        """The search itself, given its space and an oracle (the replay benchmark reuses it
        with recorded results in place of the launcher, and ``track=False``)."""
        if not params:
            raise ValueError(
                "nothing to search: give sweep overrides (compression=a,b, "
                "compression.amount=interval(0.3,0.9), ...) or hydra.sweeper.params"
            )
        self.fixed, self.oracle = fixed, oracle
        self.plan = SpacePlan.build(params, oracle)
        self._report_space()
        self._open_study(storage, name)
        if self.s.sampler == "grid":
            self._run_grid()
        else:
            self._run_guided()
        self._flush_pending()
        if self.track:
            self._finish_study()
        return self.study

    def run_jobs(self, overrides: list[list[str]]) -> list[dict[str, Any]]:
        """Run one batch with Hydra's launcher; each result is dlas.run's return value."""
        from hydra.core.utils import JobStatus

        returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
        self.job_idx += len(overrides)
        results = []
        for ret in returns:
            value = ret._return_value  # .return_value re-raises a job's exception
            if ret.status != JobStatus.COMPLETED or not isinstance(value, dict):
                value = {"status": "FAILED", "reason": f"{type(value).__name__}: {value}"}
            results.append(value)
        return results

    def _report_space(self) -> None:
        size = self.plan.size()
        log.info(
            "search space: %d valid categorical combinations (%s configurations), %d "
            "invalid ones never run",
            len(self.plan.valid),
            size if size is not None else "continuous",
            len(self.plan.invalid),
        )
        for assignment, reasons in self.plan.invalid:
            log.info("  never run: %s: %s", _fmt(assignment), "; ".join(reasons))
        if not self.plan.valid:
            raise ValueError(
                "no valid configuration in the search space:\n"
                + "\n".join(f"  {_fmt(a)}: {'; '.join(r)}" for a, r in self.plan.invalid)
            )

    def _open_study(self, storage: str | None, name: str) -> None:
        sampler = create_sampler(self.s.sampler, self.s.seed, self.s.n_startup_trials)
        self.study = open_study(storage, name, self.objective.directions, sampler)
        fail_interrupted(self.study)
        self.done = finished_by_signature(self.study)
        self.baselines.add_trials(self.study.get_trials(deepcopy=False))
        log.info(
            "Optuna study %r in %s: %d trials stored",
            name,
            redact(storage) if storage else "memory",
            len(self.study.trials),
        )
        if self.track:
            self._open_parent(storage or "memory", name)

    def _open_parent(self, storage: str, name: str) -> None:
        self.parent = SweepRun.current()
        if self.parent is None:  # the dlas_sweep callback is not configured
            self.parent = SweepRun.open(self.config, f"study-{name}", {})
            self.own_parent = True
        old = self.study.user_attrs.get("mlflow_parent_run_id")
        if not (old and self.parent.adopt(old)):
            self.study.set_user_attr("mlflow_parent_run_id", self.parent.run_id)
        self.parent.set_tags(
            {
                "mlflow.runName": f"study-{name}",
                "optuna.study_name": name,
                "optuna.storage": redact(storage),
                "dlas.search.objective": self.s.objective,
                "dlas.search.sampler": self.s.sampler,
            }
        )
        self.parent.log_text(
            json.dumps(
                {
                    "fixed": self.fixed,
                    "params": [repr(p) for p in self.plan.params],
                    "invalid": [{"config": a, "reasons": r} for a, r in self.plan.invalid],
                },
                indent=1,
            ),
            "optuna/space.json",
        )

    def _run_guided(self) -> None:
        total = self.plan.size()
        while True:
            batch: dict[str, Candidate] = {}
            while len(batch) < self.s.n_jobs:
                exhausted = total is not None and len(self.done) >= total
                budget = self.s.n_trials - counted_trials(self.study)
                if not has_waiting(self.study) and (budget <= 0 or exhausted):
                    break
                self._ask(batch)
            if not batch:
                break
            self._launch(batch)

    def _run_grid(self) -> None:
        # Dense first, so the other configurations find their baseline already measured.
        todo = sorted(
            (a for a in self.plan.grid() if signature(a) not in self.done),
            key=lambda a: a.get("compression") != BASELINE_COMPRESSION,
        )
        for start in range(0, len(todo), self.s.n_jobs):
            batch: dict[str, Candidate] = {}
            for assignment in todo[start : start + self.s.n_jobs]:
                self.study.enqueue_trial(self.plan.encode(assignment)[0])
                self._ask(batch)
            self._launch(batch)

    # --- one trial -------------------------------------------------------------------------
    def _ask(self, batch: dict[str, Candidate]) -> None:
        """Ask one trial; tell it at once if it repeats a finished configuration or cannot
        run, else add it to ``batch``."""
        if self.duplicate_streak >= DUPLICATE_STREAK:
            self._enqueue_unexplored()
        trial = self.study.ask()
        assignment = self.plan.sample(trial)
        sig = signature(assignment)
        overrides = [
            p.override(assignment[p.path]) for p in self.plan.params if p.path in assignment
        ]
        for key, value in {
            "dlas.signature": sig,
            "dlas.overrides": overrides,
            "dlas.worker": worker_id(),
        }.items():
            trial.set_user_attr(key, value)
        if sig in self.done or sig in self.inflight:
            original = self.done.get(sig) or self.inflight[sig].trial
            self._tell_duplicate(trial, original)
            self.duplicate_streak += 1
            return
        self.duplicate_streak = 0
        seen = self.oracle.inspect(overrides)
        if seen.problems:  # only a numeric value can get here: categoricals were pre-checked
            trial.set_user_attr("dlas.reason", "; ".join(seen.problems))
            self._tell(trial, None, TrialState.PRUNED)
            return
        cand = Candidate(
            trial,
            assignment,
            self.fixed + overrides,
            model_key(seen.choices, self.fixed + overrides),
            seen.choices.get("compression"),
        )
        trial.set_user_attr("dlas.model_key", cand.model_key)
        trial.set_user_attr("dlas.compression", cand.compression)
        batch[sig] = self.inflight[sig] = cand

    def _launch(self, batch: dict[str, Candidate]) -> None:
        cands = list(batch.values())
        for cand, result in zip(cands, self.run_jobs([c.overrides for c in cands]), strict=True):
            self._finish(cand, result)
        self._resolve_pending()

    def _finish(self, cand: Candidate, result: dict[str, Any]) -> None:
        status = str(result.get("status", "FAILED"))
        cand.metrics = numeric_metrics(result)
        trial = cand.trial
        attrs = {
            "dlas.status": status,
            "dlas.reason": str(result.get("reason", "")),
            "mlflow_run_id": result.get("mlflow_run_id"),
            "dlas.latency": cand.metrics.get(self.objective.latency),
            "dlas.accuracy": cand.metrics.get(self.objective.accuracy),
        }
        for key, value in attrs.items():
            if value not in (None, ""):
                trial.set_user_attr(key, value)
        if attrs["mlflow_run_id"] and self.track:
            self._tag_child(str(attrs["mlflow_run_id"]), trial.number)
        if status != "FINISHED":
            state = TrialState.PRUNED if status == "SKIPPED" else TrialState.FAIL
            self._conclude(cand, None, state)
            return
        try:
            values = self.objective.values(cand.metrics)
        except KeyError as missing:
            trial.set_user_attr("dlas.reason", f"the run logged no {missing}")
            self._conclude(cand, None, TrialState.FAIL)
            return
        self.baselines.add(cand.model_key, cand.compression, attrs["dlas.accuracy"])
        if self.objective.constrained and self._drop(cand) is None and self._request_baseline(cand):
            self.pending.append(cand)
            return
        self._conclude(cand, values, TrialState.COMPLETE)

    def _drop(self, cand: Candidate) -> float | None:
        return self.baselines.drop(cand.model_key, cand.metrics, self.objective.accuracy)

    def _request_baseline(self, cand: Candidate) -> bool:
        """Enqueue the dense run of ``cand``'s model; False if there can be none."""
        if cand.model_key in self.requested:
            return True
        comp = next((p for p in self.plan.categoricals if p.path == "compression"), None)
        if not isinstance(comp, Categorical) or BASELINE_COMPRESSION not in comp.choices:
            return False
        must = [p.path for p in self.plan.categoricals if p.path.split(".")[0] in MODEL_LAYERS] + [
            "compression"
        ]
        target = self.plan.closest({**cand.assignment, "compression": BASELINE_COMPRESSION}, must)
        if target is None:
            return False
        self.requested.add(cand.model_key)
        if signature(target) not in self.inflight and signature(target) not in self.done:
            self.study.enqueue_trial(
                self.plan.encode(target)[0], user_attrs={"dlas.role": "dense baseline"}
            )
        return True

    def _resolve_pending(self) -> None:
        for cand in list(self.pending):
            if self._drop(cand) is not None:
                self.pending.remove(cand)
                self._conclude(cand, self.objective.values(cand.metrics), TrialState.COMPLETE)

    def _flush_pending(self) -> None:
        for cand in self.pending:
            log.warning(
                "no dense baseline for %s: accuracy drop unknown, treated as feasible",
                cand.model_key,
            )
            self._conclude(cand, self.objective.values(cand.metrics), TrialState.COMPLETE)
        self.pending = []

    def _conclude(self, cand: Candidate, values: list[float] | None, state: TrialState) -> None:
        drop = self._drop(cand) if state == TrialState.COMPLETE else None
        self._tell(cand.trial, values, state, drop)
        self.inflight.pop(signature(cand.assignment), None)

    def _tell(
        self,
        trial: optuna.Trial,
        values: list[float] | None,
        state: TrialState,
        drop: float | None = None,
    ) -> None:
        if drop is not None:
            trial.set_user_attr("dlas.accuracy_drop", drop)
            if self.objective.constrained:
                trial.set_constraint(DROP_CONSTRAINT, drop - self.s.max_accuracy_drop)
        frozen = self.study.tell(trial, values, state=state)
        self.done.setdefault(frozen.user_attrs["dlas.signature"], frozen)

    def _tell_duplicate(self, trial: optuna.Trial, original: Any) -> None:
        """The configuration already ran (or is running) in this study: run nothing. Told
        PRUNED, which also steers TPE away from proposing it yet again; the result stays on
        the original trial."""
        trial.set_user_attr("dlas.duplicate_of", original.number)
        trial.set_user_attr("dlas.reason", f"same configuration as trial {original.number}")
        self.study.tell(trial, None, state=TrialState.PRUNED)

    def _enqueue_unexplored(self) -> None:
        self.duplicate_streak = 0
        if not self.plan.is_finite():
            return
        fresh = [
            a
            for a in self.plan.grid()
            if signature(a) not in self.done and signature(a) not in self.inflight
        ]
        if fresh:
            self.study.enqueue_trial(
                self.plan.encode(self.rng.choice(fresh))[0], user_attrs={"dlas.role": "unexplored"}
            )

    def _tag_child(self, run_id: str, number: int) -> None:
        self.parent.client.set_tag(run_id, "optuna.study_name", self.study.study_name)
        self.parent.client.set_tag(run_id, "optuna.trial_number", str(number))

    # --- the end -----------------------------------------------------------------------------
    def _finish_study(self) -> None:
        text = report.best_text(self.study, self.objective)
        if self.plan.invalid:
            text += f"\nnever run, invalid ({len(self.plan.invalid)}):\n" + "\n".join(
                f"  {_fmt(a)}: {'; '.join(r)}" for a, r in self.plan.invalid
            )
        print(text, flush=True)
        self.parent.log_text(text, "optuna/best.txt")
        self.parent.log_files(report.study_artifacts(self.study, self.objective), "optuna")
        states = [t.state for t in self.study.trials]
        self.parent.log_metrics(
            {
                f"study/{s.name.lower()}": states.count(s)
                for s in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
            }
        )
        if self.own_parent:  # else the dlas_sweep callback reports when the sweep ends
            from dlas.report import report_sweep  # a failure is only a warning

            report_sweep(self.parent.client, self.parent.run_id)  # logged to the parent run
            self.parent.close("FINISHED")


def _fmt(assignment: Assignment) -> str:
    return " ".join(f"{k}={v}" for k, v in assignment.items())


def settings_from_config(conf: DictConfig | dict[str, Any]) -> SweeperSettings:
    values = OmegaConf.to_container(conf, resolve=True) if isinstance(conf, DictConfig) else conf
    values = {k: v for k, v in dict(values).items() if not k.startswith("_")}
    return SweeperSettings(**values)
