"""MetaSchedule builders and runners that cannot outlive or stall the tuning process.

MetaSchedule's ``LocalBuilder`` starts a fresh pool of ``popen_worker`` processes for every
batch, and each fresh worker imports ``tvm.s_tir.tensor_intrin`` (45-175 s on a loaded
2-core machine) inside a 30 s timeout, so every trial fails with "Timeout"; a killed tuning
run also leaves those workers behind. Here:

* :class:`InProcessBuilder` compiles candidates in this process, on threads (TVM's FFI
  releases the GIL while LLVM compiles), keeps the compiled module in memory, and gives up
  on a candidate that compiles for longer than its timeout;
* :class:`InProcessRunner` times them in this process: nothing to start, nothing to reap;
* :func:`reaped_local_runner` is the isolated alternative: MetaSchedule's ``LocalRunner``
  whose worker the kernel kills when this process dies (``PR_SET_PDEATHSIG``, set before the
  worker does anything else).
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from unittest import mock

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.builder import BuilderInput, BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.runner import (
    EvaluatorConfig,
    LocalRunner,
    PyRunner,
    RunnerFuture,
    RunnerInput,
)
from tvm.s_tir.meta_schedule.runner.local_runner import LocalRunnerFuture
from tvm.s_tir.meta_schedule.runner.utils import alloc_argument_common, run_evaluator_common
from tvm.support import popen_pool
from tvm.support.popen_pool import PopenWorker

# Compiled candidates waiting for the in-process runner, by their (fake) artifact path.
_IN_MEMORY: dict[str, Any] = {}
_IN_MEMORY_LOCK = threading.Lock()
_IN_MEMORY_SUFFIX = ".in-memory"


# --- tensor intrinsics ---------------------------------------------------------------------
@functools.cache
def import_tensor_intrinsics() -> None:
    """Register TVM's tensor intrinsics (VNNI, AVX-512 dot products...) in seconds, not minutes.
    MetaSchedule's x86 rules and default build expect them registered."""
    if "tvm.s_tir.tensor_intrin" in sys.modules:
        return
    from tvm.s_tir import TensorIntrin

    from dlas._tvmscript import cheap_frame_info
    from dlas.algorithms.intrinsics import REPLACED, register_intrinsics

    register_intrinsics()

    original = TensorIntrin.register

    def register(name: str, desc: Any, impl: Any, override: bool = False) -> None:
        # dlas's versions (LLVM 20 operand types) stay; TVM's would fail to build.
        if name not in REPLACED:
            original(name, desc, impl, override)

    TensorIntrin.register = register  # type: ignore[method-assign]
    try:
        with cheap_frame_info():
            import tvm.s_tir.tensor_intrin  # noqa: F401
    finally:
        TensorIntrin.register = original  # type: ignore[method-assign]


# --- builder -------------------------------------------------------------------------------
def _build_candidate(mod: tvm.IRModule, target: tvm.target.Target) -> Any:
    """MetaSchedule's default build (it strips the weight-layout-rewrite blocks first), with
    dlas's TIR pipeline on a CPU: a candidate that carries the default schedules' stack mark
    (the seeded default, and what the search mutates from it) is timed as it will be built."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    from dlas.compiler.build import full_width_vectors, is_gpu
    from dlas.compiler.stack_buffers import cpu_tir_pipeline

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    pipeline = "default" if is_gpu(target) else cpu_tir_pipeline()
    return tvm_build(mod, target=full_width_vectors(target), pipeline=pipeline)


@dataclass
class _Build:
    """One candidate's compile on its own thread; ``outcome`` is set when it finishes."""

    deadline: float
    outcome: tuple[str | None, str | None] | None = None
    abandoned: bool = False


@derived_object
class InProcessBuilder(PyBuilder):
    """Builds candidates in this process, ``max_workers`` at a time.

    With ``export=False`` the compiled module stays in memory and the artifact path is only a
    key for :class:`InProcessRunner` (no linker, no disk); ``export=True`` writes the tar that
    MetaSchedule's own runners load; a callable ``export(module) -> path`` exports its own way.

    A candidate still compiling after ``timeout_sec`` is reported as a failed build and the
    search goes on (LLVM took minutes on one candidate of a small dense layer). Its thread
    cannot be stopped: it is a daemon thread, so it cannot hold up the process's exit, and
    while ``max_abandoned`` such threads are still compiling, further candidates are failed
    at once rather than piling up more of them on the cores.
    """

    def __init__(
        self,
        max_workers: int = 1,
        export: bool | Callable[[Any], str] = False,
        timeout_sec: float = 60.0,
        max_abandoned: int = 2,
    ) -> None:
        super().__init__()
        import_tensor_intrinsics()
        self.max_workers = max(1, int(max_workers))
        self.export = export
        self.timeout_sec = float(timeout_sec)
        self.max_abandoned = max(1, int(max_abandoned))
        self._root = tempfile.mkdtemp(prefix="dlas-ms-build-")
        self._counter = itertools.count()
        self._finished = threading.Condition()
        self._abandoned = 0  # timed-out builds whose threads still compile

    def build(self, build_inputs: list[BuilderInput]) -> list[BuilderResult]:
        outcomes: list[tuple[str | None, str | None] | None] = [None] * len(build_inputs)
        waiting = list(enumerate(build_inputs))[::-1]
        running: dict[int, _Build] = {}
        with self._finished:
            while waiting or running:
                while waiting and len(running) < self.max_workers:
                    index, build_input = waiting.pop()
                    if self._abandoned >= self.max_abandoned:
                        outcomes[index] = (None, self._saturated_message())
                    else:
                        running[index] = self._start(build_input)
                if not running:
                    continue
                now = time.monotonic()
                for index, job in list(running.items()):
                    if job.outcome is not None:
                        outcomes[index] = job.outcome
                    elif now >= job.deadline:
                        job.abandoned = True
                        self._abandoned += 1
                        outcomes[index] = (None, self._timeout_message())
                    else:
                        continue
                    del running[index]
                if running:  # all still compiling: wait for one to end or time out
                    next_deadline = min(job.deadline for job in running.values())
                    self._finished.wait(max(0.0, next_deadline - now))
        return [BuilderResult(*outcome) for outcome in outcomes]

    def _start(self, build_input: BuilderInput) -> _Build:
        job = _Build(deadline=time.monotonic() + self.timeout_sec)

        def compile_and_report() -> None:
            outcome = self._build_one(build_input.mod, build_input.target)
            with self._finished:
                job.outcome = outcome
                if job.abandoned:  # nobody will run it: free what it holds
                    self._abandoned -= 1
                    _forget(outcome[0])
                self._finished.notify_all()

        threading.Thread(target=compile_and_report, name="dlas-ms-build", daemon=True).start()
        return job

    def _timeout_message(self) -> str:
        return (
            f"InProcessBuilder: build timed out after {self.timeout_sec:g} s "
            "(tuning.builder_timeout_s); the candidate is skipped"
        )

    def _saturated_message(self) -> str:
        return (
            f"InProcessBuilder: {self._abandoned} timed-out builds are still compiling; "
            "candidates are skipped until one of them finishes"
        )

    def _build_one(
        self, mod: tvm.IRModule, target: tvm.target.Target
    ) -> tuple[str | None, str | None]:
        try:
            runtime_mod = _build_candidate(mod, target)
            if callable(self.export):  # a device's own export (e.g. a cross linker)
                return self.export(runtime_mod), None
            # One folder per artifact: MetaSchedule's RemoveBuildArtifact deletes its parent.
            folder = os.path.join(self._root, str(next(self._counter)))
            os.mkdir(folder)
            if self.export:
                from tvm.support.tar import tar

                path = os.path.join(folder, "mod." + tar.output_format)
                runtime_mod.export_library(path, fcompile=tar)
                return path, None
            path = os.path.join(folder, "mod" + _IN_MEMORY_SUFFIX)
            with _IN_MEMORY_LOCK:
                _IN_MEMORY[path] = runtime_mod
            return path, None
        except Exception:  # noqa: BLE001 - a failed candidate is a result, not a crash
            return None, "InProcessBuilder: build failed\n" + traceback.format_exc(limit=8)

    def close(self) -> None:
        with _IN_MEMORY_LOCK:
            for key in [k for k in _IN_MEMORY if k.startswith(self._root)]:
                del _IN_MEMORY[key]
        shutil.rmtree(self._root, ignore_errors=True)


def _forget(artifact_path: str | None) -> None:
    """Drop a compiled candidate that will never be run."""
    with _IN_MEMORY_LOCK:
        _IN_MEMORY.pop(str(artifact_path), None)


# --- runners -------------------------------------------------------------------------------
def _random_fill() -> Any:
    fill = tvm.get_global_func("tvm.contrib.random.random_fill_for_measure", allow_missing=True)
    if fill is not None:
        return fill

    def numpy_fill(arr: Any) -> None:
        import numpy as np

        arr.copyfrom(np.random.uniform(-1, 1, size=arr.shape).astype(arr.dtype))

    return numpy_fill


@derived_object
class InProcessRunner(PyRunner):
    """Times each candidate in this process, one at a time (parallel timing would measure the
    contention). Reads in-memory candidates from :class:`InProcessBuilder`, or loads an
    exported artifact. A candidate that crashes would take the process with it; MetaSchedule's
    generated CPU code is bounds-safe by construction, and :func:`reaped_local_runner` is
    there for targets where that is not good enough."""

    def __init__(self, evaluator_config: EvaluatorConfig | None = None) -> None:
        super().__init__()
        self.evaluator_config = EvaluatorConfig._normalized(evaluator_config)
        self._fill = _random_fill()

    def run(self, runner_inputs: list[RunnerInput]) -> list[RunnerFuture]:
        return [self._run_one(runner_input) for runner_input in runner_inputs]

    def _run_one(self, runner_input: RunnerInput) -> RunnerFuture:
        path = str(runner_input.artifact_path)
        try:
            with _IN_MEMORY_LOCK:
                runtime_mod = _IN_MEMORY.pop(path, None)
            if runtime_mod is None:
                runtime_mod = tvm.runtime.load_module(path)
            device = tvm.runtime.device(str(runner_input.device_type), 0)
            args_info = [arg.as_json() for arg in runner_input.args_info]
            args = alloc_argument_common(self._fill, device, args_info, 1)
            costs = run_evaluator_common(runtime_mod, device, self.evaluator_config, args)
            return LocalRunnerFuture(res=costs)
        except Exception:  # noqa: BLE001 - a failing candidate is a result, not a crash
            return LocalRunnerFuture(
                error_message="InProcessRunner: run failed\n" + traceback.format_exc(limit=8)
            )


# Runs first thing in a worker, before it spends seconds importing TVM: from then on the
# kernel kills it (prctl option 1 = PR_SET_PDEATHSIG, signal 9 = SIGKILL) when the thread
# that started it, in this process, goes away. The getppid check covers a parent that died
# before prctl took effect.
_WORKER_LAUNCHER = """
import ctypes, os, runpy, sys
if ctypes.CDLL(None).prctl(1, 9, 0, 0, 0) != 0 or os.getppid() != int(sys.argv[1]):
    os._exit(1)
sys.argv = ["popen_worker", *sys.argv[2:]]
runpy.run_module("tvm.exec.popen_worker", run_name="__main__", alter_sys=True)
"""
_PATCH_LOCK = threading.Lock()


class DyingPopenWorker(PopenWorker):
    """TVM's PopenWorker, started through a launcher that binds the worker's life to this
    process (POSIX branch of PopenWorker._start otherwise unchanged). PopenPoolExecutor starts
    workers from its pool threads, which live as long as the pool."""

    def _start(self) -> None:
        if self._proc is not None:
            return
        main_read, worker_write = os.pipe()
        worker_read, main_write = os.pipe()
        cmd = [
            sys.executable,
            "-c",
            _WORKER_LAUNCHER,
            str(os.getpid()),
            str(worker_read),
            str(worker_write),
        ]
        self._proc = subprocess.Popen(
            cmd, pass_fds=(worker_read, worker_write), stdout=self._stdout, stderr=self._stderr
        )
        os.close(worker_read)
        os.close(worker_write)
        self._reader = os.fdopen(main_read, "rb")
        self._writer = os.fdopen(main_write, "wb")


def reaped_local_runner(
    evaluator_config: EvaluatorConfig | None = None, timeout_sec: float = 60.0
) -> LocalRunner:
    """MetaSchedule's LocalRunner (one persistent worker process) whose worker dies with this
    process; call :func:`close_runner` when tuning ends. LocalRunner creates its worker in its
    constructor and restarts that same object after a timeout, so swapping the class only
    while constructing is enough."""
    if not sys.platform.startswith("linux"):
        raise RuntimeError("tuning.runner=local needs Linux (PR_SET_PDEATHSIG); use inprocess")
    with _PATCH_LOCK, mock.patch.object(popen_pool, "PopenWorker", DyingPopenWorker):
        return LocalRunner(timeout_sec=timeout_sec, evaluator_config=evaluator_config)


def close_runner(runner: Any) -> None:
    """Kill the worker processes a runner started (LocalRunner keeps them for its lifetime)."""
    pool = getattr(runner, "pool", None)
    if pool is not None:
        pool.shutdown(wait=True)
