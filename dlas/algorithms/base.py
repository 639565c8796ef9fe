"""The Algorithm interface and what every algorithm needs to know about a conv2d call.

An algorithm is a LegalizeOps hook: ``conv2d(bb, call)`` replaces one ``relax.nn.conv2d`` by
``call_tir`` of a TE compute of its own, and ``schedule(sch, block)`` schedules that compute's
main block after FuseOps/FuseTIR have glued the epilogue (bias, batch-norm, relu, residual
add) behind it. The main block carries ``dlas.algorithm`` / ``dlas.op`` annotations so the
scheduler can find it again inside a fused PrimFunc.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from tvm import relax, s_tir, te, tirx

from .constants import value_of
from .registry import ALGORITHMS

# fp32 lanes of an AVX-512 register: the width every vectorized inner loop is built around.
LANES = 16
# Vector accumulators kept live in one register tile (32 zmm registers minus loads/broadcasts).
MAX_ACCUMULATORS = 24
# Input channels reduced per pass over a row of output tiles. A tile that walked every input
# plane before moving on touches more pages than the TLB holds, and streams all its weights
# from L2; chunked, a row's partial sums wait in L1 and the chunk's weights stay there.
CHANNEL_CHUNK = 16

# Block annotations that mark what the scheduler must find in a fused PrimFunc.
ALGORITHM_KEY = "dlas.algorithm"
OP_KEY = "dlas.op"
# Producer stages (pad, im2col, data packing) that must stay separate loop nests.
STAGE_KEY = "dlas.stage"
# On a stage whose last axis flattens (rows, columns): the row length, so the generic
# schedule splits it back and vectorizes along contiguous columns.
ROW_KEY = "dlas.row"


def main_attrs(algorithm: str, op: str) -> dict[str, Any]:
    return {ALGORITHM_KEY: algorithm, OP_KEY: op}


STAGE_ATTRS = {STAGE_KEY: 1}

# Columns of LoweredModule.layers (the sparse algorithms add "sparsity").
ROW_COLUMNS = (
    "op", "data_shape", "weight_shape", "strides", "padding", "groups", "algorithm", "fallback",
)  # fmt: skip


@dataclass(frozen=True)
class ConvSpec:
    """Static description of one NCHW/OIHW conv2d call."""

    batch: int
    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel_h: int
    kernel_w: int
    strides: tuple[int, int]
    padding: tuple[int, int, int, int]  # top, left, bottom, right
    dilation: tuple[int, int]
    groups: int
    dtype: str
    out_dtype: str

    @classmethod
    def from_call(cls, call: relax.Call) -> ConvSpec | None:
        """None when the call is outside what the algorithms implement (layout, dynamic shape)."""
        attrs = call.attrs
        if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCHW", "OIHW", "NCHW"):
            return None
        data, weight = call.args[0].ty, call.args[1].ty
        try:
            n, c, h, w = (int(v) for v in data.shape)
            o, _, kh, kw = (int(v) for v in weight.shape)
        except (TypeError, ValueError):
            return None
        out_dtype = str(call.ty.dtype)  # out_dtype attr resolved (it may be unset)
        return cls(
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            tuple(int(s) for s in attrs.strides),
            tuple(int(p) for p in attrs.padding),
            tuple(int(d) for d in attrs.dilation),
            int(attrs.groups),
            str(data.dtype),
            out_dtype,
        )

    @property
    def in_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def out_per_group(self) -> int:
        return self.out_channels // self.groups

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.in_per_group == 1 and self.out_per_group == 1

    @property
    def out_h(self) -> int:
        span = (self.kernel_h - 1) * self.dilation[0] + 1
        return (self.height + self.padding[0] + self.padding[2] - span) // self.strides[0] + 1

    @property
    def out_w(self) -> int:
        span = (self.kernel_w - 1) * self.dilation[1] + 1
        return (self.width + self.padding[1] + self.padding[3] - span) // self.strides[1] + 1

    @property
    def reduction(self) -> int:
        """Length of one output's dot product."""
        return self.in_per_group * self.kernel_h * self.kernel_w

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_per_group, self.kernel_h, self.kernel_w)

    def row(self) -> dict[str, Any]:
        """The layer-table columns that describe the convolution itself."""
        return {
            "op": "conv2d",
            "data_shape": [self.batch, self.in_channels, self.height, self.width],
            "weight_shape": list(self.weight_shape),
            "strides": list(self.strides),
            "padding": list(self.padding),
            "groups": self.groups,
        }


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def largest_divisor(value: int, limit: int) -> int:
    """Largest divisor of ``value`` that is <= ``limit`` (at least 1)."""
    for d in range(max(1, min(value, limit)), 0, -1):
        if value % d == 0:
            return d
    return 1


def vector_width(extent: int) -> int:
    """Lanes to use for a dimension of this size: the smallest power of two covering it, <= 16."""
    return min(LANES, 1 << max(0, math.ceil(math.log2(max(extent, 1)))))


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


class Algorithm:
    """One way of computing conv2d. Subclasses: one module each, registered in ALGORITHMS.

    ``conv2d``/``dense`` are the LegalizeOps custom-map entries; every call appends one row
    to ``layers`` saying what actually ran. ``schedule`` schedules the block that
    ``emit_conv2d`` annotated with this algorithm's name.
    """

    name: ClassVar[str] = ""
    sparse: ClassVar[bool] = False
    # Needs the weights' values at compile time (packing, CSR); else direct runs the layer.
    packs_weights: ClassVar[bool] = True
    # Has no kernel of its own: picks one of the other algorithms for each layer.
    composite: ClassVar[bool] = False

    def __init__(self) -> None:
        self.layers: list[dict[str, Any]] = []

    def algorithms(self) -> list[str]:
        """The algorithms whose kernels this option runs (before their own fallbacks)."""
        return [self.name]

    def fresh(self) -> Algorithm:
        """The same options with an empty layer table."""
        new = copy.copy(self)
        new.layers = []
        return new

    # --- legalization ------------------------------------------------------------------
    def conv2d(self, bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        from . import lowering  # the default-legalization fallback lives there

        spec = ConvSpec.from_call(call)
        if spec is None:
            self.record({"op": "conv2d", "algorithm": "topi", "fallback": "not static NCHW/OIHW"})
            return lowering.default_legalize(bb, call)
        weight = value_of(call.args[1])
        impl, reason = self.select(spec)
        if weight is None and impl.packs_weights:
            impl, reason = ALGORITHMS.get("direct")(), "weights are not compile-time constants"
        row = {**spec.row(), "algorithm": impl.name, "fallback": reason}
        out = impl.emit_conv2d(
            bb, call.args[0], call.args[1] if weight is None else weight, spec, row
        )
        self.record(row)
        return out

    def dense(self, bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        from . import dense

        return dense.legalize_matmul(self, bb, call)

    def select(self, spec: ConvSpec) -> tuple[Algorithm, str]:
        """The algorithm that really runs this conv, and why if it is not this one."""
        return self, ""

    def emit_conv2d(
        self,
        bb: relax.BlockBuilder,
        data: relax.Expr,
        weight: np.ndarray | relax.Expr,
        spec: ConvSpec,
        row: dict[str, Any],
    ) -> relax.Expr:
        """Emit the conv; ``weight`` is the OIHW numpy value when the weights are constant.

        Extra layer-table columns (e.g. sparsity) go into ``row``.
        """
        raise NotImplementedError

    # --- scheduling --------------------------------------------------------------------
    def schedule(self, sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> None:
        raise NotImplementedError

    def record(self, row: dict[str, Any]) -> None:
        """Append a layer-table row; every row has every column (None where unknown)."""
        self.layers.append({"layer": len(self.layers), **dict.fromkeys(ROW_COLUMNS), **row})


class PackedAlgorithm(Algorithm):
    """A conv that is one TE compute over the data and the weights repacked at compile time
    (numpy): subclasses give ``pack_weight`` and ``compute``."""

    def emit_conv2d(
        self,
        bb: relax.BlockBuilder,
        data: relax.Expr,
        weight: np.ndarray,
        spec: ConvSpec,
        row: dict[str, Any],
    ) -> relax.Expr:
        packed = relax.const(self.pack_weight(weight, spec))
        return call_te(bb, self.compute, data, packed, spec=spec, name="conv2d")

    def pack_weight(self, weight: np.ndarray, spec: ConvSpec) -> np.ndarray:
        raise NotImplementedError

    def compute(self, data: te.Tensor, packed: te.Tensor, spec: ConvSpec) -> te.Tensor:
        raise NotImplementedError
