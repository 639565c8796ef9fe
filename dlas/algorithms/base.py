"""The Algorithm interface and what every algorithm needs to know about a conv2d call.

An algorithm is a LegalizeOps hook: ``conv2d(bb, call)`` replaces one ``relax.nn.conv2d`` by
``call_tir`` of a TE compute of its own, and ``schedule(sch, block)`` schedules that compute's
main block after FuseOps/FuseTIR have glued the epilogue (bias, batch-norm, relu, residual
add) behind it. The main block carries ``dlas.algorithm`` / ``dlas.op`` annotations so the
scheduler can find it again inside a fused PrimFunc.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import tvm
from tvm import relax, s_tir, te

from . import dense
from .constants import value_of
from .legalize import call_te, default_legalize
from .registry import ALGORITHMS
from .shapes import ROW_COLUMNS, ConvSpec

if TYPE_CHECKING:
    from .lowering import LoweredModule


class Algorithm:
    """One way of computing conv2d. Subclasses: one module each, registered in ALGORITHMS.

    ``conv2d``/``dense`` are the LegalizeOps custom-map entries; every call appends one row
    to ``layers`` saying what actually ran. ``schedule`` schedules the block that
    ``emit_conv2d`` annotated with this algorithm's name.
    """

    name: ClassVar[str] = ""
    sparse: ClassVar[bool] = False
    # Input dtypes the kernels compute in; None: any (the TE compute is dtype-generic).
    dtypes: ClassVar[tuple[str, ...] | None] = None
    # Needs the weights' values at compile time (packing, CSR); else direct runs the layer.
    packs_weights: ClassVar[bool] = True
    # Has no kernel of its own: picks one of the other algorithms for each layer.
    composite: ClassVar[bool] = False
    # Changes the data layout of the whole graph (graph_passes): its kernels cannot run one
    # layer among other algorithms' NCHW ones (per_layer, auto).
    whole_graph: ClassVar[bool] = False

    def __init__(self) -> None:
        self.layers: list[dict[str, Any]] = []

    def algorithms(self) -> list[str]:
        """The algorithms whose kernels this option runs (before their own fallbacks)."""
        return [self.name]

    def required_algorithms(self) -> list[str]:
        """The algorithms that must each compute the run's dtypes (a composite that chooses
        among candidates per layer needs none of them to)."""
        return self.algorithms()

    def fresh(self) -> Algorithm:
        """The same options with an empty layer table."""
        new = copy.copy(self)
        new.layers = []
        return new

    # --- lowering ----------------------------------------------------------------------
    def graph_passes(self) -> list[tvm.transform.Pass]:
        """Relax passes this algorithm needs between constant folding and legalization
        (e.g. a data layout of its own)."""
        return []

    def fusion_passes(self) -> list[tvm.transform.Pass]:
        """Passes between op-pattern annotation and FuseOps (e.g. what may fuse)."""
        return []

    def choose_lowering(
        self, mod: tvm.IRModule, lowered: LoweredModule, target: tvm.target.Target, schedule: bool
    ) -> LoweredModule:
        """The lowering to use: ``lowered`` (this algorithm's own, of ``mod``), or another
        one this algorithm measured to be faster (auto against whole-graph layouts)."""
        return lowered

    # --- legalization ------------------------------------------------------------------
    def conv2d(self, bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        spec = ConvSpec.from_call(call)
        if spec is None:
            self.record({"op": "conv2d", "algorithm": "topi", "fallback": "not static NCHW/OIHW"})
            return default_legalize(bb, call)
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
        out, row = dense.legalize_matmul(bb, call)
        if row is not None:
            self.record(row)
        return out

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


def layer_kernels() -> list[str]:
    """The algorithms a composite may choose for one layer: a kernel of their own, on NCHW."""
    return [
        n
        for n in ALGORITHMS.names()
        if not (ALGORITHMS.get(n).composite or ALGORITHMS.get(n).whole_graph)
    ]


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
