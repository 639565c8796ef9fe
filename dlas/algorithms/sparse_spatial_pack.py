"""Sparse spatial pack: NCHW[c] data, weights in block CSR with 16-output-channel blocks.

The NCHWc kernel's inner loop is a 16-wide FMA over output channels, so its sparse form
stores, per block of 16 output channels, only the (ic, kh, kw) columns where some of the 16
weights is nonzero (a [16]-vector per stored column) and skips the rest. Unstructured
pruning leaves few all-zero 16-channel columns (0.9**16 = 19% at 90% sparsity), so this
algorithm gains little there; channel-structured sparsity is where it skips work.
Depthwise convs fall back to sparse_direct.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

from .base import Algorithm
from .registry import ALGORITHMS
from .shapes import LANES, ConvSpec, largest_divisor, pixel_tile
from .sparse import CSR, SparseAlgorithm, i64, to_block_csr


def blocks(spec: ConvSpec) -> tuple[int, int]:
    """(input channel block of the packed data, output channel block of the weights)."""
    return largest_divisor(spec.in_per_group, LANES), largest_divisor(spec.out_per_group, LANES)


def spatial_pack_kernel(spec: ConvSpec, csr: CSR, name: str) -> tirx.PrimFunc:
    """``csr.indices`` hold each stored column's offset in the flat packed input of its group."""
    cbi, cbo = blocks(spec)
    rows, cols = pixel_tile(spec.out_h, spec.out_w, 1)
    sh, sw = spec.strides
    top, left, bottom, right = spec.padding
    N, C, H, W, OC, OH, OW = i64(
        spec.batch, spec.in_channels, spec.height, spec.width, spec.out_channels, spec.out_h,
        spec.out_w,
    )  # fmt: skip
    HP, WP, CB, CBI, CBO = i64(
        spec.height + top + bottom, spec.width + left + right, spec.in_channels // cbi, cbi, cbo
    )
    R, CW, NNZ, OB = i64(rows, cols, max(csr.nnz, 1), spec.out_channels // cbo)
    PT, PL, SH, SW = i64(top, left, sh, sw)
    ICG, OCG = i64(spec.in_per_group, spec.out_per_group)
    TY, TX = i64(spec.out_h // rows, spec.out_w // cols)
    dtype, acc_t, wdtype = spec.dtype, spec.out_dtype, str(csr.data.dtype)
    attrs = {"dlas.algorithm": name, "dlas.op": "conv2d"}

    @T.prim_func(private=True, s_tir=True)
    def sparse_spatial_pack(
        x: T.Buffer((N, C, H, W), dtype),
        data: T.Buffer((NNZ, CBO), wdtype),
        offsets: T.Buffer((NNZ,), "int32"),
        indptr: T.Buffer((OB + 1,), "int32"),
        out: T.Buffer((N, OC, OH, OW), acc_t),
    ):
        T.func_attr({"op_pattern": 4, "tirx.noalias": True})
        # Flat, so that a stored column's precomputed offset addresses its pixels directly.
        d = T.sblock_alloc_buffer((N * CB * HP * WP * CBI,), dtype)
        for n, cb, h, w, ci in T.grid(N, CB, HP, WP, CBI):
            with T.sblock("data_pack"):
                vn, vcb, vh, vw, vci = T.axis.remap("SSSSS", [n, cb, h, w, ci])
                T.sblock_attr({"dlas.stage": 1})
                d[(((vn * CB + vcb) * HP + vh) * WP + vw) * CBI + vci] = T.if_then_else(
                    vh >= PT and vh < H + PT and vw >= PL and vw < W + PL,
                    x[vn, vcb * CBI + vci, vh - PT, vw - PL],
                    T.cast(0, dtype),
                )
        for n, ob, ty, tx in T.grid(N, OB, TY, TX):
            with T.sblock("sparse_conv"):
                vn, vob, vy, vx = T.axis.remap("SSSS", [n, ob, ty, tx])
                T.reads(
                    d[0 : N * CB * HP * WP * CBI],
                    data[0:NNZ, 0:CBO],
                    offsets[0:NNZ],
                    indptr[vob : vob + 2],
                )
                T.writes(
                    out[
                        vn, vob * CBO : vob * CBO + CBO, vy * R : vy * R + R, vx * CW : vx * CW + CW
                    ]
                )
                T.sblock_attr(attrs)
                acc = T.sblock_alloc_buffer((R, CW, CBO), acc_t, scope="local")
                for r, c in T.grid(R, CW):
                    for o in T.vectorized(CBO):
                        acc[r, c, o] = T.cast(0, acc_t)
                group = vob * CBO // OCG * (ICG // CBI)
                base = ((vn * CB + group) * HP * WP + vy * R * SH * WP + vx * CW * SW) * CBI
                for e in range(indptr[vob], indptr[vob + 1]):
                    pixel = base + T.cast(offsets[e], "int64")
                    for r in T.unroll(R):
                        for c in T.unroll(CW):
                            for o in T.vectorized(CBO):
                                acc[r, c, o] = acc[r, c, o] + T.cast(
                                    d[pixel + (r * SH * WP + c * SW) * CBI], acc_t
                                ) * T.cast(data[e, o], acc_t)
                for o, r in T.grid(CBO, R):
                    for c in T.vectorized(CW):
                        out[vn, vob * CBO + o, vy * R + r, vx * CW + c] = acc[r, c, o]

    return sparse_spatial_pack


class SparseSpatialPack(SparseAlgorithm):
    name = "sparse_spatial_pack"
    dense_counterpart = "spatial_pack"

    def select(self, spec: ConvSpec) -> tuple[Algorithm, str]:
        if spec.in_per_group == 1:
            fallback = ALGORITHMS.get("sparse_direct")()
            return fallback, "depthwise/one-channel groups have no NCHWc block form; sparse_direct"
        return self, ""

    def kernel(self, spec: ConvSpec, weight: np.ndarray) -> tuple[tirx.PrimFunc, CSR]:
        cbi, cbo = blocks(spec)
        csr = to_block_csr(weight.reshape(spec.out_channels, -1), cbo)
        ic, kh, kw = np.unravel_index(
            csr.indices, (spec.in_per_group, spec.kernel_h, spec.kernel_w)
        )
        hp = spec.height + spec.padding[0] + spec.padding[2]
        wp = spec.width + spec.padding[1] + spec.padding[3]
        dh, dw = spec.dilation
        offsets = (((ic // cbi) * hp + kh * dh) * wp + kw * dw) * cbi + ic % cbi
        csr = replace(csr, indices=offsets.astype(np.int32))
        return spatial_pack_kernel(spec, csr, self.name), csr


ALGORITHMS.register(SparseSpatialPack.name)(SparseSpatialPack)
