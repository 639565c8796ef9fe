"""GEMM: im2col to a [K, P] matrix per group, then a matrix product with packed weights.

K = IC/groups * KH * KW, P = OH * OW. The input patches are materialized (the algorithm's
memory cost: KH*KW copies of the input) in the Caffe layout so that im2col itself is a
contiguous, vectorizable copy; the weights become [OC/16, K, 16] panels at compile time.
The product keeps a tile of pixels x 16-channel vectors in registers over the whole K loop.
A 1x1, stride-1, unpadded conv's im2col is the input itself and is not materialized.
Depthwise convs have no useful GEMM form (K = KH*KW, one channel per group): direct runs them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tvm import relax, s_tir, te, tirx

from . import dot_product
from .base import Algorithm, PackedAlgorithm
from .dense import schedule_dense
from .registry import ALGORITHMS
from .schedules import extent, schedule_channel_tile
from .shapes import LANES, ROW_KEY, STAGE_ATTRS, ConvSpec, largest_divisor, main_attrs, round_up

# On an im2col that is a plain view of the input (1x1, stride 1, unpadded): inline it.
VIEW_KEY = "dlas.view"
K_CHUNK = 144  # 16 input channels of a 3x3 kernel


def output_blocks(spec: ConvSpec) -> tuple[int, int]:
    """(channel vector width, padded channels per group)."""
    if spec.groups == 1:
        return LANES, round_up(spec.out_channels, LANES)
    return largest_divisor(spec.out_per_group, LANES), spec.out_per_group


def im2col(data: te.Tensor, spec: ConvSpec) -> te.Tensor:
    kh_, kw_ = spec.kernel_h, spec.kernel_w
    (sh, sw), (dh, dw) = spec.strides, spec.dilation
    top, left, _, _ = spec.padding
    ow = spec.out_w
    zero = tirx.const(0, data.dtype)
    view = (kh_, kw_, sh, sw) == (1, 1, 1, 1) and not any(spec.padding)

    def value(n, g, k, p):
        c = g * spec.in_per_group + k // (kh_ * kw_)
        y = (p // ow) * sh + (k // kw_ % kh_) * dh - top
        x = (p % ow) * sw + (k % kw_) * dw - left
        if view:
            return data[n, c, y, x]
        inside = tirx.all(y >= 0, y < spec.height, x >= 0, x < spec.width)
        return tirx.if_then_else(inside, data[n, c, y, x], zero)

    attrs = {**STAGE_ATTRS, VIEW_KEY: int(view), ROW_KEY: ow}
    shape = (spec.batch, spec.groups, spec.reduction, spec.out_h * spec.out_w)
    return te.compute(shape, value, name="im2col", attrs=attrs)


class Gemm(PackedAlgorithm):
    name = "gemm"
    # int8/bfloat16 through the dot-product kernels where the CPU has them (dot_product).
    dtypes = ("float32", "float16", "int8", "uint8", "bfloat16")

    def select(self, spec: ConvSpec) -> tuple[Algorithm, str]:
        if spec.in_per_group == 1:
            direct = ALGORITHMS.get("direct")()
            return direct, "depthwise/one-channel groups: K=KH*KW is too short for GEMM; direct"
        return self, ""

    @staticmethod
    def pack_weight(weight: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """OIHW -> [G, OCg/vec, K, vec], zero channels past OC."""
        vec, per_group = output_blocks(spec)
        w = weight.reshape(spec.groups, spec.out_per_group, spec.reduction)
        w = np.pad(w, [(0, 0), (0, per_group - spec.out_per_group), (0, 0)])
        w = w.reshape(spec.groups, per_group // vec, vec, spec.reduction)
        return np.ascontiguousarray(w.transpose(0, 1, 3, 2))

    def compute(self, data: te.Tensor, packed: te.Tensor, spec: ConvSpec) -> te.Tensor:
        vec, per_group = output_blocks(spec)
        col = im2col(data, spec)
        ow = spec.out_w
        rk = te.reduce_axis((0, spec.reduction), "k")
        acc = spec.out_dtype
        shape = (spec.batch, spec.groups, per_group // vec, spec.out_h, ow, vec)
        conv = te.compute(
            shape,
            lambda n, g, ob, y, x, oi: te.sum(
                col[n, g, rk, y * ow + x].astype(acc) * packed[g, ob, rk, oi].astype(acc),
                axis=rk,
            ),
            name="conv",
            attrs=main_attrs(self.name, "conv2d", spec.macs, rows_first=spec.split_by_rows),
        )
        opg = spec.out_per_group
        if spec.groups == 1:
            # Without `c % opg` the epilogue attached to one block of 16 channels is bounded
            # to that block. With it, and OC not a multiple of 16, the bound spanned every
            # channel: each thread read blocks that other threads had not written yet.
            def value(n, c, y, x):
                return conv[n, 0, c // vec, y, x, c % vec]
        else:

            def value(n, c, y, x):
                return conv[n, c // opg, c % opg // vec, y, x, c % vec]

        return te.compute((spec.batch, spec.out_channels, spec.out_h, ow), value, name="unpack")

    def emit_conv2d(
        self,
        bb: relax.BlockBuilder,
        data: relax.Expr,
        weight: np.ndarray,
        spec: ConvSpec,
        row: dict[str, Any],
    ) -> relax.Expr:
        if (
            out := dot_product.try_conv2d(bb, data, weight, spec, row, self.name, "im2col")
        ) is not None:
            return out
        return super().emit_conv2d(bb, data, weight, spec, row)

    def schedule(self, sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> None:
        if dot_product.is_dot_block(sch, block):
            dot_product.schedule(sch, block)
            return
        if str(sch.get(block).annotations["dlas.op"]) == "dense":
            schedule_dense(sch, block)
            return
        (col,) = sch.get_producers(block)
        inline = int(sch.get(col).annotations.get(VIEW_KEY, 0))
        n, g, ob, y, x, oi, k = sch.get_loops(block)
        chunk = largest_divisor(extent(sch, k), K_CHUNK)
        schedule_channel_tile(
            sch, block, outer=[n, g], channels=ob, y=y, x=x, lanes=oi, reduction=k, chunk=chunk
        )
        if inline:
            sch.compute_inline(col)


ALGORITHMS.register(Gemm.name)(Gemm)
