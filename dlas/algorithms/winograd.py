"""Winograd F(4x4, 3x3): 3x3 stride-1 convolutions with 4x fewer multiplications.

The output is computed in 4x4 tiles from 6x6 input tiles: V = B^T d B per tile and input
channel (the data is first packed to N[C/16]HW[16], so this transform is vectorized over 16
channels), then for each of the 36 tile positions a matrix product over the input channels,
M = U V, with U = G g G^T the filters transformed and packed once at compile time, and
finally Y = A^T M A per tile, vectorized over 16 output channels. The product has the same
register-tiled schedule as ``gemm``. Each transform is a pass over a tile's columns, then
one over its rows, with their positions unrolled, so that every position is a short sum with
constant coefficients. A task of the input transform pads its own row of tiles' input, and
the output transform runs the layer's epilogue on each tile it writes, while it is in L1.

``blocked`` also runs F(2x2, 3x3) (``tile=SMALL_TILE``: 4x4 input tiles, 16 positions) on
layers of 7x7 to 13x13 outputs, where 4x4 tiles waste too much padding and U, 4x the filters,
too much memory traffic.

Layers that are not 3x3, stride 1, undilated and ungrouped with at least 16 input channels
run ``direct``; so do non-float32 ones (the transforms are not exact in integers, and float16
loses too many digits in them).
"""

from __future__ import annotations

import functools
import math
import operator

import numpy as np
from tvm import s_tir, te, tirx

from .base import Algorithm, PackedAlgorithm
from .packing import pack_data
from .registry import ALGORITHMS
from .schedules import attach_epilogue, extent, schedule_channel_tile
from .shapes import LANES, STAGE_ATTRS, ConvSpec, main_attrs, pixel_tile, round_up
from .stages import compute_per_task

TILE = 4  # output pixels per tile side (input tiles: TILE + 2, for the 3x3 kernel)
SMALL_TILE = 2  # F(2x2, 3x3): blocked's Winograd on layers too small for 4x4 tiles
C_CHUNK = 64  # input channels reduced per pass over a row of tiles
# Independent accumulators a product tile needs to keep the FMA units busy (latency 4 x 2 pipes).
MIN_ACCUMULATORS = 8


@functools.cache
def matrices(tile: int = TILE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A [6x4], B [6x6], G [6x3]) for F(4x4, 3x3) (for F(2x2, 3x3): [4x2], [4x4], [4x3]),
    with TVM's interpolation points."""
    # TOPI's private helpers: the same points its own Winograd uses (0, ±1, ±1/2, ∞).
    from tvm.topi.nn.winograd_util import _cook_toom_convolution, _interpolation_points

    a, b, g = _cook_toom_convolution(_interpolation_points(tile + 2), tile, 3)
    return a.astype("float64"), b.astype("float64"), g.astype("float64")


def tiles(spec: ConvSpec, tile: int = TILE) -> tuple[int, int]:
    return -(-spec.out_h // tile), -(-spec.out_w // tile)


def packed_tile(packed: te.Tensor) -> int:
    """The output tile side of a U that :meth:`Winograd.pack_weight` packed."""
    return math.isqrt(int(packed.shape[0])) - 2


def product_vectors(rows: int, cols: int) -> int | None:
    """Output-channel vectors of the product's register tile for a position of ``rows`` x
    ``cols`` tiles: one where a one-vector tile covers all of them (4x4 tiles at 14-16 px),
    else the default (None).

    U, 4x the filters, comes from memory at every call (ResNet50's 14-px layers: 9.4 MB each),
    and the tile loads each weight vector once per pass: one vector over 16 tiles serves 16
    tiles per load where two vectors over 8 served 8 (figures: algorithms/README.md)."""
    tile_rows, tile_cols = pixel_tile(rows, cols, 1)
    covers_all = tile_rows * tile_cols == rows * cols
    return 1 if covers_all and rows * cols >= MIN_ACCUMULATORS else None


def line_transform(read, coefficients: np.ndarray, i, dtype: str):
    """``sum_r coefficients[r, i] * read(r)`` at position ``i``: a select over all positions of
    explicit sums with constant coefficients, zeros skipped. An unrolled position loop folds
    the select away, so each position computes only its own short sum."""
    expr = None
    for p in range(coefficients.shape[1]):
        terms = [
            read(r) * tirx.const(float(c), dtype)
            for r, c in enumerate(coefficients[:, p])
            if c != 0
        ]
        total = functools.reduce(operator.add, terms)
        expr = total if expr is None else tirx.Select(i == p, total, expr)
    return expr


class Winograd(PackedAlgorithm):
    name = "winograd"
    dtypes = ("float32",)

    def select(self, spec: ConvSpec) -> tuple[Algorithm, str]:
        shape = (spec.kernel_h, spec.kernel_w, *spec.strides, *spec.dilation, spec.groups)
        if shape != (3, 3, 1, 1, 1, 1, 1):
            return ALGORITHMS.get("direct")(), "not a 3x3 stride-1 ungrouped conv: direct"
        if spec.in_channels < LANES:
            return ALGORITHMS.get("direct")(), "fewer than 16 input channels: direct"
        if spec.dtype != "float32" or spec.out_dtype != "float32":
            return ALGORITHMS.get("direct")(), f"{spec.dtype} is not exact in Winograd: direct"
        return self, ""

    @staticmethod
    def pack_weight(weight: np.ndarray, spec: ConvSpec, tile: int = TILE) -> np.ndarray:
        """OIHW -> U = G g G^T as [36, OC/16, IC, 16] (F(2x2, 3x3): [16, ...]), zero channels
        past OC and IC."""
        _, _, g = matrices(tile)
        oc, ic = round_up(spec.out_channels, LANES), round_up(spec.in_channels, LANES)
        w = np.zeros((oc, ic, 3, 3))
        w[: spec.out_channels, : spec.in_channels] = weight
        alpha = tile + 2
        u = np.einsum("xr,kcrs,ys->xykc", g, w, g).reshape(alpha * alpha, oc // LANES, LANES, ic)
        return np.ascontiguousarray(u.transpose(0, 1, 3, 2)).astype(weight.dtype)

    def compute(self, data: te.Tensor, packed: te.Tensor, spec: ConvSpec) -> te.Tensor:
        th, tw = tiles(spec)
        out = output_tiles(pack_data(data, spec, LANES, th * TILE + 2, tw * TILE + 2), packed, spec)
        return te.compute(
            (spec.batch, spec.out_channels, spec.out_h, spec.out_w),
            lambda n, k, h, w: out[
                n, k // LANES, h // TILE, w // TILE, h % TILE, w % TILE, k % LANES
            ],
            name="unpack",
        )

    def schedule(self, sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> None:
        (transform_in,) = sch.get_producers(block)
        (columns_out,) = sch.get_consumers(block)
        (transform_out,) = sch.get_consumers(columns_out)
        n, e, ob, y, x, oi, c = sch.get_loops(block)
        # Each output tile needs all 36 products: the output transform cannot sit in a tile.
        schedule_channel_tile(
            sch,
            block,
            outer=[n, e],
            channels=ob,
            y=y,
            x=x,
            lanes=oi,
            reduction=c,
            chunk=min(extent(sch, c), C_CHUNK),
            attach=False,
            vectors=product_vectors(extent(sch, y), extent(sch, x)),
        )
        (columns_in,) = sch.get_producers(transform_in)
        # V is stored by tile position (the product reads a position's tiles in a row); its
        # transform still runs tile by tile.
        n, i, j, blocks, y, x, lanes = sch.get_loops(transform_in)
        sch.reorder(n, blocks, y, x, i, j, lanes)
        for stage, columns in ((transform_in, columns_in), (transform_out, columns_out)):
            n, blocks, y, x, i, j, lanes = sch.get_loops(stage)
            task = sch.fuse(n, blocks, y)
            sch.parallel(task)
            # A tile's column pass right before its row pass: 36 (24) vectors, in L1.
            sch.compute_at(columns, x)
            *_, ci, cj, clanes = sch.get_loops(columns)
            for loop in (i, j, ci, cj):
                sch.unroll(loop)
            sch.vectorize(lanes)
            sch.vectorize(clanes)
            if stage == transform_in:
                compute_per_task(sch, columns, task, lambda _: None)  # its padded input rows
            else:
                attach_epilogue(sch, stage, x)  # each tile's, while it is in L1


def output_tiles(d: te.Tensor, packed: te.Tensor, spec: ConvSpec) -> te.Tensor:
    """The output as [N, OC/16, tile rows, tile columns, 4, 4, 16] from ``d``, the input in
    16-channel blocks with its zero padding, at least (tile rows x 4 + 2) x (columns x 4 + 2)
    (tiles of 2 x 2 where ``packed`` is U of F(2x2, 3x3)).

    Both transforms run a column pass, then a row pass (B^T d, then (B^T d) B): 264 terms per
    6x6 input tile where the two-dimensional sums take 484, 180 per output tile for 324."""
    tile = packed_tile(packed)
    alpha = tile + 2
    a, b, _ = matrices(tile)
    th, tw = tiles(spec, tile)
    dtype = spec.out_dtype

    def columns_in(n, cb, y, x, i, s, ci):  # (B^T d)[i, s]
        read = lambda r: d[n, cb, y * tile + r, x * tile + s, ci].astype(dtype)  # noqa: E731
        return line_transform(read, b, i, dtype)

    shape = (spec.batch, d.shape[1], th, tw, alpha, alpha, LANES)
    half_in = te.compute(shape, columns_in, name="winograd_input_columns", attrs=STAGE_ATTRS)

    def rows_in(n, i, j, cb, y, x, ci):  # V[i, j] = ((B^T d) B)[i, j]
        return line_transform(lambda s: half_in[n, cb, y, x, i, s, ci], b, j, dtype)

    v_shape = (spec.batch, alpha, alpha, d.shape[1], th, tw, LANES)
    v = te.compute(v_shape, rows_in, name="winograd_input", attrs=STAGE_ATTRS)

    c = te.reduce_axis((0, round_up(spec.in_channels, LANES)), "c")
    m_shape = (spec.batch, alpha * alpha, packed.shape[1], th, tw, LANES)
    m = te.compute(
        m_shape,
        lambda n, e, ob, y, x, oi: te.sum(
            v[n, e // alpha, e % alpha, c // LANES, y, x, c % LANES] * packed[e, ob, c, oi],
            axis=c,
        ),
        name="conv",
        attrs=main_attrs(Winograd.name, "conv2d", spec.macs),
    )

    def columns_out(n, ob, y, x, p, s, oi):  # (A^T M)[p, s]
        return line_transform(lambda r: m[n, r * alpha + s, ob, y, x, oi], a, p, dtype)

    half_shape = (spec.batch, packed.shape[1], th, tw, tile, alpha, LANES)
    half_out = te.compute(
        half_shape, columns_out, name="winograd_output_columns", attrs=STAGE_ATTRS
    )

    def rows_out(n, ob, y, x, p, q, oi):  # Y[p, q] = ((A^T M) A)[p, q]
        return line_transform(lambda s: half_out[n, ob, y, x, p, s, oi], a, q, dtype)

    y_shape = (spec.batch, packed.shape[1], th, tw, tile, tile, LANES)
    return te.compute(y_shape, rows_out, name="winograd_output", attrs=STAGE_ATTRS)


ALGORITHMS.register(Winograd.name)(Winograd)
