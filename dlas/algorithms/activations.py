"""Activations whose TOPI lowering does not vectorize on CPU: exp, sigmoid, SiLU, tanh.

``T.exp`` / ``T.sigmoid`` become LLVM's ``llvm.exp`` intrinsic; with no vector math library
in the wheel's LLVM, a vectorized loop of them is split back into one ``expf@plt`` call per
lane (EfficientNet-B0's SiLU epilogues made thousands of such call sites). TOPI's
``fast_exp`` is a range reduction (2^n from the exponent bits) and a degree-6 polynomial:
plain arithmetic that LLVM vectorizes, relative error ~1e-7 over float32's range. Sigmoid and
SiLU, in the epilogue of every EfficientNet conv, use a cheaper exp of their own
(:func:`_logistic_exp`). These entries join the algorithm's conv2d/dense ones in
``LegalizeOps``' custom map.
"""

from __future__ import annotations

from collections.abc import Callable

from tvm import relax, te, tirx, topi

from .legalize import default_legalize

FAST_DTYPES = ("float32",)


def _fast_exp(x: te.Tensor) -> te.Tensor:
    return topi.fast_exp(x)


# e^f for |f| <= ln(2)/2 as one Horner polynomial of degree 6, coefficients highest first,
# fitted for relative error (7e-8 in float32, as TOPI's fast_exp). Plain Horner keeps one
# value live between steps: TOPI's 1 + f + f^2 P(f) keeps f^2 too, and an epilogue
# vectorized across a 56-wide row (four registers a value) then spilled.
_EXP_POLYNOMIAL = (
    0.0013903396492674577,
    0.008366236253774096,
    0.04166677084437285,
    0.166665431701547,
    0.5000000005211556,
    1.0,
    1.0,
)
# 1.5 * 2^23 + 127: added to an integer n in float32, it leaves n + 127 in the low mantissa
# bits, so a shift makes 2^n's bits without a float-to-int conversion.
_EXPONENT_BIAS = 12582912.0 + 127.0


def _logistic_exp(v: tirx.PrimExpr, dtype: str) -> tirx.PrimExpr:
    """e^v for sigmoid and SiLU, v clamped to [-87, 88] (both tails saturate there).

    Fewer instructions than TOPI's fast_exp (no float-to-int conversion, no final max): the
    SiLU epilogue, not the conv, dominates EfficientNet's wide layers (a 16->96 1x1 conv at
    112 px: 0.38 ms with no activation, 0.63 ms with SiLU)."""

    def const(value: float) -> tirx.PrimExpr:
        return tirx.const(value, dtype)

    v = tirx.max(tirx.min(v, const(88.0)), const(-87.0))
    n = tirx.round(v * const(1.4426950408889634))  # v = n ln(2) + f
    f = v - n * const(0.6931471805599453)
    p = const(_EXP_POLYNOMIAL[0])
    for coefficient in _EXP_POLYNOMIAL[1:]:
        p = p * f + const(coefficient)
    two_n = tirx.reinterpret(dtype, tirx.reinterpret("int32", n + const(_EXPONENT_BIAS)) << 23)
    return two_n * p


def _fast_sigmoid(x: te.Tensor) -> te.Tensor:
    # 1 / (1 + e^-x); a very negative x gives 1 / (1 + 1.7e38), not inf arithmetic.
    one = tirx.const(1, x.dtype)
    return te.compute(
        x.shape, lambda *i: one / (one + _logistic_exp(-x(*i), x.dtype)), name="sigmoid"
    )


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
