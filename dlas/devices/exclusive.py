"""Exclusive timing: parallel jobs on one host (a joblib / submitit launcher, several sweep
workers) may compile and train side by side, but a latency measurement must have its device to
itself, or the jobs time each other.

A :class:`TimingLock` is a per-device ``fcntl`` lock on a file in ``$DLAS_DEVICE_LOCK_DIR``
(default ``<tmp>/dlas-device-locks``), held only while a runner times. The kernel releases it
when a process dies. The lock records how long the process waited for it and when it held it;
the device hands that to the pipeline (``latency/lock_wait_s``), which logs it.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_DIR_ENV = "DLAS_DEVICE_LOCK_DIR"


def lock_dir() -> Path:
    root = Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "dlas-device-locks")
    root.mkdir(parents=True, exist_ok=True)
    return root


class TimingLock:
    """One device's timing lock; waits and hold times accumulate until :meth:`take`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.waited_s = 0.0
        self.first_held: float | None = None  # unix time
        self.last_released: float | None = None

    @contextmanager
    def held(self) -> Iterator[None]:
        started = time.perf_counter()
        with open(lock_dir() / f"{self.name}.lock", "a+b") as f:
            fcntl.lockf(f, fcntl.LOCK_EX)
            self.waited_s += time.perf_counter() - started
            if self.first_held is None:
                self.first_held = time.time()
            try:
                yield
            finally:
                self.last_released = time.time()
                fcntl.lockf(f, fcntl.LOCK_UN)

    def take(self) -> dict[str, float]:
        """Metrics of the timing done since the last call (none if nothing was timed)."""
        if self.first_held is None:
            return {}
        out = {
            "latency/lock_wait_s": self.waited_s,
            "latency/lock_first_held_unix": self.first_held,
            "latency/lock_last_released_unix": float(self.last_released or self.first_held),
        }
        self.waited_s, self.first_held, self.last_released = 0.0, None, None
        return out


@contextmanager
def holding(lock: TimingLock | None) -> Iterator[None]:
    if lock is None:
        yield
    else:
        with lock.held():
            yield


# The host's CPU: TVM on the CPU and the Python baselines (PyTorch eager, Inductor, ONNX
# Runtime) all time on it. One object per process, so their waits add up per run.
HOST_CPU = TimingLock("host-cpu")
_GPUS: dict[int, TimingLock] = {}


def gpu(index: int) -> TimingLock:
    return _GPUS.setdefault(index, TimingLock(f"cuda-{index}"))
