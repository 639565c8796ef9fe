"""Hardware layer: ``create_device(cfg)`` → a Device with a target and a way to run on it."""

from __future__ import annotations

from dlas.config.schema import DeviceConfig
from dlas.devices import cuda, local_cpu, rpc  # noqa: F401  (registration)
from dlas.devices.base import (
    Device,
    DeviceError,
    DeviceUnavailableError,
    Program,
    Runner,
)
from dlas.devices.registry import DEVICES

__all__ = [
    "DEVICES",
    "Device",
    "DeviceError",
    "DeviceUnavailableError",
    "Program",
    "Runner",
    "create_device",
]


def create_device(cfg: DeviceConfig) -> Device:
    return DEVICES.get(cfg.kind)(cfg)
