"""Requantization chains folded into one multiply-add, round and clip per output.

After int8 quantization (dlas.compression.quantize) and batch-norm folding, an int8 layer's
output reaches the next layer's 8-bit input through

    astype(f32) * (s_x s_w) * bn_scale + bn_shift  [+ residual]  clip(activation)
    * 1/s_y  round  clip(qmin, qmax)  astype(u8 | s8)

ten elementwise ops that FuseOps puts in the conv's epilogue, where on narrow layers they
cost more than the conv itself (MobileNetV2 at 32 px: a 24 -> 144 1x1 layer spent about 60%
of its samples in them). Their affine part is a compile-time constant per channel, so it is
folded here into one ``astype(f32) * M + B`` per integer input (the residual is a second
term), and the activation's clip moves past the rounding, merged with the quantizer's:
for k > 0, round(clip(v, lo, hi) * k) = clip(round(v * k), round(lo * k), round(hi * k)),
round and a positive scaling being monotonic. What changes is float rounding: the folded
products differ from the chained ones by an ulp, so an output whose scaled value sits on a
.5 boundary can move by one quantization step. On x86 the round, clip and cast are one
elementwise kernel (:func:`_round_to`) that converts with ``cvtps2dq``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax, te, tirx
from tvm.relax.expr_functor import PyExprMutator, mutator

from .constants import value_of
from .shapes import has_feature

_INTEGER_OUT = ("uint8", "int8")


@dataclass
class _Affine:
    """sum_i float(leaf_i) * scale_i + bias, with numpy scales broadcastable to the output."""

    terms: list[tuple[relax.Expr, np.ndarray]] = field(default_factory=list)
    bias: np.ndarray = field(default_factory=lambda: np.zeros((), np.float64))
    folded: int = 0  # ops absorbed into the constants

    def scaled(self, c: np.ndarray) -> _Affine:
        terms = [(leaf, s * c) for leaf, s in self.terms]
        return _Affine(terms, self.bias * c, self.folded + 1)

    def plus(self, other: _Affine) -> _Affine:
        folded = self.folded + other.folded + 1
        return _Affine(self.terms + other.terms, self.bias + other.bias, folded)


def _scalar_of(expr: relax.Expr) -> float:
    """A clip bound (a float immediate)."""
    return float(expr.value)


@mutator
class _Folder(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, values: dict, uses: dict) -> None:
        super().__init__(mod)
        self.values, self.uses = values, uses

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        # Only dataflow vars: a function output must stay bound to a non-dataflow var.
        dataflow = isinstance(binding.var, relax.DataflowVar)
        folded = self._fold(binding.value) if dataflow else None
        if folded is None:
            super().visit_var_binding_(binding)
            return
        self.set_var_remap(binding.var, folded)

    def _bound(self, expr: relax.Expr, op: str | None = None) -> relax.Call | None:
        """The call a single-use var is bound to (of ``op``, if given), else None."""
        if not isinstance(expr, relax.Var) or self.uses.get(expr, 0) != 1:
            return None
        call = self.values.get(expr)
        if not isinstance(call, relax.Call) or not isinstance(call.op, tvm.ir.Op):
            return None
        return call if op is None or call.op.name == op else None

    def _fold(self, value: relax.Expr) -> relax.Expr | None:
        """``value`` = astype(clip(round(v * k), qmin, qmax), int) rebuilt from its integer
        inputs, or None where it is not such a chain or nothing folds."""
        if not (
            isinstance(value, relax.Call)
            and isinstance(value.op, tvm.ir.Op)
            and value.op.name == "relax.astype"
            and str(value.attrs.dtype) in _INTEGER_OUT
        ):
            return None
        clip = self._bound(value.args[0], "relax.clip")
        rounded = self._bound(clip.args[0], "relax.round") if clip is not None else None
        if rounded is None:
            return None
        qmin, qmax = _scalar_of(clip.args[1]), _scalar_of(clip.args[2])
        node, k = rounded.args[0], np.float32(1)
        while (call := self._bound(node, "relax.multiply")) is not None:
            c = value_of(call.args[1])
            if c is None or c.size != 1 or float(c) <= 0:
                break
            node, k = call.args[0], np.float32(k * np.float32(c.reshape(())))
        low, high = -np.inf, np.inf
        if (act := self._bound(node, "relax.clip")) is not None:
            low, high, node = _scalar_of(act.args[1]), _scalar_of(act.args[2]), act.args[0]
        elif (act := self._bound(node, "relax.nn.relu")) is not None:
            low, node = 0.0, act.args[0]
        affine = self._affine(node)
        if affine.folded + (k != 1) + (act is not None) < 2:
            return None
        affine = affine.scaled(k)
        with np.errstate(over="ignore"):
            qmin = max(qmin, float(np.rint(np.float32(low) * k)))
            qmax = min(qmax, float(np.rint(np.float32(high) * k)))
        return self._emit(affine, qmin, qmax, str(value.attrs.dtype))

    def _affine(self, expr: relax.Expr) -> _Affine:
        """``expr`` as an affine function of the integer (or unfoldable float) tensors it
        is computed from, through single-use multiplies and adds by constants."""
        call = self._bound(expr)
        if call is not None and call.op.name in ("relax.multiply", "relax.add"):
            a, b = call.args
            ca, cb = value_of(a), value_of(b)
            if call.op.name == "relax.multiply" and (ca is None) != (cb is None):
                return self._affine(b if ca is not None else a).scaled(ca if cb is None else cb)
            if call.op.name == "relax.add" and (ca is None) != (cb is None):
                inner = self._affine(b if ca is not None else a)
                shift = ca if cb is None else cb
                return _Affine(inner.terms, inner.bias + shift, inner.folded + 1)
            if call.op.name == "relax.add" and ca is None and cb is None:
                return self._affine(a).plus(self._affine(b))
        if call is not None and call.op.name == "relax.astype":
            source = call.args[0]
            if "int" in str(source.ty.dtype):
                return _Affine([(source, np.ones((), np.float64))])
        return _Affine([(expr, np.ones((), np.float64))])

    def _emit(self, affine: _Affine, qmin: float, qmax: float, dtype: str) -> relax.Expr:
        op, bb = relax.op, self.builder_
        total = None
        for leaf, scale in affine.terms:
            x = self.visit_expr(leaf)
            if "int" in str(x.ty.dtype):
                x = bb.emit(op.astype(x, "float32"))
            if not np.all(scale == 1):
                x = bb.emit(op.multiply(x, relax.const(scale.astype(np.float32))))
            total = x if total is None else bb.emit(op.add(total, x))
        if np.any(affine.bias != 0):
            total = bb.emit(op.add(total, relax.const(affine.bias.astype(np.float32))))
        if has_feature("sse2", tvm.target.Target.current(allow_none=True)):
            return bb.emit_te(_round_to, total, qmin, qmax, dtype, primfunc_name_hint="requantize")
        clipped = bb.emit(op.clip(bb.emit(op.round(total)), qmin, qmax))
        return bb.emit(op.astype(clipped, dtype))


def _round_to(x: te.Tensor, qmin: float, qmax: float, dtype: str) -> te.Tensor:
    """On x86: clip, then round to nearest even and convert in one instruction (``llvm.lrint``,
    ``cvtps2dq``; as round, clip and cast it took ``vrndscaleps``, 2 uops, and ``vcvttps2dq``).
    The bounds are integers, so clipping first rounds the same; side by side, bit-identical
    outputs 1.03-1.05x faster on MobileNetV2-32 int8 (direct), 1.17x on ResNet18-224 (gemm).
    """

    def value(*i):
        clipped = tirx.max(
            tirx.min(x(*i), tirx.const(qmax, "float32")), tirx.const(qmin, "float32")
        )
        return tirx.call_llvm_pure_intrin("int32", "llvm.lrint", clipped).astype(dtype)

    return te.compute(x.shape, value, name="requantize")


def _use_counts(func: relax.Function) -> dict:
    uses: dict = {}
    for block in func.body.blocks:
        for binding in block.bindings:
            for var in relax.analysis.free_vars(binding.value):
                uses[var] = uses.get(var, 0) + 1
    for var in relax.analysis.free_vars(func.body.body):
        uses[var] = uses.get(var, 0) + 1
    return uses


@tvm.transform.module_pass(opt_level=0, name="DlasFoldRequantize")
class FoldRequantize:
    """Fold every int8 layer's rescale, bias, activation and requantization (see module)."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        for gv, func in list(mod.functions_items()):
            if not isinstance(func, relax.Function):
                continue
            folder = _Folder(mod, relax.analysis.get_var2val(func), _use_counts(func))
            folder.builder_.update_func(gv, folder.visit_expr(func))
            mod = folder.builder_.get()
        return relax.transform.DeadCodeElimination()(mod)
