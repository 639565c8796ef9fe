"""AVX-512 builds keep plain vector code (epilogues, elementwise functions) on 512-bit
registers, as the kernels are sized: LLVM's tuning for Intel server cores splits it in two."""

from __future__ import annotations

import re

import tvm
from tvm import relax

from dlas.algorithms import lower
from dlas.compiler import build as build_module
from dlas.compiler.build import full_width_vectors


def _requantize_module() -> tvm.IRModule:
    """int32 sums -> float -> scale -> round -> clip -> uint8: an int8 layer's epilogue."""
    op, bb = relax.op, relax.BlockBuilder()
    acc = relax.Var("acc", relax.TensorType((1, 8, 4, 64), "int32"))
    with bb.function("main", [acc]):
        with bb.dataflow():
            x = bb.emit(op.multiply(bb.emit(op.astype(acc, "float32")), relax.const(0.37)))
            x = bb.emit(op.clip(bb.emit(op.round(x)), 0.0, 255.0))
            out = bb.emit_output(bb.emit(op.astype(x, "uint8")))
        bb.emit_func_output(out)
    return bb.get()


def _float_ops(target: tvm.target.Target) -> dict[str, int]:
    lowered = lower(_requantize_module(), "direct", target)
    (code,) = build_module.build(lowered.mod, target).mod.imports
    asm = code.inspect_source("asm")
    ops = re.findall(r"\tv(?:mulps|cvtdq2ps|rndscaleps|roundps)\t[^\n]*%([xyz])mm", asm)
    return {width: ops.count(width) for width in "xyz"}


def test_avx512_targets_build_without_the_256_bit_preference(monkeypatch):
    target = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"})
    wide = _float_ops(target)
    assert wide["z"] > 0 and wide["y"] == 0, wide
    # The same build with LLVM's preference left on: the float ops are split into ymm.
    monkeypatch.setattr(build_module, "full_width_vectors", lambda t: t)
    split = _float_ops(target)
    assert split["z"] == 0 and split["y"] > 0, split


def test_other_targets_and_explicit_preferences_are_left_as_they_are():
    avx2 = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})
    assert full_width_vectors(avx2).same_as(avx2)
    chosen = tvm.target.Target(
        {"kind": "llvm", "mcpu": "skylake-avx512", "mattr": ["+prefer-256-bit"]}
    )
    assert full_width_vectors(chosen).same_as(chosen)
    arm = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})
    assert full_width_vectors(arm).same_as(arm)
    turned_off = full_width_vectors(tvm.target.Target({"kind": "llvm", "mcpu": "icelake-server"}))
    assert list(turned_off.attrs["mattr"]) == ["-prefer-256-bit"]
    assert turned_off.attrs["mcpu"] == "icelake-server"
