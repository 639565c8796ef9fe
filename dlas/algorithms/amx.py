"""bf16 and int8 convolutions on AMX tiles (Intel Sapphire Rapids and later).

One ``tdpbf16ps`` (AMX-BF16) multiplies a tile of up to 16 rows (output pixels) x 32 bfloat16
elements of K by a 32 x 16 tile of packed weights (pairs of K for 16 output channels) into a
16 x 16 float32 tile; one ``tdpbusd`` (AMX-INT8) does the same for u8 x s8 with 64 elements of
K (quads) into int32. Rows are 64 bytes either way. ``vdpbf16ps`` cannot beat float32 on
these cores: its 512-bit form issues once per cycle where FMA issues twice, so both reach the
same flops; AMX reaches several times that (``benchmarks/isa_throughput.py`` measures all
three).

The input is packed once to NHWC, channels padded to a tile row (narrow layers such as an RGB
stem: to a pair or quad, with each kernel row padded with columns instead), spatial padding
included (as the dot-product kernels' padding value: int8 data is shifted into uint8 with the
exact correction, :class:`dlas.algorithms.operands.Operands`). A kernel row's columns x
channels are then one contiguous run of it, copied per output pixel into rows
``[N, OH, OW, KH, cols * Cp]`` (a vector copy, where the im2col of the vdpbf16ps form gathers
element by element), and K is walked in that order. Every row of up to
16 pixels (the largest divisor of the output width) gets one call of a small LLVM function
(``dlas_amx_bf16``/``dlas_amx_int8``, imported into the kernel's module; TVM inlines every
imported function) for all its output-channel blocks (deep low-resolution layers: for a pair
of blocks). The call loads the tile configuration once (``ldtilecfg`` costs about as much as
a short K loop: once per 16 channels, it took a fifth of a 64-channel layer's time), then
walks the whole K loop for two accumulator tiles at a time, which share each A tile, and
stores them; the conv's epilogue runs on those tiles. It asks Linux once per process for the
tile registers (``arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)``), so a built library
needs no runtime support from TVM. The configuration is not kept across calls: other code on
the thread (oneDNN's AMX kernels in PyTorch) may change or release it in between.
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
from .amx_kernel import llvm_ir
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
    """OIHW (as the kernel multiplies them) -> [OC/16 (at least 2), KH, cols x Cp / depth, 16,
    depth]: one B tile per tile row of K, in the order the kernel walks it; zeros in the
    padded columns, channels and blocks."""
    oc, ic, kh, kw = weight.shape
    cols, cp = k_layout(spec, kind)
    # At least two blocks: a call multiplies them in pairs (a block's iteration of one would
    # be dropped by tensorize's blockize, and the description with it).
    pad = [(0, max(round_up(oc, LANES), 2 * LANES) - oc), (0, cp - ic), (0, 0), (0, cols - kw)]
    w = np.pad(weight, pad).transpose(0, 2, 3, 1)  # O, KH, cols, Cp
    w = w.reshape(-1, LANES, kh, cols * cp // kind.depth, kind.depth)
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1, 4))


def conv(
    data: te.Tensor, packed: te.Tensor, spec: ConvSpec, kind: Kind, operands: Any, attrs: dict
) -> te.Tensor:
    """The accumulators ``[N, OC/16, OH, OW, 16]``; ``operands``
    (:class:`dlas.algorithms.operands.Operands`) stores an activation as the kernel reads
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


def _desc(kind: Kind, rows: int, taps: int, run: int, blocks: int, scope: str) -> Any:
    """``blocks`` output-channel blocks of a tile of ``rows`` pixels over ``taps`` x ``run``
    K elements."""
    depth, storage, weight, acc, product = (
        kind.depth, kind.storage, kind.weight, kind.acc, kind.product,
    )  # fmt: skip

    @T.prim_func(s_tir=True)
    def func(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa, sb, sc, sy = T.int32(), T.int32(), T.int32(), T.int32()
        A = T.match_buffer(a, (rows, taps, run), storage, offset_factor=1, strides=[sa, sb, 1])
        B = T.match_buffer(b, (blocks, taps, run // depth, LANES, depth), weight, offset_factor=1)
        C = T.match_buffer(
            c,
            (blocks, 1, rows, LANES),
            acc,
            offset_factor=1,
            scope=scope,
            strides=[sc, sy, LANES, 1],
        )
        with T.sblock("root"):
            T.reads(
                C[0:blocks, 0:1, 0:rows, 0:LANES],
                A[0:rows, 0:taps, 0:run],
                B[0:blocks, 0:taps, 0 : run // depth, 0:LANES, 0:depth],
            )
            T.writes(C[0:blocks, 0:1, 0:rows, 0:LANES])
            for o, m, n, r, q, i in T.grid(blocks, rows, LANES, taps, run // depth, depth):
                with T.sblock("update"):
                    vo, vm, vn, vr, vq, vi = T.axis.remap("SSSRRR", [o, m, n, r, q, i])
                    C[vo, 0, vm, vn] = C[vo, 0, vm, vn] + product(
                        A[vm, vr, vq * depth + vi], B[vo, vr, vq, vn, vi]
                    )

    return func


def _desc_1x1(kind: Kind, rows: int, run: int, blocks: int, scope: str) -> Any:
    """:func:`_desc` without the tap axis (see :func:`conv`)."""
    depth, storage, weight, acc, product = (
        kind.depth, kind.storage, kind.weight, kind.acc, kind.product,
    )  # fmt: skip

    @T.prim_func(s_tir=True)
    def func(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa, sb, sc, sy = T.int32(), T.int32(), T.int32(), T.int32()
        A = T.match_buffer(a, (rows, 1, run), storage, offset_factor=1, strides=[sa, sb, 1])
        B = T.match_buffer(b, (blocks, 1, run // depth, LANES, depth), weight, offset_factor=1)
        C = T.match_buffer(
            c,
            (blocks, 1, rows, LANES),
            acc,
            offset_factor=1,
            scope=scope,
            strides=[sc, sy, LANES, 1],
        )
        with T.sblock("root"):
            T.reads(
                C[0:blocks, 0:1, 0:rows, 0:LANES],
                A[0:rows, 0:1, 0:run],
                B[0:blocks, 0:1, 0 : run // depth, 0:LANES, 0:depth],
            )
            T.writes(C[0:blocks, 0:1, 0:rows, 0:LANES])
            for o, m, n, q, i in T.grid(blocks, rows, LANES, run // depth, depth):
                with T.sblock("update"):
                    vo, vm, vn, vq, vi = T.axis.remap("SSSRR", [o, m, n, q, i])
                    C[vo, 0, vm, vn] = C[vo, 0, vm, vn] + product(
                        A[vm, 0, vq * depth + vi], B[vo, 0, vq, vn, vi]
                    )

    return func


def _impl(kind: Kind, rows: int, taps: int, run: int, blocks: int, scope: str) -> Any:
    depth, storage, weight, acc, extern = (
        kind.depth, kind.storage, kind.weight, kind.acc, kind.extern,
    )  # fmt: skip
    tiles, element_bytes = taps * run // kind.per_row, 4 // depth
    block_bytes = taps * run * LANES * element_bytes  # one output-channel block's weights

    @T.prim_func(s_tir=True)
    def func(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa, sb, sc, sy = T.int32(), T.int32(), T.int32(), T.int32()
        A = T.match_buffer(a, (rows, taps, run), storage, offset_factor=1, strides=[sa, sb, 1])
        B = T.match_buffer(b, (blocks, taps, run // depth, LANES, depth), weight, offset_factor=1)
        C = T.match_buffer(
            c,
            (blocks, 1, rows, LANES),
            acc,
            offset_factor=1,
            scope=scope,
            strides=[sc, sy, LANES, 1],
        )
        with T.sblock("root"):
            T.reads(
                C[0:blocks, 0:1, 0:rows, 0:LANES],
                A[0:rows, 0:taps, 0:run],
                B[0:blocks, 0:taps, 0 : run // depth, 0:LANES, 0:depth],
            )
            T.writes(C[0:blocks, 0:1, 0:rows, 0:LANES])
            T.evaluate(
                T.call_extern(
                    "int32",
                    extern,
                    C.access_ptr("rw"),
                    T.Cast("int64", sc * 4),
                    A.access_ptr("r"),
                    T.Cast("int32", sa * element_bytes),
                    B.access_ptr("r"),
                    T.int64(block_bytes),
                    tiles,
                    rows,
                    blocks,
                )
            )

    return func


@functools.cache
def intrinsic(kind: Kind, rows: int, taps: int, run: int, blocks: int) -> str:
    """The tensor intrinsic (registered, global and ``.local`` accumulators) for ``blocks``
    output-channel blocks of a tile of ``rows`` pixels over ``taps`` x ``run`` K elements
    (``run`` a multiple of a tile row)."""
    name = f"{kind.extern}_{rows}x{taps}x{run}x{blocks}"
    with cheap_frame_info():
        for scope, suffix in (("global", ""), ("local", intrinsics.LOCAL)):
            if taps > 1:
                desc = _desc(kind, rows, taps, run, blocks, scope)
            else:
                desc = _desc_1x1(kind, rows, run, blocks, scope)
            impl = _impl(kind, rows, taps, run, blocks, scope)
            TensorIntrin.register(name + suffix, desc, impl, override=True)
    return name


NAME = re.compile(rf"{PREFIX}(\w+?)_(\d+)x(\d+)x(\d+)x(\d+)")


def register_named(text: str) -> None:
    """Register every AMX intrinsic named in ``text`` (tuning records written by another
    process: loading their traces needs the intrinsics, which a process registers only when
    it schedules such a layer itself)."""
    for found in NAME.finditer(text):
        kind = next((k for k in (BF16, INT8) if k.name == found[1]), None)
        if kind is not None:
            intrinsic(kind, *(int(v) for v in found.groups()[1:]))


def schedule(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, kind: Kind) -> None:
    """Tiles of a row's pixels, the whole K loop of several 16-channel blocks in one call,
    every (row, tile) or (channel blocks, row, tile) a parallel task with its epilogue
    attached."""
    n, ob, y, x, oi, *reduction = sch.get_loops(block)
    *taps, q, i = (extent(sch, lp) for lp in reduction)
    rows = rows_for(extent(sch, x))
    x_o, x_i = sch.split(x, [None, rows])
    # The larger operand is read once: weights larger than the patches (deep layers at low
    # resolution) stay per pair of channel blocks while all pixels pass, and the other way
    # round.
    if extent(sch, ob) * LANES > extent(sch, y) * extent(sch, x_o) * rows:
        blocks = 2 if extent(sch, ob) % 2 == 0 else extent(sch, ob)
        ob_o, ob_i = sch.split(ob, [None, blocks])
        sch.reorder(n, ob_o, y, x_o, ob_i, x_i, oi, *reduction)
        fused = sch.fuse(n, ob_o, y, x_o)
    else:
        # A tile's patches are copied where it is computed, once for all its channel blocks,
        # and read from cache: the patch matrix never goes to memory.
        blocks, ob_i = extent(sch, ob), ob
        sch.reorder(n, y, x_o, ob, x_i, oi, *reduction)
        fused = sch.fuse(n, y, x_o)
        (patches,) = sch.get_producers(block)
        sch.compute_at(patches, fused, preserve_unit_loops=True)
        vectorize_innermost(sch, loops_below(sch, patches, fused))
    sch.parallel(fused)
    name = intrinsic(kind, rows, taps[0] if taps else 1, q * i, blocks)
    attach_epilogue(sch, block, fused)
    init = sch.decompose_reduction(block, ob_i)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(ob_i, name + intrinsics.LOCAL)
    sch.annotate(fused, "pragma_import_llvm", llvm_ir(kind.instruction, kind.extern))
