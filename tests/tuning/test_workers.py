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
