"""x86 tensor intrinsics for the low-precision kernels, and the CPU features that enable them.

``dot_16x4_vnni`` (u8 x s8 -> i32, 16 output lanes, 4-deep) is registered by TVM itself, but
its implementation passes ``int32x16`` operands to ``llvm.x86.avx512.vpdpbusd.512``, which
since LLVM 20 takes ``(<16 x i32>, <64 x i8>, <64 x i8>)``: LLVM verification fails and every
kernel (and every MetaSchedule candidate) tensorized with it fails to build.
:func:`register_intrinsics` re-registers the same description with an implementation that
reinterprets the operands as 64-byte vectors, once per process: dlas's in-process builder and
MetaSchedule's tuner then both get the working one.

Without VNNI, AVX512-BW's ``vpmaddubsw`` (or AVX2's, on ymm registers: the 16 x 4 block in
two halves) adds u8 x s8 pairs into *saturating* int16 lanes: a pair of full-range operands
reaches 2 x 255 x 127 = 64770. As oneDNN does on such CPUs, the kernels then use 7-bit weights
(``round(w / 2)``, |w| <= 64: a pair stays within 32640) and double their sums, so they are
exact for the weights ``2 * round(w / 2)`` (one bit of weight precision lost). On AArch64
with the dot-product extension (``+dotprod``, Armv8.2+), ``sdot`` multiplies signed bytes:
``dlas_dot_16x4_sdot`` covers the same 16 x 4 block with four of them.

``dot_16x2_bf16`` is the bfloat16 analogue for AVX512-BF16 (``vdpbf16ps``): 16 float32 lanes,
each += a pair of bf16 products.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import partial
from typing import Any

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from dlas._tvmscript import cheap_frame_info

from .shapes import has_feature

VNNI_INTRIN = "dot_16x4_vnni"
AVX512_INTRIN = "dot_16x4_avx512"
SDOT_INTRIN = "dlas_dot_16x4_sdot"
VNNI_ROWS_INTRIN = "dlas_rows_16x4_vnni"
AVX512_ROWS_INTRIN = "dlas_rows_16x4_avx512"
AVX2_INTRIN = "dlas_dot_16x4_avx2"
AVX2_ROWS_INTRIN = "dlas_rows_16x4_avx2"
BF16_INTRIN = "dot_16x2_bf16"

# LLVM feature names (as ``target_has_features`` spells them) of each instruction family.
VNNI_FEATURE = "avx512vnni"
AVX512BW_FEATURE = "avx512bw"
AVX2_FEATURE = "avx2"
BF16_FEATURE = "avx512bf16"
DOTPROD_FEATURE = "dotprod"


# --- u8 x s8 -> s32 -------------------------------------------------------------------------
# Two forms of the same 16 x 4 block: 16 output channels in the lanes (A: one pixel's 4 data
# bytes, broadcast; B: 16 channels' 4 weights), or with ``rows`` 16 output *pixels* in the
# lanes for dot_rows (A: 16 pixels x 4 channels of packed data, 64 contiguous bytes; B: one
# output channel's 4 weights, broadcast), whose accumulators are rows of an NCHW output.
def _dot_x8s8_desc(scope: str, data: str = "uint8", rows: bool = False) -> Any:
    a_shape, b_shape = ((16, 4), (4,)) if rows else ((4,), (16, 4))

    @T.prim_func(s_tir=True)
    def func(
        A: T.Buffer(a_shape, data, offset_factor=1),
        B: T.Buffer(b_shape, "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1, scope=scope),
    ) -> None:
        with T.sblock("root"):
            if rows:
                T.reads(C[0:16], A[0:16, 0:4], B[0:4])
            else:
                T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        if rows:
                            C[vi] = C[vi] + T.cast(A[vi, vk], "int32") * T.cast(B[vk], "int32")
                        else:
                            C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    return func


# Each u8 x s8 family: int32 lanes per instruction, and its LLVM intrinsics (one fused
# dot product, or a pair: u8 x s8 pairs -> saturating s16, then s16 pairs x 1 -> s32).
U8S8_FAMILIES = {
    "vnni": (16, ("llvm.x86.avx512.vpdpbusd.512",)),
    "avx512bw": (16, ("llvm.x86.avx512.pmaddubs.w.512", "llvm.x86.avx512.pmaddw.d.512")),
    "avx2": (8, ("llvm.x86.avx2.pmadd.ub.sw", "llvm.x86.avx2.pmadd.wd")),
}


def _dot_u8s8(scope: str, isa: str, rows: bool = False) -> Any:
    """``vpdpbusd`` (AVX512-VNNI); without VNNI, ``vpmaddubsw`` + ``vpmaddwd`` (x 1), on zmm
    registers (AVX512-BW) or on two halves of the block in ymm registers (AVX2). Each takes
    the u8 and the s8 operand as byte vectors of its register width."""
    a_shape, b_shape = ((16, 4), (4,)) if rows else ((4,), (16, 4))
    lanes, llvm = U8S8_FAMILIES[isa]
    acc, pairs, quads = f"int32x{lanes}", f"int16x{2 * lanes}", f"int8x{4 * lanes}"

    @T.macro
    def accumulate(C: Any, lo: int, u8: Any, s8: Any) -> None:
        if len(llvm) == 1:
            C[T.ramp(T.int32(lo), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm[0]), C.vload([lo], dtype=acc), u8, s8, dtype=acc
            )
        else:
            C[T.ramp(T.int32(lo), 1, lanes)] = C.vload([lo], dtype=acc) + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm[1]),
                T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(llvm[0]), u8, s8, dtype=pairs),
                T.broadcast(T.int16(1), 2 * lanes),
                dtype=acc,
            )

    @T.macro
    def lanes_from(A: Any, B: Any, C: Any, lo: int) -> None:
        if rows:
            b_i32 = T.reinterpret(B.vload([0], "int8x4"), dtype="int32")
            accumulate(
                C,
                lo,
                T.reinterpret(A.vload([lo, 0], dtype=f"uint8x{4 * lanes}"), dtype=quads),
                T.reinterpret(T.broadcast(b_i32, lanes), dtype=quads),
            )
        else:
            a_i32 = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
            a_u8 = T.reinterpret(T.broadcast(a_i32, lanes), dtype=quads)
            accumulate(C, lo, a_u8, B.vload([lo, 0], dtype=quads))

    @T.prim_func(s_tir=True)
    def func(
        A: T.Buffer(a_shape, "uint8", offset_factor=1),
        B: T.Buffer(b_shape, "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1, scope=scope),
    ) -> None:
        with T.sblock("root"):
            if rows:
                T.reads(C[0:16], A[0:16, 0:4], B[0:4])
            else:
                T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            lanes_from(A, B, C, 0)
            if lanes == 8:
                lanes_from(A, B, C, 8)

    return func


def _dot_s8s8_sdot(scope: str) -> Any:
    # 16 lanes = four int32x4 accumulators, each += the same 4 bytes of A . 4 rows of B.
    sdot = "llvm.aarch64.neon.sdot.v4i32.v16i8"

    @T.prim_func(s_tir=True)
    def func(
        A: T.Buffer((4,), "int8", offset_factor=1),
        B: T.Buffer((16, 4), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1, scope=scope),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            a_i32 = T.reinterpret(A.vload([0], "int8x4"), dtype="int32")
            a_x16 = T.reinterpret(T.broadcast(a_i32, 4), dtype="int8x16")
            for q in T.unroll(4):
                C[T.ramp(q * 4, 1, 4)] = T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(sdot),
                    C.vload([q * 4], dtype="int32x4"),
                    a_x16,
                    B.vload([q * 4, 0], dtype="int8x16"),
                    dtype="int32x4",
                )

    return func


# --- bf16 x bf16 -> f32 ---------------------------------------------------------------------
# bfloat16 operands are their 16-bit patterns (uint16): TVM's BF16 legalization turns every
# bfloat16-typed TIR expression (loads and reinterprets included) into float32, so the packed
# operands must never be typed bfloat16 in TIR. LLVM's intrinsic takes <32 x bfloat>; a tiny
# LLVM IR function bitcasts integer vectors into it, imported into the kernel's module with
# the ``pragma_import_llvm`` loop annotation (the schedule adds it) and inlined by LLVM.
BF16_EXTERN = "dlas_dpbf16ps"
BF16_LLVM_IR = f"""
declare <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float>, <32 x bfloat>, <32 x bfloat>)
define <16 x float> @{BF16_EXTERN}(<16 x float> %acc, <16 x i32> %a, <16 x i32> %b) {{
  %x = bitcast <16 x i32> %a to <32 x bfloat>
  %y = bitcast <16 x i32> %b to <32 x bfloat>
  %r = call <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float> %acc, <32 x bfloat> %x, <32 x bfloat> %y)
  ret <16 x float> %r
}}
"""  # noqa: E501


def bf16_value(bits: Any) -> Any:
    """The float32 value of a bfloat16 bit pattern (uint16) - exact."""
    from tvm import tirx

    return tirx.reinterpret(
        "float32", tirx.shift_left(bits.astype("uint32"), tirx.const(16, "uint32"))
    )


def _dot_bf16_desc(scope: str) -> Any:
    @T.prim_func(s_tir=True)
    def func(
        A: T.Buffer((2,), "uint16", offset_factor=1),
        B: T.Buffer((16, 2), "uint16", offset_factor=1),
        C: T.Buffer((16,), "float32", offset_factor=1, scope=scope),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:2], B[0:16, 0:2])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 2):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.reinterpret(
                            T.shift_left(T.cast(A[vk], "uint32"), T.uint32(16)), dtype="float32"
                        ) * T.reinterpret(
                            T.shift_left(T.cast(B[vi, vk], "uint32"), T.uint32(16)),
                            dtype="float32",
                        )

    return func


def _dot_bf16_avx512(scope: str) -> Any:
    @T.prim_func(s_tir=True)
    def func(
        A: T.Buffer((2,), "uint16", offset_factor=1),
        B: T.Buffer((16, 2), "uint16", offset_factor=1),
        C: T.Buffer((16,), "float32", offset_factor=1, scope=scope),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:2], B[0:16, 0:2])
            T.writes(C[0:16])
            a_i32 = T.reinterpret(A.vload([0], "uint16x2"), dtype="int32")
            C[T.ramp(T.int32(0), 1, 16)] = T.call_pure_extern(
                "float32x16",
                BF16_EXTERN,
                C.vload([0], dtype="float32x16"),
                T.broadcast(a_i32, 16),
                T.reinterpret(B.vload([0, 0], dtype="uint16x32"), dtype="int32x16"),
            )

    return func


# Intrinsics whose implementation calls LLVM IR that must be imported into the module.
LLVM_IMPORTS = {BF16_INTRIN: BF16_LLVM_IR}


# The ``.local`` variants accumulate into a "local" buffer: the register tile of a kernel
# whose epilogue is attached to it (tensorize compares buffer scopes).
LOCAL = ".local"


# The names this module registers over TVM's own (dlas.tuning.workers keeps them when TVM's
# intrinsics are imported afterwards).
REPLACED = (VNNI_INTRIN, AVX512_INTRIN)


@functools.cache
def register_intrinsics() -> None:
    """Register the intrinsics (global and ``.local`` accumulators), once per process, before
    the first kernel tensorizes with one: not on import, which every ``dlas`` command does."""
    pairs = {
        VNNI_INTRIN: (_dot_x8s8_desc, partial(_dot_u8s8, isa="vnni")),
        AVX512_INTRIN: (_dot_x8s8_desc, partial(_dot_u8s8, isa="avx512bw")),
        AVX2_INTRIN: (_dot_x8s8_desc, partial(_dot_u8s8, isa="avx2")),
        SDOT_INTRIN: (partial(_dot_x8s8_desc, data="int8"), _dot_s8s8_sdot),
        BF16_INTRIN: (_dot_bf16_desc, _dot_bf16_avx512),
        VNNI_ROWS_INTRIN: (
            partial(_dot_x8s8_desc, rows=True),
            partial(_dot_u8s8, isa="vnni", rows=True),
        ),
        AVX512_ROWS_INTRIN: (
            partial(_dot_x8s8_desc, rows=True),
            partial(_dot_u8s8, isa="avx512bw", rows=True),
        ),
        AVX2_ROWS_INTRIN: (
            partial(_dot_x8s8_desc, rows=True),
            partial(_dot_u8s8, isa="avx2", rows=True),
        ),
    }
    with cheap_frame_info():
        for name, (desc, impl) in pairs.items():
            TensorIntrin.register(name, desc("global"), impl("global"), override=True)
            TensorIntrin.register(name + LOCAL, desc("local"), impl("local"), override=True)


# --- which family a target gets --------------------------------------------------------------
@dataclass(frozen=True)
class Int8Kernel:
    """An instruction family for u8/s8 x s8 -> s32 dot products of depth 4."""

    isa: str  # what the layer table and ``compression.int8_isa`` say
    intrinsic: str
    feature: str  # the LLVM feature the target needs
    data: str  # the activations operand's dtype (the kernels shift the other kind by 128)
    weight_shift: int  # weights are rounded to ``w >> weight_shift`` (and sums shifted back)
    rows_intrinsic: str | None = None  # pixels in the lanes (dot_rows), where it has one


# In order of preference.
INT8_KERNELS = (
    Int8Kernel("vnni", VNNI_INTRIN, VNNI_FEATURE, "uint8", 0, VNNI_ROWS_INTRIN),
    Int8Kernel("dotprod", SDOT_INTRIN, DOTPROD_FEATURE, "int8", 0, None),
    Int8Kernel("avx512bw", AVX512_INTRIN, AVX512BW_FEATURE, "uint8", 1, AVX512_ROWS_INTRIN),
    Int8Kernel("avx2", AVX2_INTRIN, AVX2_FEATURE, "uint8", 1, AVX2_ROWS_INTRIN),
)


def int8_kernel(target: Any) -> Int8Kernel | None:
    """The dot-product family dlas's int8 kernels use on ``target`` (None: widened int32)."""
    return next((k for k in INT8_KERNELS if has_feature(k.feature, target)), None)


def int8_isa(target: Any) -> str:
    """``vnni`` (vpdpbusd), ``dotprod`` (sdot), ``avx512bw`` or ``avx2`` (vpmaddubsw +
    vpmaddwd on zmm or ymm registers, 7-bit weights) or ``none`` (widened int32 arithmetic)."""
    kernel = int8_kernel(target)
    return kernel.isa if kernel else "none"


def int8_intrinsic(target: Any, *, rows: bool = False) -> str | None:
    """The tensor intrinsic (registered) int8 kernels use on ``target``, if any; with
    ``rows``, the one that puts output pixels in the lanes."""
    kernel = int8_kernel(target)
    name = (kernel.rows_intrinsic if rows else kernel.intrinsic) if kernel else None
    if name is not None:
        register_intrinsics()
    return name


def bf16_intrinsic(target: Any) -> str | None:
    """The tensor intrinsic (registered) bf16 kernels use on ``target``, if any."""
    if not has_bf16(target):
        return None
    register_intrinsics()
    return BF16_INTRIN


def has_bf16(target: Any) -> bool:
    return has_feature(BF16_FEATURE, target)
