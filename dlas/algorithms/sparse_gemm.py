"""Sparse GEMM: im2col to a [K, P] matrix, then a sparse (CSR weights) x dense product.

Each nonzero weight (oc, k) adds ``w * col[k, tile]`` to output channel oc's pixel tile: one
contiguous vector load of the im2col row per 16 pixels whatever the stride, at the price of
materializing the KH*KW-times larger matrix. Depthwise convs fall back to sparse_direct
(their rows have KH*KW entries: nothing for a GEMM to amortize), as gemm falls back to direct.
"""

from __future__ import annotations

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

from .base import Algorithm
from .registry import ALGORITHMS
from .shapes import ConvSpec
from .sparse import CSR, SparseAlgorithm, i64, row_tile, to_csr


def gemm_kernel(spec: ConvSpec, csr: CSR, name: str) -> tirx.PrimFunc:
    rows, cols = row_tile(spec.out_h, spec.out_w)
    (sh, sw), (dh, dw) = spec.strides, spec.dilation
    top, left, _, _ = spec.padding
    N, C, H, W, OC, OH, OW = i64(
        spec.batch, spec.in_channels, spec.height, spec.width, spec.out_channels, spec.out_h,
        spec.out_w,
    )  # fmt: skip
    G, K, P, R, CW, NNZ = i64(
        spec.groups, spec.reduction, spec.out_h * spec.out_w, rows, cols, max(csr.nnz, 1)
    )
    PT, PL, SH, SW, DH, DW = i64(top, left, sh, sw, dh, dw)
    KH, KW, KHW, ICG, OCG = i64(
        spec.kernel_h, spec.kernel_w, spec.kernel_h * spec.kernel_w, spec.in_per_group,
        spec.out_per_group,
    )  # fmt: skip
    TY, TX = i64(spec.out_h // rows, spec.out_w // cols)
    dtype, acc_t, wdtype = spec.dtype, spec.out_dtype, str(csr.data.dtype)
    attrs = {"dlas.algorithm": name, "dlas.op": "conv2d"}
    stage = {"dlas.stage": 1, "dlas.row": spec.out_w}

    @T.prim_func(private=True, s_tir=True)
    def sparse_gemm(
        x: T.Buffer((N, C, H, W), dtype),
        data: T.Buffer((NNZ,), wdtype),
        indices: T.Buffer((NNZ,), "int32"),
        indptr: T.Buffer((OC + 1,), "int32"),
        out: T.Buffer((N, OC, OH, OW), acc_t),
    ):
        T.func_attr({"op_pattern": 4, "tirx.noalias": True})
        col = T.sblock_alloc_buffer((N, G, K, P), dtype)
        for n, g, k, p in T.grid(N, G, K, P):
            with T.sblock("im2col"):
                vn, vg, vk, vp = T.axis.remap("SSSS", [n, g, k, p])
                T.sblock_attr(stage)
                col[vn, vg, vk, vp] = T.if_then_else(
                    vp // OW * SH + vk // KW % KH * DH - PT >= 0
                    and vp // OW * SH + vk // KW % KH * DH - PT < H
                    and vp % OW * SW + vk % KW * DW - PL >= 0
                    and vp % OW * SW + vk % KW * DW - PL < W,
                    x[
                        vn,
                        vg * ICG + vk // KHW,
                        vp // OW * SH + vk // KW % KH * DH - PT,
                        vp % OW * SW + vk % KW * DW - PL,
                    ],
                    T.cast(0, dtype),
                )
        for n, ty, oc, tx in T.grid(N, TY, OC, TX):
            with T.sblock("sparse_conv"):
                vn, vy, voc, vx = T.axis.remap("SSSS", [n, ty, oc, tx])
                T.reads(col[vn, 0:G, 0:K, 0:P], data[0:NNZ], indices[0:NNZ], indptr[voc : voc + 2])
                T.writes(out[vn, voc, vy * R : vy * R + R, vx * CW : vx * CW + CW])
                T.sblock_attr(attrs)
                acc = T.sblock_alloc_buffer((R, CW), acc_t, scope="local")
                for r in T.unroll(R):
                    for v in T.vectorized(CW):
                        acc[r, v] = T.cast(0, acc_t)
                g = voc // OCG
                for e in range(indptr[voc], indptr[voc + 1]):
                    k = T.cast(indices[e], "int64")
                    for r in T.unroll(R):
                        for v in T.vectorized(CW):
                            acc[r, v] = acc[r, v] + T.cast(data[e], acc_t) * T.cast(
                                col[vn, g, k, (vy * R + r) * OW + vx * CW + v], acc_t
                            )
                for r in T.unroll(R):
                    for v in T.vectorized(CW):
                        out[vn, voc, vy * R + r, vx * CW + v] = acc[r, v]

    return sparse_gemm


class SparseGemm(SparseAlgorithm):
    name = "sparse_gemm"
    dense_counterpart = "gemm"

    def select(self, spec: ConvSpec) -> tuple[Algorithm, str]:
        if spec.in_per_group == 1:
            fallback = ALGORITHMS.get("sparse_direct")()
            return fallback, "depthwise/one-channel groups: too short for GEMM; sparse_direct"
        return self, ""

    def kernel(self, spec: ConvSpec, weight: np.ndarray) -> tuple[tirx.PrimFunc, CSR]:
        csr = to_csr(weight.reshape(spec.out_channels, -1))
        return gemm_kernel(spec, csr, self.name), csr


ALGORITHMS.register(SparseGemm.name)(SparseGemm)
