"""Helpers for the algorithm tests: conv modules built directly in Relax, build-and-run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import tvm
from tvm import relax

from dlas.algorithms import ALGORITHMS, LoweredModule, lower
from dlas.compiler.build import build
from dlas.devices.local_cpu import host_target  # noqa: F401 (the tests' target)

RTOL = 1e-4
# Algorithms with a kernel of their own (per_layer only chooses among these).
KERNELS = [n for n in ALGORITHMS.names() if not ALGORITHMS.get(n).composite]


@dataclass(frozen=True)
class Case:
    """One conv2d: NCHW input (n, c, h, w), ``oc`` filters of k x k, then bias + relu."""

    n: int
    c: int
    h: int
    w: int
    oc: int
    k: int
    stride: int = 1
    pad: int = 0
    groups: int = 1
    dilation: int = 1

    @property
    def id(self) -> str:
        return (
            f"n{self.n}c{self.c}x{self.h}x{self.w}-o{self.oc}k{self.k}s{self.stride}"
            f"p{self.pad}g{self.groups}d{self.dilation}"
        )


def varying_references(
    model: torch.nn.Module, shape: tuple[int, ...]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Two random inputs and the model's outputs for them, checked to differ: logits that
    do not depend on the input would make any agreement prove nothing."""
    gen = torch.Generator().manual_seed(1)
    inputs = [torch.randn(shape, generator=gen) for _ in range(2)]
    with torch.no_grad():
        refs = [model(x).numpy() for x in inputs]
    assert np.abs(refs[0] - refs[1]).max() > 1e-2 * np.abs(refs[0]).max()
    return [x.numpy() for x in inputs], refs


def relative_error(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-12))


def random_weights(case: Case, sparsity: float, rng: np.random.Generator) -> np.ndarray:
    w = rng.standard_normal((case.oc, case.c // case.groups, case.k, case.k)).astype("float32")
    if sparsity >= 1.0:
        return np.zeros_like(w)
    if sparsity > 0:
        # Magnitude pruning: zero the smallest |w|, as a pruned model would.
        cut = np.quantile(np.abs(w), sparsity)
        w[np.abs(w) <= cut] = 0.0
    return w


def emit_conv(
    bb: relax.BlockBuilder, x: relax.Expr, case: Case, w: np.ndarray, out_dtype: str | None = None
) -> relax.Expr:
    """``case``'s conv2d of ``x`` with the constant weights ``w``."""
    return bb.emit(
        relax.op.nn.conv2d(
            x,
            relax.const(w),
            strides=case.stride,
            padding=case.pad,
            dilation=case.dilation,
            groups=case.groups,
            out_dtype=out_dtype,
        )
    )


def conv_module(
    cases: list[Case], weights: list[np.ndarray], biases: list[np.ndarray]
) -> tvm.IRModule:
    """One input per case; each output is relu(conv2d(x) + bias) (a fused epilogue)."""
    bb = relax.BlockBuilder()
    xs = [
        relax.Var(f"x{i}", relax.TensorType((c.n, c.c, c.h, c.w), "float32"))
        for i, c in enumerate(cases)
    ]
    with bb.function("main", xs):
        with bb.dataflow():
            outs = []
            for x, case, w, b in zip(xs, cases, weights, biases, strict=True):
                y = emit_conv(bb, x, case, w)
                y = bb.emit(relax.op.add(y, relax.const(b.reshape(1, -1, 1, 1))))
                outs.append(bb.emit(relax.op.nn.relu(y)))
            out = bb.emit_output(relax.Tuple(outs))
        bb.emit_func_output(out)
    return bb.get()


def bare_conv_module(
    cases: list[Case], dtypes: list[str], weights: list[np.ndarray], out_dtype: str
) -> tvm.IRModule:
    """One input per case (of its dtype); each output is the bare conv2d in ``out_dtype``
    (the low-precision kernels' accumulators)."""
    bb = relax.BlockBuilder()
    xs = [
        relax.Var(f"x{i}", relax.TensorType((c.n, c.c, c.h, c.w), d))
        for i, (c, d) in enumerate(zip(cases, dtypes, strict=True))
    ]
    with bb.function("main", xs):
        with bb.dataflow():
            outs = [
                emit_conv(bb, x, c, w, out_dtype)
                for x, c, w in zip(xs, cases, weights, strict=True)
            ]
            out = bb.emit_output(relax.Tuple(outs))
        bb.emit_func_output(out)
    return bb.get()


def torch_reference(case: Case, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    y = torch.nn.functional.conv2d(
        torch.from_numpy(x),
        torch.from_numpy(w),
        torch.from_numpy(b),
        stride=case.stride,
        padding=case.pad,
        dilation=case.dilation,
        groups=case.groups,
    )
    return torch.relu(y).numpy()


def run(
    mod: tvm.IRModule, algorithm: str | Any, inputs: list[np.ndarray], target: tvm.target.Target
) -> tuple[list[np.ndarray], LoweredModule]:
    lowered = lower(mod, algorithm, target)
    vm = relax.VirtualMachine(build(lowered.mod, target), tvm.cpu())
    out = vm["main"](*(tvm.runtime.tensor(x, tvm.cpu()) for x in inputs))
    outs = [out[i].numpy() for i in range(len(out))]  # main returns a tuple
    return outs, lowered


def check_cases(
    algorithm: str,
    cases: list[Case],
    target: tvm.target.Target,
    *,
    sparsity: float | list[float] = 0.0,
    seed: int = 0,
) -> LoweredModule:
    """Build all ``cases`` in one module with ``algorithm`` and compare with PyTorch."""
    rng = np.random.default_rng(seed)
    levels = sparsity if isinstance(sparsity, list) else [sparsity] * len(cases)
    weights = [random_weights(c, s, rng) for c, s in zip(cases, levels, strict=True)]
    biases = [rng.standard_normal(c.oc).astype("float32") for c in cases]
    inputs = [rng.standard_normal((c.n, c.c, c.h, c.w)).astype("float32") for c in cases]
    outs, lowered = run(conv_module(cases, weights, biases), algorithm, inputs, target)
    for case, out, x, w, b in zip(cases, outs, inputs, weights, biases, strict=True):
        ref = torch_reference(case, x, w, b)
        assert out.shape == ref.shape, case.id
        err = relative_error(out, ref)
        assert err <= RTOL, f"{algorithm} {case.id}: relative error {err:.2e}"
    return lowered


# What the AMX kernels pad differently: an RGB stem (channels to a pair, kernel rows to 8
# columns), channels past 32 that are not a multiple of 32, a 1x1 (no tap axis), dilation,
# an output width of 5 (tiles of 5 rows), a batch of two.
AMX_CASES = [
    Case(1, 3, 32, 32, 16, 7, stride=2, pad=3),
    Case(1, 64, 14, 14, 32, 3, pad=1),
    Case(1, 40, 10, 10, 20, 1, stride=2),
    Case(1, 32, 9, 9, 16, 3, pad=2, dilation=2),
    Case(2, 5, 9, 9, 7, 3, stride=2, pad=1),
    # wide layers (weights as the A tile, amx_direct): channel padding and a batch; pixel
    # tiles in pairs with an odd one left; strided 3x3 (phases), 1x1 and kernel < stride
    Case(2, 96, 12, 12, 20, 3, pad=1),
    Case(1, 64, 48, 48, 32, 3, pad=1),
    Case(1, 128, 15, 15, 48, 3, stride=2, pad=1),
    Case(1, 64, 16, 16, 64, 1, stride=2),
    Case(1, 64, 11, 11, 16, 2, stride=3, pad=1),
]
