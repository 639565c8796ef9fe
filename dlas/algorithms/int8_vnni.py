"""int8 convolutions and dense layers through the x86 u8 x s8 dot product (``vpdpbusd``).

One output vector is 16 channels; one instruction adds, to each of them, a 4-deep dot product
of 4 input bytes (the same 4 for all 16 lanes, broadcast) with 16 x 4 weight bytes. So the
reduction is split ``k = k4 * 4 + ii`` with ``ii`` innermost in both operands:

* data: NCHW[cbi]c u8 (``cbi`` a multiple of 4; ``spatial_pack`` packs up to 16 channels,
  ``direct`` the least it can, 4) or, for ``gemm``, im2col rows ``[N, OH*OW, K]`` (K padded
  to a multiple of 4);
* weights, packed at compile time: ``[OC/16, IC/cbi, KH, KW, cbi/4, 16, 4]`` (``gemm``:
  ``[OC/16, K/4, 16, 4]``), input channels and K padded with zeros;
* the (16, 4) block of the update is tensorized with :mod:`dlas.algorithms.intrinsics`.

``vpdpbusd`` multiplies unsigned by signed bytes. Signed (int8) activations are shifted by
+128 while being packed (padding too: padded zeros become 128) and the exact correction
``128 * sum(W[oc])`` is subtracted from every output: the int32 sums stay exact.

Depthwise and grouped layers have no 4-deep channel reduction per output vector: they keep
their algorithm's widened int32 kernel, and the layer table says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tvm
from tvm import relax, s_tir, te, tirx

from . import intrinsics
from .base import LANES, STAGE_ATTRS, ConvSpec, largest_divisor, main_attrs, round_up
from .schedules import attach_epilogue, extent, pixel_tile

DEPTH = 4  # bytes per 32-bit lane of vpdpbusd
SHIFT = 128  # int8 -> uint8
# Input channels (spatial forms) / K elements (gemm) reduced per pass over a row of tiles:
# a chunk's weights (16 x chunk bytes per output vector) stay in L1 across the row.
CHANNEL_CHUNK = 64
K_CHUNK = 576
OP_PREFIX = "vnni"
INT8 = ("uint8", "int8")
# Block annotation: the tensor intrinsic chosen for the target at legalization (scheduling
# runs outside the target's scope).
INTRIN_KEY = "dlas.intrin"


def intrinsic() -> str | None:
    """The tensor intrinsic of the current target (``with target:``), or None."""
    return intrinsics.int8_intrinsic(tvm.target.Target.current(allow_none=True))


def unsupported(spec: ConvSpec) -> str | None:
    """Why this conv cannot run through the u8 x s8 dot product (None when it can)."""
    if spec.dtype not in INT8 or spec.out_dtype != "int32":
        return f"{spec.dtype} -> {spec.out_dtype} is not int8 -> int32"
    if spec.groups > 1:
        kind = "depthwise" if spec.depthwise else "grouped"
        return f"int8 {kind}: no 4-deep channel reduction per output vector; widened int32"
    if intrinsic() is None:
        return "int8 on a target without AVX512-VNNI/BW: widened int32"
    return None


def is_int8_block(sch: s_tir.Schedule, block: Any) -> bool:
    return str(sch.get(block).annotations.get("dlas.op", "")).startswith(OP_PREFIX)


# --- packing (numpy, compile time) -------------------------------------------------------
def in_block(in_channels: int, limit: int) -> tuple[int, int]:
    """(padded input channels, channels per packed block): blocks are multiples of 4."""
    padded = round_up(in_channels, DEPTH)
    return padded, DEPTH * largest_divisor(padded // DEPTH, max(1, limit // DEPTH))


def pack_conv_weight(weight: np.ndarray, cbi: int) -> np.ndarray:
    """OIHW int8 -> [OC/16, ICp/cbi, KH, KW, cbi/4, 16, 4], zero channels past OC and IC."""
    oc, ic, kh, kw = weight.shape
    icp = round_up(ic, DEPTH)
    w = np.pad(weight, [(0, round_up(oc, LANES) - oc), (0, icp - ic), (0, 0), (0, 0)])
    w = w.reshape(-1, LANES, icp // cbi, cbi // DEPTH, DEPTH, kh, kw)
    return np.ascontiguousarray(w.transpose(0, 2, 5, 6, 3, 1, 4)).astype(np.int8)


def pack_gemm_weight(weight: np.ndarray) -> np.ndarray:
    """[OC, K] int8 -> [OC/16, Kp/4, 16, 4]."""
    oc, k = weight.shape
    w = np.pad(weight, [(0, round_up(oc, LANES) - oc), (0, round_up(k, DEPTH) - k)])
    w = w.reshape(-1, LANES, w.shape[1] // DEPTH, DEPTH)
    return np.ascontiguousarray(w.transpose(0, 2, 1, 3)).astype(np.int8)


def correction(weight: np.ndarray, signed: bool) -> np.ndarray:
    """What the +128 shift adds to each output channel's sum (zeros when unsigned)."""
    oc = weight.shape[0]
    sums = weight.reshape(oc, -1).astype(np.int64).sum(axis=1) * (SHIFT if signed else 0)
    return np.pad(sums, (0, round_up(oc, LANES) - oc)).astype(np.int32)


def _as_u8(value: tirx.PrimExpr, signed: bool) -> tirx.PrimExpr:
    return (value.astype("int32") + SHIFT).astype("uint8") if signed else value


# --- emission ----------------------------------------------------------------------------
def emit_conv2d(
    bb: relax.BlockBuilder,
    data: relax.Expr,
    weight: np.ndarray,
    spec: ConvSpec,
    algorithm: str,
    form: str,
) -> relax.Expr:
    """``form``: ``nchwc`` (channel blocks of up to 16), ``nchw4c`` (blocks of 4) or
    ``im2col``; the block is tagged with ``algorithm`` so that its schedule finds it."""
    signed = spec.dtype == "int8"
    weight = weight.astype(np.int8)
    corr = relax.const(correction(weight, signed))
    attrs = {**main_attrs(algorithm, f"{OP_PREFIX}_{form}"), INTRIN_KEY: intrinsic()}
    if form == "im2col":
        packed = relax.const(pack_gemm_weight(weight.reshape(spec.out_channels, -1)))

        def compute(d: te.Tensor, w: te.Tensor, c: te.Tensor) -> te.Tensor:
            return _gemm_conv(d, w, c, spec, signed, attrs)
    else:
        _, cbi = in_block(spec.in_channels, LANES if form == "nchwc" else DEPTH)
        packed = relax.const(pack_conv_weight(weight, cbi))

        def compute(d: te.Tensor, w: te.Tensor, c: te.Tensor) -> te.Tensor:
            return _packed_conv(d, w, c, spec, signed, cbi, attrs)

    return bb.call_te(compute, data, packed, corr, primfunc_name_hint="conv2d_int8")


def _pack_data(data: te.Tensor, spec: ConvSpec, cbi: int, signed: bool) -> te.Tensor:
    top, left, bottom, right = spec.padding
    h, w = spec.height, spec.width
    icp, _ = in_block(spec.in_channels, cbi)
    pad = tirx.const(SHIFT if signed else 0, "uint8")

    def value(n, cb, y, x, ci):
        c = cb * cbi + ci
        inside = tirx.all(y >= top, y < h + top, x >= left, x < w + left, c < spec.in_channels)
        return tirx.if_then_else(inside, _as_u8(data[n, c, y - top, x - left], signed), pad)

    shape = (spec.batch, icp // cbi, h + top + bottom, w + left + right, cbi)
    return te.compute(shape, value, name="data_pack", attrs=STAGE_ATTRS)


def _unpack(conv: te.Tensor, corr: te.Tensor, spec: ConvSpec) -> te.Tensor:
    shape = (spec.batch, spec.out_channels, spec.out_h, spec.out_w)
    return te.compute(
        shape,
        lambda n, c, y, x: conv[n, c // LANES, y, x, c % LANES] - corr[c],
        name="unpack",
    )


def _packed_conv(
    data: te.Tensor,
    packed: te.Tensor,
    corr: te.Tensor,
    spec: ConvSpec,
    signed: bool,
    cbi: int,
    attrs: dict,
) -> te.Tensor:
    d = _pack_data(data, spec, cbi, signed)
    (sh, sw), (dh, dw) = spec.strides, spec.dilation
    ib = te.reduce_axis((0, int(d.shape[1])), "ib")
    kh = te.reduce_axis((0, spec.kernel_h), "kh")
    kw = te.reduce_axis((0, spec.kernel_w), "kw")
    i4 = te.reduce_axis((0, cbi // DEPTH), "i4")
    ii = te.reduce_axis((0, DEPTH), "ii")

    def value(n, ob, y, x, oi):
        pixel = d[n, ib, y * sh + kh * dh, x * sw + kw * dw, i4 * DEPTH + ii]
        return te.sum(
            pixel.astype("int32") * packed[ob, ib, kh, kw, i4, oi, ii].astype("int32"),
            axis=[ib, kh, kw, i4, ii],
        )

    shape = (spec.batch, int(packed.shape[0]), spec.out_h, spec.out_w, LANES)
    return _unpack(te.compute(shape, value, name="conv", attrs=attrs), corr, spec)


def _gemm_conv(
    data: te.Tensor, packed: te.Tensor, corr: te.Tensor, spec: ConvSpec, signed: bool, attrs: dict
) -> te.Tensor:
    kh_, kw_ = spec.kernel_h, spec.kernel_w
    (sh, sw), (dh, dw) = spec.strides, spec.dilation
    top, left, _, _ = spec.padding
    ow = spec.out_w
    k_pad = int(packed.shape[1]) * DEPTH
    pad = tirx.const(SHIFT if signed else 0, "uint8")

    def col_value(n, p, k):  # K ordered (c, kh, kw) as the OIHW weight flattens
        c = k // (kh_ * kw_)
        y = (p // ow) * sh + (k // kw_ % kh_) * dh - top
        x = (p % ow) * sw + (k % kw_) * dw - left
        inside = tirx.all(k < spec.reduction, y >= 0, y < spec.height, x >= 0, x < spec.width)
        return tirx.if_then_else(inside, _as_u8(data[n, c, y, x], signed), pad)

    col = te.compute(
        (spec.batch, spec.out_h * ow, k_pad), col_value, name="im2col", attrs=STAGE_ATTRS
    )
    k4 = te.reduce_axis((0, k_pad // DEPTH), "k4")
    ii = te.reduce_axis((0, DEPTH), "ii")

    def value(n, ob, y, x, oi):
        return te.sum(
            col[n, y * ow + x, k4 * DEPTH + ii].astype("int32")
            * packed[ob, k4, oi, ii].astype("int32"),
            axis=[k4, ii],
        )

    shape = (spec.batch, int(packed.shape[0]), spec.out_h, ow, LANES)
    return _unpack(te.compute(shape, value, name="conv", attrs=attrs), corr, spec)


def emit_dense(
    bb: relax.BlockBuilder, data: relax.Expr, weight: np.ndarray, algorithm: str
) -> relax.Expr:
    """``data @ weight`` for int8 data [M, K] and a constant int8 [K, N] weight."""
    signed = str(data.ty.dtype) == "int8"
    w = weight.T.astype(np.int8)  # [N, K]
    packed = relax.const(pack_gemm_weight(w))
    corr = relax.const(correction(w, signed))
    columns = w.shape[0]

    def compute(a: te.Tensor, b: te.Tensor, c: te.Tensor) -> te.Tensor:
        m, k = (int(v) for v in a.shape)
        k_pad = int(b.shape[1]) * DEPTH
        pad = tirx.const(SHIFT if signed else 0, "uint8")
        rows = te.compute(
            (m, k_pad),
            lambda i, j: tirx.if_then_else(j < k, _as_u8(a[i, tirx.min(j, k - 1)], signed), pad),
            name="data_pack",
            attrs=STAGE_ATTRS,
        )
        k4 = te.reduce_axis((0, k_pad // DEPTH), "k4")
        ii = te.reduce_axis((0, DEPTH), "ii")
        acc = te.compute(
            (1, int(b.shape[0]), 1, m, LANES),
            lambda n, ob, y, x, oi: te.sum(
                rows[x, k4 * DEPTH + ii].astype("int32") * b[ob, k4, oi, ii].astype("int32"),
                axis=[k4, ii],
            ),
            name="dense",
            attrs={**main_attrs(algorithm, f"{OP_PREFIX}_dense"), INTRIN_KEY: intrinsic()},
        )
        return te.compute(
            (m, columns), lambda i, j: acc[0, j // LANES, 0, i, j % LANES] - c[j], name="crop"
        )

    return bb.call_te(compute, data, packed, corr, primfunc_name_hint="dense_int8")


# --- schedule ----------------------------------------------------------------------------
def schedule(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> None:
    """Register tile of pixels x (1 or 2) 16-channel vectors over the whole reduction; the
    reduction chunked over a row of tiles; the (16, 4) update tensorized."""
    name = str(sch.get(block).annotations[INTRIN_KEY])
    n, ob, y, x, oi, first, *middle, ii = sch.get_loops(block)
    vectors = 2 if extent(sch, ob) % 2 == 0 else 1
    rows, cols = pixel_tile(extent(sch, y), extent(sch, x), vectors)
    ob_o, ob_i = sch.split(ob, [None, vectors])
    y_o, y_i = sch.split(y, [None, rows])
    x_o, x_i = sch.split(x, [None, cols])
    # Channel blocks (spatial forms: `first` steps cbi = 4 * i4 channels) or K quads (im2col,
    # dense) reduced per pass over a row of tiles.
    if middle:
        limit = max(1, CHANNEL_CHUNK // (DEPTH * extent(sch, middle[-1])))
    else:
        limit = K_CHUNK // DEPTH
    r_o, r_i = sch.split(first, [None, largest_divisor(extent(sch, first), limit)])
    sch.reorder(n, ob_o, y_o, r_o, x_o, r_i, *middle, y_i, x_i, ob_i, oi, ii)
    fused = sch.fuse(n, ob_o, y_o)
    if extent(sch, fused) > 1:
        sch.parallel(fused)
    attach_epilogue(sch, block, fused)
    for lp in (y_i, x_i, ob_i):
        if extent(sch, lp) > 1:
            sch.unroll(lp)
    init = sch.decompose_reduction(block, r_o)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(oi, name + intrinsics.LOCAL)


# --- entry points for the algorithms -----------------------------------------------------
def try_conv2d(
    bb: relax.BlockBuilder,
    data: relax.Expr,
    weight: np.ndarray | relax.Expr,
    spec: ConvSpec,
    row: dict[str, Any],
    algorithm: str,
    form: str,
) -> relax.Expr | None:
    """The tensorized int8 conv in ``form`` when ``spec`` allows it, else None (the caller's
    own kernel runs). Int8 layers get a ``kernel`` column; one that cannot use the dot
    product says why in ``fallback``."""
    if spec.dtype not in INT8:
        return None
    why = unsupported(spec)
    if why is None and not isinstance(weight, np.ndarray):
        why = "int8 weights are not compile-time constants: widened int32"
    if why is not None:
        row["kernel"] = "int32"
        row["fallback"] = row.get("fallback") or why
        return None
    row["kernel"] = intrinsics.int8_isa(tvm.target.Target.current(allow_none=True))
    return emit_conv2d(bb, data, weight, spec, algorithm, form)


def try_dense(
    bb: relax.BlockBuilder, data: relax.Expr, weight: np.ndarray, row: dict[str, Any]
) -> relax.Expr | None:
    """The tensorized int8 dense layer when the data is 8-bit and the target has the
    instruction, else None."""
    if str(data.ty.dtype) not in INT8:
        return None
    if intrinsic() is None:
        row["kernel"] = "int32"
        row["fallback"] = "int8 on a target without AVX512-VNNI/BW: widened int32"
        return None
    row["kernel"] = intrinsics.int8_isa(tvm.target.Target.current(allow_none=True))
    return emit_dense(bb, data, weight, "gemm")
