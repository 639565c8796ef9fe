"""The graph passes of ``algorithm=blocked``: activations in 16-channel blocks between convs.

Before legalization (:func:`graph_passes`):

1. ``clip`` becomes ``minimum(maximum(x, lo), hi)``: Relax's ConvertLayout has no layout rule
   for ``clip``, and would wrap every ReLU6 in a transform to NCHW and back.
2. :class:`PadChannels`: a conv whose output channels are not whole blocks (MobileNetV2's 24,
   EfficientNet's 24 and 40) gets zero filters up to the next block, and the convs that read
   it zero weights for those channels, so the bottleneck stays blocked instead of being
   unpacked and packed again around it (two extra passes over a 56-px map). The padded
   channels hold finite values (0 through batch norm and ReLU, 0.5 through a sigmoid) that
   only zero weights ever read; any other consumer gets the real channels sliced out first.
3. Relax's ConvertLayout puts each eligible conv (float32, constant weights, whole blocks of
   channels, ungrouped or depthwise) in ``NCHW16c``, carries the layout through the
   elementwise ops, means and adds between convs, and leaves a ``layout_transform`` only where
   a blocked tensor meets an NCHW one. A conv that reads NCHW (the RGB stem) still writes its
   output blocked.

4. :func:`gate_into_weights`: a 1x1 conv reading a map multiplied by a per-channel gate
   (EfficientNet's squeeze-excitation) reads the map itself, its weights scaled by the gate
   instead (``Blocked`` emits that conv), where the map has at least as many pixels as the
   conv has outputs: the product was a pass of its own over the map, written and read again.

After ``AnnotateTIROpPattern`` (:class:`FuseLayoutTransforms`): the transforms left are marked
elementwise, so FuseOps fuses each into the kernel that produces its input, instead of
running it as a pass of its own over the activations.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.relax.expr_functor import PyExprMutator, mutator

from .activations import ClipToMinMax
from .constants import (
    FoldConstants,
    bound_expr,
    bound_value,
    function_pass,
    is_call_to,
    value_of,
)
from .shapes import LANES

BLOCK = LANES
BLOCKED = f"NCHW{BLOCK}c"
_BINARY = {
    "relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.maximum",
    "relax.minimum",
}  # fmt: skip
_UNARY = {
    "relax.sigmoid", "relax.tanh", "relax.clip", "relax.nn.relu", "relax.nn.silu", "relax.exp",
    "relax.negative", "relax.nn.gelu",
}  # fmt: skip
_REDUCTIONS = {"relax.mean", "relax.sum", "relax.max"}
# LegalizeOps names the PrimFunc of a relax.layout_transform after the TE op.
TRANSFORM_PREFIX = "te_layout_transform"


def graph_passes() -> list[tvm.transform.Pass]:
    return [
        ClipToMinMax(),
        PadChannels(),
        relax.transform.ConvertLayout({}, _conv_layout),
        # The batch-norm constants ConvertLayout transformed. (TVM's FoldConstant would do it
        # too, but it offers every blocked conv2d to TOPI, which logs a refusal for each.)
        FoldConstants(),
    ]


def gate_into_weights(gates: list[tuple[relax.Expr, ...]]) -> tvm.transform.Pass:
    """The pass that rewrites ``conv2d(x * gate, W)`` to ``conv2d(x, W)`` and notes (x, W,
    gate) in ``gates`` (emptied first), for the conv's legalization to scale W by the gate."""

    def make(mod: tvm.IRModule) -> PyExprMutator:
        gates.clear()
        return _GateIntoWeights(mod, gates)

    return function_pass("DlasGateIntoWeights", make)()


def _static_shape(expr: relax.Expr) -> list[int] | None:
    """The shape of a tensor of static shape, else None."""
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    try:
        return [int(d) for d in ty.shape]
    except (TypeError, ValueError):
        return None


def _channels(expr: relax.Expr) -> int | None:
    """Channels of a static 4-D tensor, else None."""
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.ndim != 4:
        return None
    try:
        return int(ty.shape[1])
    except (TypeError, ValueError):
        return None


def _float_nchw_with_constant_weights(
    call: relax.Call, data: relax.Expr, weight: relax.Expr
) -> bool:
    """Whether a conv2d reads float32 NCHW ``data`` with constant OIHW ``weight``: the convs
    the passes may pad or block."""
    layouts = (call.attrs.data_layout, call.attrs.kernel_layout)
    return (
        layouts == ("NCHW", "OIHW")
        and str(data.ty.dtype) == "float32"
        and isinstance(weight, tvm.ir.GenericConst)
    )


def blockable(call: relax.Call) -> bool:
    """Whether a conv2d can run blocked: float32, constant weights, output channels in whole
    blocks, and ungrouped or depthwise."""
    attrs, data, weight = call.attrs, call.args[0], call.args[1]
    if not _float_nchw_with_constant_weights(call, data, weight):
        return False
    channels, out, per_group = _channels(data), int(weight.ty.shape[0]), int(weight.ty.shape[1])
    groups = int(attrs.groups)
    depthwise = groups == channels == out and per_group == 1
    return channels is not None and out % BLOCK == 0 and (groups == 1 or depthwise)


def _conv_layout(call: relax.Call) -> dict[str, list[str]]:
    if call.op.name != "relax.nn.conv2d":
        return {}
    if not blockable(call):
        # Said explicitly: with no desired layout, the conv keeps its input's blocked layout.
        return {"relax.nn.conv2d": ["NCHW", "OIHW"]}
    if _channels(call.args[0]) % BLOCK == 0:
        return {"relax.nn.conv2d": [BLOCKED, "OIHW"]}
    # NCHW input (the RGB stem): packed inside the conv's kernel, output blocked.
    return {"relax.nn.conv2d": ["NCHW", "OIHW", BLOCKED]}


@mutator
class _PadChannels(PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        if not isinstance(call.op, tvm.ir.Op):
            return super().visit_call_(call)
        # Rebuilt unnormalized: the padded arguments would fail the original op's shape check.
        args = [self.visit_expr(a) for a in call.args]
        padded = [
            i
            for i, (old, new) in enumerate(zip(call.args, args, strict=True))
            if _channels(old) is not None and _channels(new) != _channels(old)
        ]
        name = call.op.name
        if name == "relax.nn.conv2d":
            return self._conv(call, args, bool(padded))
        passes_through = name in _UNARY or (name in _REDUCTIONS and _keeps_channels(call))
        if padded and not passes_through and not self._pad_operands(call, args, padded):
            for i in padded:  # anything else reads the real channels
                args[i] = self._slice(args[i], _channels(call.args[i]))
        return relax.Call(call.op, args, call.attrs, call.ty_args)

    def visit_tuple_(self, tup: relax.Tuple) -> relax.Expr:
        # A function's outputs (a tuple, as exported) keep their real channels.
        fields = [self.visit_expr(f) for f in tup.fields]
        return relax.Tuple(
            [
                self._slice(new, _channels(old)) if _channels(new) != _channels(old) else new
                for old, new in zip(tup.fields, fields, strict=True)
            ]
        )

    def _pad_operands(self, call: relax.Call, args: list, padded: list[int]) -> bool:
        """Pad a binary op's per-channel constants to the padded tensor's channels in place;
        False for any other op, or where an operand is a tensor of the real channels."""
        if call.op.name not in _BINARY:
            return False
        real, wide = _channels(call.args[padded[0]]), _channels(args[padded[0]])
        for i, arg in enumerate(args):
            if i in padded:
                if _channels(arg) != wide:
                    return False
                continue
            value = bound_value(self, arg)
            per_channel = value is not None and value.ndim == 4 and value.shape[1] == real
            if per_channel and real != 1:
                fill = 1 if call.op.name == "relax.divide" else 0
                pad = [(0, 0), (0, wide - real), (0, 0), (0, 0)]
                args[i] = relax.const(np.pad(value, pad, constant_values=fill))
            elif _channels(arg) not in (None, 1):
                return False
        return True

    def _slice(self, x: relax.Expr, channels: int) -> relax.Expr:
        return self.builder_.emit(relax.op.strided_slice(x, axes=[1], begin=[0], end=[channels]))

    def _conv(self, call: relax.Call, args: list, input_padded: bool) -> relax.Expr:
        data, weight = args
        unchanged = relax.Call(call.op, args, call.attrs, call.ty_args)
        if not _float_nchw_with_constant_weights(call, data, weight):
            if not input_padded:
                return unchanged
            data = self._slice(data, _channels(call.args[0]))
            return relax.Call(call.op, [data, weight], call.attrs, call.ty_args)
        w, groups = value_of(weight), int(call.attrs.groups)
        real, wide = _channels(call.args[0]), _channels(data)
        if input_padded and groups == 1:
            w = np.pad(w, [(0, 0), (0, wide - real), (0, 0), (0, 0)])
        elif input_padded and groups == real == w.shape[0] and w.shape[1] == 1:
            w, groups = np.pad(w, [(0, wide - real), (0, 0), (0, 0), (0, 0)]), wide  # depthwise
        elif input_padded:
            data = self._slice(data, real)
        out, height, width = w.shape[0], int(call.ty.shape[2]), int(call.ty.shape[3])
        if groups == 1 and out > BLOCK and out % BLOCK and height * width > 1:
            w = np.pad(w, [(0, -out % BLOCK), (0, 0), (0, 0), (0, 0)])
        if w.shape == tuple(int(d) for d in weight.ty.shape) and data.same_as(args[0]):
            return unchanged
        return _conv_like(call, data, w, groups)


def _keeps_channels(call: relax.Call) -> bool:
    axis = call.attrs.axis
    return bool(call.attrs.keepdims) and axis is not None and 1 not in [int(a) % 4 for a in axis]


def _conv_like(call: relax.Call, data: relax.Expr, weight: np.ndarray, groups: int) -> relax.Expr:
    a = call.attrs
    return relax.op.nn.conv2d(
        data,
        relax.const(np.ascontiguousarray(weight)),
        strides=a.strides,
        padding=a.padding,
        dilation=a.dilation,
        groups=groups,
        data_layout=a.data_layout,
        kernel_layout=a.kernel_layout,
        out_layout=a.out_layout,
        out_dtype=a.out_dtype,
    )


@mutator
class _GateIntoWeights(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, gates: list) -> None:
        super().__init__(mod)
        self.gates = gates

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not is_call_to(call, "relax.nn.conv2d"):
            return call
        (data, weight), a, w = call.args, call.attrs, value_of(call.args[1])
        if not (
            isinstance(data, relax.Var)
            and w is not None
            and w.shape[2:] == (1, 1)
            and a.data_layout == a.out_layout == BLOCKED
            and int(a.groups) == 1
            and all(int(v) == 1 for v in (*a.strides, *a.dilation))
            and not any(int(v) for v in a.padding)
        ):
            return call
        product = bound_expr(self, data)
        if not is_call_to(product, "relax.multiply"):
            return call
        shape = _static_shape(data)
        # Scaling the weights multiplies outputs x channels numbers, the product pixels x
        # channels.
        if shape is None or shape[2] * shape[3] < w.shape[0]:
            return call
        for x, gate in (product.args, reversed(product.args)):
            per_channel = _static_shape(gate) == [*shape[:2], 1, 1, BLOCK]
            if per_channel and _static_shape(x) == shape and bound_value(self, gate) is None:
                self.gates.append((x, weight, gate))
                return relax.Call(call.op, [x, weight], call.attrs, call.ty_args)
        return call


@tvm.transform.module_pass(opt_level=0, name="DlasFuseLayoutTransforms")
class FuseLayoutTransforms:
    """Mark the legalized ``layout_transform`` PrimFuncs elementwise (op pattern 0), so that
    FuseOps fuses each into the kernel that produces its input (a transform is injective, and
    FuseOps puts no injective op behind a conv)."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        for gv, func in list(mod.functions_items()):
            if isinstance(func, tirx.PrimFunc) and gv.name_hint.startswith(TRANSFORM_PREFIX):
                mod[gv] = func.with_attr("op_pattern", 0)
        return mod


PadChannels = function_pass("DlasPadChannels", _PadChannels)
