"""Register tiles sized for the target's vector registers: AVX-512's 32 zmm hold 24 16-lane
accumulators, AVX2's 16 ymm (two per accumulator) hold 6; a tile sized for AVX-512 spills on
an AVX2 CPU (ResNet18-32 ran 1.8x slower on Zen 3)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import tvm
import tvm_ffi

from dlas.algorithms import lower, shapes
from tests.algorithms.util import Case, check_cases, conv_module, host_target, random_weights


def _target(mcpu: str, triple: str = "x86_64-linux-gnu") -> tvm.target.Target:
    return tvm.target.Target({"kind": "llvm", "mtriple": triple, "mcpu": mcpu, "num-cores": 2})


@pytest.mark.parametrize(
    ("mcpu", "triple", "accumulators"),
    [
        ("sapphirerapids", "x86_64-linux-gnu", 24),
        ("skylake-avx512", "x86_64-linux-gnu", 24),
        ("skylake", "x86_64-linux-gnu", 6),  # the study's i7
        ("znver3", "x86_64-linux-gnu", 6),
        ("nehalem", "x86_64-linux-gnu", 3),  # SSE: 16 xmm, four per accumulator
        ("cortex-a73", "aarch64-linux-gnu", 6),  # HiKey 970: 32 q registers, four each
    ],
)
def test_accumulator_budget_follows_the_vector_registers(mcpu, triple, accumulators):
    with _target(mcpu, triple):
        assert shapes.max_accumulators() == accumulators
        rows, cols = shapes.pixel_tile(16, 16, 2)
        assert 2 * rows * cols <= accumulators
        # 112 channels (7 blocks) in one tile where the registers hold it, with its pixels.
        vectors = shapes.odd_vectors()
        assert vectors * math.prod(shapes.pixel_tile(14, 14, vectors)) <= max(accumulators, 1)
        assert vectors == (7 if accumulators == 24 else accumulators // 3)
    assert shapes.max_accumulators() == shapes.MAX_ACCUMULATORS  # no target: AVX-512's


def test_lowering_schedules_for_the_target_it_is_given():
    case = Case(1, 32, 16, 16, 64, 3, pad=1)
    rng = np.random.default_rng(0)
    mod = conv_module([case], [random_weights(case, 0.0, rng)], [np.zeros(64, "float32")])
    wide, narrow = (lower(mod, "direct", _target(m)).mod for m in ("skylake-avx512", "skylake"))
    assert not tvm_ffi.structural_equal(wide, narrow)
    again = lower(mod, "direct", _target("skylake-avx512")).mod
    assert tvm_ffi.structural_equal(wide, again)


def _one_conv(case: Case) -> tvm.IRModule:
    """The layer ``case`` alone, random weights, zero bias."""
    w = random_weights(case, 0.0, np.random.default_rng(0))
    return conv_module([case], [w], [np.zeros(case.oc, "float32")])


def _parallel_loops(
    case: Case, algorithm: str, target: tvm.target.Target | None = None
) -> list[str]:
    """``name(extent)`` of each parallel loop of the layer's kernels (one thread without a
    ``target``)."""
    mod = _one_conv(case)
    lowered = lower(mod, algorithm, target or tvm.target.Target("llvm"))
    scripts = [f.script() for _, f in lowered.mod.functions_items()]
    loop = r"for (\w+) in T.parallel\((?:T.int64\()?(\d+)"
    return [f"{n}({e})" for s in scripts if "dlas.op" in s for n, e in re.findall(loop, s)]


@pytest.mark.parametrize("algorithm", ["direct", "gemm", "spatial_pack"])
def test_threads_split_rows_where_the_weights_are_smaller_than_the_input(algorithm):
    # MobileNetV2's projection at 14 px (576 -> 96): a thread split by channels reads the whole
    # input, half of it from the other core's cache; ResNet's 3x3 layers keep channels.
    projection = shapes.ConvSpec(
        1, 576, 14, 14, 96, 1, 1, (1, 1), (0,) * 4, (1, 1), 1, "float32", "float32"
    )
    resnet = shapes.ConvSpec(
        1, 256, 14, 14, 256, 3, 3, (1, 1), (1,) * 4, (1, 1), 1, "float32", "float32"
    )
    assert projection.split_by_rows and not resnet.split_by_rows
    # Narrow maps (under 16 px) run in 16-channel tiles: tasks of rows x channel blocks.
    rows_first = _parallel_loops(Case(1, 64, 14, 14, 16, 1), algorithm)[-1]  # after packing
    assert re.match(r"n_.*y_0_ob_0_fused", rows_first), rows_first
    channels_first = _parallel_loops(Case(1, 16, 14, 14, 64, 3, pad=1), algorithm)[-1]
    assert re.match(r"n_.*ob_0_y_0_fused", channels_first), channels_first


def _depthwise_spec(channels: int, pixels: int) -> shapes.ConvSpec:
    return shapes.ConvSpec(
        1, channels, pixels, pixels, channels, 3, 3, (1, 1), (1,) * 4, (1, 1), channels,
        "float32", "float32",
    )  # fmt: skip


def test_a_depthwise_layer_splits_its_input_as_the_layer_before_split_it():
    # The 1x1 layer that makes 128 channels at 16 px splits them by rows (its weights, in x
    # 128, are fewer than its input, in x 256): the depthwise layer's tasks go band by band of
    # rows, at least a band per thread. 96 channels at 8 px were split by channel blocks.
    assert _depthwise_spec(128, 16).input_split_by_rows
    assert not _depthwise_spec(96, 8).input_split_by_rows
    by_rows = Case(1, 128, 16, 16, 128, 3, pad=1, groups=128)
    by_channels = Case(1, 96, 8, 8, 96, 3, pad=1, groups=96)
    assert _parallel_loops(by_rows, "blocked") == ["n_y_0_0_cb_fused(8)"]  # one 16-row band
    assert _parallel_loops(by_rows, "blocked", _target("znver4")) == ["n_y_0_0_cb_fused(16)"]
    assert _parallel_loops(by_channels, "blocked", _target("znver4")) == ["n_cb_y_0_0_fused(12)"]


def _accumulation_head(case: Case, algorithm: str, target: tvm.target.Target | None = None) -> str:
    """The script of the layer's kernel up to its accumulation block (the loops around it)."""
    lowered = lower(_one_conv(case), algorithm, target or tvm.target.Target("llvm"))
    for _, func in lowered.mod.functions_items():
        script = func.script()
        if "conv_update" in script:
            return script[: script.index('T.sblock("conv_update")')]
    raise AssertionError("no conv_update block")


def _loop_order(case: Case, algorithm: str, target: tvm.target.Target | None = None) -> list[str]:
    """The loops around the conv's accumulation, outermost first (the init's excluded)."""
    loops = re.findall(r"for ([\w, ]+) in", _accumulation_head(case, algorithm, target))
    return [n for names in loops for n in names.split(", ") if "init" not in n]


@pytest.mark.parametrize(("algorithm", "reduction"), [("spatial_pack", "ib"), ("gemm", "k")])
def test_a_tile_whose_weights_fit_in_l1_reduces_all_its_channels_in_registers(algorithm, reduction):
    # A 32->64 1x1 layer's tile reads 32 x 32 weights (4 KiB): its sums never leave the
    # registers. A 256-channel 3x3 layer's (288 KiB) are reduced a chunk at a time along a row.
    small = _loop_order(Case(1, 32, 16, 16, 64, 1), algorithm)
    large = _loop_order(Case(1, 256, 16, 16, 64, 3, pad=1), algorithm)
    first = f"{reduction}_0"
    assert small.index("x_0") < small.index(first), small
    assert large.index(first) < large.index("x_0"), large


def test_a_3x3_layer_on_a_small_map_takes_its_rows_inside_each_chunk():
    # 256 -> 128 at 4 px: a chunk's weights serve every row of tiles while in L1, and the
    # threads split the 4 channel tiles only. At 16 px the plane's sums (32 KiB) exceed
    # CHUNK_PLANE_BYTES: a task per channel tile and row, each reading the chunk again.
    small, large = Case(1, 256, 4, 4, 128, 3, pad=1), Case(1, 256, 16, 16, 128, 3, pad=1)
    assert _parallel_loops(small, "spatial_pack", _target("znver4"))[-1] == "n_ob_0_fused(4)"
    assert _parallel_loops(large, "spatial_pack", _target("znver4"))[-1] == "n_ob_0_y_0_fused(64)"
    rows_inside = _loop_order(small, "spatial_pack")
    assert rows_inside.index("ib_0") < rows_inside.index("y_0") < rows_inside.index("ib_1")
    assert "y_0" not in _loop_order(large, "spatial_pack")  # fused into the parallel loop


def _tile_extents(case: Case, algorithm: str, target: tvm.target.Target) -> dict[str, int]:
    """{loop: extent} of the unrolled loops around the conv's accumulation (its register
    tile)."""
    head = _accumulation_head(case, algorithm, target)
    head = head[head.rindex("T.grid") :]  # the reduction loops, then the tile's
    pattern = r"for (\w+) in T.unroll\((?:T.int64\()?(\d+)"
    return {n: int(e) for n, e in re.findall(pattern, head)}


def test_winograd_products_over_few_tiles_take_them_all_with_one_channel_vector():
    # At 14 px a position has 4x4 tiles: one output-channel vector over all 16 loads each
    # weight vector of U (9.4 MB at 256 channels, from memory every call) for 16 tiles, where
    # two vectors over 2x4 tiles loaded it for 8. At 28 px, 49 tiles do not fit: two vectors.
    small, large = Case(1, 64, 14, 14, 64, 3, pad=1), Case(1, 64, 28, 28, 64, 3, pad=1)
    assert _tile_extents(small, "winograd", _target("znver4")) == {"y_1": 4, "x_1": 4}
    assert _tile_extents(large, "winograd", _target("znver4")) == {"x_1": 7, "ob_1": 2}


@pytest.mark.parametrize("algorithm", ["spatial_pack", "blocked"])
def test_a_1x1_layer_of_many_channels_reduces_a_panel_of_them_over_a_band_of_rows(algorithm):
    # ResNet50's 1024 -> 256 at 14 px on AVX-512: tasks of 4 channel vectors x 2 rows (28, for
    # 2 threads), each reducing 128 input channels (8 blocks) per pass over its band, in
    # tiles of 4 vectors x 7 px. 256 input channels keep the tiles of other layers, as does
    # the first layer on AVX2 (16 registers).
    wide = _target("sapphirerapids")
    panel = Case(1, 1024, 14, 14, 256, 1)
    assert _parallel_loops(panel, algorithm, wide)[-1] == "n_ob_0_y_0_0_fused(28)"
    order = _loop_order(panel, algorithm, wide)
    assert order.index("ib_0") < order.index("y_0_1") < order.index("x_0") < order.index("ib_1")
    assert _tile_extents(panel, algorithm, wide) == {"ob_1": 4, "x_1": 7}
    for other, target in ((Case(1, 256, 14, 14, 256, 1), wide), (panel, _target("znver3"))):
        assert "y_0_0" not in " ".join(_parallel_loops(other, algorithm, target))


@pytest.mark.parametrize("algorithm", ["spatial_pack", "blocked"])
def test_panels_take_2_vectors_where_4_would_leave_a_band_of_few_tiles_or_on_wide_rows(algorithm):
    # 4 vectors would leave EfficientNet-B0's 1152 -> 192 at 7 px a band of one tile, and
    # DenseNet161's 1872 -> 192 at 14 px bands of 2 (42 tasks; 21 would split unevenly): 2
    # vectors, a whole plane (6 tasks) and bands of 7 rows of 14-px tiles (12 tasks, rows
    # first: the input outweighs the weights). 336 input channels take a 2-vector panel on
    # DenseNet's 56-px rows, not on 14-px ones.
    wide = _target("sapphirerapids")
    cases = {
        Case(1, 1152, 7, 7, 192, 1): ("n_ob_0_y_0_0_fused(6)", 7),
        Case(1, 1872, 14, 14, 192, 1): ("n_y_0_0_ob_0_fused(12)", 14),
        Case(1, 336, 56, 56, 192, 1): ("n_y_0_0_ob_0_fused(168)", 14),
    }
    for case, (parallel, pixels) in cases.items():
        assert _parallel_loops(case, algorithm, wide)[-1] == parallel
        assert _tile_extents(case, algorithm, wide) == {"ob_1": 2, "x_1": pixels}
    assert "y_0_0" not in " ".join(_parallel_loops(Case(1, 336, 14, 14, 192, 1), algorithm, wide))


@pytest.mark.parametrize("algorithm", ["spatial_pack", "blocked"])
def test_pointwise_panels_match_pytorch(algorithm):
    # On this host's registers: panels where it has AVX-512 (bands of rows, by channels or,
    # where the input is larger than the weights, by rows first; stride 2; 4 or 2 vectors),
    # else the tiles of other layers.
    cases = [
        Case(1, 512, 14, 14, 128, 1),
        Case(1, 512, 28, 28, 64, 1),
        Case(1, 1024, 14, 14, 512, 1, stride=2),
        Case(1, 2048, 7, 7, 512, 1),
        Case(1, 576, 7, 7, 128, 1),  # 2 vectors
        Case(1, 288, 28, 28, 64, 1),  # 2 vectors, fewer channels on a wide row
    ]
    assert shapes.ConvSpec(
        1, 512, 28, 28, 64, 1, 1, (1, 1), (0,) * 4, (1, 1), 1, "float32", "float32"
    ).split_by_rows
    check_cases(algorithm, cases, host_target())


@pytest.mark.parametrize("algorithm", ["spatial_pack", "blocked", "gemm"])
def test_a_7px_layer_on_avx2_takes_a_ragged_tile_or_the_channel_vectors_its_registers_hold(
    algorithm,
):
    # No divisor of 7 fits AVX2's 6 accumulators beside 2 channel vectors. Where the blocks
    # divide by 3, tiles of 2 px x 3 vectors, the row's last one partial, run a ymm half of
    # each vector at a time (oi_0); a 3x3 layer too (stride 2: blocked's stride-1 ones run
    # Winograd). Else a tile of one pixel takes as many vectors as the registers hold: 5 of
    # 10 blocks. 14 px keeps 2 vectors x 2 px, AVX-512 2 vectors x 7 px.
    avx2, wide = _target("znver1"), _target("sapphirerapids")
    ragged = {"ob_1": 3, "oi_0": 2, "x_1": 2}
    cases = {Case(1, 1152, 7, 7, 192, 1): ragged, Case(1, 960, 7, 7, 160, 1): {"ob_1": 5}}
    cases[Case(1, 96, 14, 14, 192, 3, stride=2, pad=1)] = ragged
    for case, tile in cases.items():
        assert _tile_extents(case, algorithm, avx2) == tile, case.id
    assert _tile_extents(Case(1, 192, 14, 14, 192, 1), algorithm, avx2) == {"ob_1": 2, "x_1": 2}
    assert _tile_extents(Case(1, 192, 7, 7, 1152, 1), algorithm, wide) == {"ob_1": 2, "x_1": 7}
    if algorithm == "gemm":  # 960 inputs in chunks whose weights fit in L1 at 3 vectors
        head = _accumulation_head(Case(1, 960, 7, 7, 192, 1), algorithm, avx2)
        grid = re.search(r"for k_0, x_0, k_1\b.*T\.grid\((.*)\)", head)[1]
        k_1 = [int(e) for e in re.findall(r"\d+", grid.replace("int64", ""))][2]
        assert k_1 * 3 * shapes.LANES * 4 <= shapes.TILE_WEIGHTS_IN_L1, grid
    if not shapes.has_feature("avx2", host_target()):
        pytest.skip("this CPU cannot run AVX2 code: numerics not checked")
    check_cases(algorithm, [*cases, Case(1, 192, 7, 7, 1152, 1)], avx2)


@pytest.mark.parametrize(
    ("mcpu", "triple", "blocks", "tile"),
    [
        ("znver1", "x86_64-linux-gnu", 12, (2, 3)),  # 2 x (3 x 2 + 1) + 1 = 15 of 16 ymm
        ("znver1", "x86_64-linux-gnu", 10, None),  # 3 x 2 would take all 16; 6 x 1 is 19
        ("cortex-a73", "aarch64-linux-gnu", 12, (6, 1)),  # 6 x (1 x 4 + 1) + 1 = 31 of 32
        ("sapphirerapids", "x86_64-linux-gnu", 12, None),  # 7 px fit in 24 accumulators
    ],
)
def test_a_ragged_tile_keeps_a_register_spare(mcpu, triple, blocks, tile):
    with _target(mcpu, triple):
        assert shapes.ragged_tile(blocks, 7, 7) == tile
        assert shapes.ragged_tile(blocks, 14, 14) is None  # 2 px divide 14
        if tile:
            assert shapes.channel_vectors(blocks, 7, 7) == tile[1]


def _reduction_chunk(case: Case, algorithm: str, target: tvm.target.Target) -> int:
    """Input-channel blocks the conv's tile reduces per pass (the extent of ``ib_1``)."""
    head = _accumulation_head(case, algorithm, target)
    names, grid = re.search(r"for ([\w, ]*\bib_1\b[\w, ]*) in T\.grid\((.*)\)", head).groups()
    extents = [int(e) for e in re.findall(r"\d+", grid.replace("int64", ""))]
    return dict(zip(names.split(", "), extents, strict=True))["ib_1"]


@pytest.mark.parametrize("algorithm", ["spatial_pack", "blocked"])
def test_a_1x1_layer_of_many_channels_on_avx2_reduces_16_kib_of_weights_a_pass(algorithm):
    # ResNet50's 1024 -> 256 at 14 px on AVX2: tiles of 2 vectors reduce 128 input channels
    # (8 blocks, 16 KiB of weights) per pass over their row, 3 vectors at 7 px 64 (4 blocks).
    # A 3x3 layer's block of weights (18 KiB) keeps passes of one block (stride 2: blocked's
    # stride-1 ones run Winograd), as does AVX-512 where no panel takes the layer.
    avx2, wide = _target("znver1"), _target("sapphirerapids")
    cases = {Case(1, 1024, 14, 14, 256, 1): 8, Case(1, 1152, 7, 7, 192, 1): 4}
    cases[Case(1, 256, 16, 16, 64, 3, stride=2, pad=1)] = 1
    for case, blocks in cases.items():
        assert _reduction_chunk(case, algorithm, avx2) == blocks, case.id
    assert _reduction_chunk(Case(1, 384, 14, 14, 64, 1), algorithm, wide) == 1
    if not shapes.has_feature("avx2", host_target()):
        pytest.skip("this CPU cannot run AVX2 code: numerics not checked")
    check_cases(algorithm, [Case(1, 512, 14, 14, 128, 1), Case(1, 1152, 7, 7, 96, 1)], avx2)
