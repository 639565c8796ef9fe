"""int8 depthwise convolutions through the pixels-in-lanes dot product (``direct``).

A depthwise layer has no channel reduction to feed ``vpdpbusd``'s 4-deep dot product, but
each output pixel still sums ``KW`` horizontally adjacent taps per kernel row. Here the
reduction is taken over those taps: a per-task stage writes each padded input row as
``[W, 4]`` quads (quad ``x`` holds the 4 input bytes that output column ``x`` reads, tap
``KW..3`` multiplied by a zero weight), and one instruction adds to 16 output columns the
products of their quads with the kernel row's 4 weights, broadcast: ``KH`` instructions per
16 outputs of a 3x3 layer, where the widened kernel (:mod:`.direct`) spends a widening load, a
multiply and an add per tap. It is :mod:`.dot_rows`' intrinsic with taps in place of input
channels, and its accumulators are NCHW rows as there.

Layers whose output rows are at least one vector wide, of any stride and dilation (a stride-2
row's quads are made from every other column of one padded row); taps past 4 take more
quads. Single layers, side by side with the widened kernel (AVX512-VNNI, 2 threads): 1.1x
(32 channels at 112 px) to 2.1-2.5x (stride 2 at 64 px), 1.6x at 32 px. Narrower rows stay
widened: LLVM builds their quads from byte inserts and shuffles, which cost more than the
products save (8x8 maps 0.3-0.4x, as one row of the padded plane or as quads per output
pixel). The data shift and its correction are :mod:`.operands`' as for the other forms.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tvm import relax, s_tir, te

from .dot_product import INTRIN_KEY, OP_PREFIX, current_target, flavor_of
from .dot_rows import finish_tensorized, output_rows
from .intrinsics import LOCAL
from .legalize import padded_input
from .operands import Operands
from .schedules import extent, tile
from .shapes import (
    LANES,
    LLVM_VECTOR_KEY,
    STAGE_ATTRS,
    ConvSpec,
    main_attrs,
    register_tile_sizes,
    round_up,
)
from .stages import compute_per_task, plane_tasks

FORM = "taps"
OP = f"{OP_PREFIX}_{FORM}"
DEPTH = 4
# The quads' column loop is LLVM's to vectorize: in TIR each 4-byte quad would be a gather.
QUAD_ATTRS = {**STAGE_ATTRS, LLVM_VECTOR_KEY: 1}


def applies(spec: ConvSpec) -> bool:
    return spec.depthwise and spec.out_w >= LANES


def try_conv2d(
    bb: relax.BlockBuilder,
    data: relax.Expr,
    weight: np.ndarray | relax.Expr,
    spec: ConvSpec,
    row: dict[str, Any],
    algorithm: str,
) -> relax.Expr | None:
    """The tap-reduction kernel when ``spec`` is an int8 depthwise layer it covers on a target
    with the pixels-in-lanes intrinsic, else None (the caller's widened kernel runs)."""
    flavor = flavor_of(spec.dtype)
    if not spec.depthwise or flavor is None or flavor.name != "int8":
        return None
    target = current_target()
    intrinsic = flavor.intrinsic(target, rows=True)
    if intrinsic is None or spec.out_dtype != flavor.acc or not isinstance(weight, np.ndarray):
        return None  # dot_product says why
    if not applies(spec):
        row["fallback"] = f"int8 depthwise rows of {spec.out_w} < {LANES} pixels: widened int32"
        return None
    row["kernel"] = flavor.isa(target)
    ops = flavor.operands(spec.dtype)
    w = ops.weights(weight)
    packed = relax.const(pack_weight(w))
    corr = relax.const(ops.correction(w))
    attrs = {**main_attrs(algorithm, OP, spec.macs), INTRIN_KEY: intrinsic}

    def compute(d: te.Tensor, p: te.Tensor, c: te.Tensor) -> te.Tensor:
        return conv(d, p, c, spec, ops, attrs)

    return bb.call_te(compute, data, packed, corr, primfunc_name_hint="conv2d_int8")


def pack_weight(weight: np.ndarray) -> np.ndarray:
    """[C, 1, KH, KW] -> [C, KH, Q, 4]: each kernel row's taps in quads, zeros past KW."""
    c, _, kh, kw = weight.shape
    w = np.pad(weight[:, 0], [(0, 0), (0, 0), (0, round_up(kw, DEPTH) - kw)])
    return np.ascontiguousarray(w.reshape(c, kh, -1, DEPTH))


def conv(
    data: te.Tensor,
    packed: te.Tensor,
    corr: te.Tensor,
    spec: ConvSpec,
    ops: Operands,
    attrs: dict,
) -> te.Tensor:
    quads = int(packed.shape[2])
    (sh, sw), (dh, dw) = spec.strides, spec.dilation
    reach = (quads * DEPTH - 1) * dw  # every quad's last tap is read (times a zero weight)
    width = round_up(spec.out_w, LANES)
    height = (spec.out_h - 1) * sh + (spec.kernel_h - 1) * dh + 1
    padded = padded_input(data, spec, height, (width - 1) * sw + reach + 1)

    def quad(n, c, h, q, x, t):
        return ops.element(padded[n, c, h, x * sw + (q * DEPTH + t) * dw])

    shape = (spec.batch, spec.in_channels, height, quads, width, DEPTH)
    taps = te.compute(shape, quad, name="tap_quads", attrs=QUAD_ATTRS)
    r = te.reduce_axis((0, spec.kernel_h), "r")
    q = te.reduce_axis((0, quads), "q")
    t = te.reduce_axis((0, DEPTH), "t")

    def value(n, c, y, x):
        pixel = taps[n, c, y * sh + r * dh, q, x, t]
        return te.sum(pixel.astype("int32") * packed[c, r, q, t].astype("int32"), axis=[r, q, t])

    return output_rows(value, width, corr, spec, ops, attrs)


def schedule(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> None:
    """Tasks of a few rows of one plane (stages.plane_tasks), each making its padded rows and
    their quads while in cache; register tiles of rows x row vectors (an input row's quads
    serve KH output rows), the (16 pixels, 4 taps) update tensorized."""
    n, c, y, x, r, q, t = sch.get_loops(block)
    vectors, lanes = sch.split(x, [None, LANES])
    # One channel per tile: a plane's rows share nothing with another plane's.
    _, rows, cols = register_tile_sizes(
        1, extent(sch, y), extent(sch, vectors), rows_first=True, lanes=1
    )
    y_o, y_i = tile(sch, y, rows)
    x_o, x_i = tile(sch, vectors, cols)
    task, y_o = plane_tasks(sch, y_o, y_i)
    sch.reorder(n, c, task, y_o, x_o, r, q, y_i, x_i, lanes, t)

    def quads(stage: s_tir.schedule.SBlockRV) -> None:
        # Measured: rows of several vectors vectorize as whole-row loads and shuffles with
        # the tap loop unrolled (1.3-2.6x over the widened kernel), a one-vector row only
        # with both loops left to LLVM (1.7x; unrolled, SLP made 4-quad pieces).
        *_, column, tap = sch.get_loops(stage)
        if extent(sch, column) > LANES:
            sch.unroll(tap)

    compute_per_task(sch, block, task, quads)
    intrinsic = str(sch.get(block).annotations[INTRIN_KEY]) + LOCAL
    finish_tensorized(sch, block, [n, c, task], r, [y_i, x_i], lanes, intrinsic)
