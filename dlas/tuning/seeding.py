"""Seed each task's records with dlas's default schedule, measured like any trial.

The algorithm layer's default schedules are hand-written and often better than what a small
MetaSchedule budget finds. Recording them (their schedule trace, timed by the tuning runner)
lets ``MetaScheduleApplyDatabase`` pick, per task, whichever is faster, so a tuned build is
never slower than the untuned one task by task, and the logged records reproduce the whole
build on their own.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import tvm
import tvm_ffi
from tvm import s_tir
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.utils import remove_build_dir

from dlas.tuning.records import RecordStore, best_seconds

log = logging.getLogger(__name__)


def default_schedule(mod: tvm.IRModule, target: tvm.target.Target) -> s_tir.Schedule | None:
    """dlas's default schedule of one task on ``target`` as a traced Schedule (None if it
    does not apply): the trace is what a record stores."""
    from dlas.algorithms import algorithm_schedule
    from dlas.algorithms.default_schedules import default_schedule as schedule_in

    sch = s_tir.Schedule(mod)
    try:
        with target:  # the register tile's size depends on the target's vector registers
            schedule_in(sch, algorithm_schedule)
    except Exception as err:  # noqa: BLE001 - no seed is fine, the search still runs
        log.debug("no default-schedule seed: %s", err)
        return None
    return sch


def seed_default_schedules(
    tasks: list[Any],
    store: RecordStore,
    builder: ms.Builder,
    runner: ms.Runner,
    target: tvm.target.Target,
) -> dict[str, float]:
    """Build and time the default schedule of each task with the tuning builder and runner,
    and commit it as a record. Returns the seconds measured per task name."""
    if target.kind.name != "llvm":  # dlas's default schedules are CPU schedules
        return {}
    scheduled = [(task, default_schedule(task.dispatched[0], target)) for task in tasks]
    scheduled = [(task, sch) for task, sch in scheduled if sch is not None]
    if not scheduled:
        return {}
    built = builder.build([ms.builder.BuilderInput(sch.mod, target) for _, sch in scheduled])
    device_type = tvm.runtime.Device._DEVICE_TYPE_TO_NAME[target.get_target_device_type()]
    seconds: dict[str, float] = {}
    for (task, sch), build in zip(scheduled, built, strict=True):
        if build.error_msg:
            log.warning(
                "default schedule of %s does not build: %s", task.task_name, build.error_msg[:300]
            )
            continue
        args_info = ms.arg_info.ArgInfo.from_prim_func(task.dispatched[0]["main"])
        result = runner.run([ms.runner.RunnerInput(build.artifact_path, device_type, args_info)])[
            0
        ].result()
        remove_build_dir(build.artifact_path)
        record = ms.database.TuningRecord(
            sch.trace,
            store.database.commit_workload(task.dispatched[0]),
            [float(s) for s in (result.run_secs or [])] or None,
            target,
            args_info,
        )
        if result.error_msg or best_seconds(record) is None:
            log.warning(
                "default schedule of %s does not run: %s",
                task.task_name,
                (result.error_msg or "")[:300],
            )
            continue
        store.database.commit_tuning_record(record)
        seconds[task.task_name] = best_seconds(record)
    return seconds


def verify_against_defaults(
    tasks: list[Any],
    store: RecordStore,
    builder: ms.Builder,
    runner: ms.Runner,
    target: tvm.target.Target,
) -> dict[str, tuple[float, float]]:
    """Time each task's best searched schedule and its default schedule back to back, twice in
    alternating order, and commit both figures to ``store.verified``, whose best record then
    wins over the database's.

    A record's time was measured when it was found: minutes apart from the default's, under
    whatever else the machine was doing then. A candidate timed in a quiet moment can beat a
    default timed in a busy one and be twice as slow in fact, and a build from it would be
    slower than the untuned one. Returns ``(default, searched)`` seconds per task: the faster
    of the two passes' medians."""
    found: dict[str, tuple[float, float]] = {}
    if target.kind.name != "llvm":  # dlas's default schedules are CPU schedules
        return found
    device_type = tvm.runtime.Device._DEVICE_TYPE_TO_NAME[target.get_target_device_type()]
    for task in tasks:
        mod = task.dispatched[0]
        records = store.records(mod, 1)
        default = default_schedule(mod, target)
        if not records or default is None:
            continue
        searched = s_tir.Schedule(mod)
        records[0].trace.apply_to_schedule(searched, remove_postproc=False)
        if tvm_ffi.structural_equal(searched.mod, default.mod):
            continue  # the default is the best record
        pair = [default, searched]
        # Per schedule: a searched one may rewrite a weight's layout (RewriteLayout), and then
        # takes that argument in the rewritten shape.
        args_info = [
            ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True) for sch in pair
        ]
        times: list[list[float]] = [[], []]
        errors: list[str] = []
        for order in ((0, 1), (1, 0)):
            built = builder.build([ms.builder.BuilderInput(pair[i].mod, target) for i in order])
            inputs = [
                ms.runner.RunnerInput(b.artifact_path, device_type, args_info[i])
                for i, b in zip(order, built, strict=True)
            ]
            for i, b, result in zip(order, built, runner.run(inputs), strict=True):
                result = result.result()
                remove_build_dir(b.artifact_path)
                secs = [float(s) for s in (result.run_secs or [])]
                if b.error_msg or result.error_msg or not secs:
                    errors.append(str(b.error_msg or result.error_msg or "no times"))
                    break
                times[i].append(sorted(secs)[len(secs) // 2])
        if not (times[0] and times[1]):
            log.warning(
                "could not time %s's default against its best record: %s",
                task.task_name,
                "; ".join(errors) or "no times",
            )
            continue
        medians = (min(times[0]), min(times[1]))
        workload = store.verified.commit_workload(mod)
        for sch, secs, info in zip(pair, medians, args_info, strict=True):
            store.verified.commit_tuning_record(
                ms.database.TuningRecord(sch.trace, workload, [secs], target, info)
            )
        found[task.task_name] = medians
    # The table a run logs compares the applied record with this figure: from the same pass.
    store.mark_seeded(
        {t.task_name: t.dispatched[0] for t in tasks}, {k: v[0] for k, v in found.items()}
    )
    return found


def needs_verification(store: RecordStore, mod: tvm.IRModule, tuned_now: bool) -> bool:
    """A searched record beats the default schedule's, and nobody has timed the two side by
    side since it was found (seeding.verify_against_defaults)."""
    records = store.records(mod, 1)
    default_us = store.default_us(mod)
    best = best_seconds(records[0]) if records else None
    if default_us is None or best is None:
        return False
    if store.verified.has_workload(mod) and not tuned_now:
        return False
    return not math.isclose(best * 1e6, default_us, rel_tol=1e-9)
