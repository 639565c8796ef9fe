"""When tuning stops before its trial budget: no improvement over a task's rounds, or time."""

from __future__ import annotations

from types import SimpleNamespace

from dlas.tuning.progress import TuningStop


class FakeScheduler:
    """The part of MetaSchedule's TaskScheduler that TuningStop uses."""

    def __init__(self, tasks: int) -> None:
        self.tasks_ = [SimpleNamespace(is_terminated=False) for _ in range(tasks)]

    def terminate_task(self, task_id: int) -> None:
        assert not self.tasks_[task_id].is_terminated, "terminated twice"
        self.tasks_[task_id].is_terminated = True


def test_a_task_stops_after_patience_rounds_without_improvement():
    stop, sched = TuningStop(patience=2, min_improvement=0.05, max_seconds=None), FakeScheduler(2)
    for best in (10.0, 9.0, 8.9, 8.8):  # 9.0 improves by 10%; 8.9 and 8.8 by < 5% of 9.0
        stop.after_round(sched, 0, best, 2)
    assert sched.tasks_[0].is_terminated and stop.stopped_tasks == {0}
    for best in (10.0, 9.0, 8.0, 7.0):  # keeps improving
        stop.after_round(sched, 1, best, 2)
    assert not sched.tasks_[1].is_terminated


def test_no_patience_never_stops_a_task_early():
    stop, sched = (
        TuningStop(patience=None, min_improvement=0.05, max_seconds=None),
        FakeScheduler(1),
    )
    for _ in range(10):
        stop.after_round(sched, 0, 5.0, 1)
    assert not sched.tasks_[0].is_terminated


def test_the_wall_clock_budget_ends_every_task_once():
    stop, sched = TuningStop(patience=None, min_improvement=0.0, max_seconds=1e-9), FakeScheduler(3)
    sched.tasks_[1].is_terminated = True  # already finished on its own
    stop.after_round(sched, 0, 1.0, 3)
    stop.after_round(sched, 2, 1.0, 3)  # a second call terminates nothing twice
    assert stop.out_of_time and all(t.is_terminated for t in sched.tasks_)
