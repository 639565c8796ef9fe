"""Static int8 quantization of a Relax module's conv2d and matmul layers.

Each float layer ``y = op(x, W)`` with a constant weight and a calibrated input range becomes

    xq  = clip(round(x / s_x), qmin, qmax).astype(uint8 | int8)   per-tensor scale s_x
    yq  = op(xq, Wq, out_dtype="int32")                           Wq = round(W / s_w[c]) int8
    y   = yq.astype(float32) * (s_x * s_w[c])                     per-output-channel rescale

Zero points are 0 (symmetric), so padding with zeros stays exact and the int32 sums need no
correction terms. Inputs known to be non-negative (after ReLU) use uint8 with s_x = max/255,
others int8 with s_x = max|x|/127: u8 x s8 is the operand pair of x86 VNNI (vpdpbusd).
Weights use [-127, 127] so that negating a weight never overflows.

Activations stay 8-bit between layers: a tensor that feeds quantized layers is quantized once,
right where it is produced (one scale per tensor), and its other readers (a residual add, a
pooling) read ``xq.astype(float32) * s_x``. So the float value has a single reader, the
quantizer, which FuseOps fuses into the producing conv's epilogue together with the rescale,
bias, BatchNorm, ReLU/ReLU6 and residual add: the conv kernel writes u8/s8, and the float
arithmetic of the requantization lives in registers only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

QUANTIZED_OPS = ("relax.nn.conv2d", "relax.matmul")


def op_bindings(func: Any, ops: tuple[str, ...]) -> Iterator[tuple[Any, Any, dict]]:
    """Each binding of ``func`` that calls one of ``ops`` (in program order), with the map of
    every value bound up to it (where a call's constant operands are looked up)."""
    import tvm
    from tvm import relax

    values: dict = {}
    for block in func.body.blocks:
        for binding in block.bindings:
            values[binding.var] = call = binding.value
            if (
                isinstance(call, relax.Call)
                and isinstance(call.op, tvm.ir.Op)
                and call.op.name in ops
            ):
                yield binding, call, values


def fingerprint(weight: np.ndarray) -> str:
    """Identifies a float32 weight tensor across PyTorch and Relax (same bytes, same shape)."""
    w = np.ascontiguousarray(weight, dtype=np.float32)
    return f"{w.shape}:{hashlib.sha1(w.tobytes()).hexdigest()}"


@dataclass(frozen=True)
class Range:
    """Observed input range of one layer over the calibration data."""

    low: float
    high: float

    def qparams(self) -> tuple[str, float, int, int]:
        """(dtype, scale, qmin, qmax) of the symmetric activation quantizer."""
        if self.low >= 0:
            return "uint8", max(self.high, 1e-8) / 255, 0, 255
        return "int8", max(abs(self.low), abs(self.high), 1e-8) / 127, -127, 127


def quantize_weight(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel symmetric int8 weights along ``axis`` (the output channels) and scales."""
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    scale = np.abs(w).max(axis=reduce, keepdims=True) / 127
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    return q, scale.reshape(-1)


@dataclass
class _Decision:
    """What happens to one conv2d/matmul binding."""

    row: int
    weight: np.ndarray | None = None
    transposed: bool = False
    reason: str | None = None
    range: Range | None = None


ROW_COLUMNS = ("layer", "op", "weight_shape", "status", "input_dtype", "input_scale", "reason")


def quantize_module(mod: Any, ranges: dict[str, list[Range]]) -> tuple[Any, dict[str, list]]:
    """Rewrite every quantizable conv2d/matmul of ``mod``; the others stay float and get the
    reason in the returned table (one row per layer)."""
    import tvm
    from tvm import relax

    rows: dict[str, list] = {c: [] for c in ROW_COLUMNS}
    remaining = {key: list(found) for key, found in ranges.items()}
    decisions: dict[Any, _Decision] = {}
    feeds: dict[Any, Range] = {}  # tensor (original var) -> merged range of its int8 readers

    def weight_of(call: Any, values: dict) -> tuple[np.ndarray | None, bool, str | None]:
        """The float32 weight as PyTorch stores it (conv OIHW, linear [out, in]), whether the
        op sees it transposed, and why it cannot be quantized (or None)."""
        data, arg = call.args[0], call.args[1]
        if str(data.ty.dtype) != "float32":
            return None, False, f"input is {data.ty.dtype}, not float32"
        if call.op.name == "relax.nn.conv2d":
            attrs = call.attrs
            if (attrs.data_layout, attrs.kernel_layout) != ("NCHW", "OIHW"):
                return None, False, f"layout {attrs.data_layout}/{attrs.kernel_layout}"
            if isinstance(arg, tvm.ir.GenericConst):
                return arg.value.numpy(), False, None
            return None, False, "weight is not a constant"
        bound = values.get(arg) if isinstance(arg, relax.Var) else None
        if (  # linear: matmul(x, permute_dims(W))
            isinstance(bound, relax.Call)
            and bound.op.name == "relax.permute_dims"
            and isinstance(bound.args[0], tvm.ir.GenericConst)
            and len(bound.args[0].ty.shape) == 2
        ):
            return bound.args[0].value.numpy(), True, None
        if isinstance(arg, tvm.ir.GenericConst) and len(arg.ty.shape) == 2:
            return arg.value.numpy().T, True, None
        return None, False, "weight is not a constant 2-D matrix"

    def plan(func: Any) -> None:
        """Decide every layer (in program order, as calibration recorded them)."""
        for binding, call, values in op_bindings(func, QUANTIZED_OPS):
            weight, transposed, why = weight_of(call, values)
            found = remaining.get(fingerprint(weight)) if weight is not None else None
            if why is None and not found:
                why = "no calibration range for this layer (never reached by calibration)"
            if why is None and not isinstance(call.args[0], relax.Var):
                why = "input is not a variable"
            d = _Decision(len(rows["layer"]), weight, transposed, why)
            d.range = found.pop(0) if why is None else None
            decisions[binding.var] = d
            x = call.args[0]
            if d.range is not None:
                old = feeds.get(x, d.range)
                feeds[x] = Range(min(old.low, d.range.low), max(old.high, d.range.high))
            rows["layer"].append(d.row)
            rows["op"].append(call.op.name.removeprefix("relax."))
            shape = "x".join(map(str, weight.shape)) if weight is not None else ""
            rows["weight_shape"].append(shape)
            rows["status"].append("float" if why else "int8")
            rows["reason"].append(why or "")
            rows["input_dtype"].append(None)
            rows["input_scale"].append(None)

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):
        def __init__(self, mod: Any) -> None:
            super().__init__(mod)
            self.binding: Any = None
            self.quantized: dict = {}  # original var -> its u8/s8 var
            self.values: dict = {}  # original var -> the value bound to it

        def visit_var_binding_(self, binding: Any) -> None:
            self.binding = binding
            self.values[binding.var] = binding.value
            super().visit_var_binding_(binding)
            var = binding.var
            if var in feeds and isinstance(var, relax.DataflowVar):
                new = self.get_var_remap(var)
                new = var if new is None else new  # None when the binding is unchanged
                xq = self._max_pool_quantized(binding.value, feeds[var])
                if xq is None:
                    xq = self._quantize(new, feeds[var])
                self.quantized[var] = xq
                dtype, scale, _, _ = feeds[var].qparams()
                dq = relax.op.multiply(relax.op.astype(xq, "float32"), _scalar(scale))
                self.set_var_remap(var, self.builder_.emit(dq))

        def visit_call_(self, call: Any) -> Any:
            binding = self.binding
            decision = (
                decisions.get(binding.var)
                if binding is not None and call.same_as(binding.value)
                else None
            )
            new = super().visit_call_(call)
            if decision is None or decision.reason is not None:
                if decision is not None:
                    rows["input_dtype"][decision.row] = str(new.args[0].ty.dtype)
                return new
            x = call.args[0]
            if x not in self.quantized:  # a function parameter (the model input)
                self.quantized[x] = self._quantize(new.args[0], feeds[x])
            dtype, scale, _, _ = feeds[x].qparams()
            rows["input_dtype"][decision.row] = dtype
            rows["input_scale"][decision.row] = scale
            return self._layer(new, self.quantized[x], decision, scale)

        def _max_pool_quantized(self, value: Any, found: Range) -> Any:
            """A max-pooled tensor quantized before the pooling (exact: quantizing is
            monotonic, so it commutes with max), else None. The layer before then writes
            8-bit activations from its epilogue, and the pool reads a quarter of the bytes.
            PyTorch's pool exports as (values, indices)[0]: followed through."""
            while isinstance(value, (relax.TupleGetItem, relax.Var, relax.Tuple)):
                if isinstance(value, relax.TupleGetItem):
                    if value.index != 0:
                        return None
                    value = value.tuple_value
                elif isinstance(value, relax.Tuple):
                    value = value.fields[0]
                elif value in self.values:
                    value = self.values[value]
                else:
                    return None
            if not (
                isinstance(value, relax.Call)
                and value.op.name == "relax.nn.max_pool2d"
                and isinstance(value.args[0], relax.Var)
                and str(value.args[0].ty.dtype) == "float32"
            ):
                return None
            source = self.get_var_remap(value.args[0]) or value.args[0]
            quantized = self._quantize(source, found)
            return self.builder_.emit(relax.Call(value.op, [quantized], value.attrs))

        def _quantize(self, x: Any, found: Range) -> Any:
            op = relax.op
            dtype, scale, qmin, qmax = found.qparams()
            scaled = op.round(op.multiply(x, _scalar(1 / scale)))
            return self.builder_.emit(op.astype(op.clip(scaled, float(qmin), float(qmax)), dtype))

        def _layer(self, call: Any, xq: Any, d: _Decision, scale: float) -> Any:
            op, bb = relax.op, self.builder_
            wq, w_scale = quantize_weight(d.weight, axis=0)
            if call.op.name == "relax.nn.conv2d":
                a = call.attrs
                acc = bb.emit(
                    op.nn.conv2d(
                        xq,
                        relax.const(wq),
                        strides=a.strides,
                        padding=a.padding,
                        dilation=a.dilation,
                        groups=a.groups,
                        data_layout=a.data_layout,
                        kernel_layout=a.kernel_layout,
                        out_layout=a.out_layout,
                        out_dtype="int32",
                    )
                )
                rescale = (scale * w_scale).reshape(1, -1, 1, 1)
            else:
                wq = np.ascontiguousarray(wq.T) if d.transposed else wq
                acc = bb.emit(op.matmul(xq, relax.const(wq), out_dtype="int32"))
                rescale = scale * w_scale
            return op.multiply(op.astype(acc, "float32"), relax.const(rescale.astype(np.float32)))

    def _scalar(value: float) -> Any:
        return relax.const(value, "float32")

    rewriter = Rewriter(mod)
    for gvar, func in mod.functions.items():
        if isinstance(func, relax.Function):
            plan(func)
            rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
    # Drops the float weights' transposes that the int8 matmuls no longer read.
    return relax.transform.DeadCodeElimination()(rewriter.builder_.get()), rows
