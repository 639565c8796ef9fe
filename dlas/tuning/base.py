"""The systems-software layer: how the lowered model becomes a program for the device."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from dlas.cache import Cache
from dlas.config.schema import TuningConfig
from dlas.data import InputSpec
from dlas.devices import Program


@dataclass
class TuneContext:
    # Where tuners keep what outlives a run (MetaSchedule's databases); baselines need none.
    cache: Cache | None = None
    work_dir: Path | None = None
    # The dlas Device the program is for (its threads; its own MetaSchedule runner, if any).
    device: Any = None
    # The run's compression (baselines with their own implementation of it read its
    # calibration samples: dlas.tuning.int8_peers).
    compression: Any = None
    # Filled by the tuner; the pipeline hands them to tracking. artifacts: artifact path ->
    # local file or folder (see dlas.results.Findings.files).
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)


class Tuner:
    """Base class. TVM-based options implement :meth:`compile`; baselines that bypass TVM set
    ``uses_tvm = False`` and implement :meth:`wrap` (the algorithm layer then does not apply)."""

    uses_tvm: bool = True
    # Whether dlas.algorithms.lower should apply its default schedules before compile().
    default_schedules: bool = True
    # Relax-side compressions a baseline implements with its own library (its peer).
    peer_compressions: tuple[str, ...] = ()

    def __init__(self, cfg: TuningConfig) -> None:
        self.cfg = cfg

    def compile(self, lowered: Any, target: Any, ctx: TuneContext) -> Program:
        raise NotImplementedError(f"tuning={self.cfg.name} does not compile with TVM")

    def wrap(self, model: nn.Module, spec: InputSpec, ctx: TuneContext) -> Program:
        raise NotImplementedError(f"tuning={self.cfg.name} is not a baseline")
