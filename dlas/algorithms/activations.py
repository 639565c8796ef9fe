"""Activations whose TOPI lowering does not vectorize on CPU: exp, sigmoid, SiLU, tanh.

``T.exp`` / ``T.sigmoid`` become LLVM's ``llvm.exp`` intrinsic; with no vector math library
in the wheel's LLVM, a vectorized loop of them is split back into one ``expf@plt`` call per
lane (EfficientNet-B0's SiLU epilogues made thousands of such call sites). TOPI's
``fast_exp`` is a range reduction (2^n from the exponent bits) and a degree-6 polynomial:
plain arithmetic that LLVM vectorizes, relative error ~1e-7 over float32's range. Sigmoid and
SiLU, in the epilogue of every EfficientNet conv, use a cheaper exp of their own
(:func:`_one_plus_exp_neg`). These entries join the algorithm's conv2d/dense ones in
``LegalizeOps``' custom map.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from tvm import relax, te, tirx, topi

from .legalize import default_legalize

FAST_DTYPES = ("float32",)


def _fast_exp(x: te.Tensor) -> te.Tensor:
    return topi.fast_exp(x)


# e^-g for |g| <= ln(2)/2 as one Horner polynomial of degree 5 in g, coefficients highest
# first (e^f's, fitted for relative error, with the signs of the odd powers flipped): 2e-7 in
# float32 against 1e-7 for degree 6, one multiply-add less. Plain Horner keeps one value live
# between steps: TOPI's 1 + f + f^2 P(f) keeps f^2 too, and an epilogue vectorized across a
# 56-wide row (four registers a value) then spilled.
_EXP_NEG_POLYNOMIAL = (
    -0.00829797067418553,
    0.04191540125498289,
    -0.1666757004918304,
    0.49998894622560613,
    -0.9999996933624751,
    1.0000000716882749,
)
# 1.5 * 2^23 + 127: a float32 sum with it is rounded to an integer n, and leaves n + 127 in the
# low mantissa bits, so a shift makes 2^n's bits, and n is those bits less the sum's own (the
# float subtraction of the bias would be simplified away with the rounding).
_EXPONENT_BIAS = 12582912.0 + 127.0
_EXPONENT_BIAS_BITS = struct.unpack("<i", struct.pack("<f", _EXPONENT_BIAS))[0]  # 0x4B40007F
_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453


def _one_plus_exp_neg(x: tirx.PrimExpr, dtype: str) -> tirx.PrimExpr:
    """1 + e^-x for sigmoid and SiLU, x clamped to [-88, 87] (both tails saturate there).

    Each vector instruction counts: EfficientNet-B0 (blocked) spends about a sixth of its
    time in its sigmoids (1.19x faster with a max in their place), at about the rate the
    vector ports issue them. -x never appears (its sign is in the constants), the rounding is
    the bias's addition, and LLVM fuses the final ``2^n * p + 1`` into one multiply-add: 14
    instructions a value with the division, where a round, a negation and a degree-6
    polynomial made 17 (1.02x on that model; replacing the division by Newton steps was
    slower)."""

    def const(value: float) -> tirx.PrimExpr:
        return tirx.const(value, dtype)

    x = tirx.max(tirx.min(x, const(87.0)), const(-88.0))
    biased = x * const(-_LOG2E) + const(_EXPONENT_BIAS)  # n + 127 + 1.5 * 2^23, n = -x log2 e
    bits = tirx.reinterpret("int32", biased)
    n = (bits - tirx.const(_EXPONENT_BIAS_BITS, "int32")).astype(dtype)
    g = x + n * const(_LN2)  # -x = n ln 2 - g
    p = const(_EXP_NEG_POLYNOMIAL[0])
    for coefficient in _EXP_NEG_POLYNOMIAL[1:]:
        p = p * g + const(coefficient)
    two_n = tirx.reinterpret(dtype, bits << 23)
    return two_n * p + const(1.0)


def _fast_sigmoid(x: te.Tensor) -> te.Tensor:
    # 1 / (1 + e^-x); a very negative x gives 1 / (1 + 1.7e38), not inf arithmetic.
    one = tirx.const(1, x.dtype)
    return te.compute(x.shape, lambda *i: one / _one_plus_exp_neg(x(*i), x.dtype), name="sigmoid")


def _fast_silu(x: te.Tensor) -> te.Tensor:
    # x / (1 + e^-x): one division, where x * sigmoid(x) also multiplies.
    return te.compute(x.shape, lambda *i: x(*i) / _one_plus_exp_neg(x(*i), x.dtype), name="silu")


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
