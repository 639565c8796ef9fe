"""Builders/runners that neither time out nor outlive the tuning process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]


def python(code: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, start_new_session=True, **kwargs
    )


def test_tensor_intrinsics_import_in_seconds():
    """The plain import takes 45-175 s here (inspect.stack per intrinsic); ours must not."""
    proc = python(
        """
        import time, tvm
        from dlas.tuning.workers import import_tensor_intrinsics
        start = time.perf_counter()
        import_tensor_intrinsics()
        from tvm.s_tir import TensorIntrin
        TensorIntrin.get("dot_16x4_vnni")  # registered, and by the real module
        print(time.perf_counter() - start)
    """,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        _kill_group(proc)
    assert proc.returncode == 0
    assert float(out.strip().splitlines()[-1]) < 40


def test_killed_tuning_run_leaves_no_worker(tmp_path):
    """SIGKILL the tuning process while its runner worker is busy timing a candidate: the
    worker (and anything it started) must be gone within a few seconds, not finish the
    measurement (each one here takes >= 20 s) or spin on."""
    proc = python(
        f"""
        from pathlib import Path
        from dlas.cache import Cache
        from dlas.config.schema import MetaScheduleTuningConfig
        from dlas.tuning import TuneContext, create_tuner
        from tests.tuning.helpers import host_target, lowered, mlp_module

        root = Path({str(tmp_path)!r})
        cfg = MetaScheduleTuningConfig(
            name="metaschedule", trials=1000, trials_per_iter=2, cost_model="random",
            runner="local", runner_min_repeat_ms=20000, runner_timeout_s=600,
            strategy_options={{"population_size": 8, "init_min_unmeasured": 2}})
        ctx = TuneContext(cache=Cache(root), work_dir=root / "work")
        create_tuner(cfg).compile(lowered(mlp_module()), host_target(), ctx)
    """,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # The killed run cannot remove its builder's temporary folder: leave it in tmp_path.
        env=dict(os.environ, TMPDIR=str(tmp_path)),
    )
    parent = psutil.Process(proc.pid)
    try:
        worker = _busy_descendant(parent, "popen_worker", deadline=time.monotonic() + 240)
        descendants = parent.children(recursive=True)
        assert worker in descendants
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        _, alive = psutil.wait_procs(descendants, timeout=5)
        alive = [p for p in alive if _running(p)]
        assert not alive, f"left behind: {[(p.pid, p.cmdline()) for p in alive]}"
    finally:
        _kill_group(proc)


def _busy_descendant(parent: psutil.Process, name: str, deadline: float) -> psutil.Process:
    """A descendant whose command line contains ``name`` and that is using the CPU."""
    while time.monotonic() < deadline:
        if parent.status() == psutil.STATUS_ZOMBIE or not parent.is_running():
            pytest.fail("the tuning process ended before its worker got busy")
        for child in parent.children(recursive=True):
            try:
                if name in " ".join(child.cmdline()) and child.cpu_percent(interval=0.5) > 30:
                    return child
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.5)
    pytest.fail(f"no busy {name} process appeared")


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _kill_group(proc: subprocess.Popen) -> None:
    """Clean up after a failed assertion: the test's own session, nothing else."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _builder_inputs(count: int) -> list:
    import tvm
    from tvm import te
    from tvm.s_tir.meta_schedule.builder import BuilderInput

    x = te.placeholder((4,), name="x")
    func = te.create_prim_func([x, te.compute((4,), lambda i: x[i] + 1.0, name="y")])
    mod = tvm.IRModule({"main": func})
    return [BuilderInput(mod, tvm.target.Target("llvm")) for _ in range(count)]


class _ScriptedCompiles:
    """Stands in for the compiler: call k sleeps ``seconds[k]`` (0 after the list ends)."""

    def __init__(self, *seconds: float) -> None:
        self.seconds = list(seconds)
        self.calls = 0

    def __call__(self, mod, target):
        import threading

        delay = self.seconds[self.calls] if self.calls < len(self.seconds) else 0.0
        self.calls += 1
        time.sleep(delay)
        assert threading.current_thread().daemon  # cannot hold up the process's exit
        return object()


def test_a_build_past_its_timeout_fails_and_the_rest_go_on(monkeypatch):
    """A candidate that compiles for minutes must not stall the search: it is reported as a
    failed build after the timeout, the others in the batch build, and while timed-out
    compiles still run, new candidates are failed at once rather than piled on the cores."""
    from dlas.tuning import workers

    compiles = _ScriptedCompiles(3.0, 0.0, 0.0)
    monkeypatch.setattr(workers, "_build_candidate", compiles)
    builder = workers.InProcessBuilder(2, timeout_sec=0.5, max_abandoned=1)
    try:
        start = time.monotonic()
        results = builder.build(_builder_inputs(3))
        assert time.monotonic() - start < 2.0  # not the 3 s of the slow compile
        assert "timed out after 0.5 s" in results[0].error_msg
        assert results[0].artifact_path is None
        assert [r.error_msg for r in results[1:]] == [None, None]
        assert all(r.artifact_path in workers._IN_MEMORY for r in results[1:])

        # The slow compile is still running: the next batch is skipped, not queued.
        (skipped,) = builder.build(_builder_inputs(1))
        assert "still compiling" in skipped.error_msg
        assert compiles.calls == 3

        # Once it finishes, its module is dropped (nobody will run it) and builds resume.
        deadline = time.monotonic() + 10
        while builder._abandoned and time.monotonic() < deadline:
            time.sleep(0.05)
        assert builder._abandoned == 0
        (resumed,) = builder.build(_builder_inputs(1))
        assert resumed.error_msg is None
        assert compiles.calls == 4
        built = {r.artifact_path for r in (*results[1:], resumed)}
        assert {p for p in workers._IN_MEMORY if p.startswith(builder._root)} == built
    finally:
        builder.close()
