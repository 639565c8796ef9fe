"""bfloat16 inference: weights and activations in bfloat16, float32 accumulation.

Every conv2d/matmul with a constant weight becomes ``op(x_bf16, W_bf16, out_dtype=float32)``;
on a CPU with AVX512-BF16 the dense algorithms run it through ``vdpbf16ps``
(:mod:`dlas.algorithms.dot_product`). As with int8, a tensor that feeds such layers is
converted once, where it is produced (the cast fuses into the producing conv's epilogue, which
then writes bfloat16), and its other readers (residual adds, pooling) read it widened back to
float32. Inputs and logits stay float32 at the boundary; bias, BatchNorm and activations run in
float32 inside the fused epilogues.

Without AVX512-BF16 the option is refused before any work (``required_cpu_features``):
emulated bfloat16 (a shift to float32 per operand) is slower than float32 and would only
measure the emulation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlas.compression.base import Compression
from dlas.compression.quantize import op_bindings
from dlas.compression.registry import COMPRESSIONS

HEAVY_OPS = ("relax.nn.conv2d", "relax.matmul")


def _constant_weight(call: Any, values: dict) -> np.ndarray | None:
    """The op's right-hand side as the op reads it (conv OIHW, matmul [K, N]), if constant."""
    import tvm
    from tvm import relax

    arg = call.args[1]
    if isinstance(arg, relax.Var):
        bound = values.get(arg)
        if (
            isinstance(bound, relax.Call)
            and bound.op.name == "relax.permute_dims"
            and isinstance(bound.args[0], tvm.ir.GenericConst)
            and len(bound.args[0].ty.shape) == 2
        ):
            return bound.args[0].value.numpy().T
        return None
    if isinstance(arg, tvm.ir.GenericConst):
        return arg.value.numpy()
    return None


def to_bf16(mod: Any) -> tuple[Any, dict[str, list]]:
    """The rewritten module and one table row per conv2d/matmul (what it computes in)."""
    import ml_dtypes
    from tvm import relax

    rows: dict[str, list] = {"layer": [], "op": [], "status": [], "reason": []}
    weights: dict[Any, np.ndarray] = {}  # binding var of a converted op -> its weight
    feeds: set = set()  # tensors read by converted ops

    def plan(func: Any) -> None:
        for binding, call, values in op_bindings(func, HEAVY_OPS):
            weight = _constant_weight(call, values)
            why = ""
            if str(call.args[0].ty.dtype) != "float32":
                why = f"input is {call.args[0].ty.dtype}"
            elif weight is None or weight.ndim not in (2, 4):
                why = "weight is not a constant"
            elif not isinstance(call.args[0], relax.Var):
                why = "input is not a variable"
            if not why:
                weights[binding.var] = weight
                feeds.add(call.args[0])
            rows["layer"].append(len(rows["layer"]))
            rows["op"].append(call.op.name.removeprefix("relax."))
            rows["status"].append("float32" if why else "bfloat16")
            rows["reason"].append(why)

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):
        def __init__(self, mod: Any) -> None:
            super().__init__(mod)
            self.binding: Any = None
            self.narrow: dict = {}  # original var -> its bfloat16 var

        def visit_var_binding_(self, binding: Any) -> None:
            self.binding = binding
            super().visit_var_binding_(binding)
            var = binding.var
            if var in feeds and isinstance(var, relax.DataflowVar):
                new = self.get_var_remap(var)
                new = var if new is None else new  # None when the binding is unchanged
                self.narrow[var] = self.builder_.emit(relax.op.astype(new, "bfloat16"))
                wide = relax.op.astype(self.narrow[var], "float32")
                self.set_var_remap(var, self.builder_.emit(wide))

        def visit_call_(self, call: Any) -> Any:
            binding = self.binding
            decided = binding is not None and call.same_as(binding.value)
            weight = weights.get(binding.var) if decided else None
            new = super().visit_call_(call)
            if weight is None:
                return new
            x = call.args[0]
            if x not in self.narrow:  # a function parameter
                self.narrow[x] = self.builder_.emit(relax.op.astype(new.args[0], "bfloat16"))
            w = relax.const(np.ascontiguousarray(weight).astype(ml_dtypes.bfloat16))
            if call.op.name == "relax.matmul":
                return relax.op.matmul(self.narrow[x], w, out_dtype="float32")
            a = call.attrs
            return relax.op.nn.conv2d(
                self.narrow[x],
                w,
                strides=a.strides,
                padding=a.padding,
                dilation=a.dilation,
                groups=a.groups,
                data_layout=a.data_layout,
                kernel_layout=a.kernel_layout,
                out_layout=a.out_layout,
                out_dtype="float32",
            )

    rewriter = Rewriter(mod)
    for gvar, func in mod.functions.items():
        if isinstance(func, relax.Function):
            plan(func)
            rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
    return relax.transform.DeadCodeElimination()(rewriter.builder_.get()), rows


@COMPRESSIONS.register("bf16")
class Bf16(Compression):
    acts_on_relax = True
    compute_dtypes = ("bfloat16",)
    required_cpu_features = {"avx512bf16": "AVX512-BF16 (vdpbf16ps)"}

    def apply_relax(self, mod: Any, calibration: list[Any]) -> Any:
        mod, table = to_bf16(mod)
        bf16 = sum(s == "bfloat16" for s in table["status"])
        self.report_relax(
            {
                "compression/bf16_layers": float(bf16),
                "compression/float32_layers": float(len(table["status"]) - bf16),
            },
            {"compression/bf16_layers.json": table},
        )
        return mod

    def report_lowering(self, layers: list[dict[str, Any]]) -> None:
        from dlas.compression.int8 import kernel_family

        self.report_relax({}, {}, {"compression.bf16_isa": kernel_family(layers)})
