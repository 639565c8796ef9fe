"""Shared machinery of the sparse algorithms: CSR weights, the sparse kernels' call, dense.

The weights of a pruned model are converted at lowering time (numpy) into CSR over the
[OC, IC/groups * KH * KW] weight matrix: ``data`` (the nonzeros), ``indices`` (their column,
i.e. the flattened (ic, kh, kw) position) and ``indptr`` (row starts). The kernels are
hand-written TIR (a CSR row has a data-dependent length, which TE cannot express): their
inner loop runs over one row's nonzeros only and is vectorized along output pixels, so work
scales with the number of nonzeros. Their outer loops are plain ``T.grid`` loops over a
block with affine bindings, so the scheduler parallelizes them and computes the fused
epilogue inside each output tile, as for the dense algorithms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from tvm import relax, s_tir, tirx
from tvm.script import tirx as T

from .base import Algorithm
from .constants import value_of
from .legalize import dense_row, matmul_shapes, out_dtype
from .schedules import annotated_blocks, attach_epilogue, extent
from .shapes import ALGORITHM_KEY, MACS_KEY, ConvSpec, largest_divisor

# Pixels of one output tile (accumulators in vector registers, 16 lanes each).
TILE_PIXELS = 128


@dataclass(frozen=True)
class CSR:
    data: np.ndarray  # [nnz] or [nnz, block]
    indices: np.ndarray  # int32 [nnz]
    indptr: np.ndarray  # int32 [rows + 1]

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def constants(self) -> list[relax.Expr]:
        """The three arrays as Relax constants; empty ones get a dummy entry (no 0-size buffers)."""
        data, indices = self.data, self.indices
        if len(indices) == 0:
            data = np.zeros((1, *data.shape[1:]), data.dtype)
            indices = np.zeros(1, np.int32)
        return [relax.const(data), relax.const(indices), relax.const(self.indptr)]


def to_csr(matrix: np.ndarray) -> CSR:
    """Row-wise CSR of a 2-D matrix, exact zeros dropped."""
    rows, cols = np.nonzero(matrix)
    indptr = np.zeros(matrix.shape[0] + 1, np.int32)
    np.cumsum(np.bincount(rows, minlength=matrix.shape[0]), out=indptr[1:])
    return CSR(
        np.ascontiguousarray(matrix[rows, cols]), cols.astype(np.int32), indptr.astype(np.int32)
    )


def to_block_csr(matrix: np.ndarray, block: int) -> CSR:
    """CSR over groups of ``block`` rows: a column is stored (as a ``block`` vector) if any of
    its ``block`` entries is nonzero. ``matrix`` rows must be a multiple of ``block``."""
    rows, cols = matrix.shape
    tiles = matrix.reshape(rows // block, block, cols).transpose(0, 2, 1)  # [row block, col, b]
    brow, bcol = np.nonzero(np.any(tiles != 0, axis=2))
    indptr = np.zeros(rows // block + 1, np.int32)
    np.cumsum(np.bincount(brow, minlength=rows // block), out=indptr[1:])
    return CSR(np.ascontiguousarray(tiles[brow, bcol]), bcol.astype(np.int32), indptr)


def sparsity(weight: np.ndarray) -> float:
    return float(np.mean(weight == 0)) if weight.size else 0.0


def i64(*values: int) -> list[tirx.IntImm]:
    """int64 immediates: buffer shapes must match the int64 shapes of TE-made PrimFuncs
    or FuseTIR refuses to map the buffers."""
    return [tirx.IntImm("int64", int(v)) for v in values]


def row_tile(out_h: int, out_w: int, pixels: int = TILE_PIXELS) -> tuple[int, int]:
    """(rows, columns) of one output tile: whole rows when they fit, else a row segment."""
    cols = out_w if out_w <= pixels else largest_divisor(out_w, pixels)
    rows = largest_divisor(out_h, max(1, pixels // cols))
    return rows, cols


def with_macs(func: tirx.PrimFunc, macs: int) -> tirx.PrimFunc:
    """``func`` with the multiply-adds its nonzeros do stamped on its algorithm block, for the
    per-layer profile (TIR's flop estimator cannot count a loop over a CSR row)."""
    sch = s_tir.Schedule(func)
    for block in annotated_blocks(sch, ALGORITHM_KEY):
        sch.annotate(block, MACS_KEY, macs)
    return sch.mod["main"]


class SparseAlgorithm(Algorithm):
    """Base of the CSR algorithms: ``kernel`` builds the PrimFunc for one conv."""

    sparse = True
    dense_counterpart: ClassVar[str] = ""

    def emit_conv2d(
        self,
        bb: relax.BlockBuilder,
        data: relax.Expr,
        weight: np.ndarray,
        spec: ConvSpec,
        row: dict[str, Any],
    ) -> relax.Expr:
        row["sparsity"] = sparsity(weight)
        func, arrays = self.kernel(spec, weight)
        pixels = spec.batch * spec.out_h * spec.out_w
        func = with_macs(func, int(np.count_nonzero(weight)) * pixels)
        gv = bb.add_func(func, f"{self.name}_conv2d")
        out = relax.TensorType(
            (spec.batch, spec.out_channels, spec.out_h, spec.out_w), spec.out_dtype
        )
        return relax.call_tir(gv, [data, *arrays.constants()], out)

    def kernel(self, spec: ConvSpec, weight: np.ndarray) -> tuple[tirx.PrimFunc, CSR]:
        raise NotImplementedError

    def dense(self, bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        shapes = matmul_shapes(call)
        weight = value_of(call.args[1])
        if shapes is None or weight is None:
            return super().dense(bb, call)
        m, k, n = shapes
        arrays = to_csr(np.ascontiguousarray(weight.T))
        dtype = out_dtype(call)
        types = (str(call.args[0].ty.dtype), str(weight.dtype), dtype)
        kernel = sparse_dense_kernel(m, k, n, arrays.nnz, types, self.name)
        kernel = with_macs(kernel, int(np.count_nonzero(weight)) * m)
        gv = bb.add_func(kernel, "sparse_dense")
        self.record(
            {
                **dense_row(m, k, n),
                "algorithm": "sparse_dense",
                "fallback": "",
                "sparsity": sparsity(weight),
            }
        )
        return relax.call_tir(
            gv, [call.args[0], *arrays.constants()], relax.TensorType((m, n), dtype)
        )

    def schedule(self, sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> None:
        """The kernel's inner loops are fixed; parallelize the tile loops, fuse the epilogue."""
        loops = sch.get_loops(block)
        fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
        if extent(sch, fused) > 1:
            sch.parallel(fused)
        attach_epilogue(sch, block, fused)


def sparse_dense_kernel(
    m: int, k: int, n: int, nnz: int, types: tuple[str, str, str], name: str
) -> tirx.PrimFunc:
    """y[i, j] = sum over row j of W^T's CSR of data * x[i, column]: one dot product per output."""
    M, K, N, NNZ = i64(m, k, n, max(nnz, 1))
    xdtype, wdtype, dtype = types
    attrs = {"dlas.algorithm": name, "dlas.op": "dense"}

    @T.prim_func(private=True, s_tir=True)
    def sparse_dense(
        x: T.Buffer((M, K), xdtype),
        data: T.Buffer((NNZ,), wdtype),
        indices: T.Buffer((NNZ,), "int32"),
        indptr: T.Buffer((N + 1,), "int32"),
        out: T.Buffer((M, N), dtype),
    ):
        T.func_attr({"op_pattern": 4, "tirx.noalias": True})
        for j in range(N):
            with T.sblock("sparse_dense"):
                vj = T.axis.spatial(N, j)
                T.reads(x[0:M, 0:K], data[0:NNZ], indices[0:NNZ], indptr[vj : vj + 2])
                T.writes(out[0:M, vj])
                T.sblock_attr(attrs)
                acc = T.sblock_alloc_buffer((M,), dtype, scope="local")
                for i in range(M):
                    acc[i] = T.cast(0, dtype)
                for e in range(indptr[vj], indptr[vj + 1]):
                    for i in range(M):
                        acc[i] = acc[i] + T.cast(data[e], dtype) * T.cast(
                            x[i, T.cast(indices[e], "int64")], dtype
                        )
                for i in range(M):
                    out[i, vj] = acc[i]

    return sparse_dense
