"""The hardware layer: where a compiled program runs and how it is timed."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlas.config.schema import DeviceConfig


class DeviceUnavailableError(RuntimeError):
    """The device cannot be reached or used; raised before any expensive work."""


class DeviceError(RuntimeError):
    """A program on a remote device failed there, or the device stopped answering."""


@dataclass
class Program:
    """What a systems-software option produced: a TVM executable or a Python callable."""

    # tvm.relax.VMExecutable, or a runtime module loaded from a library built for this host.
    executable: Any = None
    function: Callable[[np.ndarray], np.ndarray] | None = None
    description: str = ""
    # The exported library for the device's triple, when there is one: remote devices upload
    # this file instead of exporting the executable again (or cannot load it here at all).
    library: str | None = None

    @property
    def is_tvm(self) -> bool:
        return self.executable is not None or self.library is not None


class Runner(abc.ABC):
    """A program loaded on a device."""

    @abc.abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits for one batch."""

    @abc.abstractmethod
    def time(self, x: np.ndarray, warmup: int, repeat: int) -> list[float]:
        """``warmup`` untimed calls, then ``repeat`` timed ones; each sample in milliseconds."""


class Device(abc.ABC):
    # Whether loading a second program ends the first one's session (an RPC server serves one
    # session at a time), so two programs cannot be timed side by side.
    one_program_at_a_time = False

    def __init__(self, cfg: DeviceConfig) -> None:
        self.cfg = cfg

    @property
    @abc.abstractmethod
    def target(self) -> Any:
        """The tvm.target.Target that code is generated for."""

    def describe(self) -> dict[str, str]:
        """Facts about the hardware, logged as tags."""
        return {}

    def check_available(self) -> None:  # noqa: B027  (optional hook: most devices need none)
        """Raise DeviceUnavailableError now rather than after training and compiling."""

    @contextmanager
    def threads(self) -> Iterator[None]:
        """Give this process's thread pools the run's thread count for the block, and restore
        them after (so that one run's setting never leaks into the next run of a sweep).
        Devices that run programs elsewhere leave this process alone."""
        yield

    def thread_count(self) -> int | None:
        """Threads a program runs with on this device, where this process decides it."""
        return None

    @abc.abstractmethod
    @contextmanager
    def load(self, program: Program) -> Iterator[Runner]:
        """Put ``program`` on the device for the duration of the block."""

    @property
    def timing_lock(self) -> Any:
        """The :class:`~dlas.devices.exclusive.TimingLock` its runners hold while timing (None:
        exclusive by other means, e.g. a tracker that hands a board to one job at a time)."""
        return None

    def timing_metrics(self) -> dict[str, float]:
        """How long this run waited for the device's timing lock, and when it held it."""
        lock = self.timing_lock
        return lock.take() if lock is not None else {}

    def export_library(self, executable: Any, path: str | Path) -> None:
        """Write ``executable`` as a shared library that this device can load."""
        executable.export_library(str(path))

    def load_library(self, path: str | Path) -> Program:
        """A Program from a library that :meth:`export_library` wrote (the build cache)."""
        import tvm

        return Program(
            executable=tvm.runtime.load_module(str(path)),
            library=str(path),
            description=f"cached {path}",
        )

    def metaschedule_runner(
        self, evaluator_config: Any = None, session_timeout_s: float | None = None
    ) -> Any:
        """The MetaSchedule runner that measures candidates on this device; None means
        MetaSchedule's own default (a LocalRunner on this machine)."""
        return None

    def metaschedule_builder(self) -> Any:
        """The MetaSchedule builder whose libraries this device can load; None means
        MetaSchedule's own default (a LocalBuilder with the host's compiler)."""
        return None
