"""How the workers of one guided sweep agree through the study they share (the part of
:class:`~dlas.search.sweeper.GuidedSweep` that exists because there may be several): opening the
study and its one parent MLflow run, whether to ask another trial, enqueued grid points and
dense baselines, and trials whose worker died."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from dlas.search import report
from dlas.search import study as st
from dlas.search.parent import SweepRun
from dlas.search.space import Assignment, Categorical, signature
from dlas.search.summary import BASELINE_COMPRESSION, MODEL_LAYERS

if TYPE_CHECKING:
    from dlas.search.sweeper import Candidate

log = logging.getLogger(__name__)

# A worker that joins a study created by another waits this long for its parent MLflow run id.
PARENT_WAIT_S = 120.0
PARENT_ATTR = "mlflow_parent_run_id"


def fmt_assignment(assignment: Assignment) -> str:
    return " ".join(f"{k}={v}" for k, v in assignment.items())


class StudyWorker:
    """Mixed into GuidedSweep, whose ``__init__`` sets the attributes used here (``s``,
    ``plan``, ``study``, ``inflight``, ``requested``, ``baselines``, ``track``, ...)."""

    s: Any
    plan: Any
    study: optuna.Study
    inflight: dict[str, Candidate]
    requested: set[str]

    @property
    def budget(self) -> int:
        # grid: every valid configuration, whatever n_trials says.
        return 1 << 30 if self.s.sampler == "grid" else self.s.n_trials

    def _open_study(self, storage: str | None, name: str) -> None:
        sampler = st.create_sampler(self.s.sampler, self.s.seed, self.s.n_startup_trials)
        grace = self.s.grace_period or 6 * self.s.heartbeat_interval
        rdb = st.open_storage(storage, self.s.heartbeat_interval, grace, self._on_stale)
        self.study, created = st.open_study(rdb, name, self.objective.directions, sampler)
        self.heartbeat = st.Heartbeat(rdb)
        self.baselines.add_trials(self.study.get_trials(deepcopy=False))
        log.info(
            "Optuna study %r in %s: %d trials stored (%s)",
            name,
            st.redact(storage) if storage else "memory",
            len(self.study.trials),
            "created here" if created else "joined",
        )
        if self.track:
            self._open_parent(storage or "memory", name, created)
        for dead in st.fail_interrupted(self.study):
            self._on_stale(self.study, dead)

    def _open_parent(self, storage: str, name: str, created: bool) -> None:
        """One parent MLflow run per study, whichever worker and session: the worker that
        created the study publishes its parent's id; the others adopt it."""
        assert self.config is not None
        self.parent = SweepRun.current()
        if self.parent is None:  # the dlas_sweep callback is not configured
            self.parent = SweepRun.open(self.config, f"study-{name}", {})
            self.own_parent = True
        old = None if created else st.wait_for_user_attr(self.study, PARENT_ATTR, PARENT_WAIT_S)
        if not (old and self.parent.adopt(old)):
            self.study.set_user_attr(PARENT_ATTR, self.parent.run_id)
        self.parent.set_tags(
            {
                "mlflow.runName": f"study-{name}",
                "optuna.study_name": name,
                "optuna.storage": st.redact(storage),
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

    def _may_ask(self) -> bool:
        trials = self.study.get_trials(deepcopy=False)
        if any(t.state == TrialState.WAITING for t in trials):
            return True  # enqueued: a retry, a baseline, a grid point
        if self.s.sampler == "grid":
            return False
        if sum(1 for t in trials if st.counts(t)) >= self.budget:
            return False
        total = self.plan.size()
        taken = set(st.finished_by_signature(trials)) | st.running_signatures(trials)
        return total is None or len(taken) < total

    def _others_busy(self) -> bool:
        mine = {c.trial.number for c in self.inflight.values()}
        return any(
            t.number not in mine
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        )

    def _enqueue_grid(self) -> None:
        # Dense first, so the other configurations find their baseline already measured.
        trials = self.study.get_trials(deepcopy=False)
        taken = set(st.finished_by_signature(trials)) | st.running_signatures(trials)
        todo = sorted(
            (a for a in self.plan.grid() if signature(a) not in taken),
            key=lambda a: a.get("compression") != BASELINE_COMPRESSION,
        )
        for assignment in todo:  # another worker's identical queue is skipped
            self._enqueue(assignment, "grid", skip_if_exists=True)

    def _enqueue(self, assignment: Assignment, role: str, skip_if_exists: bool = False) -> None:
        self.study.enqueue_trial(
            self.plan.encode(assignment)[0],
            user_attrs={st.ROLE: role, "dlas.signature": signature(assignment)},
            skip_if_exists=skip_if_exists,
        )

    def _request_baseline(self, cand: Candidate) -> bool:
        """Enqueue the dense run of ``cand``'s model unless some worker has it already (run,
        running or enqueued); False if there can be none."""
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
        sig = signature(target)
        held = any(
            st.counts(t) and t.user_attrs.get("dlas.signature") == sig
            for t in self.study.get_trials(deepcopy=False)
        )
        if not held:
            self._enqueue(target, "dense baseline", skip_if_exists=True)
        return True

    def _enqueue_unexplored(self) -> None:
        self.duplicate_streak = 0
        if not self.plan.is_finite():
            return
        trials = self.study.get_trials(deepcopy=False)
        taken = set(st.finished_by_signature(trials)) | st.running_signatures(trials)
        fresh = [a for a in self.plan.grid() if signature(a) not in taken]
        if fresh:
            self._enqueue(self.rng.choice(fresh), "unexplored")

    # --- workers that died ------------------------------------------------------------------
    def _on_stale(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """A trial whose worker died (no heartbeat for grace_period, or a dead pid on this
        host), already FAIL: end its MLflow run as KILLED and enqueue its configuration again
        (``RetryFailedTrialCallback``'s idea, with dlas's claim attributes)."""
        reason = (
            f"worker {trial.user_attrs.get('dlas.worker', '?')} died during trial {trial.number}"
        )
        log.warning("%s: failed it; its configuration is retried", reason)
        if self.track and getattr(self, "parent", None) is not None:
            self.parent.kill_trial_runs(trial.number, reason)
        sig = trial.user_attrs.get("dlas.signature")
        repeat = st.DUPLICATE in trial.user_attrs or st.SURPLUS in trial.user_attrs
        if not sig or not trial.params or repeat:
            return
        if st.retries_of(study.get_trials(deepcopy=False), sig) > self.s.max_retry:
            log.error("configuration of trial %d not retried: max_retry reached", trial.number)
            return
        role = trial.user_attrs.get(st.ROLE)
        study.enqueue_trial(
            trial.params,
            user_attrs={
                st.RETRY_OF: trial.number,
                "dlas.signature": sig,
                **({st.ROLE: role} if role else {}),
            },
        )

    def _tag_child(self, run_id: str, number: int) -> None:
        self.parent.client.set_tag(run_id, "optuna.study_name", self.study.study_name)
        self.parent.client.set_tag(run_id, "optuna.trial_number", str(number))

    # --- the end -----------------------------------------------------------------------------
    def _finish_study(self) -> None:
        text = report.best_text(self.study, self.objective)
        if self.plan.invalid:
            text += f"\nnever run, invalid ({len(self.plan.invalid)}):\n" + "\n".join(
                f"  {fmt_assignment(a)}: {'; '.join(r)}" for a, r in self.plan.invalid
            )
        print(text, flush=True)
        self.parent.log_text(text, "optuna/best.txt")
        self.parent.log_files(report.study_artifacts(self.study, self.objective), "optuna")
        trials = self.study.trials
        states = [t.state for t in trials]
        metrics = {
            f"study/{s.name.lower()}": states.count(s)
            for s in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
        }
        metrics["study/configurations"] = len(st.finished_by_signature(trials))
        self.parent.log_metrics(metrics)
        # The study's best feasible run in the Model Registry (never raises; dlas.serving).
        from dlas.serving import champion

        champion.register_best(
            self.config,
            champion.from_study(self.study),
            self.max_accuracy_drop,
            latency=self.objective.latency,
            parent_run_id=self.parent.run_id,
            study_name=self.study.study_name,
        )
        if self.own_parent:  # else the dlas_sweep callback reports when the sweep ends
            from dlas.report import report_sweep  # a failure is only a warning

            report_sweep(self.parent.client, self.parent.run_id)  # logged to the parent run
            self.parent.close("FINISHED")
