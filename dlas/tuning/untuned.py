from __future__ import annotations

from typing import Any

from dlas.compiler.build import build
from dlas.devices import Program
from dlas.tuning.base import TuneContext, Tuner
from dlas.tuning.registry import TUNERS


@TUNERS.register("untuned")
class Untuned(Tuner):
    """TVM with dlas's default schedules and no search."""

    def compile(self, lowered: Any, target: Any, ctx: TuneContext) -> Program:
        return Program(executable=build(lowered.mod, target), description="tvm-untuned")
