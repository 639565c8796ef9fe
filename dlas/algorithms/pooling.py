"""Strided 2-D pooling as two passes that vectorize: a column pass, then a strided row pass.

TOPI's pooling reads ``pad[.., y * s + ky, x * s + kx]``: vectorized by TVM along ``x``, a
stride-2 read becomes one scalar load and insert per lane (ResNet's 3x3/2 max-pool at 224 px
took 1.2 ms, more than any of its convolutions in int8). Here a column pass reduces the
``ky`` taps of every output row over the whole (padded) width, contiguous, and a row pass
reduces the ``kx`` taps at stride ``s``. Both loops are left to LLVM's loop vectorizer
(:data:`~dlas.algorithms.shapes.LLVM_VECTOR_KEY`), which turns the stride-``s`` reads into
wide loads and shuffles and the padding test into a masked load: 0.14 ms for that layer.

Max-pooling clamps a padded row to the nearest real one (the window always holds it, as
PyTorch requires padding <= kernel / 2); average pooling is taken here only without padding
or partial windows, where every window divides by the kernel's area.
"""

from __future__ import annotations

from collections.abc import Callable

from tvm import relax, te, tirx

from .legalize import default_legalize
from .shapes import LLVM_VECTOR_KEY

ATTRS = {LLVM_VECTOR_KEY: 1}


def _ints(values: object) -> tuple[int, ...]:
    return tuple(int(v) for v in values)  # type: ignore[union-attr]


def _pool(data: te.Tensor, call: relax.Call, reducer: str) -> te.Tensor:
    attrs = call.attrs
    (kh, kw), (sh, sw) = _ints(attrs.pool_size), _ints(attrs.strides)
    top, left = _ints(attrs.padding)[:2]
    n, c, height, width = _ints(data.shape)
    out_h, out_w = _ints(call.ty.shape)[2:]
    span = (out_w - 1) * sw + kw  # the padded columns the row pass reads
    r = te.reduce_axis((0, kh), "ky")
    if reducer == "max":
        low = te.min_value(data.dtype)

        def column(b, ch, y, u):
            row = tirx.max(tirx.min(y * sh + r - top, height - 1), 0)
            inside = tirx.all(u >= left, u < width + left)
            return te.max(tirx.if_then_else(inside, data[b, ch, row, u - left], low), axis=r)
    else:

        def column(b, ch, y, u):
            return te.sum(data[b, ch, y * sh + r, u], axis=r)

    columns = te.compute((n, c, out_h, span), column, name="pool_columns", attrs=ATTRS)
    s = te.reduce_axis((0, kw), "kx")
    combine = te.max if reducer == "max" else te.sum
    pooled = te.compute(
        (n, c, out_h, out_w),
        lambda b, ch, y, x: combine(columns[b, ch, y, x * sw + s], axis=s),
        name=f"pool_{reducer}",
        attrs=ATTRS,
    )
    if reducer == "max":
        return pooled
    area = tirx.const(kh * kw, data.dtype)
    return te.compute(pooled.shape, lambda *i: pooled(*i) / area, name="pool_avg")


def _eligible(call: relax.Call, reducer: str) -> bool:
    attrs = call.attrs
    if attrs.layout != "NCHW" or (attrs.out_layout or "NCHW") != "NCHW":
        return False
    if _ints(attrs.dilation) != (1, 1) or max(_ints(attrs.strides)) < 2:
        return False  # stride 1 reads contiguously: TOPI's pooling vectorizes as it is
    try:
        shape, out = _ints(call.args[0].ty.shape), _ints(call.ty.shape)
    except (TypeError, ValueError):
        return False  # dynamic shapes
    if reducer == "max":
        return str(call.ty.dtype).startswith(("float", "int", "uint"))
    (kh, kw), (sh, sw) = _ints(attrs.pool_size), _ints(attrs.strides)
    whole = (out[2] - 1) * sh + kh <= shape[2] and (out[3] - 1) * sw + kw <= shape[3]
    return not any(_ints(attrs.padding)) and whole and str(call.ty.dtype).startswith("float")


def _legalize(reducer: str) -> Callable[[relax.BlockBuilder, relax.Call], relax.Expr]:
    def legalize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        if not _eligible(call, reducer):
            return default_legalize(bb, call)
        return bb.call_te(
            lambda x: _pool(x, call, reducer), call.args[0], primfunc_name_hint=f"{reducer}_pool2d"
        )

    return legalize


def pooling_legalizers() -> dict[str, Callable]:
    """``LegalizeOps`` custom-map entries for strided NCHW max and average pooling."""
    return {"relax.nn.max_pool2d": _legalize("max"), "relax.nn.avg_pool2d": _legalize("avg")}
