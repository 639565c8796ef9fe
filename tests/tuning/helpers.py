"""Small Relax modules with fused call_tir PrimFuncs: what dlas.algorithms.lower hands over."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import tvm
from tvm import relax, topi


def mlp_module(
    rows: int = 1,
    sizes: tuple[int, ...] = (64, 32, 16),
    seed: int = 0,
) -> tvm.IRModule:
    """dense → relu → dense with constant weights: one task per layer after fusion."""
    rng = np.random.default_rng(seed)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((rows, sizes[0]), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = x
            for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
                weight = rng.standard_normal((n_out, n_in)).astype("float32") / np.sqrt(n_in)
                y = bb.emit_te(topi.nn.dense, y, relax.const(weight))
                if i < len(sizes) - 2:
                    y = bb.emit_te(topi.nn.relu, y)
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    mod = relax.transform.AnnotateTIROpPattern()(bb.get())
    return relax.transform.FuseTIR()(relax.transform.FuseOps()(mod))


def lowered(mod: tvm.IRModule) -> SimpleNamespace:
    """Stands in for dlas.algorithms.LoweredModule (the tuner only reads ``.mod``)."""
    return SimpleNamespace(mod=mod, layers=[])


def host_target() -> tvm.target.Target:
    from dlas.devices.local_cpu import host_cpu_name

    return tvm.target.Target({"kind": "llvm", "mcpu": host_cpu_name(), "num-cores": 2})


def run_module(executable, x: np.ndarray) -> np.ndarray:
    vm = relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x, tvm.cpu()))
    return out.numpy()
