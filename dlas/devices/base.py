"""The hardware layer: where a compiled program runs and how it is timed."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlas.config.schema import DeviceConfig


class DeviceUnavailableError(RuntimeError):
    """The device cannot be reached or used; raised before any expensive work."""


@dataclass
class Program:
    """What a systems-software option produced: a TVM executable or a Python callable."""

    executable: Any = None  # tvm.relax.VMExecutable
    function: Callable[[np.ndarray], np.ndarray] | None = None
    description: str = ""

    @property
    def is_tvm(self) -> bool:
        return self.executable is not None


class Runner(abc.ABC):
    """A program loaded on a device."""

    @abc.abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits for one batch."""

    @abc.abstractmethod
    def time(self, x: np.ndarray, warmup: int, repeat: int) -> list[float]:
        """``warmup`` untimed calls, then ``repeat`` timed ones; each sample in milliseconds."""


class Device(abc.ABC):
    def __init__(self, cfg: DeviceConfig) -> None:
        self.cfg = cfg

    @property
    @abc.abstractmethod
    def target(self) -> Any:
        """The tvm.target.Target that code is generated for."""

    def describe(self) -> dict[str, str]:
        """Facts about the hardware, logged as tags."""
        return {}

    def check_available(self) -> None:
        """Raise DeviceUnavailableError now rather than after training and compiling."""

    @abc.abstractmethod
    @contextmanager
    def load(self, program: Program) -> Iterator[Runner]:
        """Put ``program`` on the device for the duration of the block."""
