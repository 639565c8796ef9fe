"""Dense (nn.Linear) layers through the GEMM path, whatever the conv algorithm.

``from_exported_program`` turns nn.Linear into ``matmul(x, permute_dims(W))`` (+ ``add``);
constant folding leaves ``matmul(x, W^T)`` with a constant [K, N] right-hand side.
That matrix is packed at compile time into [N/16, K, 16] panels so the inner loop is one
16-wide FMA per (row, k) with a broadcast activation, and the output tile stays in
registers across the K loop.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tvm import relax, s_tir, te

from . import dot_product
from .constants import value_of
from .legalize import default_legalize, dense_row, matmul_shapes, out_dtype
from .schedules import extent, finish_reduction, tile
from .shapes import LANES, largest_divisor, main_attrs, round_up

# Accumulator vectors per tile: rows x 16-column panels.
MAX_PANELS = 4
MAX_ROWS = 4


def legalize_matmul(
    bb: relax.BlockBuilder, call: relax.Call
) -> tuple[relax.Expr, dict[str, Any] | None]:
    """The dense layer through the GEMM path, and its layer-table row (None: not a dense
    layer, e.g. a batched attention matmul, which TOPI computes and the generic schedule
    handles)."""
    shapes = matmul_shapes(call)
    if shapes is None:
        return default_legalize(bb, call), None
    row = dense_row(*shapes)
    weight = value_of(call.args[1])
    if weight is None:
        row = {**row, "algorithm": "topi", "fallback": "weights are not constants"}
        return default_legalize(bb, call), row
    row = {**row, "algorithm": "gemm", "fallback": ""}
    out = dot_product.try_dense(bb, call.args[0], weight, row)  # u8/s8 or bf16 data
    if out is None:
        out = emit_dense(bb, call.args[0], weight, out_dtype(call))
    return out, row


def emit_dense(
    bb: relax.BlockBuilder, data: relax.Expr, weight: np.ndarray, dtype: str
) -> relax.Expr:
    """``data @ weight`` for a constant [K, N] weight."""
    packed = relax.const(pack_panels(weight))
    columns = weight.shape[1]
    return bb.call_te(
        lambda a, b: gemm_compute(a, b, columns, dtype), data, packed, primfunc_name_hint="dense"
    )


def pack_panels(weight: np.ndarray) -> np.ndarray:
    """[K, N] -> [N/16, K, 16], zero columns past N."""
    k, n = weight.shape
    w = np.pad(weight, [(0, 0), (0, round_up(n, LANES) - n)])
    return np.ascontiguousarray(w.reshape(k, -1, LANES).transpose(1, 0, 2))


def gemm_compute(data: te.Tensor, packed: te.Tensor, columns: int, dtype: str) -> te.Tensor:
    m, k = (int(d) for d in data.shape)
    panels = int(packed.shape[0])
    rk = te.reduce_axis((0, k), "k")
    acc = te.compute(
        (m, panels, LANES),
        lambda i, nb, ni: te.sum(
            data[i, rk].astype(dtype) * packed[nb, rk, ni].astype(dtype), axis=rk
        ),
        name="dense",
        attrs=main_attrs("gemm", "dense", m * k * columns),
    )
    return te.compute((m, columns), lambda i, j: acc[i, j // LANES, j % LANES], name="crop")


def schedule_dense(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> None:
    i, nb, ni, k = sch.get_loops(block)
    rows = largest_divisor(extent(sch, i), MAX_ROWS)
    panels = largest_divisor(extent(sch, nb), MAX_PANELS)
    i_o, i_i = tile(sch, i, rows)
    nb_o, nb_i = tile(sch, nb, panels)
    sch.reorder(i_o, nb_o, k, i_i, nb_i, ni)
    finish_reduction(
        sch,
        block,
        parallel=[i_o, nb_o],
        tile_loop=nb_o,
        first_reduction=k,
        vector=ni,
        unroll=[i_i, nb_i],
    )
