"""Spatial pack: NCHW[x]c data and OIHW[x]i[y]o weights, vectorized over output channels.

The input is repacked (with its zero padding) into channel blocks of ``cbi`` once per call;
the weights are packed into [OC/16, IC/cbi, KH, KW, cbi, 16] tiles at compile time (numpy on
the constant weight). One 16-wide FMA then updates
16 output channels of one pixel from one broadcast input scalar, and a register tile of
pixels x 16-channel vectors is reused across the whole (ic, kh, kw) reduction - the
structure of TOPI's x86 conv2d_NCHWc schedule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from tvm import relax, s_tir, te

from . import dot_product
from .base import Algorithm, PackedAlgorithm
from .legalize import call_te
from .packing import channel_blocks, pack_data, schedule_interleaving_packs, unpack
from .panels import schedule_pointwise_panel
from .registry import ALGORITHMS
from .schedules import (
    extent,
    finish_reduction,
    reduces_whole,
    schedule_channel_tile,
    tile,
    tile_weight_bytes,
)
from .shapes import (
    CHANNEL_CHUNK,
    LANES,
    MAX_ACCUMULATORS,
    ConvSpec,
    channel_vectors,
    largest_divisor,
    main_attrs,
    max_accumulators,
    pixel_tile,
    round_up,
)

# On a target of few vector registers (AVX2), a chunked tile reduces at least the input
# channels whose weights for its vectors fill this many bytes per pass (chunk_blocks).
CHUNK_WEIGHT_BYTES = 16 * 1024


class SpatialPack(PackedAlgorithm):
    name = "spatial_pack"
    # int8/bfloat16 through the dot-product kernels where the CPU has them (dot_product).
    dtypes = ("float32", "float16", "int8", "uint8", "bfloat16")

    def select(self, spec: ConvSpec) -> tuple[Algorithm, str]:
        if spec.in_per_group == 1 and not spec.depthwise:
            direct = ALGORITHMS.get("direct")()
            return direct, "channel multiplier > 1 has no NCHWc form: direct"
        return self, ""

    def emit_conv2d(
        self,
        bb: relax.BlockBuilder,
        data: relax.Expr,
        weight: np.ndarray,
        spec: ConvSpec,
        row: dict[str, Any],
    ) -> relax.Expr:
        if (
            out := dot_product.try_conv2d(bb, data, weight, spec, row, self.name, "nchwc")
        ) is not None:
            return out
        if spec.depthwise:
            packed = relax.const(self.pack_depthwise(weight, spec))
            return call_te(bb, self._depthwise, data, packed, spec=spec, name="conv2d")
        return super().emit_conv2d(bb, data, weight, spec, row)

    # --- computes ----------------------------------------------------------------------
    @staticmethod
    def pack_weight(weight: np.ndarray, spec: ConvSpec, cbi: int | None = None) -> np.ndarray:
        """OIHW -> [OC/cbo, IC/cbi, KH, KW, cbi, cbo], zero channels past OC; the input block
        ``cbi`` is :func:`.packing.channel_blocks`' unless given."""
        default_cbi, cbo, oc_pad = channel_blocks(spec)
        cbi = cbi or default_cbi
        w = np.pad(weight, [(0, oc_pad - spec.out_channels), (0, 0), (0, 0), (0, 0)])
        _, icg, kh, kw = w.shape
        w = w.reshape(oc_pad // cbo, cbo, icg // cbi, cbi, kh, kw)
        return np.ascontiguousarray(w.transpose(0, 2, 4, 5, 3, 1))

    @staticmethod
    def pack_depthwise(weight: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """[C, 1, KH, KW] -> [C/16, KH, KW, 16], zero channels past C."""
        c_pad = round_up(spec.out_channels, LANES)
        w = np.pad(weight[:, 0], [(0, c_pad - spec.out_channels), (0, 0), (0, 0)])
        w = w.reshape(c_pad // LANES, LANES, spec.kernel_h, spec.kernel_w)
        return np.ascontiguousarray(w.transpose(0, 2, 3, 1))

    def compute(self, data: te.Tensor, packed: te.Tensor, spec: ConvSpec) -> te.Tensor:
        cbi, cbo, oc_pad = channel_blocks(spec)
        d = pack_data(data, spec, cbi)
        (sh, sw), (dh, dw) = spec.strides, spec.dilation
        in_blocks = spec.in_per_group // cbi
        ib = te.reduce_axis((0, in_blocks), "ib")
        kh = te.reduce_axis((0, spec.kernel_h), "kh")
        kw = te.reduce_axis((0, spec.kernel_w), "kw")
        ii = te.reduce_axis((0, cbi), "ii")
        acc = spec.out_dtype

        def value(n, ob, y, x, oi):
            group_base = (ob * cbo // spec.out_per_group) * in_blocks if spec.groups > 1 else 0
            pixel = d[n, group_base + ib, y * sh + kh * dh, x * sw + kw * dw, ii]
            return te.sum(
                pixel.astype(acc) * packed[ob, ib, kh, kw, ii, oi].astype(acc),
                axis=[ib, kh, kw, ii],
            )

        shape = (spec.batch, oc_pad // cbo, spec.out_h, spec.out_w, cbo)
        conv = te.compute(
            shape,
            value,
            name="conv",
            attrs=main_attrs(self.name, "conv2d", spec.macs, rows_first=spec.split_by_rows),
        )
        return unpack(conv, spec, cbo)

    def _depthwise(self, data: te.Tensor, packed: te.Tensor, spec: ConvSpec) -> te.Tensor:
        d = pack_data(data, spec, LANES)
        (sh, sw), (dh, dw) = spec.strides, spec.dilation
        kh = te.reduce_axis((0, spec.kernel_h), "kh")
        kw = te.reduce_axis((0, spec.kernel_w), "kw")
        acc = spec.out_dtype

        def value(n, cb, y, x, ci):
            pixel = d[n, cb, y * sh + kh * dh, x * sw + kw * dw, ci]
            return te.sum(pixel.astype(acc) * packed[cb, kh, kw, ci].astype(acc), axis=[kh, kw])

        shape = (spec.batch, d.shape[1], spec.out_h, spec.out_w, LANES)
        conv = te.compute(
            shape, value, name="conv", attrs=main_attrs(self.name, "depthwise", spec.macs)
        )
        return unpack(conv, spec, LANES)

    # --- schedule ----------------------------------------------------------------------
    def schedule(self, sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> None:
        if dot_product.is_dot_block(sch, block):
            dot_product.schedule(sch, block)
            return
        if str(sch.get(block).annotations["dlas.op"]) == "depthwise":
            self._schedule_depthwise(sch, block)
            return
        n, ob, y, x, oi, ib, kh, kw, ii = sch.get_loops(block)
        taps = extent(sch, kh) * extent(sch, kw)
        loops = {"channels": ob, "y": y, "x": x, "lanes": oi, "reduction": ib}
        if not (
            taps == 1
            and schedule_pointwise_panel(sch, block, outer=[n], inner=[kh, kw, ii], **loops)
        ):
            chunk = chunk_blocks(sch, block, loops, inner=[kh, kw, ii])
            schedule_channel_tile(
                sch,
                block,
                outer=[n],
                inner=[kh, kw, ii],
                chunk=chunk,
                rows_in_chunk=taps > 1,
                **loops,
            )
        schedule_interleaving_packs(sch, block)

    @staticmethod
    def _schedule_depthwise(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> None:
        n, cb, y, x, ci, kh, kw = sch.get_loops(block)
        rows, cols = pixel_tile(extent(sch, y), extent(sch, x), 1)
        y_o, y_i = tile(sch, y, rows)
        x_o, x_i = tile(sch, x, cols)
        sch.reorder(n, cb, y_o, x_o, kh, kw, y_i, x_i, ci)
        finish_reduction(
            sch,
            block,
            parallel=[n, cb, y_o],
            tile_loop=x_o,
            first_reduction=kh,
            vector=ci,
            unroll=[kh, kw, y_i, x_i],
        )


def chunk_blocks(
    sch: s_tir.Schedule,
    block: s_tir.schedule.SBlockRV,
    loops: dict[str, s_tir.schedule.LoopRV],
    inner: Sequence[s_tir.schedule.LoopRV],
) -> int:
    """Input-channel blocks a chunked tile reduces per pass over its row of tiles: CHANNEL_CHUNK
    channels; on targets of fewer accumulators than AVX-512's, as many as fill
    CHUNK_WEIGHT_BYTES with the tile's weights, if more. A 16-channel pass loads and stores a
    2 x 2 tile's sums for 64 multiply-adds each. On a 2-core AVX2 EPYC, ResNet50's 1x1 layers
    of 512-1024 inputs at 14 and 28 px ran 1.07-1.20x faster alone (7 px: 0.58-1.06x),
    ResNet50-224 1.05x and DenseNet161-224 1.04x as whole models (algorithms/README.md); 3x3
    layers (18 KiB a block) keep theirs. AVX-512's larger tiles and panels were measured with
    16 channels only."""
    ib, ii = loops["reduction"], inner[-1]
    blocks = CHANNEL_CHUNK // extent(sch, ii)
    if max_accumulators() < MAX_ACCUMULATORS:
        vectors = channel_vectors(*(extent(sch, loops[k]) for k in ("channels", "y", "x")))
        if not reduces_whole(sch, block, [ib, *inner], vectors):
            per_block = tile_weight_bytes(sch, block, inner, vectors)
            blocks = max(blocks, CHUNK_WEIGHT_BYTES // per_block)
    return largest_divisor(extent(sch, ib), max(1, blocks))


ALGORITHMS.register(SpatialPack.name)(SpatialPack)
