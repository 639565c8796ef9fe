"""Lower an exported Relax module with one conv2d algorithm and default CPU schedules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import tvm
from tvm import relax, tirx

from .activations import SigmoidGateToSilu, activation_legalizers
from .base import Algorithm
from .constants import FoldConstants
from .default_schedules import SCHEDULE_FALLBACK_ATTR, schedule_module
from .pooling import pooling_legalizers
from .registry import ALGORITHMS
from .requantize import FoldRequantize
from .schedules import ScheduleFn


@dataclass
class LoweredModule:
    """Every Relax op lowered to fused call_tir PrimFuncs (scheduled unless asked otherwise)."""

    mod: tvm.IRModule
    # One row per conv2d/dense layer: what ran, and why if it is not what was asked for.
    layers: list[dict[str, Any]] = field(default_factory=list)

    def schedule_fallbacks(self) -> dict[str, str]:
        """{kernel: why its algorithm's schedule raised}: those run a generic schedule."""
        return {
            gv.name_hint: str(func.attrs[SCHEDULE_FALLBACK_ATTR])
            for gv, func in self.mod.functions_items()
            if isinstance(func, tirx.PrimFunc) and SCHEDULE_FALLBACK_ATTR in (func.attrs or {})
        }


def resolve(algorithm: str | Any | Algorithm | type[Algorithm]) -> Algorithm:
    """A fresh instance, so that ``layers`` only describes this lowering.

    ``algorithm`` is a name, a class, an instance, or an ``algorithm`` config: its ``name``
    picks the class and its other fields are the constructor's options."""
    if isinstance(algorithm, str):
        return ALGORITHMS.get(algorithm)()
    if isinstance(algorithm, Algorithm):
        return algorithm.fresh()
    if isinstance(algorithm, type):
        return algorithm()
    options = {k: v for k, v in vars(algorithm).items() if k != "name"}
    return ALGORITHMS.get(algorithm.name)(**options)


def lower(
    mod: tvm.IRModule,
    algorithm: str | Any | Algorithm,
    target: tvm.target.Target,
    *,
    schedule: bool = True,
) -> LoweredModule:
    """Legalize conv2d with ``algorithm`` (dense layers with GEMM), fuse, and schedule.

    ``schedule=False`` stops after fusion: the same TE computes, left for MetaSchedule.
    """
    algo = resolve(algorithm)
    source = mod
    passes = [
        # Batch norm to one multiply-add, Linear weights transposed: in numpy, so conv and
        # dense weights reach legalization as plain constants (packing and CSR read them).
        FoldConstants(),
        relax.transform.DecomposeOpsForInference(),
        relax.transform.FoldConstant(),
        relax.transform.CanonicalizeBindings(),
        relax.transform.DeadCodeElimination(),
        # int8 layers: rescale, bias, activation and requantization as one multiply-add.
        FoldRequantize(),
        SigmoidGateToSilu(),
        *algo.graph_passes(),
        relax.transform.LegalizeOps(
            {
                "relax.nn.conv2d": algo.conv2d,
                "relax.matmul": algo.dense,
                **activation_legalizers(),  # vectorizable exp/sigmoid (no expf calls)
                **pooling_legalizers(),  # strided pooling without per-lane loads
            }
        ),
        relax.transform.AnnotateTIROpPattern(),
        *algo.fusion_passes(),
        relax.transform.DeadCodeElimination(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]
    with target:
        mod = tvm.transform.Sequential(passes)(mod)
    if schedule:
        mod = schedule_defaults(mod, target)
    return algo.choose_lowering(source, LoweredModule(mod, algo.layers), target, schedule)


def schedule_defaults(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """dlas's default CPU schedules for every PrimFunc not yet scheduled (each algorithm's
    annotated block by that algorithm, the rest generically), sized for ``target``'s
    registers."""
    with target:
        return schedule_module(mod, algorithm_schedule)


def algorithm_schedule(name: str) -> ScheduleFn:
    """The default schedule of algorithm ``name``'s blocks."""
    return ALGORITHMS.get(name)().schedule
