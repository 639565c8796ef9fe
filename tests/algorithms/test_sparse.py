"""The CSR algorithms: same results as the dense ones at any sparsity, empty rows included."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from dlas.algorithms import ALGORITHMS, lower
from dlas.algorithms.sparse import to_block_csr, to_csr
from dlas.compiler.build import build
from tests.algorithms.util import Case, check_cases, host_target, relative_error

SPARSE = [n for n in ALGORITHMS.names() if ALGORITHMS.get(n).sparse]
LEVELS = [0.0, 0.5, 0.9, 1.0]
SHAPES = [
    Case(1, 16, 10, 10, 32, 3, pad=1),
    Case(2, 8, 9, 9, 16, 3, stride=2, pad=1),
    Case(1, 16, 6, 6, 24, 1),
    Case(1, 16, 8, 8, 16, 3, pad=1, groups=16),
]
CASES = [shape for _ in LEVELS for shape in SHAPES]
CASE_LEVELS = [level for level in LEVELS for _ in SHAPES]


@pytest.fixture(scope="module")
def target():
    return host_target()


def test_sparse_algorithms_are_registered():
    assert set(SPARSE) == {"sparse_direct", "sparse_gemm", "sparse_spatial_pack"}
    for name in SPARSE:
        assert ALGORITHMS.get(name).dense_counterpart in ALGORITHMS


@pytest.mark.parametrize("algorithm", SPARSE)
def test_sparse_matches_pytorch_at_every_sparsity(algorithm, target):
    lowered = check_cases(algorithm, CASES, target, sparsity=CASE_LEVELS)
    measured = [row["sparsity"] for row in lowered.layers]
    # The layer table reports the zeros the weights really have.
    for got, level in zip(measured, CASE_LEVELS, strict=True):
        assert abs(got - level) < 0.05


def _module_and_weights(rng: np.random.Generator):
    """A conv whose output channels 0, 5 and 16..31 (a whole 16-channel block) are all zero,
    then a linear layer with empty rows too."""
    w = rng.standard_normal((32, 16, 3, 3)).astype("float32")
    w[np.abs(w) < 1.0] = 0.0
    w[[0, 5]] = 0.0
    w[16:32] = 0.0
    fc = rng.standard_normal((16 * 6 * 6, 10)).astype("float32")
    fc[rng.random(fc.shape) < 0.7] = 0.0
    fc[:, [2, 7]] = 0.0
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 16, 8, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(w)))  # 32 x 6 x 6
            y = bb.emit(relax.op.nn.relu(y))
            y = bb.emit(relax.op.reshape(y, (1, 32 * 6 * 6)))
            y = bb.emit(relax.op.strided_slice(y, axes=[1], begin=[0], end=[16 * 6 * 6]))
            out = bb.emit_output(relax.op.matmul(y, relax.const(fc)))
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize("algorithm", SPARSE)
def test_empty_output_channels(algorithm, target):
    rng = np.random.default_rng(3)
    mod = _module_and_weights(rng)
    x = tvm.runtime.tensor(rng.standard_normal((1, 16, 8, 8)).astype("float32"), tvm.cpu())
    results = {}
    for name in (algorithm, ALGORITHMS.get(algorithm).dense_counterpart):
        lowered = lower(mod, name, target)
        results[name] = relax.VirtualMachine(build(lowered.mod, target), tvm.cpu())["main"](x)
        results[name] = results[name].numpy()
        if name == algorithm:
            assert [row["op"] for row in lowered.layers] == ["conv2d", "dense"]
            assert all(row["sparsity"] > 0.5 for row in lowered.layers)
    sparse, dense = results.values()
    assert np.abs(dense).max() > 0  # the check below must be able to fail
    assert relative_error(sparse, dense) <= 1e-5


def test_csr_round_trip():
    rng = np.random.default_rng(0)
    m = rng.standard_normal((32, 40)).astype("float32")
    m[rng.random(m.shape) < 0.8] = 0
    m[3] = 0
    csr = to_csr(m)
    back = np.zeros_like(m)
    for r in range(m.shape[0]):
        lo, hi = csr.indptr[r], csr.indptr[r + 1]
        back[r, csr.indices[lo:hi]] = csr.data[lo:hi]
    np.testing.assert_array_equal(back, m)
    assert csr.nnz == np.count_nonzero(m)

    bsr = to_block_csr(m, 16)
    back = np.zeros_like(m)
    for b in range(2):
        lo, hi = bsr.indptr[b], bsr.indptr[b + 1]
        back[b * 16 : b * 16 + 16, bsr.indices[lo:hi]] = bsr.data[lo:hi].T
    np.testing.assert_array_equal(back, m)
