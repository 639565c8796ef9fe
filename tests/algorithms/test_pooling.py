"""Strided pooling in two vectorizable passes: PyTorch's values, no per-lane loads."""

from __future__ import annotations

import functools
import shutil
import subprocess

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

from dlas.algorithms import LoweredModule, lower
from dlas.compiler.build import build
from tests.algorithms.util import host_target

# (kernel, stride, padding, ceil_mode, height, width): ResNet's and DenseNet's stem pool,
# VGG's, odd sizes, ceil-mode overhang, a stride-3 window and a non-square one.
MAX_CASES = [
    (3, 2, 1, False, 20, 20),
    (2, 2, 0, False, 12, 12),
    (3, 2, 1, True, 11, 13),
    (3, 2, 0, True, 10, 9),
    (3, 3, 1, False, 17, 16),
    ((3, 2), (2, 1), (1, 0), False, 9, 14),
]


def pool_module(op, shape, dtype, kernel, stride, padding, ceil_mode):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(op(x, kernel, stride, padding, ceil_mode=ceil_mode))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def run(mod, x: np.ndarray) -> tuple[np.ndarray, str]:
    target = host_target()
    lowered = lower(mod, "direct", target)
    assert any("pool_columns" in f.script() for f in lowered.mod.functions.values())
    vm = relax.VirtualMachine(build(lowered.mod, target), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy(), lowered.mod.script()


def pairs(value):
    return value if isinstance(value, tuple) else (value, value)


@pytest.mark.parametrize("dtype", ["float32", "uint8", "int8"])
@pytest.mark.parametrize("case", MAX_CASES, ids=str)
def test_max_pool_matches_pytorch(case, dtype):
    kernel, stride, padding, ceil_mode, h, w = case
    rng = np.random.default_rng(0)
    if dtype == "float32":
        x = rng.standard_normal((2, 5, h, w)).astype(dtype)
    else:
        x = rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, (2, 5, h, w), dtype=dtype)
    ph, pw = pairs(padding)
    mod = pool_module(
        relax.op.nn.max_pool2d, x.shape, dtype, pairs(kernel), pairs(stride),
        (ph, pw, ph, pw), ceil_mode,
    )  # fmt: skip
    out, _ = run(mod, x)
    ref = torch.nn.functional.max_pool2d(
        torch.from_numpy(x.astype("float32")), kernel, stride, padding, ceil_mode=ceil_mode
    ).numpy()
    assert np.unique(ref).size > 10  # the windows pick different values
    np.testing.assert_array_equal(out.astype("float32"), ref)


def test_avg_pool_matches_pytorch():
    x = np.random.default_rng(1).standard_normal((1, 6, 14, 10)).astype("float32")
    mod = pool_module(
        relax.op.nn.avg_pool2d, x.shape, "float32", (2, 2), (2, 2), (0, 0, 0, 0), False
    )
    out, _ = run(mod, x)
    ref = torch.nn.functional.avg_pool2d(torch.from_numpy(x), 2, 2).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump is not installed")
def test_strided_max_pool_has_no_per_lane_loads(tmp_path):
    """TOPI's vectorized stride-2 window read compiles to one vinsertps per lane."""
    mod = pool_module(
        relax.op.nn.max_pool2d, (1, 16, 56, 56), "float32", (3, 3), (2, 2), (1, 1, 1, 1), False
    )
    target = host_target()
    path = tmp_path / "pool.so"
    build(lower(mod, "direct", target).mod, target).export_library(str(path))
    text = subprocess.run(["objdump", "-d", str(path)], capture_output=True, text=True).stdout
    assert "maxps" in text
    assert "vinsertps" not in text and "vgatherdps" not in text


def test_a_blocked_max_pool_pads_each_output_rows_input_in_its_task():
    """In 16-channel blocks (algorithm=blocked) the pool runs TOPI's window over a padded copy:
    each task pads the three input rows of its output row, where a pass of its own padded the
    whole map first (two parallel loops, the map through memory twice). PyTorch's values."""
    x = np.random.default_rng(2).standard_normal((1, 32, 20, 18)).astype("float32")
    blocked = x.reshape(1, 2, 16, 20, 18).transpose(0, 1, 3, 4, 2).copy()
    pool = functools.partial(relax.op.nn.max_pool2d, layout="NCHW16c")
    mod = pool_module(pool, blocked.shape, "float32", (3, 3), (2, 2), (1, 1, 1, 1), False)
    target = host_target()
    lowered = lower(mod, "direct", target)
    (script,) = [f.script() for _, f in lowered.mod.functions_items() if "pool_max" in f.script()]
    assert script.count("T.parallel") == 1
    assert script.index("T.parallel") < script.index('T.sblock("pad_temp")')
    vm = relax.VirtualMachine(build(lowered.mod, target), tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(blocked)).numpy()
    ref = torch.nn.functional.max_pool2d(torch.from_numpy(x), 3, 2, 1).numpy()
    np.testing.assert_array_equal(out.transpose(0, 1, 4, 2, 3).reshape(ref.shape), ref)


# (shape, partial sums): 3136 pixels in two 16-lane vectors, 784 in one (32 does not divide
# it), 196 in 28 lanes (no multiple of 16 divides it), a 7x7 plane is one round (summed as
# before); a batch of two.
MEAN_CASES = [
    ((1, 32, 56, 56), 32),
    ((2, 8, 28, 28), 16),
    ((1, 24, 14, 14), 28),
    ((1, 16, 7, 7), 0),
]


def _lowered_mean(shape: tuple[int, ...]) -> tuple[LoweredModule, str]:
    """A mean over axes 2 and 3 of ``shape``, lowered for this host, and its kernel's script."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.mean(x, axis=[2, 3], keepdims=True)))
        bb.emit_func_output(out)
    lowered = lower(bb.get(), "direct", host_target())
    (script,) = [f.script() for _, f in lowered.mod.functions_items() if "x_red" in f.script()]
    return lowered, script


def _check_mean(lowered: LoweredModule, data: np.ndarray) -> None:
    vm = relax.VirtualMachine(build(lowered.mod, host_target()), tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(data)).numpy()
    ref = data.astype("float64").mean(axis=(2, 3), keepdims=True)
    assert np.ptp(ref) > 0.01  # the channels' means differ
    np.testing.assert_allclose(out, ref, rtol=1e-5)


@pytest.mark.parametrize(("shape", "lanes"), MEAN_CASES, ids=str)
def test_a_global_mean_sums_planes_in_vector_partial_sums(shape, lanes):
    """SE blocks' and classifiers' means over H, W: one serial add chain per channel took
    270 us for 32 x 112 x 112 (EfficientNet-B0's first one), 28x the partial sums' time."""
    lowered, script = _lowered_mean(shape)
    assert (f"T.vectorized(T.int64({lanes}))" in script and "x_red_rf" in script) == bool(lanes)
    _check_mean(lowered, np.random.default_rng(0).standard_normal(shape).astype("float32") + 1.0)


@pytest.mark.parametrize(("plane", "parallel"), [(112, True), (2, False)])
def test_a_blocked_mean_runs_in_parallel_where_it_reads_enough(plane, parallel):
    """A mean over 16-channel blocks (blocked's squeeze-excitation) has few outputs but may
    read many: 32 channels of 112 x 112 ran 21 us on one core, 12 us on two."""
    shape = (1, 2, plane, plane, 16)
    lowered, script = _lowered_mean(shape)
    assert ("T.parallel" in script) == parallel
    rng = np.random.default_rng(0)
    _check_mean(lowered, (rng.standard_normal(shape) + np.arange(16) * 0.1).astype("float32"))
