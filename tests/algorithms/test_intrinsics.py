"""The x86 dot-product intrinsics build, compute exactly, and emit their instruction."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
import tvm
from tvm import s_tir, te

from dlas.algorithms import intrinsics
from tests.algorithms.util import host_target

# What a library of each kernel family must contain: a regex over one line of objdump's output.
INSTRUCTIONS = {
    "vnni": r"vpdpbusd\s",
    "avx512bw": r"vpmaddubsw\s.*%zmm",
    "avx2": r"vpmaddubsw\s.*%ymm",
    "avx512bf16": r"vdpbf16ps\s",
}

CASES = [
    # (intrinsic, feature the CPU needs, instruction in the disassembly, operand dtypes, acc)
    (intrinsics.VNNI_INTRIN, intrinsics.VNNI_FEATURE, INSTRUCTIONS["vnni"], ("uint8", "int8"),
     "int32", 4),
    (intrinsics.AVX512_INTRIN, intrinsics.AVX512BW_FEATURE, INSTRUCTIONS["avx512bw"],
     ("uint8", "int8"), "int32", 4),
    (intrinsics.AVX2_INTRIN, intrinsics.AVX2_FEATURE, INSTRUCTIONS["avx2"], ("uint8", "int8"),
     "int32", 4),
    # bfloat16 operands travel as their bit patterns (uint16).
    (intrinsics.BF16_INTRIN, intrinsics.BF16_FEATURE, INSTRUCTIONS["avx512bf16"],
     ("uint16", "uint16"), "float32", 2),
]  # fmt: skip


def disassemble(lib_path: str) -> str:
    return subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", lib_path],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def _tensorized(name: str, dtypes: tuple[str, str], acc: str, depth: int, target):
    """C[i, 16] += A[i, K] . B[K/depth, 16, depth], the (16, depth) block tensorized."""
    m, k = 8, 64
    a = te.placeholder((m, k), dtypes[0], name="A")
    b = te.placeholder((k // depth, 16, depth), dtypes[1], name="B")
    ko = te.reduce_axis((0, k // depth), "ko")
    ki = te.reduce_axis((0, depth), "ki")

    def value(x, y):
        if dtypes[0] == "uint16":
            return intrinsics.bf16_value(x) * intrinsics.bf16_value(y)
        return x.astype(acc) * y.astype(acc)

    c = te.compute(
        (m, 16),
        lambda i, j: te.sum(value(a[i, ko * depth + ki], b[ko, j, ki]), axis=[ko, ki]),
        name="C",
    )
    sch = s_tir.Schedule(te.create_prim_func([a, b, c]))
    block = sch.get_sblock("C")
    i, j, ko_, ki_ = sch.get_loops(block)
    sch.reorder(i, ko_, j, ki_)
    sch.decompose_reduction(block, ko_)
    sch.tensorize(j, name)
    if name in intrinsics.LLVM_IMPORTS:
        sch.annotate(i, "pragma_import_llvm", intrinsics.LLVM_IMPORTS[name])
    return tvm.compile(sch.mod, target=target), (m, k)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_intrinsic_builds_computes_and_emits_its_instruction(case, tmp_path):
    name, feature, instruction, dtypes, acc, depth = case
    target = host_target()
    if not intrinsics.has_feature(feature, target):
        pytest.skip(f"this CPU ({target.mcpu}) has no {feature}")
    intrinsics.register_intrinsics()
    lib, (m, k) = _tensorized(name, dtypes, acc, depth, target)
    rng = np.random.default_rng(0)
    if dtypes[0] == "uint8":
        a = rng.integers(0, 256, (m, k)).astype("uint8")
        b = rng.integers(-128, 128, (k // depth, 16, depth)).astype("int8")
        # vpmaddubsw saturates pairs to int16: keep its operands in the exact range.
        if name in (intrinsics.AVX512_INTRIN, intrinsics.AVX2_INTRIN):
            b = (b // 2).astype("int8")
        ref = a.astype(np.int64) @ b.transpose(0, 2, 1).reshape(k, 16).astype(np.int64)
        args = [a, b, np.zeros((m, 16), "int32")]
    else:
        import ml_dtypes

        a = rng.standard_normal((m, k)).astype(ml_dtypes.bfloat16)
        b = rng.standard_normal((k // depth, 16, depth)).astype(ml_dtypes.bfloat16)
        ref = a.astype(np.float64) @ b.transpose(0, 2, 1).reshape(k, 16).astype(np.float64)
        args = [a.view(np.uint16), b.view(np.uint16), np.zeros((m, 16), "float32")]
    assert np.abs(ref).max() > 0  # the reference varies
    dev = tvm.cpu()
    tensors = [tvm.runtime.tensor(x, dev) for x in args]
    lib["main"](*tensors)
    got = tensors[2].numpy()
    if acc == "int32":
        np.testing.assert_array_equal(got, ref)
    else:
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)
    if shutil.which("objdump") is None:
        pytest.skip("objdump is not installed: instruction not checked")
    path = tmp_path / "lib.so"
    lib.export_library(str(path))
    assert re.search(rf"\s{instruction}", disassemble(str(path))), instruction
