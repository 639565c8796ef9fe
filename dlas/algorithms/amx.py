"""bf16 and int8 convolutions on AMX tiles (Intel Sapphire Rapids and later).

One ``tdpbf16ps`` (AMX-BF16) multiplies a tile of up to 16 rows (output pixels) x 32 bfloat16
elements of K by a 32 x 16 tile of packed weights (pairs of K for 16 output channels) into a
16 x 16 float32 tile; one ``tdpbusd`` (AMX-INT8) does the same for u8 x s8 with 64 elements of
K (quads) into int32. Rows are 64 bytes either way. ``vdpbf16ps`` cannot beat float32 on these cores: its 512-bit form issues once
per cycle where FMA issues twice, so both reach the same flops; AMX reaches several times
that (``benchmarks/isa_throughput.py`` measures all three).

The input is packed once to NHWC, channels padded to a tile row (narrow layers such as an RGB
stem: to a pair or quad, with each kernel row padded with columns instead), spatial padding
included (as the dot-product kernels' padding value: int8 data is shifted into uint8 with the
exact correction, :class:`dlas.algorithms.dot_product.Operands`). A kernel row's columns x channels are then one contiguous run of it, copied per
output pixel into rows ``[N, OH, OW, KH, cols * Cp]`` (a vector copy, where the im2col of the
vdpbf16ps form gathers element by element), and K is walked in that order. Every row of up to
16 pixels (the largest divisor of the output width) gets, per 16 output channels, one call of
a small LLVM function (``dlas_amx_bf16``/``dlas_amx_int8``, imported into the kernel's module; TVM inlines every
imported function) that loads the accumulator tile, runs the whole K loop on tiles and
stores it back; the conv's epilogue runs on that tile. The function sets the tile
configuration on each call (per thread, cheap next to a K loop) and asks Linux once per
process for the tile registers (``arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)``),
so a built library needs no runtime support from TVM.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from tvm import s_tir, te, tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from dlas._tvmscript import cheap_frame_info

from . import intrinsics
from .schedules import attach_epilogue, extent, loops_below, vectorize_innermost
from .shapes import STAGE_ATTRS, ConvSpec, largest_divisor, round_up

ISA = "amx"
ROW_BYTES = 64  # one tile row; the K loop advances one A row and one 1 KiB B tile per step
MAX_ROWS = 16
LANES = 16
PREFIX = "dlas_amx_"


@dataclass(frozen=True)
class Kind:
    """One AMX dot-product family."""

    name: str
    storage: str  # the activations' dtype in the kernel (bf16: its bit pattern)
    weight: str
    acc: str
    depth: int  # K elements per 32-bit lane
    feature: str  # LLVM's
    instruction: str

    @property
    def per_row(self) -> int:
        """K elements per tile row."""
        return ROW_BYTES * self.depth // 4

    @property
    def extern(self) -> str:
        return f"{PREFIX}{self.name}"

    def product(self, a: Any, b: Any) -> Any:
        if self.name == "bf16":
            return intrinsics.bf16_value(a) * intrinsics.bf16_value(b)
        return a.astype("int32") * b.astype("int32")


BF16 = Kind("bf16", "uint16", "uint16", "float32", 2, "amx-bf16", "tdpbf16ps")
INT8 = Kind("int8", "uint8", "int8", "int32", 4, "amx-int8", "tdpbusd")
KINDS = {"bfloat16": BF16, "uint8": INT8, "int8": INT8}
KINDS_BY_KEY = {f"{ISA}_{k.name}": k for k in (BF16, INT8)}  # the conv block's annotation


def _llvm_ir(kind: Kind) -> str:
    """(C tile, A rows, A row stride in bytes, B panel, K tiles, rows) -> 0. Tiles 0 (C: rows
    x 16 lanes), 1 (A: rows x 64 bytes), 2 (B: 16 x 64 bytes). 158 = SYS_arch_prctl,
    4131 = ARCH_REQ_XCOMP_PERM, 18 = XFEATURE_XTILEDATA."""
    return f"""
declare void @llvm.x86.ldtilecfg(ptr)
declare void @llvm.x86.tileloadd64(i8 immarg, ptr, i64)
declare void @llvm.x86.{kind.instruction}(i8 immarg, i8 immarg, i8 immarg)
declare void @llvm.x86.tilestored64(i8 immarg, ptr, i64)
declare i64 @syscall(i64, ...)
@dlas_amx_permitted = internal global i8 0

define i32 @{kind.extern}(ptr %c, ptr %a, i32 %lda, ptr %b, i32 %tiles, i32 %rows) {{
entry:
  %ready = load i8, ptr @dlas_amx_permitted
  %isready = icmp ne i8 %ready, 0
  br i1 %isready, label %config, label %permit
permit:
  %ignored = call i64 (i64, ...) @syscall(i64 158, i64 4131, i64 18)
  store i8 1, ptr @dlas_amx_permitted
  br label %config
config:
  %cfg = alloca [64 x i8], align 64
  store <8 x i64> zeroinitializer, ptr %cfg, align 64
  store i8 1, ptr %cfg
  %colsb = getelementptr i8, ptr %cfg, i64 16
  store <3 x i16> <i16 64, i16 64, i16 64>, ptr %colsb, align 2
  %r8 = trunc i32 %rows to i8
  %rowsp = getelementptr i8, ptr %cfg, i64 48
  store i8 %r8, ptr %rowsp
  %rowsa = getelementptr i8, ptr %cfg, i64 49
  store i8 %r8, ptr %rowsa
  %rowsb = getelementptr i8, ptr %cfg, i64 50
  store i8 16, ptr %rowsb
  call void @llvm.x86.ldtilecfg(ptr %cfg)
  %stride = sext i32 %lda to i64
  %count = zext i32 %tiles to i64
  call void @llvm.x86.tileloadd64(i8 0, ptr %c, i64 64)
  br label %loop
loop:
  %i = phi i64 [ 0, %config ], [ %next, %loop ]
  %offa = shl i64 %i, 6
  %pa = getelementptr i8, ptr %a, i64 %offa
  %offb = shl i64 %i, 10
  %pb = getelementptr i8, ptr %b, i64 %offb
  call void @llvm.x86.tileloadd64(i8 1, ptr %pa, i64 %stride)
  call void @llvm.x86.tileloadd64(i8 2, ptr %pb, i64 64)
  call void @llvm.x86.{kind.instruction}(i8 0, i8 1, i8 2)
  %next = add i64 %i, 1
  %done = icmp eq i64 %next, %count
  br i1 %done, label %exit, label %loop
exit:
  call void @llvm.x86.tilestored64(i8 0, ptr %c, i64 64)
  ret i32 0
}}
"""


def kind_for(dtype: str, target: Any) -> Kind | None:
    """The AMX family that runs ``dtype`` activations on ``target``, if it has one."""
    kind = KINDS.get(dtype)
    if kind is None or not intrinsics.has_feature("amx-tile", target):
        return None
    return kind if intrinsics.has_feature(kind.feature, target) else None


def k_layout(spec: ConvSpec, kind: Kind) -> tuple[int, int]:
    """(columns, channels): K = KH x columns x channels, a multiple of a tile row. Wide
    layers pad their channels to a tile row; narrow ones (an RGB stem) pad them to a lane's
    depth and each kernel row with zero columns instead (bf16: 3 x 7 x 7 = 147 -> 7 x 8 x 4 =
    224, not 7 x 7 x 32 = 1568)."""
    c, kw, row = spec.in_channels, spec.kernel_w, kind.per_row
    if c >= row:
        return kw, round_up(c, row)
    cp = round_up(c, kind.depth)
    return round_up(kw, row // math.gcd(cp, row)), cp


def rows_for(width: int) -> int:
    """Pixels per tile: the largest divisor of the output width up to 16 (tiles never
    straddle output rows, so a tile's epilogue is one rectangle)."""
    return largest_divisor(width, MAX_ROWS)


def pack_weight(weight: np.ndarray, spec: ConvSpec, kind: Kind) -> np.ndarray:
    """OIHW (as the kernel multiplies them) -> [OC/16, KH, cols x Cp / depth, 16, depth]: one
    B tile per tile row of K, in the order the kernel walks it; zeros in the padded columns
    and channels."""
    oc, ic, kh, kw = weight.shape
    cols, cp = k_layout(spec, kind)
    pad = [(0, round_up(oc, LANES) - oc), (0, cp - ic), (0, 0), (0, cols - kw)]
    w = np.pad(weight, pad).transpose(0, 2, 3, 1)  # O, KH, cols, Cp
    w = w.reshape(-1, LANES, kh, cols * cp // kind.depth, kind.depth)
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1, 4))


def conv(
    data: te.Tensor, packed: te.Tensor, spec: ConvSpec, kind: Kind, operands: Any, attrs: dict
) -> te.Tensor:
    """The accumulators ``[N, OC/16, OH, OW, 16]``; ``operands``
    (:class:`dlas.algorithms.dot_product.Operands`) stores an activation as the kernel reads
    it and says what padding becomes."""
    top, left, bottom, right = spec.padding
    h, w, c = spec.height, spec.width, spec.in_channels
    cols, cp = k_layout(spec, kind)
    (sh, sw), (dh, dw) = spec.strides, spec.dilation
    # Padded columns read real pixels (their weights are zero): the padded input is wide
    # enough for them, and the patch copy needs no bounds checks.
    right = max(right, (spec.out_w - 1) * sw + (cols - 1) * dw + 1 - w - left)

    def padded(n, y, x, ci):
        inside = tirx.all(y >= top, y < h + top, x >= left, x < w + left, ci < c)
        pixel = operands.element(data[n, tirx.min(ci, c - 1), y - top, x - left])
        return tirx.if_then_else(inside, pixel, operands.pad())

    shape = (spec.batch, h + top + bottom, w + left + right, cp)
    nhwc = te.compute(shape, padded, name="data_pack", attrs=STAGE_ATTRS)

    # A kernel row's columns x channels are one contiguous run of the padded input (when
    # undilated): the copy moves runs of cols x Cp elements, and so does the kernel's K loop.
    def patch(n, y, x, kh, j):
        return nhwc[n, y * sh + kh * dh, x * sw + (j // cp) * dw, j % cp]

    taps, run = spec.kernel_h, cols * cp  # K = KH x (one kernel row)
    shape = (spec.batch, spec.out_h, spec.out_w, taps, run)
    rows = te.compute(shape, patch, name="im2col", attrs=STAGE_ATTRS)
    # A 1x1 conv has no tap axis: a unit reduction loop would not survive tensorize's
    # blockize (the description then has none either).
    depth = kind.depth
    r = te.reduce_axis((0, taps), "r") if taps > 1 else tirx.const(0, "int32")
    q = te.reduce_axis((0, run // depth), "q")
    i = te.reduce_axis((0, depth), "i")
    axes = [r, q, i] if taps > 1 else [q, i]

    def value(n, ob, y, x, oi):
        a = rows[n, y, x, r, q * depth + i]
        return te.sum(kind.product(a, packed[ob, r, q, oi, i]), axis=axes)

    shape = (spec.batch, int(packed.shape[0]), spec.out_h, spec.out_w, LANES)
    return te.compute(shape, value, name="conv", attrs=attrs)


def _desc(kind: Kind, rows: int, taps: int, run: int, scope: str) -> Any:
    depth, storage, weight, acc, product = (
        kind.depth, kind.storage, kind.weight, kind.acc, kind.product,
    )  # fmt: skip

    @T.prim_func(s_tir=True)
    def func(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa, sb = T.int32(), T.int32()
        A = T.match_buffer(a, (rows, taps, run), storage, offset_factor=1, strides=[sa, sb, 1])
        B = T.match_buffer(b, (taps, run // depth, LANES, depth), weight, offset_factor=1)
        C = T.match_buffer(c, (rows, LANES), acc, offset_factor=1, scope=scope)
        with T.sblock("root"):
            T.reads(
                C[0:rows, 0:LANES],
                A[0:rows, 0:taps, 0:run],
                B[0:taps, 0 : run // depth, 0:LANES, 0:depth],
            )
            T.writes(C[0:rows, 0:LANES])
            for m, n, r, q, i in T.grid(rows, LANES, taps, run // depth, depth):
                with T.sblock("update"):
                    vm, vn, vr, vq, vi = T.axis.remap("SSRRR", [m, n, r, q, i])
                    C[vm, vn] = C[vm, vn] + product(A[vm, vr, vq * depth + vi], B[vr, vq, vn, vi])

    return func


def _desc_1x1(kind: Kind, rows: int, run: int, scope: str) -> Any:
    """:func:`_desc` without the tap axis (see :func:`conv`)."""
    depth, storage, weight, acc, product = (
        kind.depth, kind.storage, kind.weight, kind.acc, kind.product,
    )  # fmt: skip

    @T.prim_func(s_tir=True)
    def func(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa, sb = T.int32(), T.int32()
        A = T.match_buffer(a, (rows, 1, run), storage, offset_factor=1, strides=[sa, sb, 1])
        B = T.match_buffer(b, (1, run // depth, LANES, depth), weight, offset_factor=1)
        C = T.match_buffer(c, (rows, LANES), acc, offset_factor=1, scope=scope)
        with T.sblock("root"):
            T.reads(
                C[0:rows, 0:LANES],
                A[0:rows, 0:1, 0:run],
                B[0:1, 0 : run // depth, 0:LANES, 0:depth],
            )
            T.writes(C[0:rows, 0:LANES])
            for m, n, q, i in T.grid(rows, LANES, run // depth, depth):
                with T.sblock("update"):
                    vm, vn, vq, vi = T.axis.remap("SSRR", [m, n, q, i])
                    C[vm, vn] = C[vm, vn] + product(A[vm, 0, vq * depth + vi], B[0, vq, vn, vi])

    return func


def _impl(kind: Kind, rows: int, taps: int, run: int, scope: str) -> Any:
    depth, storage, weight, acc, extern = (
        kind.depth, kind.storage, kind.weight, kind.acc, kind.extern,
    )  # fmt: skip
    tiles, element_bytes = taps * run // kind.per_row, 4 // depth

    @T.prim_func(s_tir=True)
    def func(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa, sb = T.int32(), T.int32()
        A = T.match_buffer(a, (rows, taps, run), storage, offset_factor=1, strides=[sa, sb, 1])
        B = T.match_buffer(b, (taps, run // depth, LANES, depth), weight, offset_factor=1)
        C = T.match_buffer(c, (rows, LANES), acc, offset_factor=1, scope=scope)
        with T.sblock("root"):
            T.reads(
                C[0:rows, 0:LANES],
                A[0:rows, 0:taps, 0:run],
                B[0:taps, 0 : run // depth, 0:LANES, 0:depth],
            )
            T.writes(C[0:rows, 0:LANES])
            T.evaluate(
                T.call_extern(
                    "int32",
                    extern,
                    C.access_ptr("rw"),
                    A.access_ptr("r"),
                    T.Cast("int32", sa * element_bytes),
                    B.access_ptr("r"),
                    tiles,
                    rows,
                )
            )

    return func


@functools.cache
def intrinsic(kind: Kind, rows: int, taps: int, run: int) -> str:
    """The tensor intrinsic (registered, global and ``.local`` accumulators) for a tile of
    ``rows`` pixels over ``taps`` x ``run`` K elements (``run`` a multiple of a tile row)."""
    name = f"{kind.extern}_{rows}x{taps}x{run}"
    with cheap_frame_info():
        for scope, suffix in (("global", ""), ("local", intrinsics.LOCAL)):
            if taps > 1:
                desc = _desc(kind, rows, taps, run, scope)
            else:
                desc = _desc_1x1(kind, rows, run, scope)
            impl = _impl(kind, rows, taps, run, scope)
            TensorIntrin.register(name + suffix, desc, impl, override=True)
    return name


NAME = re.compile(rf"{PREFIX}(\w+?)_(\d+)x(\d+)x(\d+)")


def register_named(text: str) -> None:
    """Register every AMX intrinsic named in ``text`` (tuning records written by another
    process: loading their traces needs the intrinsics, which a process registers only when
    it schedules such a layer itself)."""
    for found in NAME.finditer(text):
        kind = next((k for k in (BF16, INT8) if k.name == found[1]), None)
        if kind is not None:
            intrinsic(kind, *(int(v) for v in found.groups()[1:]))


def schedule(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, kind: Kind) -> None:
    """Tiles of a row's pixels x 16 channels, the whole K loop in one call per tile, every
    (row, tile, channel block) a parallel task with its epilogue attached."""
    n, ob, y, x, oi, *reduction = sch.get_loops(block)
    *taps, q, i = (extent(sch, lp) for lp in reduction)
    rows = rows_for(extent(sch, x))
    name = intrinsic(kind, rows, taps[0] if taps else 1, q * i)
    # The larger operand is read once: weights larger than the patches (deep layers at low
    # resolution) stay per channel block while all pixels pass, and the other way round.
    pixels = extent(sch, y) * extent(sch, x)
    x_o, x_i = sch.split(x, [None, rows])
    if extent(sch, ob) * LANES > pixels:
        sch.reorder(n, ob, y, x_o, x_i, oi, *reduction)
        fused = tile = sch.fuse(n, ob, y, x_o)
        sch.parallel(fused)
    else:
        # A tile's patches are copied where it is computed, once for all its channel blocks,
        # and read from cache: the patch matrix never goes to memory.
        sch.reorder(n, y, x_o, ob, x_i, oi, *reduction)
        fused = sch.fuse(n, y, x_o)
        sch.parallel(fused)
        tile = ob
        (patches,) = sch.get_producers(block)
        sch.compute_at(patches, fused, preserve_unit_loops=True)
        vectorize_innermost(sch, loops_below(sch, patches, fused))
    attach_epilogue(sch, block, tile)
    init = sch.decompose_reduction(block, x_i)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(x_i, name + intrinsics.LOCAL)
    sch.annotate(fused, "pragma_import_llvm", _llvm_ir(kind))
