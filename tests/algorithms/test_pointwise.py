"""direct's pointwise form: 1x1 convs as products over whole rows of 16-pixel vectors.

Its numerics run in test_conv's grid (an 8x8 map, a 16x16 one with 72 channels, a batch of
two with 13 channels); here: which layers take it, and what its kernels look like.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from tvm import tirx

from dlas.algorithms import lower, pointwise
from dlas.algorithms.shapes import LANES, ConvSpec
from tests.algorithms.util import Case, conv_module, host_target


def spec(h: int, w: int, *, k: int = 1, stride: int = 1, pad: int = 0, groups: int = 1):
    p = (pad,) * 4
    return ConvSpec(1, 16, h, w, 32, k, k, (stride,) * 2, p, (1, 1), groups, "float32", "float32")


@pytest.mark.parametrize(
    ("height", "width", "rows"),
    [(56, 56, 8), (112, 112, 4), (28, 28, 28), (8, 8, 8), (4, 12, 4), (7, 7, 0), (14, 14, 0)],
)
def test_a_task_is_whole_rows_of_whole_vectors(height, width, rows):
    # The fewest rows of at least POINTWISE_TASK_PIXELS pixels, else the whole map.
    assert pointwise.task_rows(height, width) == rows
    if rows:
        assert height % rows == 0 and rows * width % LANES == 0


def test_register_tiles_pair_vectors_else_take_the_fewest_loads():
    # Vectors that pair up: two of them, and the channels that fill the budget.
    assert pointwise.register_tile(28, 256, 24, whole_planes=False) == (2, 8)
    # A 28x28 plane (49 vectors) as one task: 3 vectors x 8 channels, the last group partial.
    assert pointwise.register_tile(49, 128, 24, whole_planes=True) == (3, 8)
    # Within a plane, a partial group would spill into the next task's rows: divisors only.
    vectors, channels = pointwise.register_tile(21, 128, 24, whole_planes=False)
    assert 21 % vectors == 0 and vectors * channels <= 24
    # Six accumulators (AVX2): one vector, as measured on Zen 3.
    assert pointwise.register_tile(49, 128, 6, whole_planes=True) == (1, 4)


def test_only_unpadded_stride_one_ungrouped_1x1_convs_take_the_form():
    assert pointwise.eligible(spec(56, 56))
    assert not pointwise.eligible(spec(56, 56, k=3, pad=1))
    assert not pointwise.eligible(spec(56, 56, stride=2))
    assert not pointwise.eligible(spec(56, 56, pad=1))
    assert not pointwise.eligible(spec(56, 56, groups=2))
    assert not pointwise.eligible(spec(7, 7))  # 49 pixels never fill whole vectors


def _ops(func: tirx.PrimFunc) -> set[str]:
    return set(re.findall(r'"dlas.op": "(\w+)"', func.script()))


def test_eligible_layers_write_nchw_from_their_own_tile_and_the_rest_keep_their_forms():
    cases = [Case(1, 16, 8, 8, 32, 1), Case(1, 16, 7, 7, 32, 1)]
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((c.oc, c.c, 1, 1)).astype("float32") for c in cases]
    biases = [rng.standard_normal(c.oc).astype("float32") for c in cases]
    mod = lower(conv_module(cases, weights, biases), "direct", host_target()).mod
    funcs = [f for _, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)]
    by_op = {op: f for f in funcs for op in _ops(f)}
    assert set(by_op) == {"pointwise", "channels"}
    text = by_op["pointwise"].script()
    # The epilogue (bias + relu) is computed inside the task's parallel loop, straight
    # from the tile: one parallel loop, no unpack block, a 16-lane vector loop.
    assert text.count("T.parallel(") == 1
    assert "unpack" not in text
    assert re.search(rf"T.vectorized\((T.int64\()?{LANES}\)", text)
