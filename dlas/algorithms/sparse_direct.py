"""Sparse direct: the sliding window over NCHW data, reading weights from CSR.

For one output channel and a tile of output rows, each nonzero weight (ic, kh, kw) adds
``w * input[ic, rows*s + kh, cols*s + kw]`` to the tile: one broadcast and one vector FMA
per 16 output pixels, no work at all for pruned weights. The tile spans whole output rows
(padded to whole vectors, as in direct) so narrow late layers still fill the vectors.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

from .direct import padded_width
from .registry import ALGORITHMS
from .shapes import ConvSpec, largest_divisor
from .sparse import CSR, TILE_PIXELS, SparseAlgorithm, i64, to_csr


def width_tile(spec: ConvSpec) -> tuple[int, int, int]:
    """(computed width, tile columns, stored columns): whole padded rows while they fit a
    tile, else an exact divisor of the width."""
    _, padded = padded_width(spec)
    if padded <= TILE_PIXELS:
        return padded, padded, spec.out_w
    cols = largest_divisor(spec.out_w, TILE_PIXELS)
    return spec.out_w, cols, cols


def padded_plane(spec: ConvSpec) -> tuple[int, int]:
    """Height and width of the padded input: the tiles' rounded-up width reads past W."""
    width, _, _ = width_tile(spec)
    (sh, sw), (dh, dw) = spec.strides, spec.dilation
    top, left, bottom, right = spec.padding
    hp = max(spec.height + top + bottom, (spec.out_h - 1) * sh + (spec.kernel_h - 1) * dh + 1)
    wp = max(spec.width + left + right, (width - 1) * sw + (spec.kernel_w - 1) * dw + 1)
    return hp, wp


def direct_kernel(spec: ConvSpec, csr: CSR, name: str) -> tirx.PrimFunc:
    """``csr.indices`` hold each nonzero's offset in the flat padded input of its group."""
    width, cols, store = width_tile(spec)
    rows = largest_divisor(spec.out_h, max(1, TILE_PIXELS // cols))
    sh, sw = spec.strides
    top, left, _, _ = spec.padding
    hp, wp = padded_plane(spec)
    N, C, H, W, OC, OH, OW = i64(
        spec.batch, spec.in_channels, spec.height, spec.width, spec.out_channels, spec.out_h,
        spec.out_w,
    )  # fmt: skip
    HP, WP, R, CW, SW, NNZ = i64(hp, wp, rows, cols, store, max(csr.nnz, 1))
    PT, PL, SH, SW_ = i64(top, left, sh, sw)
    ICG, OCG = i64(spec.in_per_group, spec.out_per_group)
    TY, TX = i64(spec.out_h // rows, width // cols)
    dtype, acc_t, wdtype = spec.dtype, spec.out_dtype, str(csr.data.dtype)
    crop = store != cols
    attrs = {"dlas.algorithm": name, "dlas.op": "conv2d"}

    @T.prim_func(private=True, s_tir=True)
    def sparse_direct(
        x: T.Buffer((N, C, H, W), dtype),
        data: T.Buffer((NNZ,), wdtype),
        offsets: T.Buffer((NNZ,), "int32"),
        indptr: T.Buffer((OC + 1,), "int32"),
        out: T.Buffer((N, OC, OH, OW), acc_t),
    ):
        T.func_attr({"op_pattern": 4, "tirx.noalias": True})
        # Flat, so that a nonzero's precomputed offset addresses its input row directly.
        xp = T.sblock_alloc_buffer((N * C * HP * WP,), dtype)
        for n, c, h, w in T.grid(N, C, HP, WP):
            with T.sblock("pad"):
                vn, vc, vh, vw = T.axis.remap("SSSS", [n, c, h, w])
                T.sblock_attr({"dlas.stage": 1})
                xp[((vn * C + vc) * HP + vh) * WP + vw] = T.if_then_else(
                    vh >= PT and vh < H + PT and vw >= PL and vw < W + PL,
                    x[vn, vc, vh - PT, vw - PL],
                    T.cast(0, dtype),
                )
        for n, ty, oc, tx in T.grid(N, TY, OC, TX):
            with T.sblock("sparse_conv"):
                vn, vy, voc, vx = T.axis.remap("SSSS", [n, ty, oc, tx])
                T.reads(xp[0 : N * C * HP * WP], data[0:NNZ], offsets[0:NNZ], indptr[voc : voc + 2])
                T.writes(out[vn, voc, vy * R : vy * R + R, vx * CW : vx * CW + SW])
                T.sblock_attr(attrs)
                acc = T.sblock_alloc_buffer((R, CW), acc_t, scope="local")
                for r in T.unroll(R):
                    for v in T.vectorized(CW):
                        acc[r, v] = T.cast(0, acc_t)
                base = (vn * C + voc // OCG * ICG) * HP * WP + vy * R * SH * WP + vx * CW * SW_
                for e in range(indptr[voc], indptr[voc + 1]):
                    row = base + T.cast(offsets[e], "int64")
                    for r in T.unroll(R):
                        for v in T.vectorized(CW):
                            acc[r, v] = acc[r, v] + T.cast(data[e], acc_t) * T.cast(
                                xp[row + r * SH * WP + v * SW_], acc_t
                            )
                for r in T.unroll(R):
                    if crop:
                        for v in range(SW):
                            out[vn, voc, vy * R + r, vx * CW + v] = acc[r, v]
                    else:
                        for v in T.vectorized(SW):
                            out[vn, voc, vy * R + r, vx * CW + v] = acc[r, v]

    return sparse_direct


class SparseDirect(SparseAlgorithm):
    name = "sparse_direct"
    dense_counterpart = "direct"

    def kernel(self, spec: ConvSpec, weight: np.ndarray) -> tuple[tirx.PrimFunc, CSR]:
        csr = to_csr(weight.reshape(spec.out_channels, -1))
        hp, wp = padded_plane(spec)
        ic, kh, kw = np.unravel_index(
            csr.indices, (spec.in_per_group, spec.kernel_h, spec.kernel_w)
        )
        dh, dw = spec.dilation
        offsets = (ic * hp + kh * dh) * wp + kw * dw
        csr = replace(csr, indices=offsets.astype(np.int32))
        return direct_kernel(spec, csr, self.name), csr


ALGORITHMS.register(SparseDirect.name)(SparseDirect)
