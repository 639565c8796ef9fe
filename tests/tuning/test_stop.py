"""When tuning stops before its trial budget: no improvement over a task's rounds, or time."""

from __future__ import annotations

import time

from tvm.s_tir import meta_schedule as ms

from dlas.tuning.progress import TuningStop


def test_a_task_stops_after_patience_rounds_without_improvement():
    stop = TuningStop(patience=2, min_improvement=0.05, max_seconds=None)
    for best in (10.0, 9.0, 8.9, 8.8):  # 9.0 improves by 10%; 8.9 and 8.8 by < 5% of 9.0
        assert not stop.is_done(0)
        stop.after_round(0, best)
    assert stop.is_done(0) and stop.stopped_tasks == {0}
    for best in (10.0, 9.0, 8.0, 7.0):  # keeps improving
        stop.after_round(1, best)
    assert not stop.is_done(1)


def test_no_patience_never_stops_a_task_early():
    stop = TuningStop(patience=None, min_improvement=0.05, max_seconds=None)
    for _ in range(10):
        stop.after_round(0, 5.0)
    assert not stop.is_done(0) and not stop.out_of_time


def test_the_wall_clock_budget_ends_every_task():
    stop = TuningStop(patience=None, min_improvement=0.0, max_seconds=0.05)
    assert not any(stop.is_done(t) for t in range(3))
    time.sleep(0.1)
    assert all(stop.is_done(t) for t in range(3)) and stop.out_of_time


def test_a_done_task_gets_no_more_candidates_and_copies_keep_their_task():
    stop = TuningStop(patience=1, min_improvement=0.5, max_seconds=None)
    strategy = stop.search(ms.SearchStrategy.create("replay-trace"), task_id=3)
    copy = strategy.clone()  # what each TuneContext gets
    stop.after_round(3, 1.0)
    stop.after_round(3, 0.9)  # not 50% better: done
    # (An unfinished task would ask the uninitialized inner strategy, and fail.)
    assert strategy.generate_measure_candidates() is None
    assert copy.generate_measure_candidates() is None
