"""The default schedule stays a candidate: seeded as a record, and timed again back to back
against the best searched record before a build applies either."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tvm
import tvm_ffi
from tvm import s_tir
from tvm.s_tir import meta_schedule as ms

from dlas.config.schema import DeviceConfig
from dlas.devices.local_cpu import LocalCPU
from dlas.tuning.records import RecordStore, best_seconds, target_key
from dlas.tuning.seeding import default_schedule, seed_default_schedules, verify_against_defaults
from dlas.tuning.workers import InProcessBuilder, InProcessRunner
from tests.tuning.helpers import host_target, lowered, mlp_module
from tests.tuning.test_metaschedule import make


def _applied(record, mod: tvm.IRModule) -> tvm.IRModule:
    sch = s_tir.Schedule(mod)
    record.trace.apply_to_schedule(sch, remove_postproc=False)
    return sch.mod


@pytest.fixture
def one_thread():
    """TVM's pool at one thread while a test times the default against the lucky record.
    With two threads on a machine whose other core is busy (the other test worker), each call
    of the default's parallel kernel waits out time slices at its barrier: measured here,
    33 us became 6.4 ms, while the one-threaded lucky loop nest went from 3.8 ms to 8.3 ms,
    and one busier moment would flip the comparison the tests check. (The device's own
    thread setting, as a run applies device.num_threads=1.)"""
    with LocalCPU(DeviceConfig(name="local", num_threads=1)).threads():
        yield


@pytest.fixture
def builder():
    """An in-process builder, closed after the test (it keeps a folder under /tmp)."""
    builder = InProcessBuilder(1, export=False)
    yield builder
    builder.close()


def _store_with_record(path: Path, target, builder, runner, sizes, edit):
    """A store with the default schedule of an MLP's first task, timed, and a record of the
    task scheduled by ``edit(sch, block)`` as if timed 100x faster than the default."""
    task, *_ = ms.relax_integration.extract_tasks(mlp_module(sizes=sizes), target)
    mod = task.dispatched[0]
    store = RecordStore(path)
    seeded = seed_default_schedules([task], store, builder, runner, target)
    store.mark_seeded({task.task_name: mod}, seeded)
    sch = s_tir.Schedule(mod)
    (block,) = sch.get_child_blocks(sch.get_sblock("root"))
    edit(sch, block)
    store.database.commit_tuning_record(
        ms.database.TuningRecord(
            sch.trace,
            store.database.commit_workload(mod),
            [seeded[task.task_name] / 100],
            target,
            ms.arg_info.ArgInfo.from_entry_func(sch.mod),
        )
    )
    return store, task, sch


def _lucky_store(path: Path, target, builder, runner):
    """A store whose best record of a (1 x 1024) . (1024 x 1024) task is a plain loop nest
    (one thread, no vectorization, strided), recorded as if timed 100x faster than the default
    schedule beside it: what a busy moment during the default's timing can look like."""

    def naive(sch, block):
        i, j, k = sch.get_loops(block)
        sch.reorder(k, i, j)  # rows of the weight 4 KiB apart in the inner loop: no reuse

    store, task, sch = _store_with_record(path, target, builder, runner, (1024, 1024), naive)
    mod = task.dispatched[0]
    assert tvm_ffi.structural_equal(_applied(store.records(mod, 1)[0], mod), sch.mod)
    return store, task


def test_a_record_timed_in_a_quiet_moment_does_not_beat_a_faster_default(
    tmp_path, one_thread, builder
):
    target = host_target()
    runner = InProcessRunner(ms.runner.EvaluatorConfig(number=5, repeat=3))
    store, task = _lucky_store(tmp_path, target, builder, runner)
    mod = task.dispatched[0]
    verified = verify_against_defaults([task], store, builder, runner, target)
    default_s, searched_s = verified[task.task_name]
    assert searched_s > default_s  # timed side by side, the strided loop nest is slower
    default_mod = default_schedule(mod, target).mod
    chosen = store.best_record(mod)
    assert tvm_ffi.structural_equal(_applied(chosen, mod), default_mod)
    assert best_seconds(chosen) == default_s
    # The run's table shows the default's time from the same side-by-side pass.
    assert store.default_us(mod) == pytest.approx(default_s * 1e6)
    # A store opened again (another run) applies the same choice.
    reopened = RecordStore(tmp_path).best_record(mod)
    assert tvm_ffi.structural_equal(_applied(reopened, mod), default_mod)


def test_a_store_tuned_before_verification_is_checked_on_its_next_use(
    tmp_path, one_thread, builder
):
    """Nothing left to tune, yet the build times the lucky record against the default and
    applies the default (the check runs once per workload: the next build reuses it)."""
    target = host_target()
    runner = InProcessRunner(ms.runner.EvaluatorConfig(number=5, repeat=3))
    store, task = _lucky_store(tmp_path / "tuning" / target_key(target), target, builder, runner)
    store.mark_tuned({task.task_name: task.dispatched[0]}, 1000.0)
    tuner, ctx = make(tmp_path, trials=8)
    tuner.compile(lowered(mlp_module(sizes=(1024, 1024))), target, ctx)
    assert ctx.metrics["tune/new_trials"] == 0
    assert ctx.metrics["tune/tasks_default_kept"] == 1
    (row,) = json.loads((ctx.artifacts["tuning"] / "tasks.json").read_text())
    assert row["best_us"] > row["default_schedule_us"] / 10  # not the lucky record (/100)
    applied = RecordStore(store.path).best_record(task.dispatched[0])
    default_mod = default_schedule(task.dispatched[0], target).mod
    assert tvm_ffi.structural_equal(_applied(applied, task.dispatched[0]), default_mod)
    tuner, ctx = make(tmp_path, trials=8)
    tuner.compile(lowered(mlp_module(sizes=(1024, 1024))), target, ctx)
    assert "tune/tasks_default_kept" not in ctx.metrics  # checked already


def test_a_record_taking_a_weight_in_its_own_layout_is_timed_with_its_arguments(
    tmp_path, one_thread, builder
):
    """A searched schedule may take a weight in another layout (MetaSchedule's RewriteLayout):
    it is timed against the default with arguments in its own shapes, not the task's."""
    target = host_target()
    runner = InProcessRunner(ms.runner.EvaluatorConfig(number=5, repeat=3))

    def packed(sch, block):
        sch.transform_layout(block, ("read", 1), lambda n, k: (n // 16, k, n % 16))

    store, task, sch = _store_with_record(tmp_path, target, builder, runner, (256, 64), packed)
    shapes = [
        [list(info.shape) for info in ms.arg_info.ArgInfo.from_entry_func(m)]
        for m in (task.dispatched[0], sch.mod)
    ]
    assert shapes[0] != shapes[1]  # the record takes an argument in a shape of its own
    verified = verify_against_defaults([task], store, builder, runner, target)
    assert task.task_name in verified  # both schedules ran
    assert all(secs > 0 for secs in verified[task.task_name])
