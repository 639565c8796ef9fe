"""Systems-software layer: ``create_tuner(cfg)`` → a :class:`Tuner`."""

from __future__ import annotations

from dlas.config.schema import TuningConfig
from dlas.tuning import (  # noqa: F401  (registration)
    baselines,
    metaschedule,
    onnx_runtime,
    untuned,
)
from dlas.tuning.base import TuneContext, Tuner
from dlas.tuning.registry import TUNERS

__all__ = ["TUNERS", "TuneContext", "Tuner", "create_tuner"]


def create_tuner(cfg: TuningConfig) -> Tuner:
    return TUNERS.get(cfg.name)(cfg)
