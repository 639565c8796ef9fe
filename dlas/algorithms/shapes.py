"""What every algorithm needs to know about a conv2d call, and the shared numeric constants.

The bottom of the package's import order: shapes/constants → legalization → schedules →
kernels → algorithms → lowering. Nothing here imports another module of the package.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

from tvm import relax

# fp32 lanes of an AVX-512 register: the width every vectorized inner loop is built around.
LANES = 16
# Vector accumulators kept live in one register tile on AVX-512 (32 zmm registers minus
# loads/broadcasts); :func:`max_accumulators` scales it to the target's register file.
MAX_ACCUMULATORS = 24
# Channel vectors a tile takes at most for an odd number of 16-channel blocks (odd_vectors).
MAX_ODD_VECTORS = 7
# Vectors along a row in one register tile.
MAX_WIDTH_VECTORS = 4
# Input channels reduced per pass over a row of output tiles. A tile that walked every input
# plane before moving on touches more pages than the TLB holds, and streams all its weights
# from L2; chunked, a row's partial sums wait in L1 and the chunk's weights stay there.
CHANNEL_CHUNK = 16
# Unless a tile's weights over all its input channels fit in L1 (32 KiB on the x86 and Arm
# cores dlas targets): then the tile reduces them all while its sums stay in registers, and its
# epilogue runs on them before the next tile. Most 1x1 layers and a few narrow 3x3 ones; on
# Zen 4, round-robin in one process: MobileNetV2-224 1.18x faster (95%: 1.10-1.39),
# ResNet50-224 1.07x (1.05-1.08), MobileNetV2-32 1.07x, the others 1.01-1.02x. With no limit
# (every layer's tile reducing all its channels) MobileNetV2-224 gained 1.09x, ResNet50 1.04x;
# limits of 16 and 64 KiB ran within 2% of 32 on MobileNetV2-224 and -32 and ResNet50-224.
TILE_WEIGHTS_IN_L1 = 32 * 1024

# Block annotations that mark what the scheduler must find in a fused PrimFunc.
ALGORITHM_KEY = "dlas.algorithm"
OP_KEY = "dlas.op"
# Producer stages (pad, im2col, data packing) that must stay separate loop nests.
STAGE_KEY = "dlas.stage"
# On a stage whose last axis flattens (rows, columns): the row length, so the generic
# schedule splits it back and vectorizes along contiguous columns.
ROW_KEY = "dlas.row"
# A block whose innermost loop is left serial for LLVM's loop vectorizer: strided reads, which
# TVM's vectorizer splits into a scalar load and insert per lane, LLVM turns into wide loads
# and shuffles (dlas.algorithms.pooling).
LLVM_VECTOR_KEY = "dlas.llvm_vector"
# On every conv and dense block: the multiply-adds of the layer it computes (no padding lanes
# or channels; winograd's are the direct conv's). TIR's flop estimator cannot stand in for
# it: it counts nothing inside a tensor intrinsic, the padding lanes of a tile, and an
# inlined epilogue once per use (SiLU's read 4x the conv's flops). The default schedule
# copies the sum onto its PrimFunc (the same key), where dlas.profile reads it.
MACS_KEY = "dlas.macs"
# On a conv block whose threads should split the output by rows (ConvSpec.split_by_rows).
ROWS_FIRST_KEY = "dlas.rows_first"
# On a conv block whose last output channels are padding it does not compute: its register
# tile runs a register's part of each vector at a time, so the parts of padding drop out.
PADDED_LANES_KEY = "dlas.padded_lanes"


def main_attrs(
    algorithm: str, op: str, macs: int, *, rows_first: bool = False, padded_lanes: bool = False
) -> dict[str, Any]:
    """The annotations of an algorithm's main block: whose schedule it takes, the layer's
    multiply-adds, (``rows_first``: ConvSpec.split_by_rows) how its threads split it, and
    whether it leaves its padding channels out (PADDED_LANES_KEY)."""
    attrs: dict[str, Any] = {ALGORITHM_KEY: algorithm, OP_KEY: op, MACS_KEY: macs}
    if rows_first:
        attrs[ROWS_FIRST_KEY] = 1
    if padded_lanes:
        attrs[PADDED_LANES_KEY] = 1
    return attrs


STAGE_ATTRS = {STAGE_KEY: 1}

# Columns of LoweredModule.layers (the sparse algorithms add "sparsity").
ROW_COLUMNS = (
    "op", "data_shape", "weight_shape", "strides", "padding", "groups", "algorithm", "fallback",
)  # fmt: skip


def describe_times(times: dict[str, float]) -> str:
    """``name=ms`` pairs, fastest first: a layer row's ``candidates`` column."""
    return ", ".join(f"{name}={ms:.4g}ms" for name, ms in sorted(times.items(), key=lambda i: i[1]))


@dataclass(frozen=True)
class ConvSpec:
    """Static description of one NCHW/OIHW conv2d call."""

    batch: int
    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel_h: int
    kernel_w: int
    strides: tuple[int, int]
    padding: tuple[int, int, int, int]  # top, left, bottom, right
    dilation: tuple[int, int]
    groups: int
    dtype: str
    out_dtype: str

    @classmethod
    def from_call(cls, call: relax.Call) -> ConvSpec | None:
        """None when the call is outside what the algorithms implement (layout, dynamic shape)."""
        attrs = call.attrs
        if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCHW", "OIHW", "NCHW"):
            return None
        try:
            data_shape = [int(v) for v in call.args[0].ty.shape]
        except (TypeError, ValueError):
            return None
        return cls.with_data(call, data_shape)

    @classmethod
    def with_data(cls, call: relax.Call, nchw: list[int]) -> ConvSpec | None:
        """The spec of an OIHW conv2d ``call`` whose data is ``nchw`` (n, c, h, w): its own
        shape, or a blocked layout's read as NCHW. None for weights of dynamic shape."""
        attrs = call.attrs
        try:
            o, _, kh, kw = (int(v) for v in call.args[1].ty.shape)
        except (TypeError, ValueError):
            return None
        out_dtype = str(call.ty.dtype)  # out_dtype attr resolved (it may be unset)
        return cls(
            *nchw,
            o,
            kh,
            kw,
            tuple(int(s) for s in attrs.strides),
            tuple(int(p) for p in attrs.padding),
            tuple(int(d) for d in attrs.dilation),
            int(attrs.groups),
            str(call.args[0].ty.dtype),
            out_dtype,
        )

    @property
    def split_by_rows(self) -> bool:
        """Whether the parallel tasks should split the output by rows rather than by channels:
        True when the weights are smaller than the input. Split by rows, each core reads all
        the weights and half the input; by channels, half the weights and all the input, half
        of which the previous layer left in the other core's cache. MobileNetV2-224's 1x1
        projections at 14 px (576->96, 384->64) ran 1.4-1.6x faster in the model split by
        rows; ResNet18's 3x3 layers, whose weights outweigh their input, 13% slower."""
        weights = self.out_channels * self.in_per_group * self.kernel_h * self.kernel_w
        return weights < self.in_channels * self.height * self.width

    @property
    def input_split_by_rows(self) -> bool:
        """Whether a 1x1 layer that made this layer's input split it by rows: its weights (in
        x C) are then fewer than its input (in x H x W), so C < H x W. A depthwise layer
        splits as its producer did, so that each core reads the part it wrote."""
        return self.in_channels < self.height * self.width

    @property
    def in_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def out_per_group(self) -> int:
        return self.out_channels // self.groups

    @property
    def macs(self) -> int:
        """Multiply-adds of the convolution (no padding lanes or channels counted)."""
        taps = self.in_per_group * self.kernel_h * self.kernel_w
        return self.batch * self.out_channels * taps * self.out_h * self.out_w

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.in_per_group == 1 and self.out_per_group == 1

    @property
    def out_h(self) -> int:
        span = (self.kernel_h - 1) * self.dilation[0] + 1
        return (self.height + self.padding[0] + self.padding[2] - span) // self.strides[0] + 1

    @property
    def out_w(self) -> int:
        span = (self.kernel_w - 1) * self.dilation[1] + 1
        return (self.width + self.padding[1] + self.padding[3] - span) // self.strides[1] + 1

    @property
    def reduction(self) -> int:
        """Length of one output's dot product."""
        return self.in_per_group * self.kernel_h * self.kernel_w

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_per_group, self.kernel_h, self.kernel_w)

    def row(self) -> dict[str, Any]:
        """The layer-table columns that describe the convolution itself."""
        return {
            "op": "conv2d",
            "data_shape": [self.batch, self.in_channels, self.height, self.width],
            "weight_shape": list(self.weight_shape),
            "strides": list(self.strides),
            "padding": list(self.padding),
            "groups": self.groups,
        }


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def largest_divisor(value: int, limit: int) -> int:
    """Largest divisor of ``value`` that is <= ``limit`` (at least 1)."""
    for d in range(max(1, min(value, limit)), 0, -1):
        if value % d == 0:
            return d
    return 1


# (registers, bits) of the vector register file, by the first LLVM feature the target has.
REGISTER_FILES = (("avx512f", 32, 512), ("avx", 16, 256), ("neon", 32, 128), ("sse2", 16, 128))


def has_feature(feature: str, target: Any) -> bool:
    """Whether the LLVM ``target`` has CPU ``feature`` (as ``target_has_features`` spells it)."""
    from tvm.target import codegen

    if target is None or target.kind.name != "llvm":
        return False
    try:
        return bool(codegen.target_has_features(feature, target))
    except Exception:  # noqa: BLE001 - a triple LLVM does not know has no such feature
        return False


@functools.cache
def _register_file(target: str) -> tuple[int, int]:
    """(vector registers, registers one 16-lane fp32/int32 accumulator takes) of ``target``."""
    from tvm.target import Target

    llvm = Target(target)
    count, bits = next(((n, b) for f, n, b in REGISTER_FILES if has_feature(f, llvm)), (32, 512))
    return count, max(1, LANES * 32 // bits)


def _current_register_file() -> tuple[int, int]:
    """:func:`_register_file` of the target in scope; AVX-512's without an LLVM one."""
    import tvm

    target = tvm.target.Target.current(allow_none=True)
    if target is None or target.kind.name != "llvm":
        return 32, 1
    return _register_file(str(target))


def max_accumulators() -> int:
    """Vector accumulators (``LANES`` x 32 bits) a register tile keeps live on the current
    target: three quarters of its vector registers, over the registers one of them takes.
    AVX-512: 24 of 32 zmm. AVX2: 16 ymm, two per accumulator: 6 (24 spilled: ResNet18-32 ran
    1.8x slower on Zen 3, where 4-6 ran within 3% of each other and 8 was 1.5x slower).
    AArch64: 32 q registers, four per accumulator: 6. Without a target in scope, AVX-512's."""
    count, per_accumulator = _current_register_file()
    return max(1, MAX_ACCUMULATORS * count // 32 // per_accumulator)


def accumulator_registers() -> int:
    """Vector registers one 16-lane accumulator takes on the current target (AVX2: 2)."""
    return _current_register_file()[1]


def target_threads() -> int:
    """Threads the current target's kernels run on (its ``num-cores``; 1 without a target)."""
    import tvm

    target = tvm.target.Target.current(allow_none=True)
    if target is None or "num-cores" not in target.attrs:
        return 1
    return max(1, int(target.attrs["num-cores"]))


def odd_vectors() -> int:
    """Channel vectors a tile may take when a layer's 16-channel blocks do not pair up: an odd
    count (48, 80, 112 channels) in one tile, whose pixels then share its weight loads. One
    vector per tile needs a broadcast per FMA: on AVX-512, 480->80 at 14 px ran 1.30x faster
    as five vectors, 672->112 1.19x as seven, 192->48 (3x3, 7 px, spatial_pack) 1.30x as
    three. At most a third of the accumulators, so a tile keeps three pixels (AVX2: two
    vectors)."""
    return min(MAX_ODD_VECTORS, max_accumulators() // 3)


def paired_vectors(blocks: int) -> int:
    """Channel vectors of a register tile over ``blocks`` 16-channel blocks, its pixels aside:
    two where the blocks pair up, else up to :func:`odd_vectors`."""
    return 2 if blocks % 2 == 0 else largest_divisor(blocks, odd_vectors())


def channel_vectors(blocks: int, out_h: int, out_w: int) -> int:
    """Channel vectors of a register tile over ``blocks`` 16-channel blocks of an ``out_h`` x
    ``out_w`` map: :func:`paired_vectors`; where those leave a tile of one pixel (no divisor
    of the width fits the budget beside them: 7-px maps on AVX2), a :func:`ragged_tile`'s,
    else as many as the accumulators hold. Two vectors of one pixel are four ymm chains of
    multiply-adds, fewer than FMA latency x ports keeps busy (5 cycles x 2 pipes on Zen).
    Blocked whole models, round-robin on a 2-core AVX2 EPYC: MobileNetV2-224 1.06x faster
    (95%: 1.03-1.08), EfficientNet-B0 1.07x (1.05-1.10), ResNet18-224 1.06x (1.03-1.11),
    ResNet50-224 1.07x (1.04-1.11)."""
    ragged = ragged_tile(blocks, out_h, out_w)
    if ragged:
        return ragged[1]
    vectors = paired_vectors(blocks)
    if out_h * out_w > 1 and pixel_tile(out_h, out_w, vectors) == (1, 1):
        return largest_divisor(blocks, max_accumulators())
    return vectors


def ragged_tile(blocks: int, out_h: int, out_w: int) -> tuple[int, int] | None:
    """(columns, channel vectors) of a register tile whose row's last tile is partial (the
    width split with a predicate, which LLVM hoists out of the reduction loop), where no
    divisor of the width fits the accumulators beside :func:`paired_vectors` (7-px maps on
    AVX2); None elsewhere, or where no such tile holds all of :func:`max_accumulators`.

    The tile runs a register's part of each vector at a time (:func:`accumulator_registers`),
    one weight register serving all its pixels, whose broadcasts stay live beside the
    accumulators: columns x (vectors x parts + 1) + 1 registers, with one to spare. Of those
    that fit, the one of most columns (most reuse of each weight load). On AVX2's 16 ymm: 2
    pixels x 3 vectors (15 registers), where the blocks divide by 3. A tile of one pixel
    reads each weight once per pixel, one load per multiply-add. Kernels in the model,
    profiled round-robin on a 2-core AVX2 EPYC: blocked EfficientNet-B0's 192 -> 1152 1.04x
    faster, 1152 -> 192 1.03x, 672 -> 192 1.05x, MobileNetV2's 160 -> 960 1.09x (gemm
    1.06-1.27x, spatial_pack 1.04-1.07x); the whole models within the noise (1.00-1.01x).
    3 x 2 takes all 16: LLVM spilled it where a SiLU followed (192 -> 1152, 1.18-1.20x
    slower); 4 x 1, half the accumulators, ran 960 -> 160 and 576 -> 160 up to 1.10x slower."""
    if out_w < 2 or pixel_tile(out_h, out_w, paired_vectors(blocks)) != (1, 1):
        return None
    registers, parts = _current_register_file()
    accumulators = max_accumulators()
    fits = [
        (columns, accumulators // columns)
        for columns in range(2, out_w)
        if accumulators % columns == 0
        and blocks % (accumulators // columns) == 0
        and columns * (accumulators // columns * parts + 1) + 1 <= registers - 1
    ]
    return max(fits, default=None)


def pixel_tile(out_h: int, out_w: int, vectors: int) -> tuple[int, int]:
    """(rows, columns) of output pixels whose ``vectors`` accumulators fit in registers."""
    budget = max(1, max_accumulators() // vectors)
    cols = largest_divisor(out_w, min(budget, 12))
    rows = largest_divisor(out_h, max(1, budget // cols))
    return rows, cols


def register_tile_sizes(
    channels: int, rows: int, width: int, *, rows_first: bool, lanes: int | None = None
) -> tuple[int, int, int]:
    """(channels, rows, columns) of a register tile of whole vectors of ``lanes`` columns (16,
    or the row when narrower; 1 when ``width`` already counts vectors), at most
    :func:`max_accumulators` vectors; the budget goes to channels first, or with ``rows_first`` to
    rows. Each size divides its extent."""
    lanes = lanes or (LANES if width % LANES == 0 else width)
    vectors = largest_divisor(width // lanes, MAX_WIDTH_VECTORS)
    budget = max(1, max_accumulators() // vectors)
    first, second = (rows, channels) if rows_first else (channels, rows)
    first_size = largest_divisor(first, budget)
    second_size = largest_divisor(second, max(1, budget // first_size))
    sizes = (second_size, first_size) if rows_first else (first_size, second_size)
    return (*sizes, vectors * lanes)


def vector_width(extent: int) -> int:
    """Lanes to use for a dimension of this size: the smallest power of two covering it, <= 16."""
    return min(LANES, 1 << max(0, math.ceil(math.log2(max(extent, 1)))))
