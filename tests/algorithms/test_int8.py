"""int8 kernels: exact int32 sums against an integer reference over the conv test grid.

Every algorithm computes ``conv2d(x_u8|s8, W_s8, out_dtype=int32)``; on a CPU with a byte dot
product (VNNI; the vpmaddubsw pair of AVX512-BW or AVX2, exact for its 7-bit weights
``2 * round(w / 2)``) the dense algorithms run the tensorized kernels of
:mod:`dlas.algorithms.dot_product` and the layer table says which layers did not. AArch64 (``sdot``) is built and disassembled only:
nothing here runs Arm code.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

from dlas.algorithms import amx, dot_product, intrinsics, lower
from dlas.compiler.build import build
from tests.algorithms.test_conv import GRID
from tests.algorithms.test_intrinsics import INSTRUCTIONS, disassemble
from tests.algorithms.util import AMX_CASES, Case, bare_conv_module, host_target

DENSE_KERNELS = ["direct", "gemm", "spatial_pack"]
# Stem-like and odd channel counts that are not multiples of 4 or 16, on top of the grid.
EXTRA = [
    Case(1, 3, 16, 16, 20, 3, pad=1),
    Case(2, 5, 9, 9, 7, 3, stride=2, pad=1),
    Case(1, 6, 18, 18, 24, 1, pad=1),  # 1x1, width 20 in two row vectors (dot_rows)
]


def _reference(case: Case, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    # float64 holds these sums exactly (|sum| < 255 * 128 * 7 * 7 * 64 << 2^53).
    y = torch.nn.functional.conv2d(
        torch.from_numpy(x.astype(np.float64)), torch.from_numpy(w.astype(np.float64)),
        stride=case.stride, padding=case.pad, dilation=case.dilation, groups=case.groups,
    )  # fmt: skip
    return y.numpy().astype(np.int64)


def _check(algorithm: str, cases: list[Case], target) -> list[dict]:
    kernel = intrinsics.int8_kernel(target)
    halved = kernel is not None and kernel.weight_shift == 1
    rng = np.random.default_rng(0)
    dtypes = ["uint8" if i % 2 == 0 else "int8" for i in range(len(cases))]
    xs = [
        rng.integers(0 if d == "uint8" else -128, 256 if d == "uint8" else 128,
                     (c.n, c.c, c.h, c.w)).astype(d)
        for c, d in zip(cases, dtypes, strict=True)
    ]  # fmt: skip
    ws = [rng.integers(-127, 128, (c.oc, c.c // c.groups, c.k, c.k)).astype("int8") for c in cases]
    lowered = lower(bare_conv_module(cases, dtypes, ws, "int32"), algorithm, target)
    assert len(lowered.layers) == len(cases)
    executable = build(lowered.mod, target)
    vm = relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](*(tvm.runtime.tensor(x, tvm.cpu()) for x in xs))
    for i, (case, x, w) in enumerate(zip(cases, xs, ws, strict=True)):
        tensorized = lowered.layers[i]["kernel"] != "widened"
        ref = _reference(case, x, np.round(w / 2) * 2 if halved and tensorized else w)
        assert np.abs(ref).max() > 1000  # the reference varies
        got = out[i].numpy()
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, ref, err_msg=f"{algorithm} {case.id} {dtypes[i]}")
    return lowered.layers, executable


# spatial_pack in the default suite; the other forms (same kernel, other data layouts) slow.
@pytest.mark.parametrize(
    "algorithm",
    [a if a == "spatial_pack" else pytest.param(a, marks=pytest.mark.slow) for a in DENSE_KERNELS],
)
def test_int8_conv_grid_is_exact(algorithm, caplog):
    _exact_on(host_target(), algorithm, caplog)


@pytest.mark.parametrize(
    ("mcpu", "isa"),
    [("skylake-avx512", "avx512bw"), ("skylake", "avx2")],
    ids=["avx512-without-vnni", "avx2-i7"],
)
def test_int8_without_vnni_uses_the_u8s8_pair_exactly(mcpu, isa, caplog, tmp_path):
    """A CPU without VNNI: AVX-512 (Skylake-SP) or only AVX2 (the study's i7, Zen 1-3). This
    CPU runs their code where it has their feature."""
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": 2})
    kernel = intrinsics.int8_kernel(target)
    assert kernel is not None and kernel.isa == isa
    host = host_target()
    if not intrinsics.has_feature(kernel.feature, host):
        pytest.skip(f"this CPU ({host.mcpu}) cannot run {kernel.feature} code")
    _exact_on(target, "direct", caplog)  # its 1x1 layers: the pixels-in-lanes pair
    layers, executable = _exact_on(target, "spatial_pack", caplog)
    assert {r["kernel"] for r in layers if r["groups"] == 1} == {isa}
    if shutil.which("objdump") is None:
        pytest.skip("objdump is not installed: instructions not checked")
    executable.export_library(str(tmp_path / "lib.so"))
    code = disassemble(str(tmp_path / "lib.so"))
    assert re.search(rf"\s{INSTRUCTIONS[isa]}", code), INSTRUCTIONS[isa]
    assert not re.search(rf"\s{INSTRUCTIONS['vnni']}", code)


def test_int8_amx_tiles_are_exact_and_in_the_library(caplog, tmp_path):
    """``gemm`` on a CPU with AMX-INT8: tdpbusd tiles, exact over the AMX-specific cases."""
    target = host_target()
    if amx.kind_for("int8", target) is None:
        pytest.skip(f"this CPU ({target.mcpu}) has no AMX-INT8: tdpbusd not checked")
    layers, executable = _check("gemm", AMX_CASES, target)
    assert "default schedule failed" not in caplog.text
    assert [r["kernel"] for r in layers] == [amx.ISA] * len(AMX_CASES)
    if shutil.which("objdump") is None:
        pytest.skip("objdump is not installed: instructions not checked")
    executable.export_library(str(tmp_path / "lib.so"))
    assert re.search(r"\stdpbusd\s", disassemble(str(tmp_path / "lib.so")))


def _exact_on(target, algorithm: str, caplog) -> tuple[list[dict], object]:
    layers, executable = _check(algorithm, GRID + EXTRA, target)
    assert "default schedule failed" not in caplog.text
    if intrinsics.int8_isa(target) == "none":
        pytest.skip(f"{target.mcpu} has no u8 x s8 dot product: only the int32 path was checked")
    for row in layers:
        grouped = row["groups"] > 1
        # Every ungrouped layer is tensorized; grouped/depthwise ones say why they are not.
        assert (row["kernel"] == "widened") == grouped, row
        assert bool(row["fallback"]) == (grouped or row["algorithm"] != algorithm), row
    return layers, executable


@pytest.mark.parametrize(
    ("mcpu", "isa"),
    [("cortex-a76", "dotprod"), ("cortex-a73", "none"), ("carmel", "none")],
    ids=["armv8.2-dotprod", "hikey970-a73", "xavier-carmel"],
)
def test_int8_on_aarch64_uses_sdot_where_the_target_has_it(mcpu, isa):
    """Cross-compiled, not run: the generated assembly has ``sdot`` exactly when the target
    has the dot-product extension (HiKey 970's A73 and Xavier's Carmel lack it, per LLVM)."""
    target = tvm.target.Target(
        {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": mcpu, "num-cores": 4}
    )
    assert intrinsics.int8_isa(target) == isa
    cases = [*EXTRA, GRID[0]]
    rng = np.random.default_rng(0)
    dtypes = [("uint8", "int8")[i % 2] for i in range(len(cases))]
    ws = [rng.integers(-127, 128, (c.oc, c.c // c.groups, c.k, c.k)).astype("int8") for c in cases]
    lowered = lower(bare_conv_module(cases, dtypes, ws, "int32"), "spatial_pack", target)
    kernels = {r["kernel"] for r in lowered.layers if r["groups"] == 1}
    assert kernels == ({"dotprod"} if isa == "dotprod" else {"widened"}), lowered.layers
    (code,) = build(lowered.mod, target).mod.imports
    asm = code.inspect_source("asm")
    assert ("sdot\t" in asm or "sdot " in asm) == (isa == "dotprod")


def test_signed_data_path_is_exact(monkeypatch, caplog):
    """What ``sdot`` kernels compute (uint8 data shifted by -128 into int8, the correction
    added back), run here with a stand-in s8 x s8 intrinsic whose implementation is its own
    description, so that the arithmetic Arm runs is checked on this CPU."""
    from tvm.s_tir import TensorIntrin

    name = "dlas_test_dot_16x4_s8s8"
    for suffix, scope in (("", "global"), (intrinsics.LOCAL, "local")):
        desc = intrinsics._dot_x8s8_desc(scope, "int8")
        TensorIntrin.register(name + suffix, desc, desc, override=True)
    stand_in = intrinsics.Int8Kernel("s8-stand-in", name, "sse2", "int8", 0)
    monkeypatch.setattr(intrinsics, "INT8_KERNELS", (stand_in,))
    layers, _ = _exact_on(host_target(), "spatial_pack", caplog)
    assert {r["kernel"] for r in layers if r["groups"] == 1} == {"s8-stand-in"}


def test_int8_one_by_one_rows_put_pixels_in_the_lanes_exactly(caplog):
    """``direct``'s 1x1 layers of unit stride (``dot_rows``): exact, in the default suite
    (the whole grid with ``direct`` is slow), padded widths and channel counts included."""
    target = host_target()
    if intrinsics.int8_intrinsic(target, rows=True) is None:
        pytest.skip(f"{target.mcpu} has no u8 x s8 dot product with a pixels-in-lanes form")
    # 8x8 and 4x4 planes are whole vectors: one flattened row each (dot_rows.flat_plane).
    flat = [Case(1, 20, 8, 8, 40, 1), Case(2, 7, 4, 4, 24, 1)]
    cases = [Case(1, 12, 16, 16, 72, 1), EXTRA[-1], Case(2, 16, 9, 9, 32, 1), *flat]
    _check("direct", cases, target)
    assert "default schedule failed" not in caplog.text
    mod = lower(
        bare_conv_module(cases, ["uint8"] * 5, [np.ones((c.oc, c.c, 1, 1), "int8") for c in cases],
                         "int32"),
        "direct", target,
    ).mod  # fmt: skip
    # The layers whose rows or planes fill vectors are tensorized in rows, the 9x9 one is not.
    kernels = [f.script() for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    rows = [k for k in kernels if '"dlas.op": "dot_rows"' in k]
    assert len(rows) == 4
    # Epilogues too run in whole vectors: a flat plane's rows and columns as one loop (as
    # 8- or 4-wide map rows, LLVM ran them scalar).
    lanes = [int(v) for k in rows for v in re.findall(r"T.vectorized\(T.int64\((\d+)\)\)", k)]
    assert min(lanes) >= 16, lanes


@pytest.mark.parametrize(
    "mcpu", [None, "skylake-avx512", "skylake"], ids=["host", "avx512bw", "avx2"]
)
def test_int8_depthwise_rows_reduce_kernel_taps_exactly(mcpu, caplog):
    """``direct``'s int8 depthwise layers with rows of at least one vector (``dot_taps``):
    exact for u8 and shifted s8 data, strides, 5x5 (two tap quads), dilation and padded
    widths, with each x86 instruction family this CPU can run (7-bit weights without VNNI);
    a narrower layer stays widened and says why."""
    host = host_target()
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": 2}) if mcpu else host
    kernel = intrinsics.int8_kernel(target)
    if intrinsics.int8_intrinsic(target, rows=True) is None:
        pytest.skip(f"{target.mcpu} has no u8 x s8 dot product with a pixels-in-lanes form")
    if not intrinsics.has_feature(kernel.feature, host):
        pytest.skip(f"this CPU ({host.mcpu}) cannot run {kernel.feature} code")
    cases = [
        Case(1, 16, 16, 16, 16, 3, pad=1, groups=16),
        Case(2, 8, 20, 37, 8, 3, pad=1, groups=8),
        Case(1, 8, 40, 40, 8, 3, stride=2, pad=1, groups=8),
        Case(1, 8, 20, 20, 8, 5, pad=2, groups=8),
        Case(1, 8, 21, 21, 8, 3, pad=2, groups=8, dilation=2),
        Case(1, 16, 8, 8, 16, 3, pad=1, groups=16),
    ]
    layers, _ = _check("direct", cases, target)
    assert "default schedule failed" not in caplog.text
    isa = intrinsics.int8_isa(target)
    assert [r["kernel"] for r in layers] == [isa] * 5 + ["widened"]
    assert "narrower" not in str(layers[0]["fallback"])
    assert "rows of 8 < 16 pixels" in layers[-1]["fallback"]


def test_int8_gemm_makes_its_im2col_rows_in_parallel_over_output_rows():
    """gemm's im2col stage runs parallel over output rows with affine reads, not as vectors
    along K (64-bit divisions and a gather per lane: 5.6x slower on a 56-px layer), and
    stays exact; a stem whose channels x taps is no multiple of the dot product's depth gets
    zero channels (K 27 -> 36, not 28) so that its rows are made the same way."""
    target = host_target()
    if intrinsics.int8_kernel(target) is None:
        pytest.skip("no int8 dot-product instruction on this CPU: gemm runs widened")
    stem = Case(1, 3, 16, 16, 16, 3, pad=1)
    cases = [Case(1, 16, 12, 12, 16, 3, pad=1), Case(1, 8, 10, 10, 16, 3, stride=2, pad=1), stem]
    _check("gemm", cases, target)
    for case in cases:
        rng = np.random.default_rng(0)
        w = rng.integers(-127, 128, (case.oc, case.c, case.k, case.k)).astype("int8")
        lowered = lower(bare_conv_module([case], ["uint8"], [w], "int32"), "gemm", target)
        (func,) = (f for f in lowered.mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc))
        script = func.script()
        out_h = (case.h + 2 * case.pad - case.k) // case.stride + 1
        before = script[: script.index('T.sblock("im2col")')]
        nest = before[before.rindex("T.parallel(") :]  # the im2col's loops, outermost first
        assert nest.startswith(f"T.parallel(T.int64({out_h}))"), nest
        assert "T.vectorized" not in nest, nest
        shape = re.search(r"im2col = T\.sblock_alloc_buffer\(\((.*?)\)\),", script)[1]
        k, taps = int(re.findall(r"\d+", shape)[-1]), case.k * case.k
        depth = dot_product.flavor_of("uint8").depth
        assert k % taps == 0 and k % depth == 0 and k // taps - case.c < depth, shape
