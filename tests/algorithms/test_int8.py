"""int8 kernels: exact int32 sums against an integer reference over the conv test grid.

Every algorithm computes ``conv2d(x_u8|s8, W_s8, out_dtype=int32)``; on a CPU with the u8 x s8
dot product (VNNI, or AVX512-BW's vpmaddubsw pair) the dense algorithms run the tensorized
kernels of :mod:`dlas.algorithms.int8_vnni` and the layer table says which layers did not.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

from dlas.algorithms import intrinsics, lower
from dlas.compiler.build import build
from tests.algorithms.test_conv import GRID
from tests.algorithms.util import Case, host_target

DENSE_KERNELS = ["direct", "gemm", "spatial_pack"]
# Stem-like and odd channel counts that are not multiples of 4 or 16, on top of the grid.
EXTRA = [Case(1, 3, 16, 16, 20, 3, pad=1), Case(2, 5, 9, 9, 7, 3, stride=2, pad=1)]


def _int8_module(cases: list[Case], dtypes: list[str], weights: list[np.ndarray]):
    bb = relax.BlockBuilder()
    xs = [
        relax.Var(f"x{i}", relax.TensorType((c.n, c.c, c.h, c.w), d))
        for i, (c, d) in enumerate(zip(cases, dtypes, strict=True))
    ]
    with bb.function("main", xs):
        with bb.dataflow():
            outs = [
                bb.emit(
                    relax.op.nn.conv2d(
                        x,
                        relax.const(w),
                        strides=c.stride,
                        padding=c.pad,
                        dilation=c.dilation,
                        groups=c.groups,
                        out_dtype="int32",
                    )
                )  # fmt: skip
                for x, c, w in zip(xs, cases, weights, strict=True)
            ]
            out = bb.emit_output(relax.Tuple(outs))
        bb.emit_func_output(out)
    return bb.get()


def _reference(case: Case, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    # float64 holds these sums exactly (|sum| < 255 * 128 * 7 * 7 * 64 << 2^53).
    y = torch.nn.functional.conv2d(
        torch.from_numpy(x.astype(np.float64)), torch.from_numpy(w.astype(np.float64)),
        stride=case.stride, padding=case.pad, dilation=case.dilation, groups=case.groups,
    )  # fmt: skip
    return y.numpy().astype(np.int64)


def _check(algorithm: str, cases: list[Case], target) -> list[dict]:
    rng = np.random.default_rng(0)
    dtypes = ["uint8" if i % 2 == 0 else "int8" for i in range(len(cases))]
    xs = [
        rng.integers(0 if d == "uint8" else -128, 256 if d == "uint8" else 128,
                     (c.n, c.c, c.h, c.w)).astype(d)
        for c, d in zip(cases, dtypes, strict=True)
    ]  # fmt: skip
    ws = [rng.integers(-127, 128, (c.oc, c.c // c.groups, c.k, c.k)).astype("int8") for c in cases]
    lowered = lower(_int8_module(cases, dtypes, ws), algorithm, target)
    vm = relax.VirtualMachine(build(lowered.mod, target), tvm.cpu())
    out = vm["main"](*(tvm.runtime.tensor(x, tvm.cpu()) for x in xs))
    for i, (case, x, w) in enumerate(zip(cases, xs, ws, strict=True)):
        ref = _reference(case, x, w)
        assert np.abs(ref).max() > 1000  # the reference varies
        got = out[i].numpy()
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, ref, err_msg=f"{algorithm} {case.id} {dtypes[i]}")
    return lowered.layers


# spatial_pack in the default suite; the other forms (same kernel, other data layouts) slow.
@pytest.mark.parametrize(
    "algorithm",
    [a if a == "spatial_pack" else pytest.param(a, marks=pytest.mark.slow) for a in DENSE_KERNELS],
)
def test_int8_conv_grid_is_exact(algorithm, caplog):
    target = host_target()
    layers = _check(algorithm, GRID + EXTRA, target)
    assert "default schedule failed" not in caplog.text
    if intrinsics.int8_isa(target) == "none":
        pytest.skip(f"{target.mcpu} has no u8 x s8 dot product: only the int32 path was checked")
    for row in layers:
        grouped = row["groups"] > 1
        # Every ungrouped layer is tensorized; grouped/depthwise ones say why they are not.
        assert (row["kernel"] == "widened") == grouped, row
        assert bool(row["fallback"]) == (grouped or row["algorithm"] != algorithm), row


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", DENSE_KERNELS)
def test_bf16_conv_grid_accumulates_in_float32(algorithm, caplog):
    """bf16 x bf16 products are exact in float32: only the float32 summation order differs
    from a float64 reference of the same bf16 values."""
    import ml_dtypes

    target = host_target()
    if not intrinsics.has_bf16(target):
        pytest.skip(f"{target.mcpu} has no AVX512-BF16")
    cases = GRID + EXTRA
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((c.n, c.c, c.h, c.w)).astype(ml_dtypes.bfloat16) for c in cases]
    ws = [
        rng.standard_normal((c.oc, c.c // c.groups, c.k, c.k)).astype(ml_dtypes.bfloat16)
        for c in cases
    ]
    bb = relax.BlockBuilder()
    params = [relax.Var(f"x{i}", relax.TensorType(x.shape, "bfloat16")) for i, x in enumerate(xs)]
    with bb.function("main", params):
        with bb.dataflow():
            outs = [
                bb.emit(
                    relax.op.nn.conv2d(
                        p,
                        relax.const(w),
                        strides=c.stride,
                        padding=c.pad,
                        dilation=c.dilation,
                        groups=c.groups,
                        out_dtype="float32",
                    )
                )  # fmt: skip
                for p, c, w in zip(params, cases, ws, strict=True)
            ]
            out = bb.emit_output(relax.Tuple(outs))
        bb.emit_func_output(out)
    lowered = lower(bb.get(), algorithm, target)
    assert "default schedule failed" not in caplog.text
    vm = relax.VirtualMachine(build(lowered.mod, target), tvm.cpu())
    out = vm["main"](*(tvm.runtime.tensor(x, tvm.cpu()) for x in xs))
    for i, (case, x, w) in enumerate(zip(cases, xs, ws, strict=True)):
        ref = torch.nn.functional.conv2d(
            torch.from_numpy(x.astype(np.float64)), torch.from_numpy(w.astype(np.float64)),
            stride=case.stride, padding=case.pad, dilation=case.dilation, groups=case.groups,
        ).numpy()  # fmt: skip
        got = out[i].numpy()
        assert np.abs(got - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max()), case.id
    kernels = {r["kernel"] for r in lowered.layers if r["groups"] == 1}
    assert kernels == {"avx512bf16"}
