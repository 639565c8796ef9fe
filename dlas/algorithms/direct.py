"""Direct: the sliding-window convolution on the NCHW data as it is, no data reshaping.

Stride-1 layers with rows of at least 16 outputs run along the output width: one vector load
of an input row segment, one broadcast OIHW weight per output channel of the tile, one FMA
per (channel, vector); the tile (output channels x rows x width vectors) stays in registers
over the whole (ic, kh, kw) reduction, and the width is rounded up to whole vectors.
Narrow maps (a 7-wide row fills half a vector) and strided layers (a stride-2 row is a
gather) instead broadcast one input pixel and update 16 output channels per FMA, the
weights laid out [OC/16, IC, KH, KW, 16] at compile time; the data is still read in place.
Depthwise layers always run along the width (their channels do not share input pixels).
1x1 stride-1 layers whose planes split into tasks of whole 16-pixel vectors run along the
flattened plane instead (pointwise.py): no row padding, the epilogue writes NCHW directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tvm import relax, s_tir, te

from . import dot_product, dot_rows, dot_taps, pointwise
from .base import Algorithm
from .legalize import call_te, padded_input
from .packing import channel_blocks, unpack
from .registry import ALGORITHMS
from .schedules import (
    extent,
    finish_reduction,
    register_tile,
    schedule_channel_tile,
    tile,
)
from .shapes import (
    CHANNEL_CHUNK,
    LANES,
    LLVM_VECTOR_KEY,
    STAGE_ATTRS,
    ConvSpec,
    largest_divisor,
    main_attrs,
    round_up,
    vector_width,
)
from .stages import compute_per_task, plane_tasks

# The column phases of a strided depthwise layer's rows: their copy loop is LLVM's to
# vectorize (see padded_phases).
PHASES_ATTRS = {**STAGE_ATTRS, LLVM_VECTOR_KEY: 1}


def padded_width(spec: ConvSpec) -> tuple[int, int]:
    """(vector lanes, output width rounded up to whole vectors)."""
    lanes = LANES if spec.out_w >= LANES else vector_width(spec.out_w)
    return lanes, round_up(spec.out_w, lanes)


class Direct(Algorithm):
    name = "direct"
    # int8/bfloat16 through the dot-product kernels where the CPU has them (dot_product).
    dtypes = ("float32", "float16", "int8", "uint8", "bfloat16")
    packs_weights = False

    def emit_conv2d(
        self,
        bb: relax.BlockBuilder,
        data: relax.Expr,
        weight: np.ndarray | relax.Expr,
        spec: ConvSpec,
        row: dict[str, Any],
    ) -> relax.Expr:
        if (out := dot_taps.try_conv2d(bb, data, weight, spec, row, self.name)) is not None:
            return out
        if (
            out := dot_product.try_conv2d(bb, data, weight, spec, row, self.name, dot_rows.FORM)
        ) is not None:
            return out
        flat_plane = pointwise.eligible(spec)
        if not flat_plane and isinstance(weight, np.ndarray) and across_channels(spec):
            packed = relax.const(pack_channels(weight, spec))
            return call_te(bb, self._conv_channels, data, packed, spec=spec, name="conv2d")
        if isinstance(weight, np.ndarray):
            weight = relax.const(weight)
        compute = pointwise.compute if flat_plane else self._conv
        return call_te(bb, compute, data, weight, spec=spec, name="conv2d")

    def _conv(self, data: te.Tensor, weight: te.Tensor, spec: ConvSpec) -> te.Tensor:
        _, width = padded_width(spec)
        (sh, sw), (dh, dw) = spec.strides, spec.dilation
        need_h = (spec.out_h - 1) * sh + (spec.kernel_h - 1) * dh + 1
        need_w = (width - 1) * sw + (spec.kernel_w - 1) * dw + 1
        if sw > 1:
            # Strided rows are gathers: split the padded input into its sw column phases
            # once, so each output row reads one contiguous phase row per kw.
            phases = padded_phases(data, spec, need_h, need_w)

            def read(n, c, h, x, kw):
                return phases[n, c, h, (kw * dw) % sw, x + (kw * dw) // sw]
        else:
            padded = padded_input(data, spec, need_h, need_w)

            def read(n, c, h, x, kw):
                return padded[n, c, h, x + kw * dw]

        rc = te.reduce_axis((0, spec.in_per_group), "rc")
        kh = te.reduce_axis((0, spec.kernel_h), "kh")
        kw = te.reduce_axis((0, spec.kernel_w), "kw")
        acc = spec.out_dtype
        icg, ocg = spec.in_per_group, spec.out_per_group

        def value(n, oc, y, x):
            channel = rc if spec.groups == 1 else oc // ocg * icg + rc
            pixel = read(n, channel, y * sh + kh * dh, x, kw)
            return te.sum(pixel.astype(acc) * weight[oc, rc, kh, kw].astype(acc), axis=[rc, kh, kw])

        shape = (spec.batch, spec.out_channels, spec.out_h, width)
        # One input plane per group (depthwise): scheduled as planes, nothing shared across
        # channels; a plane every output channel reads (1 input channel, 1 group) is not.
        op = "depthwise" if spec.groups > 1 and icg == 1 else "conv2d"
        conv = te.compute(shape, value, name="conv", attrs=main_attrs(self.name, op, spec.macs))
        return te.compute(
            (spec.batch, spec.out_channels, spec.out_h, spec.out_w),
            lambda n, c, y, x: conv[n, c, y, x],
            name="crop",
        )

    def _conv_channels(self, data: te.Tensor, packed: te.Tensor, spec: ConvSpec) -> te.Tensor:
        """The same sliding window, 16 output channels per FMA (weights [OC/16, IC, KH, KW, 16])."""
        _, cbo, oc_pad = channel_blocks(spec)
        padded = padded_input(data, spec)
        (sh, sw), (dh, dw) = spec.strides, spec.dilation
        rc = te.reduce_axis((0, spec.in_per_group), "rc")
        kh = te.reduce_axis((0, spec.kernel_h), "kh")
        kw = te.reduce_axis((0, spec.kernel_w), "kw")
        acc = spec.out_dtype

        def value(n, ob, y, x, oi):
            base = (ob * cbo // spec.out_per_group) * spec.in_per_group if spec.groups > 1 else 0
            pixel = padded[n, base + rc, y * sh + kh * dh, x * sw + kw * dw]
            return te.sum(
                pixel.astype(acc) * packed[ob, rc, kh, kw, oi].astype(acc), axis=[rc, kh, kw]
            )

        shape = (spec.batch, oc_pad // cbo, spec.out_h, spec.out_w, cbo)
        conv = te.compute(
            shape,
            value,
            name="conv",
            attrs=main_attrs(self.name, "channels", spec.macs, rows_first=spec.split_by_rows),
        )
        return unpack(conv, spec, cbo)

    def schedule(self, sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> None:
        op = str(sch.get(block).annotations["dlas.op"])
        if op == dot_taps.OP:
            dot_taps.schedule(sch, block)
            return
        if dot_product.is_dot_block(sch, block):
            dot_product.schedule(sch, block)
            return
        if op == "channels":
            self._schedule_channels(sch, block)
            return
        if op == "depthwise":
            self._schedule_planes(sch, block)
            return
        if op == pointwise.OP:
            pointwise.schedule(sch, block)
            return
        n, oc, y, x, rc, kh, kw = sch.get_loops(block)
        oc_o, oc_i, y_o, y_i, x_o, x_i = register_tile(sch, oc, y, x, rows_first=False)
        # Chunked channel reduction over a whole row of tiles (see base.CHANNEL_CHUNK); LLVM
        # still keeps each tile's accumulators in registers within a chunk.
        rc_o, rc = tile(sch, rc, largest_divisor(extent(sch, rc), CHANNEL_CHUNK))
        sch.reorder(n, oc_o, y_o, rc_o, x_o, rc, kh, kw, y_i, oc_i, x_i)
        finish_reduction(
            sch,
            block,
            parallel=[n, oc_o, y_o],
            tile_loop=y_o,
            first_reduction=rc_o,
            vector=x_i,
            unroll=[y_i, oc_i],
        )

    @staticmethod
    def _schedule_planes(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> None:
        """One input plane per output channel (depthwise): nothing is shared across channels,
        so a task takes PLANE_TASK_ROWS rows of one plane in register tiles of a few rows (an
        input row serves KH of them), and the padded or phase-split input is made per task,
        while in cache, not in a pass of its own over the whole input (at 112 px that pass
        alone streams the input through DRAM twice). Made per register tile instead, each
        input row was padded KH times (one-row tiles at 56 px: 3.7x slower on Zen 3)."""
        n, oc, y, x, rc, kh, kw = sch.get_loops(block)
        oc_o, oc_i, y_o, y_i, x_o, x_i = register_tile(sch, oc, y, x, rows_first=True)
        task, y_o = plane_tasks(sch, y_o, y_i)
        sch.reorder(n, oc_o, task, y_o, x_o, rc, kh, kw, oc_i, y_i, x_i)

        def phases(stage: s_tir.schedule.SBlockRV) -> None:
            # The phase split: the sw phases of a column innermost, unrolled, so the column
            # loop left to LLVM reads sw contiguous values per iteration.
            *_, phase, inner = sch.get_loops(stage)
            sch.reorder(inner, phase)
            sch.unroll(phase)

        compute_per_task(sch, block, task, phases)
        finish_reduction(
            sch,
            block,
            parallel=[n, oc_o, task],
            tile_loop=task,
            first_reduction=rc,
            vector=x_i,
            unroll=[y_i, oc_i],
        )

    @staticmethod
    def _schedule_channels(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> None:
        n, ob, y, x, oi, rc, kh, kw = sch.get_loops(block)
        schedule_channel_tile(
            sch,
            block,
            outer=[n],
            channels=ob,
            y=y,
            x=x,
            lanes=oi,
            reduction=rc,
            chunk=largest_divisor(extent(sch, rc), CHANNEL_CHUNK),
            inner=[kh, kw],
        )


def padded_phases(data: te.Tensor, spec: ConvSpec, height: int, width: int) -> te.Tensor:
    """Zero-padded input [N, C, height, sw, ceil(width / sw)], column w at [.., w % sw, w // sw]:
    a stride-sw row becomes sw contiguous rows. Split from the padded input, so the split
    itself has no bounds test: LLVM's vectorizer makes it wide loads and shuffles."""
    sw = spec.strides[1]
    phase = -(-width // sw)
    padded = padded_input(data, spec, height, phase * sw)

    def value(n, c, h, p, q):
        return padded[n, c, h, q * sw + p]

    shape = (spec.batch, spec.in_channels, height, sw, phase)
    return te.compute(shape, value, name="phases", attrs=PHASES_ATTRS)


def across_channels(spec: ConvSpec) -> bool:
    """Vectorize across output channels when a row would not fill the vectors (narrow maps)
    or would need strided loads (stride > 1); depthwise has one channel per input plane."""
    return spec.in_per_group > 1 and (spec.strides[1] > 1 or spec.out_w < LANES)


def pack_channels(weight: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """OIHW -> [OC/cbo, IC/groups, KH, KW, cbo], zero channels past OC (compile time)."""
    _, cbo, oc_pad = channel_blocks(spec)
    w = np.pad(weight, [(0, oc_pad - spec.out_channels), (0, 0), (0, 0), (0, 0)])
    w = w.reshape(oc_pad // cbo, cbo, *w.shape[1:])
    return np.ascontiguousarray(w.transpose(0, 2, 3, 4, 1))


ALGORITHMS.register(Direct.name)(Direct)
