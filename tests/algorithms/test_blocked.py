"""algorithm=blocked: activations stay in 16-channel blocks from the stem to the pooling."""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
import pytest
import torch
import tvm
from torch import nn
from tvm import relax

from dlas.algorithms import activations, blocked_layout, lower
from dlas.algorithms.blocked import read_channels, written_channels
from dlas.algorithms.shapes import ALGORITHM_KEY, PADDED_LANES_KEY, has_feature
from dlas.compiler.build import build
from dlas.compiler.export import export
from dlas.data import InputSpec
from tests.algorithms.util import RTOL, host_target, relative_error, varying_references
from tests.conftest import calibrate_batchnorm


def conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1) -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout))


class Bottlenecks(nn.Module):
    """MobileNetV2's 24-channel bottleneck (ReLU6, a residual add) and EfficientNet's SiLU and
    squeeze-excitation, a 3x3 conv on 16x16 pixels (Winograd), then a grouped conv that
    cannot run blocked."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 32, 3, 2), nn.ReLU6())
        self.project = conv_bn(32, 24)
        self.expand = nn.Sequential(conv_bn(24, 144), nn.ReLU6())
        self.depthwise = nn.Sequential(conv_bn(144, 144, 3, 1, 144), nn.ReLU6())
        self.back = conv_bn(144, 24)
        self.wide = nn.Sequential(conv_bn(24, 96), nn.SiLU())
        self.squeeze = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(96, 4, 1), nn.SiLU())
        self.excite = nn.Sequential(nn.Conv2d(4, 96, 1), nn.Sigmoid())
        self.spatial = nn.Sequential(conv_bn(96, 96, 3), nn.ReLU())
        self.grouped = nn.Sequential(conv_bn(96, 32, 3, 2, groups=2), nn.ReLU())
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(self.stem(x))
        x = x + self.back(self.depthwise(self.expand(x)))
        x = self.wide(x)
        x = self.spatial(x * self.excite(self.squeeze(x)))
        x = self.grouped(x)
        return self.head(x.mean((2, 3)))


@pytest.fixture(scope="module")
def bottlenecks():
    torch.manual_seed(0)
    spec = InputSpec(3, 32, 10)
    model = Bottlenecks()
    calibrate_batchnorm(model, spec.shape)
    return export(model, spec), *varying_references(model, spec.shape)


def assert_matches(lowered, target: tvm.target.Target, inputs, refs) -> None:
    """The built model's logits match PyTorch's on every input."""
    vm = relax.VirtualMachine(build(lowered.mod, target), tvm.cpu())
    for x, ref in zip(inputs, refs, strict=True):
        out = vm["main"](tvm.runtime.tensor(x, tvm.cpu()))[0].numpy()
        assert relative_error(out, ref) <= RTOL


def test_every_eligible_conv_runs_blocked_and_matches_pytorch(bottlenecks):
    mod, inputs, refs = bottlenecks
    target = host_target()
    lowered = lower(mod, "blocked", target)
    assert_matches(lowered, target, inputs, refs)
    convs = [row for row in lowered.layers if row["op"] == "conv2d"]
    ran = [row["algorithm"] for row in convs]
    # The 24-channel layers run blocked too, in 32 channels, the last 8 of them zero.
    assert ran[:6] == ["blocked"] * 6
    assert convs[1]["weight_shape"] == [32, 32, 1, 1] and convs[2]["weight_shape"][1] == 32
    # The squeeze conv writes 4 channels, the grouped conv reads groups of 48: both direct.
    assert ran[6:] == ["direct", "blocked", "blocked", "direct"]
    kernels = [row["compute"] for row in convs if row["algorithm"] == "blocked"]
    # The stem reads 3 channels; the 3x3 stride-1 conv on 16x16 blocked pixels: Winograd.
    assert kernels == [*["spatial_pack"] * 3, "depthwise", *["spatial_pack"] * 3, "winograd"]
    assert all(row["fallback"] for row in convs if row["algorithm"] == "direct")
    # No transform runs as a kernel of its own: each is fused into its producer.
    names = [gv.name_hint for gv in lowered.mod.functions]
    transforms = [n for n in names if blocked_layout.TRANSFORM_PREFIX in n]
    assert transforms and all(n.startswith("fused_") for n in transforms)


def blocked_conv_reductions(lowered) -> Counter:
    """How many of the blocked convs' reductions run over each length (channels x taps)."""
    from dlas.algorithms.schedules import annotated_blocks, is_reduction

    lengths = Counter()
    for _, func in lowered.mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        sch = tvm.s_tir.Schedule(func)
        for block in annotated_blocks(sch, ALGORITHM_KEY):
            stmt = sch.get(block)
            if str(stmt.annotations[ALGORITHM_KEY]) == "blocked" and is_reduction(sch, block):
                reduce = tvm.tirx.IterVar.CommReduce
                axes = [iv for iv in stmt.iter_vars if iv.iter_type == reduce]
                lengths[math.prod(int(iv.dom.extent) for iv in axes)] += 1
    return lengths


def test_a_conv_does_not_reduce_over_the_zero_channels_its_input_was_padded_with(bottlenecks):
    """The two 1x1 convs of 24 input channels (32 in blocks, 8 of them padding) reduce over
    the 24 with nonzero weights, in half blocks of 8; the test above checks their numbers."""
    mod, *_ = bottlenecks
    lowered = lower(mod, "blocked", host_target())
    lengths = blocked_conv_reductions(lowered)
    assert lengths[24] == 2, lengths
    assert lengths[32] == 1  # the projection of the stem's 32 channels reads them all
    weight = np.zeros((16, 48, 3, 3), "float32")
    weight[3, 36, 2, 0] = 1.0
    assert read_channels(weight) == 40  # to the last channel with a nonzero weight, in halves


def _padded_convs(lowered) -> list[str]:
    """The scripts of the conv blocks that leave their padding channels out."""
    from dlas.algorithms.schedules import annotated_blocks

    scripts = []
    for func in lowered.mod.functions.values():
        if isinstance(func, tvm.tirx.PrimFunc):
            sch = tvm.s_tir.Schedule(func)
            if annotated_blocks(sch, PADDED_LANES_KEY):
                scripts.append(func.script())
    return scripts


def test_a_conv_does_not_compute_the_channels_its_output_is_padded_with(bottlenecks):
    """On AVX2 the two convs writing 24 channels (32 in blocks) mask the last 8 out of their
    sums, in ymm halves the unrolled tile drops; AVX-512, one zmm a block, computes all 32.
    Their numbers match PyTorch's."""
    mod, inputs, refs = bottlenecks
    avx2 = tvm.target.Target({"kind": "llvm", "mcpu": "znver1", "num-cores": 2})
    wide = tvm.target.Target({"kind": "llvm", "mcpu": "sapphirerapids", "num-cores": 2})
    weight = np.zeros((48, 16, 1, 1), "float32")
    weight[:40] = 1.0
    with avx2:
        assert written_channels(weight) == 40
        assert written_channels(weight[:24]) == 24 and written_channels(0 * weight) == 8
    with wide:
        assert written_channels(weight) == 48
    lowered = lower(mod, "blocked", avx2)
    padded = _padded_convs(lowered)
    assert len(padded) == 2 and all("if_then_else" in script for script in padded)
    assert all(re.search(r"for oi_0\w* in T\.unroll\(", script) for script in padded)
    assert not _padded_convs(lower(mod, "blocked", wide))
    if not has_feature("avx2", host_target()):
        pytest.skip("this CPU cannot run AVX2 code: numerics not checked")
    assert_matches(lowered, avx2, inputs, refs)


def test_pad_channels_alone_keeps_the_models_function(bottlenecks):
    """PadChannels on its own (no layout change, plain direct kernels): same logits, and every
    24-channel conv now writes 32 channels."""
    mod, inputs, refs = bottlenecks
    from dlas.algorithms.constants import FoldConstants

    padded = tvm.transform.Sequential([FoldConstants(), blocked_layout.PadChannels()])(mod)
    target = host_target()
    lowered = lower(padded, "direct", target)
    out_channels = [row["weight_shape"][0] for row in lowered.layers if row["op"] == "conv2d"]
    assert 24 not in out_channels and out_channels.count(32) >= 3
    assert_matches(lowered, target, inputs, refs)


def test_clip_becomes_min_max_so_relu6_stays_blocked(bottlenecks):
    mod, *_ = bottlenecks
    converted = activations.ClipToMinMax()(mod)
    ops = set()

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            ops.add(expr.op.name)

    relax.analysis.post_order_visit(converted["main"], visit)
    assert "relax.clip" not in ops and {"relax.maximum", "relax.minimum"} <= ops


@pytest.mark.parametrize(
    "min_pixels,min_2x2,kernel",
    [
        (256, 49, "winograd"),
        (257, 49, "winograd_2x2"),
        (257, 256, "winograd_2x2"),
        (257, 257, "spatial_pack"),
        (None, None, "spatial_pack"),
    ],
)
def test_winograd_runs_from_the_configured_output_size(bottlenecks, min_pixels, min_2x2, kernel):
    """The 3x3 conv writes 16x16 = 256 pixels: F(4x4, 3x3) from 256 up, else F(2x2, 3x3)
    from its own size up, else (or null) spatial_pack's kernel."""
    from dlas.algorithms.blocked import Blocked

    mod, *_ = bottlenecks
    algorithm = Blocked(winograd_min_pixels=min_pixels, winograd_2x2_min_pixels=min_2x2)
    lowered = lower(mod, algorithm, host_target(), schedule=False)
    winograds = [row["compute"] for row in lowered.layers if "winograd" in row.get("compute", "")]
    assert winograds == ([] if kernel == "spatial_pack" else [kernel])


class ResidualPair(nn.Module):
    """Two 3x3 convs on 13x13 pixels (partial 4x4 tiles at the edges), the second's epilogue
    with batch norm, a residual add and ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16, 3), nn.ReLU())
        self.first = nn.Sequential(conv_bn(16, 32, 3), nn.ReLU())
        self.second = conv_bn(32, 32, 3)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(self.stem(x))
        x = torch.relu(self.second(x) + x)
        return self.head(x.mean((2, 3)))


@pytest.mark.parametrize("kernel", ["winograd", "winograd_2x2"])
def test_winograd_on_partial_tiles_with_a_residual_epilogue_matches_pytorch(kernel):
    """Each task pads its own input rows and each output tile runs its epilogue where it is
    computed; tiles that overhang the 13x13 map write only their pixels inside it (4x4
    tiles, or 2x2 for F(2x2, 3x3))."""
    from dlas.algorithms.blocked import Blocked

    torch.manual_seed(0)
    spec = InputSpec(3, 13, 10)
    model = ResidualPair()
    calibrate_batchnorm(model, spec.shape)
    inputs, refs = varying_references(model, spec.shape)
    target = host_target()
    algorithm = Blocked(
        winograd_min_pixels=1 if kernel == "winograd" else None, winograd_2x2_min_pixels=1
    )
    lowered = lower(export(model, spec), algorithm, target)
    assert [row.get("compute") for row in lowered.layers][:3] == ["spatial_pack", *[kernel] * 2]
    assert_matches(lowered, target, inputs, refs)


def test_the_winograd_size_comes_from_the_config_and_is_checked(compose_cfg):
    from dlas.algorithms.lowering import resolve
    from dlas.config import ConfigError, validate

    for key in ("winograd_min_pixels", "winograd_2x2_min_pixels"):
        cfg = validate(compose_cfg("algorithm=blocked", f"algorithm.{key}=100"))
        assert getattr(resolve(cfg.algorithm), key) == 100
        with pytest.raises(ConfigError, match=rf"algorithm\.{key}"):
            validate(compose_cfg("algorithm=blocked", f"algorithm.{key}=0"))


def lowered_conv_head(cin: int, cout: int, size: int, k: int = 1, stride: int = 1):
    """One conv (batch norm, ReLU), a global mean and a linear layer on ``size`` x ``size``
    inputs, lowered blocked for this host: (lowered, target, inputs, PyTorch's logits)."""
    torch.manual_seed(0)
    spec = InputSpec(cin, size, 10)
    model = nn.Sequential(conv_bn(cin, cout, k, stride), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    model.extend([nn.Flatten(), nn.Linear(cout, 10)])
    calibrate_batchnorm(model, spec.shape)
    inputs, refs = varying_references(model, spec.shape)
    target = host_target()
    return lower(export(model, spec), "blocked", target), target, inputs, refs


def test_a_16_channel_input_goes_into_blocks_a_whole_pixel_at_a_time():
    """With 16 input channels the stem reads blocked input, so the model's input is put in
    channel blocks by a kernel of its own: it runs over the pixels, in parallel, and writes
    each pixel's 16 channels as one vector (it used to vectorize along a row and store one
    channel in each of 16 cache lines). The model still matches PyTorch."""
    lowered, target, inputs, refs = lowered_conv_head(16, 32, size=20)
    (transform,) = [
        func
        for gv, func in lowered.mod.functions_items()
        if gv.name_hint.startswith(blocked_layout.TRANSFORM_PREFIX)
    ]
    sch = tvm.s_tir.Schedule(transform)
    (block,) = sch.get_child_blocks(sch.get_sblock("root"))
    loops = [sch.get(loop) for loop in sch.get_loops(block)]
    kinds = tvm.tirx.ForKind
    assert [(loop.kind, int(loop.extent)) for loop in loops] == [
        (kinds.PARALLEL, 20 * 20),
        (kinds.VECTORIZED, 16),
    ]
    assert_matches(lowered, target, inputs, refs)


class Excitation(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, 8, 1), nn.SiLU(), nn.Conv2d(8, channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.gate(x)) * x  # gate first, as torchvision writes it


class GatedProjections(nn.Module):
    """Squeeze-excitation gates before two 1x1 convs: 16 outputs on 16x16 pixels, and 32
    outputs on 4x4 pixels (more weights than pixels)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 32, 3), nn.SiLU())
        self.wide = nn.Sequential(Excitation(32), conv_bn(32, 16))
        self.down = nn.Sequential(conv_bn(16, 32, 3, 4), nn.SiLU())
        self.narrow = nn.Sequential(Excitation(32), conv_bn(32, 32))
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.narrow(self.down(self.wide(self.stem(x))))
        return self.head(x.mean((2, 3)))


def test_a_gate_before_a_1x1_conv_scales_its_weights_where_the_map_is_larger():
    """The gated 16x16 map is not multiplied out: its conv reads the map and weights scaled by
    the gate. At 4x4 with 32 outputs the product stays. Both match PyTorch."""
    torch.manual_seed(0)
    spec = InputSpec(3, 16, 10)
    model = GatedProjections()
    calibrate_batchnorm(model, spec.shape)
    inputs, refs = varying_references(model, spec.shape)
    target = host_target()
    lowered = lower(export(model, spec), "blocked", target)
    assert_matches(lowered, target, inputs, refs)
    pointwise = [r for r in lowered.layers if r["weight_shape"][2:] == [1, 1]]
    gated = {tuple(r["weight_shape"][:2]): r.get("input_gate") for r in pointwise}
    assert gated[(16, 32)] and not gated[(32, 32)]
    names = [gv.name_hint for gv in lowered.mod.functions]
    assert sum("gated_weights" in n for n in names) == 1


@pytest.mark.parametrize(("channels", "per_task"), [(32, True), (64, False)])
def test_the_stem_packs_its_3_input_planes_with_the_channel_loop_unrolled(channels, per_task):
    """The stem reads NCHW and packs its 3 planes into rows of 3-channel pixels. Vectorized
    over the 3 channels, that pass made a gather of every pixel; with the channel loop
    unrolled and the row left to LLVM, it is a pass of its own where the stem's tasks split
    channel tiles too (64 outputs), else (32 outputs, one tile) each task packs the rows it
    reads. Both match PyTorch."""
    lowered, target, inputs, refs = lowered_conv_head(3, channels, size=32, k=3, stride=2)
    (stem,) = [
        func
        for gv, func in lowered.mod.functions_items()
        if gv.name_hint.startswith("fused_conv2d") and len(func.params[0].shape) == 4
    ]
    sch = tvm.s_tir.Schedule(stem)
    pack = sch.get_sblock("data_pack")
    conv = sch.get_sblock("conv_update")
    loops = [sch.get(loop) for loop in sch.get_loops(pack)]
    kinds = tvm.tirx.ForKind
    assert loops[0].kind == kinds.PARALLEL
    assert (loops[-2].kind, loops[-1].kind, int(loops[-1].extent)) == (
        kinds.SERIAL,
        kinds.UNROLLED,
        3,
    )
    in_the_stem_task = loops[0].same_as(sch.get(sch.get_loops(conv)[0]))
    assert in_the_stem_task == per_task
    assert_matches(lowered, target, inputs, refs)
