"""Static int8 quantization of a Relax module's conv2d and matmul layers.

Each float layer ``y = op(x, W)`` with a constant weight and a calibrated input range becomes

    xq  = clip(round(x / s_x), qmin, qmax).astype(uint8 | int8)   per-tensor scale s_x
    yq  = op(xq, Wq, out_dtype="int32")                           Wq = round(W / s_w[c]) int8
    y   = yq.astype(float32) * (s_x * s_w[c])                     per-output-channel rescale

Zero points are 0 (symmetric), so padding with zeros stays exact and the int32 sums need no
correction terms. Inputs known to be non-negative (after ReLU) use uint8 with s_x = max/255,
others int8 with s_x = max|x|/127: u8 x s8 is the operand pair of x86 VNNI (vpdpbusd).
Weights use [-127, 127] so that negating a weight never overflows. Between layers the int32
result is rescaled to float, the float elementwise ops (bias, BatchNorm, ReLU, adds) run and
the next layer re-quantizes: after fusion this is one requantizing elementwise kernel.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

QUANTIZED_OPS = ("relax.nn.conv2d", "relax.matmul")


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


def quantize_module(mod: Any, ranges: dict[str, list[Range]]) -> tuple[Any, dict[str, list]]:
    """Rewrite every quantizable conv2d/matmul of ``mod``; the others stay float and get the
    reason in the returned table (one row per layer)."""
    import tvm
    from tvm import relax

    rows: dict[str, list] = {
        "layer": [],
        "op": [],
        "weight_shape": [],
        "status": [],
        "input_dtype": [],
        "input_scale": [],
        "reason": [],
    }
    remaining = {key: list(found) for key, found in ranges.items()}

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):
        def visit_call_(self, call: relax.Call) -> relax.Expr:
            call = super().visit_call_(call)
            if not (isinstance(call.op, tvm.ir.Op) and call.op.name in QUANTIZED_OPS):
                return call
            weight, transposed, why = self._weight(call)
            row = len(rows["layer"])
            rows["layer"].append(row)
            rows["op"].append(call.op.name.removeprefix("relax."))
            rows["weight_shape"].append(
                "x".join(map(str, weight.shape)) if weight is not None else ""
            )
            found = remaining.get(fingerprint(weight)) if weight is not None else None
            if why is None and not found:
                why = "no calibration range for this layer"
            if why is not None:
                rows["status"].append("float")
                rows["input_dtype"].append(str(call.args[0].ty.dtype))
                rows["input_scale"].append(None)
                rows["reason"].append(why)
                return call
            dtype, scale, qmin, qmax = found.pop(0).qparams()
            rows["status"].append("int8")
            rows["input_dtype"].append(dtype)
            rows["input_scale"].append(scale)
            rows["reason"].append("")
            return self._quantized(call, weight, transposed, dtype, scale, qmin, qmax)

        def _weight(self, call: relax.Call) -> tuple[np.ndarray | None, bool, str | None]:
            """The layer's float32 weight as PyTorch stores it (conv OIHW, linear [out, in]),
            whether the op sees it transposed, and why it cannot be quantized (or None)."""
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
            if isinstance(arg, relax.Var):  # linear: matmul(x, permute_dims(W))
                bound = self.lookup_binding(arg)
                if (
                    isinstance(bound, relax.Call)
                    and bound.op.name == "relax.permute_dims"
                    and isinstance(bound.args[0], tvm.ir.GenericConst)
                    and len(bound.args[0].ty.shape) == 2
                ):
                    return bound.args[0].value.numpy(), True, None
            if isinstance(arg, tvm.ir.GenericConst) and len(arg.ty.shape) == 2:
                return arg.value.numpy().T, True, None
            return None, False, "weight is not a constant 2-D matrix"

        def _quantized(
            self,
            call: relax.Call,
            weight: np.ndarray,
            transposed: bool,
            dtype: str,
            scale: float,
            qmin: int,
            qmax: int,
        ) -> relax.Expr:
            op, bb = relax.op, self.builder_
            x = call.args[0]
            xq = bb.emit(
                op.astype(
                    op.clip(
                        op.round(op.multiply(x, relax.const(1 / scale, "float32"))),
                        float(qmin),
                        float(qmax),
                    ),
                    dtype,
                )
            )
            wq, w_scale = quantize_weight(weight, axis=0)
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
                wq = np.ascontiguousarray(wq.T) if transposed else wq
                acc = bb.emit(op.matmul(xq, relax.const(wq), out_dtype="int32"))
                rescale = scale * w_scale
            return op.multiply(op.astype(acc, "float32"), relax.const(rescale.astype(np.float32)))

    rewriter = Rewriter(mod)
    for gvar, func in mod.functions.items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
    # Drops the float weights' transposes that the int8 matmuls no longer read.
    return relax.transform.DeadCodeElimination()(rewriter.builder_.get()), rows
