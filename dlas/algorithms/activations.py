"""Activations whose TOPI lowering does not vectorize on CPU: exp, sigmoid, SiLU, tanh.

``T.exp`` / ``T.sigmoid`` become LLVM's ``llvm.exp`` intrinsic; with no vector math library
in the wheel's LLVM, a vectorized loop of them is split back into one ``expf@plt`` call per
lane (EfficientNet-B0's SiLU epilogues made thousands of such call sites). TOPI's
``fast_exp`` is a range reduction (2^n from the exponent bits) and a degree-6 polynomial:
plain arithmetic that LLVM vectorizes, relative error ~1e-7 over float32's range. Sigmoid and
SiLU, in the epilogue of every EfficientNet conv, use a cheaper exp of their own
(:func:`_one_plus_exp_neg`). These entries join the algorithm's conv2d/dense ones in
``LegalizeOps``' custom map; :data:`SigmoidGateToSilu` first makes SiLU one op where the
exported graph wrote it as ``x * sigmoid(x)``. :data:`ClipToMinMax` writes clip (ReLU6) as
a maximum and a minimum, for the graph passes that have no rule for clip.
"""

from __future__ import annotations

from collections.abc import Callable

from tvm import relax, te, tirx, topi
from tvm.relax.expr_functor import PyExprMutator, mutator

from .constants import bound_expr, function_pass, is_call_to
from .legalize import default_legalize

FAST_DTYPES = ("float32",)


def _fast_exp(x: te.Tensor) -> te.Tensor:
    return topi.fast_exp(x)


# e^-g for |g| <= ln(2)/2 as one Horner polynomial of degree 4 in g, coefficients highest
# first, fitted for relative error (Lawson's iteration): 2.6e-6, against 7.5e-8 for degree 5.
# Sigmoid and SiLU inherit that relative error, 40x inside the 1e-4 a model's logits must keep
# against PyTorch. A multiply-add less made a standalone SiLU kernel 1.08x faster on Zen 1,
# whose vector ports are the bound (each AVX2 instruction is two halves). Plain Horner keeps
# one value live between steps: TOPI's 1 + f + f^2 P(f) keeps f^2 too, and an epilogue
# vectorized across a 56-wide row (four registers a value) then spilled.
_EXP_NEG_POLYNOMIAL = (
    0.041458399441042015,
    -0.1679103114711335,
    0.5000436740660752,
    -0.9999633322694214,
    0.9999992592292174,
)
# 1.5 * 2^23 + 127: a float32 sum with it is rounded to an integer n, and leaves n + 127 in the
# low mantissa bits, so a shift makes 2^n's bits. n is the sum less the bias, subtracted from
# the sum's bits reinterpreted (one float subtraction; written on the sum itself it would be
# simplified away with the rounding).
_EXPONENT_BIAS = 12582912.0 + 127.0
_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453


def _one_plus_exp_neg(x: tirx.PrimExpr, dtype: str) -> tirx.PrimExpr:
    """1 + e^-x for sigmoid and SiLU, x clamped to [-88, 87] (both tails saturate there).

    Each vector instruction counts: EfficientNet-B0 (blocked) spends about a sixth of its
    time in its sigmoids (1.19x faster with a max in their place), at about the rate the
    vector ports issue them. -x never appears (its sign is in the constants), the rounding is
    the bias's addition, and LLVM fuses the final ``2^n * p + 1`` into one multiply-add: 12
    instructions a value with the division. 14 (a degree-5 polynomial, n from the integer
    bits) ran EfficientNet-B0-224 1.02x slower on a 2-core Zen 1 (95%: 1.017-1.027, A/A
    1.001); 17 (a round, a negation, degree 6) had run it 1.02x slower than 14. Replacing the
    division by Newton steps was slower."""

    def const(value: float) -> tirx.PrimExpr:
        return tirx.const(value, dtype)

    x = tirx.max(tirx.min(x, const(87.0)), const(-88.0))
    biased = x * const(-_LOG2E) + const(_EXPONENT_BIAS)  # n + 127 + 1.5 * 2^23, n = -x log2 e
    bits = tirx.reinterpret("int32", biased)
    n = tirx.reinterpret(dtype, bits) - const(_EXPONENT_BIAS)
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


@mutator
class _SigmoidGateToSilu(PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not is_call_to(call, "relax.multiply"):
            return call
        for x, gate in (call.args, call.args[::-1]):
            bound = bound_expr(self, gate)
            if is_call_to(bound, "relax.sigmoid") and bound.args[0].same_as(x):
                return relax.op.nn.silu(x)
        return call


# x * sigmoid(x), as exported models write SiLU, becomes silu(x): legalized as x / (1 + e^-x),
# one division where the product also multiplies by the reciprocal (a vector instruction of 13
# in every EfficientNet epilogue; EfficientNet-B0-224 blocked 1.006-1.008x on a 2-core Zen 1 in
# three A/B runs). A gate of another value (squeeze-excitation) stays.
SigmoidGateToSilu = function_pass("DlasSigmoidGateToSilu", _SigmoidGateToSilu)


@mutator
class _ClipToMinMax(PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not is_call_to(call, "relax.clip"):
            return call
        dtype = str(call.args[0].ty.dtype)
        low, high = (relax.const(float(a.value), dtype) for a in call.args[1:])
        return relax.op.minimum(relax.op.maximum(call.args[0], low), high)


# clip(x, lo, hi) (ReLU6, hardtanh) becomes minimum(maximum(x, lo), hi) with tensor bounds:
# Relax's ConvertLayout has no layout rule for clip (blocked_layout), and ToMixedPrecision
# rejects its scalar PrimValue bounds (compression.fp16).
ClipToMinMax = function_pass("DlasClipToMinMax", _ClipToMinMax)
