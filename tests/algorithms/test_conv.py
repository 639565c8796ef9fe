"""Every algorithm computes conv2d (+ a fused bias/relu epilogue) as PyTorch does.

All cases of a grid share one module, so each algorithm costs one lowering and one build.
"""

from __future__ import annotations

import itertools
import random

import pytest

from tests.algorithms.util import KERNELS, Case, check_cases, host_target

# A representative grid: kernel 1/3/5/7, stride 1/2, padding 0-3, groups 1/2/4/depthwise,
# a channel multiplier, dilation, odd and even sizes, batch 1 and 2, widths below, at and
# above one vector (16) and above one sparse tile (64), channel counts off the 16-lane grid.
GRID = [
    Case(1, 16, 12, 12, 32, 3, pad=1),
    Case(2, 8, 11, 11, 24, 5, stride=2, pad=2),
    Case(1, 3, 15, 15, 20, 7, stride=2, pad=3),
    Case(1, 16, 8, 8, 32, 1),
    Case(2, 16, 9, 9, 32, 1, stride=2),
    Case(1, 16, 10, 10, 16, 3, pad=1, groups=16),
    Case(2, 32, 7, 7, 32, 3, stride=2, pad=1, groups=32),
    Case(1, 8, 13, 13, 8, 5, pad=3, groups=8),
    Case(1, 16, 9, 9, 32, 3, groups=2),
    Case(2, 12, 6, 6, 12, 3, pad=1, groups=4),
    Case(1, 4, 8, 8, 8, 3, pad=1, groups=4),
    Case(1, 8, 20, 20, 16, 3, pad=1),
    Case(1, 4, 70, 70, 8, 3, pad=1),
    Case(1, 16, 5, 5, 8, 3, pad=2),
    Case(1, 8, 12, 12, 8, 3, pad=2, dilation=2),
    Case(1, 64, 4, 4, 64, 3, pad=1),
    # An odd number (> 1) of 16-channel blocks, the last one partly padding (channel-pruned
    # MobileNetV2 has these): gemm's epilogue once read blocks other threads had not written.
    Case(1, 12, 16, 16, 72, 1),
    # 1x1 rows as whole vectors (direct's pointwise form): batch 2, a prime channel count
    # (one-channel register tiles), tasks of 4 rows of 12 pixels.
    Case(2, 24, 4, 12, 13, 1),
    # A whole plane of 25 vectors as one task: tiles of 3 vectors, the last one partial.
    Case(1, 8, 20, 20, 24, 1),
    Case(1, 16, 12, 12, 40, 3, pad=1),
    # Strided depthwise rows read column phases (direct): odd widths, 5x5, stride 3, dilation.
    Case(1, 16, 23, 23, 16, 5, stride=2, pad=2, groups=16),
    Case(1, 8, 20, 19, 8, 3, stride=3, pad=1, groups=8),
    Case(1, 8, 21, 21, 8, 3, stride=2, pad=2, groups=8, dilation=2),
]


@pytest.fixture(scope="module")
def target():
    return host_target()


@pytest.mark.parametrize("algorithm", KERNELS)
def test_conv_grid_matches_pytorch(algorithm, target):
    lowered = check_cases(algorithm, GRID, target)
    assert [row["op"] for row in lowered.layers] == ["conv2d"] * len(GRID)


def _exhaustive_grid(seed: int, count: int) -> list[Case]:
    """A seeded sample of kernel x stride x padding x groups x size x batch."""
    cases = []
    for k, s, p, g, hw, n in itertools.product(
        (1, 3, 5, 7), (1, 2), (0, 1, 2, 3), ("1", "2", "dw"), (7, 8, 13, 16), (1, 2)
    ):
        if hw + 2 * p < k:
            continue
        c = 16 if g == "dw" else 8
        groups = {"1": 1, "2": 2, "dw": c}[g]
        oc = c if g == "dw" else 24
        cases.append(Case(n, c, hw, hw, oc, k, stride=s, pad=p, groups=groups))
    return random.Random(seed).sample(cases, count)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", KERNELS)
def test_conv_exhaustive_sample(algorithm, target):
    check_cases(algorithm, _exhaustive_grid(seed=1, count=96), target, seed=1)


def test_winograd_runs_eligible_layers_and_falls_back_on_the_rest(target):
    cases = [
        Case(2, 16, 13, 11, 24, 3, pad=1),  # partial 4x4 tiles on both axes, batch 2
        Case(1, 32, 9, 9, 16, 3, pad=2),  # more padding than the kernel needs
        Case(1, 16, 12, 12, 32, 3, stride=2, pad=1),
        Case(1, 16, 8, 8, 32, 1),
        Case(1, 3, 10, 10, 16, 3, pad=1),
    ]
    layers = check_cases("winograd", cases, target).layers
    assert [row["algorithm"] for row in layers] == ["winograd"] * 2 + ["direct"] * 3
    assert [bool(row["fallback"]) for row in layers] == [False] * 2 + [True] * 3
