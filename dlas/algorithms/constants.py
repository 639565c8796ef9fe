"""Constant folding in numpy, before legalization.

TVM's FoldConstant compiles one PrimFunc per constant subexpression (a decomposed batch norm
alone gives six); on ResNet18 that is ~140 LLVM builds and ~9 s of lowering. The shapes and
arithmetic that exported models put on their constants are few, so they are evaluated here
in numpy, and inference batch norms with constant statistics become one ``x * scale +
shift`` (instead of subtract, divide, multiply, add in every fused epilogue).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator


def value_of(expr: relax.Expr) -> np.ndarray | None:
    """The numpy value of a constant expression (a constant or a var bound to one)."""
    if isinstance(expr, tvm.ir.GenericConst):
        return expr.value.numpy()
    return None


def bound_expr(mutator: PyExprMutator, expr: relax.Expr) -> relax.Expr | None:
    """What a var ``mutator`` has seen bound is bound to (None if unseen); any other
    expression itself."""
    return mutator.lookup_binding(expr) if isinstance(expr, relax.Var) else expr


def bound_value(mutator: PyExprMutator, expr: relax.Expr) -> np.ndarray | None:
    """The numpy value of a constant, or of a var ``mutator`` has seen bound to one."""
    return value_of(bound_expr(mutator, expr))


def is_call_to(expr: relax.Expr | None, op_name: str) -> bool:
    """Whether ``expr`` calls the Relax operator ``op_name`` (e.g. "relax.multiply")."""
    return (
        isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == op_name
    )


def function_pass(name: str, make: type) -> type:
    """A module pass running the mutator class ``make`` over every Relax function."""

    @tvm.transform.module_pass(opt_level=0, name=name)
    class _Pass:
        def transform_module(
            self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext
        ) -> tvm.IRModule:
            mutator_ = make(mod)
            for gv, func in mod.functions_items():
                if isinstance(func, relax.Function):
                    mutator_.builder_.update_func(gv, mutator_.visit_expr(func))
            return mutator_.builder_.get()

    return _Pass


def _shape(call: relax.Call, *_: np.ndarray) -> tuple[int, ...]:
    return tuple(int(d) for d in call.ty.shape)


def _permute(call: relax.Call, x: np.ndarray) -> np.ndarray:
    axes = call.attrs.axes
    return np.transpose(x, None if axes is None else [int(a) for a in axes])


_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relax.sqrt": np.sqrt,
    "relax.rsqrt": lambda x: 1.0 / np.sqrt(x),
    "relax.negative": np.negative,
    "relax.exp": np.exp,
}
_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "relax.add": np.add,
    "relax.subtract": np.subtract,
    "relax.multiply": np.multiply,
    "relax.divide": np.divide,
    "relax.power": np.power,
}
_RESHAPES = {"relax.reshape", "relax.expand_dims", "relax.squeeze", "relax.broadcast_to"}


def _evaluate(call: relax.Call, args: list[np.ndarray]) -> np.ndarray | None:
    name = call.op.name
    if name in _UNARY:
        return _UNARY[name](args[0])
    if name in _BINARY:
        return _BINARY[name](args[0], args[1])
    if name in _RESHAPES:
        shape = _shape(call)
        x = args[0]
        return x.reshape(shape) if x.size == np.prod(shape) else np.broadcast_to(x, shape)
    if name == "relax.permute_dims":
        return _permute(call, args[0])
    if name == "relax.astype":
        return args[0].astype(str(call.attrs.dtype))
    if name == "relax.layout_transform" and call.attrs.pad_value is None:
        return call.attrs.index_map.map_tensor(tvm.runtime.tensor(args[0])).numpy()
    return None


@mutator
class _Folder(PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op):
            return call
        if call.op.name == "relax.nn.batch_norm":
            return self._batch_norm(call)
        tensors = [a for a in call.args if not isinstance(a, relax.ShapeExpr)]
        values = [bound_value(self, a) for a in tensors]
        if not values or any(v is None for v in values):
            return call
        result = _evaluate(call, values)
        if result is None:
            return call
        return relax.const(np.ascontiguousarray(result).astype(str(call.ty.dtype)))

    def _batch_norm(self, call: relax.Call) -> relax.Expr:
        x = call.args[0]
        gamma, beta, mean, var = (bound_value(self, a) for a in call.args[1:])
        if any(v is None for v in (gamma, beta, mean, var)) or call.attrs.training:
            return call
        scale = 1.0 / np.sqrt(var.astype(np.float64) + float(call.attrs.epsilon))
        if call.attrs.scale:
            scale = scale * gamma
        shift = -mean * scale
        if call.attrs.center:
            shift = shift + beta
        ndim = x.ty.ndim
        axis = int(call.attrs.axis) % ndim
        shape = [1] * ndim
        shape[axis] = -1
        dtype = str(x.ty.dtype)
        scaled = self.builder_.emit(
            relax.op.multiply(x, relax.const(scale.reshape(shape).astype(dtype)))
        )
        out = self.builder_.emit(
            relax.op.add(scaled, relax.const(shift.reshape(shape).astype(dtype)))
        )
        return relax.Tuple([out, call.args[3], call.args[4]])


# Batch norm and constant shape/arithmetic chains, folded with numpy.
FoldConstants = function_pass("DlasFoldConstants", _Folder)
