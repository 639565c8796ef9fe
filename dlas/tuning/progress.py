"""A tqdm bar over MetaSchedule trials, what each task got out of them, and when to stop."""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm import tqdm
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
from tvm.s_tir.meta_schedule.search_strategy import PySearchStrategy, SearchStrategy


@derived_object
class TrialProgress(PyMeasureCallback):
    """Counts measured trials per task, keeps each task's best latency and shows the model's
    estimated latency: sum over tasks of weight x best (tasks with no measurement yet count
    with ``known_best``, what the database already had for them)."""

    def __init__(
        self,
        total: int,
        weights: list[float],
        known_best: list[float | None],
        enabled: bool = True,
        untuned: list[float | None] | None = None,
        stop: TuningStop | None = None,
    ) -> None:
        super().__init__()
        self.weights = list(weights)
        self.best: list[float | None] = list(known_best)
        self.trials = [0] * len(weights)
        self.failures = [0] * len(weights)
        # Each task's default schedule (seconds), for the untuned figure beside the estimate.
        self.untuned = list(untuned) if untuned is not None else [None] * len(weights)
        self.stop = stop
        self.bar = tqdm(
            total=total,
            unit="trial",
            desc="MetaSchedule",
            file=sys.stderr,
            disable=not enabled,
            mininterval=1.0,
            dynamic_ncols=True,
        )

    def apply(
        self,
        task_scheduler: Any,
        task_id: int,
        measure_candidates: list[Any],
        builder_results: list[Any],
        runner_results: list[Any],
    ) -> None:
        task_id = int(task_id)
        for build, run in zip(builder_results, runner_results, strict=True):
            self.trials[task_id] += 1
            secs = [float(s) for s in (run.run_secs or [])]
            if build.error_msg or run.error_msg or not secs:
                self.failures[task_id] += 1
                continue
            mean = sum(secs) / len(secs)
            if self.best[task_id] is None or mean < self.best[task_id]:
                self.best[task_id] = mean
        self.bar.update(len(measure_candidates))
        estimate, untuned = self.estimate_ms(), self.estimate_ms(self.untuned)
        text = f"best≈{estimate:.4g} ms" if estimate is not None else "no valid trial yet"
        if untuned is not None:
            text += f" (untuned≈{untuned:.4g} ms)"
        self.bar.set_postfix_str(text)
        if self.stop is not None:
            self.stop.after_round(task_id, self.best[task_id])

    def estimate_ms(self, per_task: list[float | None] | None = None) -> float | None:
        """Sum over tasks of weight x seconds, in ms (tasks without a figure left out)."""
        values = self.best if per_task is None else per_task
        known = [(w, b) for w, b in zip(self.weights, values, strict=True) if b is not None]
        return sum(w * b for w, b in known) * 1e3 if known else None

    def close(self) -> None:
        self.bar.close()


class TuningStop:
    """When tuning stops before its trial budget: a task whose best has not improved by
    ``min_improvement`` (a fraction) over ``patience`` of its rounds is done, and every task is
    done once ``max_seconds`` of wall-clock time have passed. A done task ends through its
    search strategy (:class:`StoppableSearch`)."""

    def __init__(
        self, patience: int | None, min_improvement: float, max_seconds: float | None
    ) -> None:
        self.patience = patience
        self.min_improvement = min_improvement
        self.deadline = time.monotonic() + max_seconds if max_seconds is not None else None
        self.stale: dict[int, int] = {}
        self.reference: dict[int, float] = {}
        self.stopped_tasks: set[int] = set()
        self.out_of_time = False

    def after_round(self, task_id: int, best: float | None) -> None:
        if self.patience is None or best is None:
            return
        reference = self.reference.get(task_id)
        if reference is None or best < reference * (1 - self.min_improvement):
            self.reference[task_id], self.stale[task_id] = best, 0
            return
        self.stale[task_id] = self.stale.get(task_id, 0) + 1
        if self.stale[task_id] >= self.patience:
            self.stopped_tasks.add(task_id)

    def is_done(self, task_id: int) -> bool:
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.out_of_time = True
        return self.out_of_time or task_id in self.stopped_tasks

    def search(self, strategy: SearchStrategy, task_id: int) -> SearchStrategy:
        """``strategy`` (a fresh copy) for task ``task_id``, ending when the task is done."""
        return StoppableSearch(strategy.clone(), self, task_id)


@derived_object
class StoppableSearch(PySearchStrategy):
    """A task's search strategy that has no more candidates once :class:`TuningStop` says the
    task is done, so that MetaSchedule's scheduler ends the task itself. Ending it from a
    measure callback instead (``terminate_task``) crashes the scheduler whenever the callback
    runs inside the join of the task it has just picked to run next (``Check failed:
    !task->is_terminated``)."""

    def __init__(self, inner: SearchStrategy, stop: TuningStop, task_id: int) -> None:
        self.inner, self.stop, self.task_id = inner, stop, task_id

    def _initialize_with_tune_context(self, context: Any) -> None:
        self.inner._initialize_with_tune_context(context)

    def pre_tuning(self, *args: Any) -> None:
        self.inner.pre_tuning(*args)

    def post_tuning(self) -> None:
        self.inner.post_tuning()

    def generate_measure_candidates(self) -> list[Any] | None:
        if self.stop.is_done(self.task_id):
            return None
        return self.inner.generate_measure_candidates()

    def notify_runner_results(self, measure_candidates: list[Any], results: list[Any]) -> None:
        self.inner.notify_runner_results(measure_candidates, results)

    def clone(self) -> SearchStrategy:
        return StoppableSearch(self.inner.clone(), self.stop, self.task_id)
