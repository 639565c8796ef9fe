"""A tqdm bar over MetaSchedule trials, and what each task got out of them."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback


@derived_object
class TrialProgress(PyMeasureCallback):
    """Counts measured trials per task, keeps each task's best latency and shows the model's
    estimated latency: sum over tasks of weight x best (tasks with no measurement yet count
    with ``known_best``, what the database already had for them)."""

    def __init__(
        self, total: int, weights: list[float], known_best: list[float | None], enabled: bool = True
    ) -> None:
        super().__init__()
        self.weights = list(weights)
        self.best: list[float | None] = list(known_best)
        self.trials = [0] * len(weights)
        self.failures = [0] * len(weights)
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
        estimate = self.estimate_ms()
        self.bar.set_postfix_str(
            f"best≈{estimate:.4g} ms" if estimate is not None else "no valid trial yet"
        )

    def estimate_ms(self) -> float | None:
        known = [(w, b) for w, b in zip(self.weights, self.best, strict=True) if b is not None]
        return sum(w * b for w, b in known) * 1e3 if known else None

    def close(self) -> None:
        self.bar.close()
