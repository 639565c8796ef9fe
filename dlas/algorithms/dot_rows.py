"""int8 convolutions with 16 output *pixels* in the vector lanes (``direct``, unit width stride).

The kernels of :mod:`.dot_product` put 16 output channels in a vector, so their epilogue
reads the tile transposed to write NCHW: a gather per 8 outputs, which on MobileNetV2's
narrow 1x1 layers at 32 px is most of the kernel's time (the products themselves are a few
``vpdpbusd`` per output). Here a vector is 16 consecutive output columns of one channel: one
instruction adds to each lane the dot product of its pixel's 4 packed input channels (an
NCHW[4]c row segment: 64 contiguous bytes) with the channel's 4 weights, broadcast. The
accumulators are NCHW rows, read and written by the epilogue with plain vector loads and
stores, and the requantized output is stored as it is.

Ungrouped 1x1 layers of unit stride whose output rows are at least one vector wide (rounded
up to whole vectors), or whose whole plane is whole vectors (8x8, 4x4: one flattened row of
H*W pixels; MobileNetV2-32 int8 ran 1.10x faster than with those layers channel-lane). A 3x3
layer does 9 times the products per output, and there the channel-lane form's register
reuse wins: this form made ResNet18-32 int8 (``direct``) 2% slower and MobileNetV2-32 int8
6% faster when it took every layer of unit width stride; on 1x1 layers only, ResNet18 is
unchanged. Weights ``[OC, ICp/4, KH, KW, 4]``; the data shift and
its correction are :mod:`.operands`' as for the other forms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from tvm import s_tir, te
from tvm.s_tir.schedule import LoopRV

from .operands import Operands
from .packing import INTERLEAVE_ATTRS, INTERLEAVE_KEY, pack_data, schedule_interleave
from .schedules import attach_epilogue, extent, register_tile, tile
from .shapes import LANES, ConvSpec, largest_divisor, round_up

FORM = "rows"
# On the conv of a flat plane (flat_plane): its epilogue's rows and columns are one row.
FLAT_KEY = "dlas.flat_plane"
# Packed channel groups (of ``depth``) reduced per pass over a row of tiles.
GROUP_CHUNK = 16


def applies(spec: ConvSpec) -> bool:
    one_by_one = (spec.kernel_h, spec.kernel_w) == (1, 1)
    rows = spec.out_w >= LANES or flat_plane(spec)
    return one_by_one and spec.groups == 1 and spec.strides[1] == 1 and rows


def flat_plane(spec: ConvSpec) -> bool:
    """A 1x1 layer, unpadded, of unit stride, on a map narrower than a vector whose plane is
    whole vectors (8x8, 4x4): it runs as one row of H*W pixels (both the input and the
    output plane are contiguous), not as rows padded to a vector each."""
    return (
        (spec.kernel_h, spec.kernel_w, spec.strides) == (1, 1, (1, 1))
        and not any(spec.padding)
        and spec.out_w < LANES
        and spec.out_h * spec.out_w % LANES == 0
    )


def pack_weight(weight: np.ndarray, depth: int) -> np.ndarray:
    """OIHW -> [OC, ICp/depth, KH, KW, depth], zero channels past IC (compile time)."""
    oc, ic, kh, kw = weight.shape
    icp = round_up(ic, depth)
    w = np.pad(weight, [(0, 0), (0, icp - ic), (0, 0), (0, 0)])
    return np.ascontiguousarray(w.reshape(oc, icp // depth, depth, kh, kw).transpose(0, 1, 3, 4, 2))


def conv(
    data: te.Tensor,
    packed: te.Tensor,
    corr: te.Tensor,
    spec: ConvSpec,
    product: Callable[[Any, Any], Any],
    ops: Operands,
    attrs: dict,
) -> te.Tensor:
    if flat_plane(spec):
        n, c, h, w = spec.batch, spec.in_channels, spec.height, spec.width
        row = te.compute((n, c, 1, h * w), lambda b, i, _, p: data[b, i, p // w, p % w])
        flat_spec = replace(spec, height=1, width=h * w)
        flat = conv(row, packed, corr, flat_spec, product, ops, {**attrs, FLAT_KEY: 1})
        shape = (n, spec.out_channels, h, w)
        return te.compute(shape, lambda b, o, y, x: flat[b, o, 0, y * w + x], name="unflatten")
    depth = int(packed.shape[-1])
    width = round_up(spec.out_w, LANES)
    (sh, _), (dh, dw) = spec.strides, spec.dilation
    need_h = (spec.out_h - 1) * sh + (spec.kernel_h - 1) * dh + 1
    need_w = width + (spec.kernel_w - 1) * dw
    d = pack_data(
        data,
        spec,
        depth,
        need_h,
        need_w,
        element=ops.element,
        pad=ops.pad(),
        attrs=INTERLEAVE_ATTRS,
    )
    ib = te.reduce_axis((0, int(d.shape[1])), "ib")
    kh = te.reduce_axis((0, spec.kernel_h), "kh")
    kw = te.reduce_axis((0, spec.kernel_w), "kw")
    ii = te.reduce_axis((0, depth), "ii")

    def value(n, oc, y, x):
        pixel = d[n, ib, y * sh + kh * dh, x + kw * dw, ii]
        return te.sum(product(pixel, packed[oc, ib, kh, kw, ii]), axis=[ib, kh, kw, ii])

    return output_rows(value, width, corr, spec, ops, attrs)


def output_rows(
    value: Callable[..., Any],
    width: int,
    corr: te.Tensor,
    spec: ConvSpec,
    ops: Operands,
    attrs: dict,
) -> te.Tensor:
    """The accumulators as NCHW rows of ``width`` columns (whole vectors) summed by ``value``,
    and the layer's output cropped from them (its epilogue: :meth:`.Operands.result`)."""
    shape = (spec.batch, spec.out_channels, spec.out_h, width)
    acc = te.compute(shape, value, name="conv", attrs=attrs)
    return te.compute(
        (spec.batch, spec.out_channels, spec.out_h, spec.out_w),
        lambda n, c, y, x: ops.result(acc[n, c, y, x], corr[c]),
        name="unpack",
    )


def schedule(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, intrinsic: str) -> None:
    """Register tile of channels x rows x row vectors over a chunk of the channel groups; the
    (16 pixels, depth) update tensorized, the channel loop innermost so that each data
    vector loaded serves the whole tile's channels (their weights broadcast from memory)."""
    for pack in sch.get_producers(block):
        if INTERLEAVE_KEY in sch.get(pack).annotations:
            schedule_interleave(sch, pack)
    n, oc, y, x, ib, kh, kw, ii = sch.get_loops(block)
    # A fixed split: the tensor intrinsic takes exactly one vector (the width is padded to it).
    vectors, lanes = sch.split(x, [None, LANES])
    oc_o, oc_i, y_o, y_i, x_o, x_i = register_tile(sch, oc, y, vectors, rows_first=False, lanes=1)
    ib_o, ib_i = tile(sch, ib, largest_divisor(extent(sch, ib), GROUP_CHUNK))
    sch.reorder(n, oc_o, y_o, ib_o, x_o, ib_i, kh, kw, y_i, x_i, oc_i, lanes, ii)
    flat = FLAT_KEY in sch.get(block).annotations
    finish_tensorized(sch, block, [n, oc_o, y_o], ib_o, [y_i, x_i, oc_i], lanes, intrinsic, flat)


def finish_tensorized(
    sch: s_tir.Schedule,
    block: s_tir.schedule.SBlockRV,
    parallel: list[LoopRV],
    first_reduction: LoopRV,
    unroll: list[LoopRV],
    update: LoopRV,
    intrinsic: str,
    flat: bool = False,
) -> LoopRV:
    """The common tail of the tensorized schedules (this one, dot_product's and dot_taps'):
    the outer loops fused and parallel with the epilogue inside (``flat``: see
    attach_epilogue), the register tile unrolled, the init vectorized and the ``update`` loop
    tensorized. Returns the fused loop."""
    fused = sch.fuse(*parallel)
    if extent(sch, fused) > 1:
        sch.parallel(fused)
    attach_epilogue(sch, block, fused, flat)
    for lp in unroll:
        if extent(sch, lp) > 1:
            sch.unroll(lp)
    init = sch.decompose_reduction(block, first_reduction)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(update, intrinsic)
    return fused
