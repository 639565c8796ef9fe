"""Algorithms & data formats layer: how conv2d (and dense) are computed and scheduled.

``lower(mod, "spatial_pack", target)`` legalizes every Relax operator of an exported model
to PrimFuncs, with conv2d computed by the chosen algorithm, fuses the epilogues into them and
gives every fused PrimFunc a default CPU schedule. Adding an algorithm = one module that
subclasses :class:`Algorithm` and registers itself, plus one ``conf/algorithm/<name>.yaml``.
"""

from __future__ import annotations

from . import (  # noqa: F401  (each module registers its algorithm)
    auto,
    blocked,
    direct,
    gemm,
    per_layer,
    sparse_direct,
    sparse_gemm,
    sparse_spatial_pack,
    spatial_pack,
    winograd,
)
from .base import Algorithm
from .lowering import LoweredModule, algorithm_schedule, lower, resolve, schedule_defaults
from .registry import ALGORITHMS
from .shapes import ConvSpec

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "ConvSpec",
    "LoweredModule",
    "algorithm_schedule",
    "lower",
    "resolve",
    "schedule_defaults",
]
