"""Producer stages: depthwise planes in parallel tasks of a few rows, each task making its own
stages (padded rows, phase splits, tap quads) while they are in cache (``direct``'s widened
kernel and :mod:`.dot_taps`); the dot-product kernels' im2col rows."""

from __future__ import annotations

from collections.abc import Callable

from tvm import s_tir
from tvm.s_tir.schedule import LoopRV, SBlockRV

from .schedules import extent, tile
from .shapes import LLVM_VECTOR_KEY, STAGE_KEY, largest_divisor

# Output rows of one plane per parallel task: its padded input rows are made once for all of
# them (16 and 64 ran alike on Zen 3; 8 was up to 15% slower at 14 px).
PLANE_TASK_ROWS = 16


def plane_tasks(sch: s_tir.Schedule, rows: LoopRV, tile_rows: LoopRV) -> tuple[LoopRV, LoopRV]:
    """``rows`` (the register tiles of a plane, ``tile_rows`` rows each) split into tasks of
    about PLANE_TASK_ROWS output rows: (task, tiles within the task)."""
    per_task = max(1, PLANE_TASK_ROWS // extent(sch, tile_rows))
    task, rows = tile(sch, rows, largest_divisor(extent(sch, rows), per_task))
    return task, rows


def compute_per_task(
    sch: s_tir.Schedule, block: SBlockRV, task: LoopRV, arrange: Callable[[SBlockRV], None]
) -> None:
    """Every stage ``block`` reads, and the stages those read, computed inside ``task``, unit
    loops kept (the loop count must not depend on the sampled tiles, or a mutated trace no
    longer replays: MetaSchedule checks get_loops' outputs). A stage whose loop LLVM is to
    vectorize (LLVM_VECTOR_KEY) is given to ``arrange``; the others are vectorized along
    their last loop."""

    def staged(consumer: SBlockRV) -> list[SBlockRV]:
        return [s for s in sch.get_producers(consumer) if STAGE_KEY in sch.get(s).annotations]

    stages = staged(block)
    while stages:
        stage = stages.pop(0)
        sch.compute_at(stage, task, preserve_unit_loops=True)
        inner = sch.get_loops(stage)[-1]
        if LLVM_VECTOR_KEY in sch.get(stage).annotations:
            arrange(stage)
        elif extent(sch, inner) > 1:
            sch.vectorize(inner)
        stages += staged(stage)


# An im2col stage's (kernel height, kernel width, output width): what schedule_im2col_rows
# needs to see its K index as (channel, tap row, tap column) and its pixel as (row, column).
IM2COL_KEY = "dlas.im2col"


def schedule_im2col_rows(sch: s_tir.Schedule, consumer: SBlockRV) -> None:
    """The im2col rows ``[N, OH*OW, K]`` ``consumer`` reads (an IM2COL_KEY stage), made as
    loops over (output row, column, channel, tap row, tap column): parallel over output
    rows, each pixel's K values written in order, read with affine indices. Scheduled as
    any stage (vectors along K), each lane divided its flat indices by the kernel's taps and
    the output width in 64 bits and gathered from another plane: int8 ``gemm`` ran 64->64 3x3
    at 56 px in 3.12 ms, 0.55 ms this way (2 threads, Zen 4). K must be a whole number of
    channels' taps (packing.whole_channel_rows pads channels so that it is)."""
    for stage in sch.get_producers(consumer):
        shape = sch.get(stage).annotations.get(IM2COL_KEY)
        if shape is None:
            continue
        kh, kw, ow = (int(v) for v in shape)
        sch.transform_block_layout(stage, _pixel_and_tap(kh, kw, ow))
        n, y, _x, _c, _r, s = sch.get_loops(stage)
        sch.parallel(sch.fuse(n, y))
        sch.unroll(s)


def _pixel_and_tap(kh: int, kw: int, ow: int) -> Callable:
    """(n, pixel, k) -> (n, output row, column, channel, tap row, tap column)."""
    taps = kh * kw
    return lambda n, p, k: (n, p // ow, p % ow, k // taps, k % taps // kw, k % kw)
