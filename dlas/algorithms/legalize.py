"""Legalization helpers: TVM's own lowering of an op, and the TE pieces the kernels share.

TVM's ``LegalizeOps`` hands every ``relax.nn.conv2d`` / ``relax.matmul`` call to the chosen
algorithm; whatever an algorithm does not implement goes back to TOPI through
:func:`default_legalize` (and the generic schedule handles it).
"""

from __future__ import annotations

from typing import Any

import tvm
from tvm import relax, te, tirx

from .shapes import STAGE_ATTRS, ConvSpec


def default_legalize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    """TVM's own legalization of ``call`` (TOPI compute); the generic schedule handles it."""
    legalize = tvm.ir.Op.get(call.op.name).get_attr("FLegalize")
    return legalize(bb, call)


def matmul_shapes(call: relax.Call) -> tuple[int, int, int] | None:
    """(M, K, N) of a 2-D x 2-D matmul with static shapes, else None."""
    a, b = call.args[0].ty, call.args[1].ty
    if a.ndim != 2 or b.ndim != 2:
        return None
    try:
        (m, k), (k2, n) = ((int(d) for d in s.shape) for s in (a, b))
    except (TypeError, ValueError):
        return None
    return (m, k, n) if k == k2 else None


def dense_row(m: int, k: int, n: int) -> dict[str, Any]:
    return {
        "op": "dense",
        "data_shape": [m, k],
        "weight_shape": [n, k],
        "strides": None,
        "padding": None,
        "groups": 1,
    }


def out_dtype(call: relax.Call) -> str:
    return str(call.ty.dtype)  # the out_dtype attribute, resolved


def padded_input(
    data: te.Tensor, spec: ConvSpec, height: int | None = None, width: int | None = None
) -> te.Tensor:
    """Zero-padded NCHW input, optionally wider/taller than the conv needs (tile tails)."""
    top, left, bottom, right = spec.padding
    h_total = max(spec.height + top + bottom, height or 0)
    w_total = max(spec.width + left + right, width or 0)
    if (h_total, w_total) == (spec.height, spec.width):
        return data
    zero = tirx.const(0, data.dtype)

    def value(n, c, h, w):
        inside = tirx.all(h >= top, h < spec.height + top, w >= left, w < spec.width + left)
        return tirx.if_then_else(inside, data[n, c, h - top, w - left], zero)

    return te.compute(
        (spec.batch, spec.in_channels, h_total, w_total), value, name="pad", attrs=STAGE_ATTRS
    )


def call_te(
    bb: relax.BlockBuilder,
    compute: Any,
    *tensors: relax.Expr,
    spec: ConvSpec,
    name: str | None = None,
) -> relax.Expr:
    """``bb.call_te`` with the ConvSpec bound by closure (call_te only converts tensors)."""
    return bb.call_te(lambda *ts: compute(*ts, spec), *tensors, primfunc_name_hint=name)
