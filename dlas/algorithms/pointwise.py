"""Pointwise (1x1, stride 1, unpadded, ungrouped) convolutions as a product over whole rows.

Such a layer is a matrix product out[OC, H*W] = W[OC, IC] x in[IC, H*W] on the NCHW planes
as they are: each input plane is one contiguous row of H*W pixels. A register tile is a few
output channels x a few 16-pixel vectors (``register_tile``): one vector load of an input
row serves every channel of the tile, one broadcast weight every vector. A parallel task
covers whole output rows (at least POINTWISE_TASK_PIXELS pixels, in whole vectors) of a block
of channels, so the epilogue (bias, activation, residual add) runs on the task's rows while
they are in cache and writes NCHW directly, with no transposing unpack.

The row form of direct rounds each row up to whole vectors and tiles rows separately (a 56-px
row is 64 lanes, a 1-row tile re-reads every weight per row); the channel form transposes its
16-channel vectors back to NCHW in the epilogue. On Zen 3 (AVX2, 2 threads), single layers
against the row form, interleaved in one process: 24->144 at 56 px 0.47 -> 0.22 ms, 16->96 at
112 px 0.58 -> 0.46 ms, 64->256 at 56 px 3.1 -> 1.1 ms.

Maps whose rows never fill whole vectors (7x7: 49 px; 14x14: a task of 8 rows does not divide
14) keep the other forms.
"""

from __future__ import annotations

from tvm import s_tir, te

from .schedules import extent, finish_reduction, tile
from .shapes import LANES, ConvSpec, largest_divisor, main_attrs, max_accumulators

OP = "pointwise"
# Pixels one parallel task computes (rounded to whole rows): enough vectors that the
# reduction chunk's weights, loaded once per task, are reused across them.
POINTWISE_TASK_PIXELS = 256
# Input channels reduced per pass over a task's vectors: their weights stay in L1, and the
# pass reads as many input planes, each a sequential stream the prefetchers follow. In a
# model, half the input sits in the other core's cache (the previous layer split its channels
# between the cores): with 256 planes per pass, too many streams to follow, MobileNetV2-224's
# projections ran 1.7-2x slower (192->32 at 28 px: 286 vs 149 us), ResNet50's 512->128 at
# 28 px 1.7x; 16 and 32 ran alike.
POINTWISE_CHUNK = 32
# What a vector load of an input plane costs against a broadcast of a weight, in the choice of
# a register tile for planes of an odd number of vectors. 512->128 at 28 px (49 vectors), one
# layer interleaved against the one-vector tile of 16 channels (2 threads, AVX-512): 3
# vectors x 8 channels 1.26x, 2 x 8 1.14x, 4 x 4 1.11x, 6 x 4 1.08x; counting both loads
# alike would pick 6 x 4, twice the vector loads 3 x 8.
VECTOR_LOAD_COST = 2


def task_rows(height: int, width: int) -> int:
    """Output rows of one task: whole 16-pixel vectors, dividing ``height``; 0 when none do."""
    rows = [r for r in range(1, height + 1) if height % r == 0 and r * width % LANES == 0]
    if not rows:
        return 0
    return next((r for r in rows if r * width >= POINTWISE_TASK_PIXELS), rows[-1])


def register_tile(
    vectors: int, channels: int, budget: int, *, whole_planes: bool
) -> tuple[int, int]:
    """(pixel vectors, output channels) of the register tile, for a task of ``vectors``
    16-pixel vectors and ``channels`` output channels, within ``budget`` accumulators.

    Two vectors when they pair up; else (a 28x28 plane is 49 vectors) the tile with the fewest
    loads per useful multiply-add, a vector load of an input plane counted as
    VECTOR_LOAD_COST broadcasts of a weight. Its last group of vectors may be partial only
    when a task is whole planes: the epilogue covers whole rows of the task, so a partial
    group elsewhere would write into the next task's first row. The channels always divide
    (a partial channel tile puts a guard in the innermost loop)."""
    if budget < 12:  # AVX2, AArch64: one vector, measured on Zen 3
        return 1, largest_divisor(channels, budget)
    if vectors % 2 == 0:
        return 2, largest_divisor(channels, budget // 2)
    best, cost = (1, 1), float("inf")
    for v in range(1, min(vectors, budget) + 1):
        if vectors % v and not whole_planes:
            continue
        c = largest_divisor(channels, budget // v)
        loads = (VECTOR_LOAD_COST / c + 1 / v) * -(-vectors // v) * v / vectors
        if loads < cost:
            best, cost = (v, c), loads
    return best


def eligible(spec: ConvSpec) -> bool:
    return (
        (spec.kernel_h, spec.kernel_w, spec.groups) == (1, 1, 1)
        and spec.strides == (1, 1)
        and not any(spec.padding)
        and spec.dtype in ("float32", "float16")
        and task_rows(spec.out_h, spec.out_w) > 0
    )


def compute(data: te.Tensor, weight: te.Tensor, spec: ConvSpec) -> te.Tensor:
    """The conv on NCHW data and OIHW weights as they are (no packing, no padding)."""
    rc = te.reduce_axis((0, spec.in_channels), "rc")
    acc = spec.out_dtype
    return te.compute(
        (spec.batch, spec.out_channels, spec.out_h, spec.out_w),
        lambda n, oc, y, x: te.sum(
            data[n, rc, y, x].astype(acc) * weight[oc, rc, 0, 0].astype(acc), axis=rc
        ),
        name="conv",
        attrs=main_attrs("direct", OP, spec.macs),
    )


def schedule(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> None:
    n, oc, y, x, rc = sch.get_loops(block)
    height = extent(sch, y)
    rows = task_rows(height, extent(sch, x))
    y_t, y_r = tile(sch, y, rows)
    pixels = sch.fuse(y_r, x)
    vectors, channels = register_tile(
        extent(sch, pixels) // LANES,
        extent(sch, oc),
        max_accumulators(),
        whole_planes=rows == height,
    )
    p_o, p_v, lanes = sch.split(pixels, [None, vectors, LANES])
    oc_o, oc_i = tile(sch, oc, channels)
    rc_o, rc_i = tile(sch, rc, largest_divisor(extent(sch, rc), POINTWISE_CHUNK))
    sch.reorder(n, y_t, oc_o, rc_o, p_o, rc_i, oc_i, p_v, lanes)
    finish_reduction(
        sch,
        block,
        parallel=[n, y_t, oc_o],
        tile_loop=oc_o,
        first_reduction=rc_o,
        vector=lanes,
        unroll=[oc_i, p_v],
    )
