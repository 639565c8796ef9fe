"""Build a lowered Relax module into a runnable executable for a target."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic


def finish_pipeline(target: tvm.target.Target) -> tvm.transform.Pass:
    """The CPU pipeline's passes after legalization: dlas.algorithms.lower did those already."""

    @tvm.transform.module_pass(opt_level=0)
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            passes = cpu_generic.dataflow_lower_passes(target) + cpu_generic.finalize_passes(target)
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def build(lowered: tvm.IRModule, target: tvm.target.Target) -> relax.VMExecutable:
    """Compile a module whose operators are already lowered to (scheduled) PrimFuncs."""
    return tvm.compile(lowered, target, relax_pipeline=finish_pipeline(target))
