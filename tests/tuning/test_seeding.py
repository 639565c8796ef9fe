"""The default schedule stays a candidate: seeded as a record, and timed again back to back
against the best searched record before a build applies either."""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import s_tir
from tvm.s_tir import meta_schedule as ms

from dlas.tuning.records import RecordStore, best_seconds
from dlas.tuning.seeding import default_schedule, seed_default_schedules, verify_against_defaults
from dlas.tuning.workers import InProcessBuilder, InProcessRunner
from tests.tuning.helpers import host_target, mlp_module


def _applied(record, mod: tvm.IRModule) -> tvm.IRModule:
    sch = s_tir.Schedule(mod)
    record.trace.apply_to_schedule(sch, remove_postproc=False)
    return sch.mod


def test_a_record_timed_in_a_quiet_moment_does_not_beat_a_faster_default(tmp_path):
    target = host_target()
    (task,) = ms.relax_integration.extract_tasks(mlp_module(sizes=(1024, 1024)), target)
    mod = task.dispatched[0]
    store = RecordStore(tmp_path)
    builder = InProcessBuilder(1, export=False)
    runner = InProcessRunner(ms.runner.EvaluatorConfig(number=5, repeat=3))
    seeded = seed_default_schedules([task], store, builder, runner, target)
    assert task.task_name in seeded
    # The plain loop nest (one thread, no vectorization), recorded as if timed 100x faster
    # than the default: what a busy moment during the default's timing can look like.
    naive = s_tir.Schedule(mod)
    (block,) = [b for b in naive.get_child_blocks(naive.get_sblock("root"))]
    naive.get_loops(block)
    store.database.commit_tuning_record(
        ms.database.TuningRecord(
            naive.trace,
            store.database.commit_workload(mod),
            [seeded[task.task_name] / 100],
            target,
            ms.arg_info.ArgInfo.from_prim_func(mod["main"]),
        )
    )
    default_mod = default_schedule(mod).mod
    assert tvm_ffi.structural_equal(_applied(store.records(mod, 1)[0], mod), naive.mod)

    (default_s, searched_s) = verify_against_defaults([task], store, builder, runner, target)[
        task.task_name
    ]
    assert searched_s > default_s  # timed side by side, the plain loop nest is slower
    chosen = store.best_record(mod)
    assert tvm_ffi.structural_equal(_applied(chosen, mod), default_mod)
    assert best_seconds(chosen) == default_s
    # A store opened again (another run) applies the same choice.
    assert tvm_ffi.structural_equal(
        _applied(RecordStore(tmp_path).best_record(mod), mod), default_mod
    )
