"""Activations whose TOPI lowering does not vectorize on CPU: exp, sigmoid, SiLU, tanh.

``T.exp`` / ``T.sigmoid`` become LLVM's ``llvm.exp`` intrinsic; with no vector math library
in the wheel's LLVM, a vectorized loop of them is split back into one ``expf@plt`` call per
lane (EfficientNet-B0's SiLU epilogues made thousands of such call sites). TOPI's
``fast_exp`` is a range reduction (2^n from the exponent bits) and a degree-6 polynomial:
plain arithmetic that LLVM vectorizes, relative error ~1e-7 over float32's range. These
entries join the algorithm's conv2d/dense ones in ``LegalizeOps``' custom map.
"""

from __future__ import annotations

from collections.abc import Callable

from tvm import relax, te, tirx, topi

from .legalize import default_legalize

FAST_DTYPES = ("float32",)


def _fast_exp(x: te.Tensor) -> te.Tensor:
    return topi.fast_exp(x)


def _fast_sigmoid(x: te.Tensor) -> te.Tensor:
    # 1 / (1 + e^-x); fast_exp clamps its argument to float32's range, so a very negative
    # x gives 1 / (1 + 2.4e38) ~ 4e-39 rather than inf arithmetic.
    one = tirx.const(1, x.dtype)
    e = topi.fast_exp(topi.negative(x))
    return te.compute(x.shape, lambda *i: one / (one + e(*i)), name="sigmoid")


def _fast_silu(x: te.Tensor) -> te.Tensor:
    s = _fast_sigmoid(x)
    return te.compute(x.shape, lambda *i: x(*i) * s(*i), name="silu")


def _fast_tanh(x: te.Tensor) -> te.Tensor:
    return topi.fast_tanh(x)


def _legalize(compute: Callable[[te.Tensor], te.Tensor], op: str) -> Callable:
    def legalize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        if str(call.args[0].ty.dtype) not in FAST_DTYPES:
            return default_legalize(bb, call)  # TVM's own lowering (bf16, fp16: exact exp)
        return bb.call_te(compute, call.args[0], primfunc_name_hint=op)

    return legalize


def activation_legalizers() -> dict[str, Callable]:
    """``LegalizeOps`` custom-map entries: vectorizable exp, sigmoid, SiLU and tanh."""
    return {
        "relax.exp": _legalize(_fast_exp, "exp"),
        "relax.sigmoid": _legalize(_fast_sigmoid, "sigmoid"),
        "relax.nn.silu": _legalize(_fast_silu, "silu"),
        "relax.tanh": _legalize(_fast_tanh, "tanh"),
    }
