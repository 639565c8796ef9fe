"""bf16 kernels: bf16 x bf16 products are exact in float32, so every kernel matches a float64
reference of the same bf16 values up to float32 summation order.

Every dense algorithm runs ``vdpbf16ps`` (AVX512-BF16); ``gemm`` runs AMX tiles
(``tdpbf16ps``) where the CPU has AMX-BF16 (:mod:`dlas.algorithms.amx`), and the layer table
says which.
"""

from __future__ import annotations

import re
import shutil

import ml_dtypes
import numpy as np
import pytest
import torch
import tvm
from tvm import relax
from tvm.s_tir import TensorIntrin

from dlas.algorithms import amx, amx_direct, intrinsics, lower
from dlas.compiler.build import build
from tests.algorithms.test_conv import GRID
from tests.algorithms.test_int8 import DENSE_KERNELS, EXTRA
from tests.algorithms.test_intrinsics import disassemble
from tests.algorithms.util import AMX_CASES, Case, bare_conv_module, host_target


def _bf16_grid(algorithm: str, target, cases: list[Case], caplog) -> tuple[list[dict], object]:
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((c.n, c.c, c.h, c.w)).astype(ml_dtypes.bfloat16) for c in cases]
    ws = [
        rng.standard_normal((c.oc, c.c // c.groups, c.k, c.k)).astype(ml_dtypes.bfloat16)
        for c in cases
    ]
    module = bare_conv_module(cases, ["bfloat16"] * len(cases), ws, "float32")
    lowered = lower(module, algorithm, target)
    assert "default schedule failed" not in caplog.text
    executable = build(lowered.mod, target)
    vm = relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](*(tvm.runtime.tensor(x, tvm.cpu()) for x in xs))
    for i, (case, x, w) in enumerate(zip(cases, xs, ws, strict=True)):
        ref = torch.nn.functional.conv2d(
            torch.from_numpy(x.astype(np.float64)), torch.from_numpy(w.astype(np.float64)),
            stride=case.stride, padding=case.pad, dilation=case.dilation, groups=case.groups,
        ).numpy()  # fmt: skip
        assert np.abs(ref).max() > 1.0  # the comparison is not between zeros
        got = out[i].numpy()
        assert np.abs(got - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max()), case.id
    return lowered.layers, executable


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", DENSE_KERNELS)
def test_bf16_conv_grid_accumulates_in_float32(algorithm, caplog):
    target = host_target()
    if not intrinsics.has_bf16(target):
        pytest.skip(f"{target.mcpu} has no AVX512-BF16")
    layers, _ = _bf16_grid(algorithm, target, GRID + EXTRA, caplog)
    expected = amx.ISA if algorithm == "gemm" and amx.kind_for("bfloat16", target) else "avx512bf16"
    assert {r["kernel"] for r in layers if r["groups"] == 1} == {expected}


def test_amx_tiles_are_exact_and_in_the_library(caplog, tmp_path):
    target = host_target()
    if not amx.kind_for("bfloat16", target):
        pytest.skip(f"this CPU ({target.mcpu}) has no AMX-BF16: tdpbf16ps not checked")
    layers, executable = _bf16_grid("gemm", target, AMX_CASES, caplog)
    assert [r["kernel"] for r in layers] == [amx.ISA] * len(AMX_CASES)
    if shutil.which("objdump") is None:
        pytest.skip("objdump is not installed: instructions not checked")
    executable.export_library(str(tmp_path / "lib.so"))
    code = disassemble(str(tmp_path / "lib.so"))
    assert re.search(r"\stdpbf16ps\s", code) and re.search(r"\sldtilecfg\s", code)


def test_without_amx_gemm_keeps_vdpbf16ps(caplog):
    """Cooper Lake has AVX512-BF16 and no AMX (this CPU runs its code when it has BF16)."""
    if not intrinsics.has_bf16(host_target()):
        pytest.skip("this CPU has no AVX512-BF16")
    target = tvm.target.Target({"kind": "llvm", "mcpu": "cooperlake", "num-cores": 2})
    assert not amx.kind_for("bfloat16", target)
    layers, _ = _bf16_grid("gemm", target, AMX_CASES[:2], caplog)
    assert {r["kernel"] for r in layers} == {"avx512bf16"}


def test_records_from_another_process_register_their_amx_intrinsics():
    """A tuning record's trace names the AMX intrinsic of its layer's shape; a process that
    loads it without having scheduled such a layer registers it from the name."""
    names = [f"{kind.extern}_3x2x64x2{intrinsics.LOCAL}" for kind in (amx.BF16, amx.INT8)]
    for name in names:  # shapes no other test schedules
        assert TensorIntrin.get(name, allow_missing=True) is None
    amx.register_named(f'["Tensorize", ["{names[0]}", 1]] dot_16x4_vnni {names[1]}')
    for name in names:
        assert TensorIntrin.get(name, allow_missing=True) is not None
    # the wide layers' form (amx_direct): 2 tiles of 5 pixels, taps 1x2x2x3, chunks of 3
    # steps, segments of 1 pair, 2 blocks
    direct = [f"{amx_direct.PREFIX}{k.name}_5x2_1x2x2x3_3x1_2" for k in (amx.BF16, amx.INT8)]
    for name in direct:
        assert TensorIntrin.get(name + intrinsics.LOCAL, allow_missing=True) is None
    amx_direct.register_named(f'["Tensorize", ["{direct[0]}{intrinsics.LOCAL}", 1]] {direct[1]}')
    for name in direct:
        assert TensorIntrin.get(name + intrinsics.LOCAL, allow_missing=True) is not None
