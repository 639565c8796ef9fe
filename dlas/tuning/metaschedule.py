"""``tuning=metaschedule``: MetaSchedule over the lowered module, records shared by all runs.

Flow: ``dlas.algorithms.lower(..., schedule=False)`` hands over fused, unscheduled PrimFuncs
(the algorithm's TE computes) → one task per distinct PrimFunc → tasks the shared database
has not seen with this budget are tuned, their dlas default schedule measured and recorded
first (seeding.py) → ``MetaScheduleApplyDatabase`` puts the best record of every task (a
searched schedule or the default one, whichever measured faster) into the module → PrimFuncs
without any record get dlas's default schedules → ``dlas.compiler.build.build`` → the faster
in the whole model of that build and the untuned one, timed on the device (model_check.py).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import tvm
from tvm import relax
from tvm.s_tir import meta_schedule as ms

from dlas.cache import config_key
from dlas.compiler.build import build
from dlas.devices import Program
from dlas.tuning.base import TuneContext, Tuner
from dlas.tuning.model_check import keep_faster
from dlas.tuning.progress import TrialProgress, TuningStop
from dlas.tuning.records import TABLE_FILE, RecordStore, best_seconds, resolve_records
from dlas.tuning.registry import TUNERS
from dlas.tuning.seeding import (
    needs_verification,
    seed_default_schedules,
    verify_against_defaults,
)
from dlas.tuning.workers import (
    InProcessBuilder,
    InProcessRunner,
    close_runner,
    import_tensor_intrinsics,
    reaped_local_runner,
)

log = logging.getLogger(__name__)

# tuning.builder / tuning.runner names (dlas.validity checks a run's choice against these).
BUILDERS: dict[str, Callable[..., ms.Builder]] = {
    "inprocess": lambda workers, export, timeout_s: InProcessBuilder(
        workers or os.cpu_count() or 1, export=export, timeout_sec=timeout_s
    ),
}
RUNNERS: dict[str, Callable[..., ms.Runner]] = {
    "inprocess": lambda evaluator, timeout_s: InProcessRunner(evaluator),
    "local": reaped_local_runner,
}


def make_builder(
    builder: str | ms.Builder, workers: int | None, export: bool, timeout_s: float = 60.0
) -> ms.Builder:
    """A MetaSchedule builder from its name, or the given object unchanged."""
    if not isinstance(builder, str):
        return builder
    if builder not in BUILDERS:
        raise ValueError(f"tuning.builder={builder!r}: expected one of {', '.join(BUILDERS)}")
    return BUILDERS[builder](workers, export, timeout_s)


def make_runner(
    runner: str | ms.Runner, evaluator: ms.runner.EvaluatorConfig, timeout_s: float
) -> ms.Runner:
    """A MetaSchedule runner from its name, or the given object unchanged."""
    if not isinstance(runner, str):
        return runner
    if runner not in RUNNERS:
        raise ValueError(f"tuning.runner={runner!r}: expected one of {', '.join(RUNNERS)}")
    return RUNNERS[runner](evaluator, timeout_s)


def schedule_rest(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """dlas's default schedules for the PrimFuncs that no record scheduled (they lack
    ``tirx.is_scheduled``, which MetaScheduleApplyDatabase sets). Those are CPU schedules;
    on GPU targets dlas.compiler.build gives the rest dlight's instead."""
    if target.kind.name != "llvm":
        return mod
    from dlas.algorithms import schedule_defaults

    return schedule_defaults(mod, target)


def tune_contexts(
    tasks: list[Any],
    strategy: Any,
    seed: int | None,
    stop: TuningStop | None = None,
) -> tuple[list[ms.TuneContext], list[float]]:
    """relax_integration.extracted_tasks_to_tune_contexts without its per-task file loggers,
    which come from a dictConfig call per tuning run that reconfigures the process's logging
    and raised (AttributeError: 'NoneType' has no 'format') on a later run under pytest."""
    contexts, weights = [], []
    seeds = ms.utils.fork_seed(seed, n=len(tasks))
    for task_id, (task, rand_state) in enumerate(zip(tasks, seeds, strict=True)):
        contexts.append(
            ms.TuneContext(
                mod=task.dispatched[0],
                target=task.target,
                space_generator="post-order-apply",
                search_strategy=stop.search(strategy, task_id) if stop else strategy,
                task_name=task.task_name,
                rand_state=rand_state,
                num_threads="physical",
            ).clone()
        )
        weights.append(float(task.weight))
    return contexts, weights


def _best(store: RecordStore, mod: tvm.IRModule) -> float | None:
    records = store.records(mod, 1)
    return best_seconds(records[0]) if records else None


@TUNERS.register("metaschedule")
class MetaSchedule(Tuner):
    """Auto-scheduling with MetaSchedule; reuses and extends the per-target record database."""

    default_schedules = False

    def __init__(
        self,
        cfg: Any,
        builder: str | ms.Builder | None = None,
        runner: str | ms.Runner | None = None,
    ) -> None:
        super().__init__(cfg)
        # Programmatic callers may hand in MetaSchedule objects instead of the config names.
        self.builder = builder if builder is not None else cfg.builder
        self.runner = runner if runner is not None else cfg.runner

    def compile(self, lowered: Any, target: Any, ctx: TuneContext) -> Program:
        cfg = self.cfg
        started = time.perf_counter()
        import_tensor_intrinsics()
        extracted = [
            t
            for t in ms.relax_integration.extract_tasks(lowered.mod, target)
            if not t.mod.attrs.get("tirx.is_scheduled", False)
        ]
        mods = {t.task_name: t.dispatched[0] for t in extracted}
        if cfg.records:
            store = RecordStore(resolve_records(cfg.records, ctx.work_dir), create=False)
            new_trials: dict[str, int] = {}
            log.info("MetaSchedule: no new trials, records from %s", store.path)
        else:
            with RecordStore.exclusive(ctx.cache.root, target) as (store, waited):
                ctx.metrics["tune/records_lock_wait_s"] = waited
                new_trials = self._tune_missing(extracted, target, store, ctx)
        tune_seconds = time.perf_counter() - started

        with target, store.applied(), tvm.transform.PassContext(opt_level=3):
            mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(lowered.mod)
        mod = schedule_rest(mod, target)
        executable, untuned = build(mod, target), False
        if cfg.check_whole_model and not cfg.records:
            untuned_module = lambda: schedule_rest(lowered.mod, target)  # noqa: E731
            executable, untuned = keep_faster(mod, executable, untuned_module, target, ctx)

        rows = store.task_rows(extracted, new_trials, bool(cfg.records))
        # The records a run logs rebuild what it kept: none for the untuned build.
        self._report(rows, store, mods, {} if untuned else mods, tune_seconds, target, ctx)
        return Program(
            executable=executable,
            description=(
                f"tvm-metaschedule ({sum(new_trials.values())} new trials, records {store.path})"
            ),
        )

    def _tune_missing(
        self, extracted: list[Any], target: Any, store: RecordStore, ctx: TuneContext
    ) -> dict[str, int]:
        """Tune the tasks the store has not seen with this run's per-task share, then time
        every task's best record against its default schedule where nobody has yet; new
        trials per task name."""
        cfg = self.cfg
        share = self.share(len(extracted))
        todo = [t for t in extracted if store.tuned_share(t.dispatched[0]) < share]
        if cfg.trials <= 0:
            todo = []
        if todo:
            log.info(
                "MetaSchedule: %d of %d tasks need tuning (%.1f trials each), %d reuse %s",
                len(todo),
                len(extracted),
                share,
                len(extracted) - len(todo),
                store.path,
            )
        else:
            log.info(
                "MetaSchedule: no new trials for %d tasks (records: %s)", len(extracted), store.path
            )

        tuned_now = {t.task_name for t in todo}

        def unverified() -> list[Any]:
            if not cfg.include_defaults:
                return []
            return [
                t
                for t in extracted
                if needs_verification(store, t.dispatched[0], t.task_name in tuned_now)
            ]

        new_trials: dict[str, int] = {}
        if not todo and not unverified():
            return new_trials
        with self._measuring(ctx) as (builder, runner):
            if todo:
                new_trials = self._tune(todo, target, store, share, ctx, builder, runner)
                store.mark_tuned({t.task_name: t.dispatched[0] for t in todo}, share)
            if pending := unverified():
                verified = verify_against_defaults(pending, store, builder, runner, target)
                ctx.metrics["tune/tasks_default_kept"] = float(
                    sum(default <= searched for default, searched in verified.values())
                )
        return new_trials

    def strategy_options(self, share: float) -> dict[str, Any]:
        """The search strategy's arguments, its population capped per trial (docs/tuning.md;
        512 is EvolutionarySearch's own default population_size)."""
        options, cap = dict(self.cfg.strategy_options), self.cfg.population_per_trial
        if self.cfg.strategy == "evolutionary" and cap is not None:
            wanted = max(32, cap * math.ceil(share))
            options["population_size"] = min(options.get("population_size", 512), wanted)
        return options

    def share(self, num_tasks: int) -> float:
        """Trials each task is entitled to: the global budget spread evenly, capped per task.
        A workload tuned before with at least this share is not tuned again."""
        share = self.cfg.trials / max(1, num_tasks)
        if self.cfg.trials_per_task is not None:
            share = min(share, float(self.cfg.trials_per_task))
        return share

    # --- tuning ----------------------------------------------------------------------
    def _tune(
        self,
        todo: list[Any],
        target: Any,
        store: RecordStore,
        share: float,
        ctx: TuneContext,
        builder: ms.Builder,
        runner: ms.Runner,
    ) -> dict[str, int]:
        cfg = self.cfg
        budget = max(1, math.ceil(share * len(todo)))
        per_task = cfg.trials_per_task if cfg.trials_per_task is not None else budget
        # MetaSchedule's task scheduler prints a table per round at INFO; the bar replaces it.
        logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
        work_dir = tempfile.mkdtemp(prefix="metaschedule-", dir=ctx.work_dir)
        progress = None
        stop = TuningStop(cfg.stop_patience, cfg.stop_min_improvement, cfg.max_seconds)
        try:
            if cfg.include_defaults:
                unseeded = [t for t in todo if store.default_us(t.dispatched[0]) is None]
                seeds = seed_default_schedules(unseeded, store, builder, runner, target)
                store.mark_seeded({t.task_name: t.dispatched[0] for t in unseeded}, seeds)
            # MetaSchedule's schedulers start with one round per task in this order: the tasks
            # where the time goes first (as measured so far), so a small budget lands there.
            known = {t.task_name: _best(store, t.dispatched[0]) for t in todo}
            todo = sorted(todo, key=lambda t: -(known[t.task_name] or math.inf) * t.weight)
            strategy = ms.SearchStrategy.create(cfg.strategy, **self.strategy_options(share))
            contexts, weights = tune_contexts(todo, strategy, cfg.seed, stop)
            untuned = [store.default_us(t.dispatched[0]) for t in todo]
            progress = TrialProgress(
                budget,
                weights,
                [known[t.task_name] for t in todo],
                enabled=cfg.progress,
                untuned=[u * 1e-6 if u is not None else None for u in untuned],
                stop=stop,
            )
            cost_model = ms.CostModel.create(
                cfg.cost_model, num_tuning_cores=os.cpu_count() or 1, **dict(cfg.cost_model_options)
            )
            ms.tune_tasks(
                tasks=contexts,
                task_weights=weights,
                work_dir=work_dir,
                max_trials_global=budget,
                max_trials_per_task=per_task,
                # At most the per-task share per round, so that the first round reaches
                # every task before the budget runs out.
                num_trials_per_iter=max(1, min(cfg.trials_per_iter, per_task, math.ceil(share))),
                builder=builder,
                runner=runner,
                database=store.database,
                cost_model=cost_model,
                measure_callbacks=[*ms.MeasureCallback.create("default"), progress],
                task_scheduler=cfg.task_scheduler,
            )
            ctx.metrics["tune/tasks_stopped_early"] = float(len(stop.stopped_tasks))
            ctx.metrics["tune/stopped_by_max_seconds"] = float(stop.out_of_time)
        finally:
            if progress is not None:
                progress.close()
            shutil.rmtree(work_dir, ignore_errors=True)
        return {t.task_name: n for t, n in zip(todo, progress.trials, strict=True)}

    @contextmanager
    def _measuring(self, ctx: TuneContext) -> Iterator[tuple[ms.Builder, ms.Runner]]:
        """The tuning builder and runner (closed after the block)."""
        cfg = self.cfg
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        evaluator = ms.runner.EvaluatorConfig(
            number=cfg.runner_number,
            repeat=cfg.runner_repeat,
            min_repeat_ms=cfg.runner_min_repeat_ms,
            enable_cpu_cache_flush=cfg.cpu_cache_flush,
        )
        runner_spec, export = self._device_components(ctx.device)
        # The in-process runner reads compiled candidates from memory; any other runner needs
        # them exported to disk (or linked for the board, as the device says).
        if export is None:
            export = not (isinstance(runner_spec, str) and runner_spec == "inprocess")
        builder = make_builder(
            self.builder, cfg.builder_workers, export=export, timeout_s=cfg.builder_timeout_s
        )
        runner = None
        try:
            runner = make_runner(runner_spec, evaluator, cfg.runner_timeout_s)
            yield builder, runner
        finally:
            if hasattr(builder, "close"):
                builder.close()
            if runner is not None:
                close_runner(runner)

    def _device_components(self, device: Any) -> tuple[str | ms.Runner, Any]:
        """The runner to measure with and how to export candidates. A device that measures
        elsewhere (an RPC board) brings its own runner, and a linker via its builder's
        ``f_export``; only the export function is kept, because candidates are compiled here
        in-process either way (MetaSchedule's LocalBuilder times out, see workers.py)."""
        if not isinstance(self.runner, str) or device is None:
            return self.runner, None
        runner = getattr(device, "metaschedule_runner", lambda: None)()
        if runner is None:
            return self.runner, None
        builder = getattr(device, "metaschedule_builder", lambda: None)()
        export = getattr(builder, "f_export", None) if builder is not None else None
        return runner, export if callable(export) else True

    # --- reporting -------------------------------------------------------------------
    def _report(
        self,
        rows: list[dict[str, Any]],
        store: RecordStore,
        mods: dict[str, tvm.IRModule],
        applied: dict[str, tvm.IRModule],
        tune_seconds: float,
        target: Any,
        ctx: TuneContext,
    ) -> None:
        keys = sorted(store.workload_key(m) or name for name, m in mods.items())
        folder = (
            ctx.work_dir
            / "tuning-artifacts"
            / config_key({"store": str(store.path), "workloads": keys, "target": str(target)})
        )
        store.export(applied, folder)  # the record each task applied; the store keeps them all
        (folder / TABLE_FILE).write_text(json.dumps(rows, indent=1))
        ctx.artifacts["tuning"] = folder
        tuned = [r for r in rows if r["best_us"] is not None]
        ctx.metrics.update(
            {
                "tune/seconds": tune_seconds,
                "tune/trials": float(sum(r["records"] for r in rows)),
                "tune/new_trials": float(sum(r["new_trials"] for r in rows)),
                "tune/tasks": float(len(rows)),
                "tune/tasks_with_records": float(len(tuned)),
                "tune/tasks_default_schedule": float(len(rows) - len(tuned)),
            }
        )
        if tuned:
            # What the records promise for the tuned part of the model, weight x best.
            ctx.metrics["tune/estimated_ms"] = sum(r["weight"] * r["best_us"] for r in tuned) / 1e3
        log.info(
            "MetaSchedule: %d/%d tasks scheduled from records, %d new trials, %.1f s",
            len(tuned),
            len(rows),
            ctx.metrics["tune/new_trials"],
            tune_seconds,
        )
