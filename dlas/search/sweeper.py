"""The guided sweep behind ``hydra/sweeper=dlas_optuna``: one Optuna trial = one dlas run.

Ask/tell loop: each trial samples a valid configuration (:class:`~dlas.search.space.SpacePlan`),
Hydra's launcher runs the batch (``n_jobs`` at a time), the results are told back. A trial whose
accuracy drop cannot be judged yet (no dense run of its model so far) waits while the dense
baseline is enqueued as a trial of its own. ``sampler=grid`` walks every valid configuration.

Any number of workers may run the same command on one storage: each asks, claims and runs
trials on its own (a slow trial idles nobody), and they agree through the stored trials
(:mod:`dlas.search.study`): no configuration runs twice, ``n_trials`` is shared, a trial whose
worker died is failed through Optuna's heartbeat and retried, and every worker stays until no
trial of the study is left running, so the study ends complete.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from dlas.search import study as st
from dlas.search.context import trial_env_overrides
from dlas.search.coordination import StudyWorker, fmt_assignment
from dlas.search.objectives import DROP_CONSTRAINT, Baselines, create_objective
from dlas.search.oracle import ComposeOracle, Oracle, sweep_compose
from dlas.search.space import Assignment, SpacePlan, parse_space, signature
from dlas.search.summary import job_result, model_key, numeric_metrics
from hydra_plugins.dlas_sweeper.settings import SweeperSettings, settings_from_dict

log = logging.getLogger(__name__)

__all__ = ["GuidedSweep", "SweeperSettings", "settings_from_config"]

# After this many proposals in a row that repeat evaluated configurations, the next trial is a
# random unevaluated one: TPE on a small discrete space otherwise keeps proposing its favourite.
DUPLICATE_STREAK = 3
# How often a worker with nothing to run looks at the study again (others' trials, retries).
POLL_S = 1.0


@dataclass
class Candidate:
    """A configuration on its way through the launcher."""

    trial: optuna.Trial
    assignment: Assignment
    overrides: list[str]
    model_key: str
    compression: str | None
    metrics: dict[str, float] = field(default_factory=dict)


class GuidedSweep(StudyWorker):
    def __init__(
        self, settings: SweeperSettings, max_accuracy_drop: float | None = 1.0, track: bool = True
    ) -> None:
        self.s = settings
        self.track = track  # parent MLflow run, child tags, study artifacts
        self.max_accuracy_drop = max_accuracy_drop  # points of top-1
        self.baselines = Baselines()
        self.inflight: dict[str, Candidate] = {}  # launched or waiting for a baseline
        self.pending: list[Candidate] = []  # ran; waiting for their dense baseline
        self.requested: set[str] = set()  # model keys whose baseline is enqueued
        self.own_parent = False
        self.duplicate_streak = 0
        self.rng = random.Random(settings.seed)
        self.config: DictConfig | None = None

    @property
    def objective(self) -> Any:
        return create_objective(
            self.s.objective,
            latency=self.s.latency_metric,
            accuracy=self.s.accuracy_metric,
            max_accuracy_drop=self.max_accuracy_drop,
        )

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        # One knob for the summary of every sweep and this sweeper's constraint.
        self.max_accuracy_drop = OmegaConf.select(
            config, "hydra.callbacks.dlas_sweep.max_accuracy_drop", default=1.0
        )
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # --- the sweep ---------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> list[dict[str, Any]]:
        assert self.config is not None
        loader = self.hydra_context.config_loader
        declared = [f"{k}={v}" for k, v in (self.s.params or {}).items()]
        fixed, params = parse_space(declared + list(arguments), loader)
        oracle = ComposeOracle(sweep_compose(loader, self.config), fixed)
        storage = self.s.storage or st.default_storage(self.config.paths.mlruns_dir)
        name = self.s.study_name or st.default_study_name(
            fixed,
            [o for o in declared + list(arguments) if o not in fixed],
            self.s.objective,
            self.max_accuracy_drop,
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
        try:
            if self.s.sampler == "grid":
                self._enqueue_grid()
            self._run()
            self._flush_pending()
        finally:
            self.heartbeat.stop()
        if self.track:
            self._finish_study()
        return self.study

    def run_jobs(self, overrides: list[list[str]]) -> list[dict[str, Any]]:
        """Run one batch with Hydra's launcher; each result is dlas.run's return value."""
        returns = self.launcher.launch(overrides, initial_job_idx=self._job_idx)
        self._job_idx += len(overrides)
        return [job_result(ret) for ret in returns]

    _job_idx = 0

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
            log.info("  never run: %s: %s", fmt_assignment(assignment), "; ".join(reasons))
        if not self.plan.valid:
            raise ValueError(
                "no valid configuration in the search space:\n"
                + "\n".join(f"  {fmt_assignment(a)}: {'; '.join(r)}" for a, r in self.plan.invalid)
            )

    # --- the loop shared by every worker ------------------------------------------------------
    def _run(self) -> None:
        while True:
            st.fail_stale(self.study)  # others' dead trials, retried
            batch: dict[str, Candidate] = {}
            while len(batch) < self.s.n_jobs and self._may_ask():
                self._ask(batch)
            if batch:
                self._launch(batch)
                continue
            self._resolve_pending()
            if not self._others_busy():
                break
            time.sleep(POLL_S)  # others' trials may still fail and come back as retries

    # --- one trial -------------------------------------------------------------------------
    def _ask(self, batch: dict[str, Candidate]) -> None:
        """Ask one trial and claim its configuration; tell it at once if another trial holds
        that configuration, if the budget is spent, or if it cannot run; else add it to
        ``batch``."""
        if self.duplicate_streak >= DUPLICATE_STREAK:
            self._enqueue_unexplored()
        trial = self.study.ask()
        self.heartbeat.add(trial._trial_id)
        assignment = self.plan.sample(trial)
        sig = signature(assignment)
        overrides = [
            p.override(assignment[p.path]) for p in self.plan.params if p.path in assignment
        ]
        for key, value in {
            "dlas.signature": sig,
            "dlas.overrides": overrides,
            "dlas.worker": st.worker_id(),
        }.items():
            trial.set_user_attr(key, value)
        trials = self.study.get_trials(deepcopy=False)  # read after the claim is written
        mine = self.inflight.get(sig)
        holder = st.claimed_by(trials, trial.number, sig) or (mine.trial if mine else None)
        if holder is not None:
            self._tell_duplicate(trial, holder)
            self.duplicate_streak += 1
            return
        self.duplicate_streak = 0
        if st.retries_of(trials, sig) > self.s.max_retry:
            trial.set_user_attr(
                "dlas.reason",
                f"not retried: its worker died {st.retries_of(trials, sig)} times "
                f"(hydra.sweeper.max_retry={self.s.max_retry})",
            )
            self._tell(trial, None, TrialState.PRUNED)
            return
        if not st.exempt(self._frozen(trial)) and st.over_budget(trials, trial.number, self.budget):
            trial.set_user_attr(st.SURPLUS, True)
            trial.set_user_attr("dlas.reason", f"n_trials={self.s.n_trials} already taken")
            self._tell(trial, None, TrialState.PRUNED)
            return
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

    def _frozen(self, trial: optuna.Trial) -> FrozenTrial:
        return self.study._storage.get_trial(trial._trial_id)

    def _launch(self, batch: dict[str, Candidate]) -> None:
        cands = list(batch.values())
        jobs = [c.overrides + self._job_extras(c.trial.number) for c in cands]
        for cand, result in zip(cands, self.run_jobs(jobs), strict=True):
            self._finish(cand, result)
        self._resolve_pending()

    def _job_extras(self, number: int) -> list[str]:
        """Hydra-side overrides of a tracked job: its folder is named by the trial (unique
        across the study's workers) and its MLflow run is tagged with the trial from the
        start (see :func:`dlas.search.context.sweep_job_tags`)."""
        if not self.track:
            return []
        return [
            f"hydra.sweep.subdir=trial-{number}",
            *trial_env_overrides(self.study.study_name, number),
        ]

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
        try:
            for key, value in attrs.items():
                if value not in (None, ""):
                    trial.set_user_attr(key, value)
        except RuntimeError as exc:  # failed as stale by another worker meanwhile
            self._lost(cand, exc)
            return
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

    def _lost(self, cand: Candidate, exc: Exception) -> None:
        log.warning(
            "trial %d was failed by another worker while it ran (no heartbeat for "
            "grace_period; is this host overloaded?): %s",
            cand.trial.number,
            exc,
        )
        self.heartbeat.remove(cand.trial._trial_id)
        self.inflight.pop(signature(cand.assignment), None)

    def _drop(self, cand: Candidate) -> float | None:
        return self.baselines.drop(cand.model_key, cand.metrics, self.objective.accuracy)

    def _resolve_pending(self) -> None:
        if not self.pending:
            return
        # Baselines measured by other workers count too.
        self.baselines.add_trials(
            self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        )
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
        try:
            self._tell(cand.trial, values, state, drop)
        except RuntimeError as exc:
            self._lost(cand, exc)
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
                trial.set_constraint(DROP_CONSTRAINT, drop - self.max_accuracy_drop)
        self.study.tell(trial, values, state=state)
        self.heartbeat.remove(trial._trial_id)

    def _tell_duplicate(self, trial: optuna.Trial, original: Any) -> None:
        """The configuration already ran (or is running) in this study: run nothing. Told
        PRUNED, which also steers TPE away from proposing it yet again; the result stays on
        the original trial."""
        trial.set_user_attr(st.DUPLICATE, original.number)
        trial.set_user_attr("dlas.reason", f"same configuration as trial {original.number}")
        self.study.tell(trial, None, state=TrialState.PRUNED)
        self.heartbeat.remove(trial._trial_id)


def settings_from_config(conf: DictConfig | dict[str, Any]) -> SweeperSettings:
    values = OmegaConf.to_container(conf, resolve=True) if isinstance(conf, DictConfig) else conf
    return settings_from_dict({k: v for k, v in dict(values).items() if not k.startswith("_")})
