"""FoldRequantize: an int8 layer's rescale, bias, activation and requantization as one
multiply-add, round and clip, against the chain it replaces computed step by step."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from dlas.algorithms.requantize import FoldRequantize
from dlas.algorithms.shapes import has_feature
from tests.algorithms.util import host_target
from tests.compression.helpers import build, run

SHAPE = (1, 4, 3, 5)


def _chain(k: float, residual: bool) -> tuple[tvm.IRModule, dict[str, np.ndarray]]:
    """The chain quantize_module and batch-norm folding leave after an int8 conv: int32
    sums -> rescale -> BN -> [+ dequantized residual] -> ReLU6 -> x k -> round -> clip -> u8.
    The function takes the sums (and residual) as inputs so the test can choose them."""
    rng = np.random.default_rng(0)
    consts = {
        "scale": rng.uniform(0.01, 0.03, (1, 4, 1, 1)).astype("float32"),
        "bn": rng.uniform(0.5, 2.0, (1, 4, 1, 1)).astype("float32"),
        "shift": rng.uniform(-1.0, 1.0, (1, 4, 1, 1)).astype("float32"),
        "dequant": np.float32(0.05),
        "k": np.float32(k),
    }
    op, bb = relax.op, relax.BlockBuilder()
    acc = relax.Var("acc", relax.TensorType(SHAPE, "int32"))
    res = relax.Var("res", relax.TensorType(SHAPE, "int8"))
    with bb.function("main", [acc, res]):
        with bb.dataflow():
            x = bb.emit(op.astype(acc, "float32"))
            x = bb.emit(op.multiply(x, relax.const(consts["scale"])))
            x = bb.emit(op.multiply(x, relax.const(consts["bn"])))
            x = bb.emit(op.add(x, relax.const(consts["shift"])))
            if residual:
                r = bb.emit(op.astype(res, "float32"))
                r = bb.emit(op.multiply(r, relax.const(consts["dequant"])))
                x = bb.emit(op.add(r, x))
            x = bb.emit(op.clip(x, 0.0, 6.0))
            x = bb.emit(op.multiply(x, relax.const(consts["k"])))
            x = bb.emit(op.clip(bb.emit(op.round(x)), 0.0, 255.0))
            out = bb.emit_output(bb.emit(op.astype(x, "uint8")))
        bb.emit_func_output(out)
    return bb.get(), consts


def _reference(acc: np.ndarray, res: np.ndarray, c: dict, residual: bool) -> np.ndarray:
    """The unfolded chain in float32, op by op as the module states it."""
    x = acc.astype(np.float32) * c["scale"] * c["bn"] + c["shift"]
    if residual:
        x = res.astype(np.float32) * c["dequant"] + x
    x = np.clip(x, np.float32(0), np.float32(6)) * c["k"]
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("k", [30.0, 60.0], ids=["relu6-below-255", "relu6-above-255"])
def test_folded_chain_matches_the_chain_within_one_step(k, residual):
    mod, consts = _chain(k, residual)
    folded = FoldRequantize()(mod)["main"].script()
    # One multiply per integer input, one add per extra term and the bias, one clip.
    assert folded.count("R.multiply(") == 1 + residual
    assert folded.count("R.clip(") == 1 and folded.count("R.round(") == 1
    high = min(255, round(6 * k))  # ReLU6's bound, merged into the quantizer's clip
    assert f"T.float64({float(high)})" in folded

    rng = np.random.default_rng(1)
    acc = rng.integers(-400, 600, SHAPE).astype("int32")
    res = rng.integers(-127, 128, SHAPE).astype("int8")
    ref = _reference(acc, res, consts, residual)
    assert len(np.unique(ref)) > 10 and ref.min() == 0  # the reference varies, and clips
    if high < 255:
        assert (ref == high).any()  # ReLU6 clips too
    vm = relax.VirtualMachine(build(mod), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(acc), tvm.runtime.tensor(res)).numpy()
    diff = np.abs(got.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.95, diff


def test_on_x86_round_clip_and_cast_are_one_lrint_kernel():
    """Built for x86 (the numerics test above runs that build), the chain ends in one
    elementwise kernel that clips and converts with llvm.lrint: no round op is left."""
    target = host_target()
    if not has_feature("sse2", target):
        pytest.skip(f"{target} is not an x86 target: the chain keeps round, clip and cast")
    mod, _ = _chain(30.0, True)
    with target:
        folded = FoldRequantize()(mod)
    script = folded.script()
    assert "R.round(" not in script and "R.clip(" not in script
    (kernel,) = [f for gv, f in folded.functions_items() if gv.name_hint.startswith("requantize")]
    body = kernel.script()
    assert body.count("llvm.lrint") == 1 and "T.float32(180.0)" in body  # 6 x 30, clipped first


def test_a_chain_whose_values_are_read_elsewhere_is_left_alone():
    """The BN output is also returned: folding would drop nothing and recompute the rest."""
    op, bb = relax.op, relax.BlockBuilder()
    acc = relax.Var("acc", relax.TensorType(SHAPE, "int32"))
    with bb.function("main", [acc]):
        with bb.dataflow():
            x = bb.emit(op.multiply(bb.emit(op.astype(acc, "float32")), relax.const(0.5)))
            shared = bb.emit(op.add(x, relax.const(1.0)))
            q = bb.emit(op.multiply(shared, relax.const(4.0)))
            q = bb.emit(op.astype(bb.emit(op.clip(bb.emit(op.round(q)), -127.0, 127.0)), "int8"))
            out = bb.emit_output(relax.Tuple([q, shared]))
        bb.emit_func_output(out)
    mod = bb.get()
    folded = FoldRequantize()(mod)["main"].script()
    assert folded.count("R.multiply(") == 2  # the chain through ``shared`` is unchanged
    x = np.arange(60, dtype="int32").reshape(SHAPE) - 30
    got = run(build(mod), x)
    np.testing.assert_array_equal(got, np.clip(np.rint((x * 0.5 + 1) * 4), -127, 127))
