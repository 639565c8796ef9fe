"""The building blocks of the default CPU schedules (default_schedules.py): searchable
tiles, loop queries, inlining of injective blocks, register tiles and their epilogues."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.schedule import LoopRV, SBlockRV, ScheduleError

from .shapes import (
    LANES,
    PADDED_LANES_KEY,
    ROWS_FIRST_KEY,
    STAGE_KEY,
    TILE_WEIGHTS_IN_L1,
    accumulator_registers,
    channel_vectors,
    largest_divisor,
    paired_vectors,
    pixel_tile,
    ragged_tile,
    register_tile_sizes,
    target_threads,
)

# An attached epilogue: the widest vector loop, and the most elements unrolled above it.
MAX_EPILOGUE_VECTOR = 64
MAX_UNROLLED_ELEMENTS = 512
# A block whose consumer writes this many times more elements is a broadcast operand.
BROADCAST_RATIO = 16

ScheduleFn = Callable[[s_tir.Schedule, SBlockRV], None]
# A chunked channel tile whose output plane (its channels' partial sums over every pixel) fits
# in this many bytes may take its rows inside the chunk loop (schedule_channel_tile).
CHUNK_PLANE_BYTES = 16 * 1024
# The largest inner factor MetaSchedule's mutator may move a register-tile split to.
MAX_TUNED_INNER = 64


def tile(sch: s_tir.Schedule, loop: LoopRV, inner: int) -> list[LoopRV]:
    """``sch.split(loop, [None, inner])``, written as a sampled perfect tile whose decision is
    ``inner`` when ``inner`` divides the loop: the same loops when not tuning, and a trace that
    MetaSchedule's MutateTileSize can move (a trace of fixed splits is a dead end for the
    search, which then never explores around the default schedule)."""
    n = extent(sch, loop)
    if inner >= 1 and n % inner == 0:
        factors = sch.sample_perfect_tile(
            loop,
            n=2,
            max_innermost_factor=max(inner, MAX_TUNED_INNER),
            decision=[n // inner, inner],
        )
        return sch.split(loop, factors)
    return sch.split(loop, [None, inner])


# --- queries -----------------------------------------------------------------------------
def root_blocks(sch: s_tir.Schedule) -> list[SBlockRV]:
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def annotated_blocks(sch: s_tir.Schedule, key: str) -> list[SBlockRV]:
    return [b for b in root_blocks(sch) if key in sch.get(b).annotations]


def extent(sch: s_tir.Schedule, loop: LoopRV) -> int:
    return int(sch.get(loop).extent)


def is_reduction(sch: s_tir.Schedule, block: SBlockRV) -> bool:
    return any(iv.iter_type != tirx.IterVar.DataPar for iv in sch.get(block).iter_vars)


def loops_below(sch: s_tir.Schedule, block: SBlockRV, loop: LoopRV) -> list[LoopRV]:
    """The loops of ``block`` nested inside ``loop``."""
    loops = sch.get_loops(block)
    target = sch.get(loop)
    for i, lp in enumerate(loops):
        if sch.get(lp).same_as(target):
            return loops[i + 1 :]
    return loops


# --- inlining ----------------------------------------------------------------------------
def inline_injective(sch: s_tir.Schedule, keep: Sequence[SBlockRV]) -> None:
    """Inline every injective intermediate block except algorithm and producer-stage blocks."""
    kept = [sch.get(b) for b in keep]
    for block in root_blocks(sch):
        stmt = sch.get(block)
        if any(stmt.same_as(k) for k in kept) or STAGE_KEY in stmt.annotations:
            continue
        if is_reduction(sch, block):
            continue
        # A pad feeding a pooling stays a separate pass: inlined, its bounds checks would sit
        # in the reduction's vector loop and scalarize it.
        if any(is_reduction(sch, c) for c in sch.get_consumers(block)):
            continue
        # A per-channel value broadcast over a feature map (the squeeze-excitation gate,
        # sigmoid included) stays a block: inlined, it would be recomputed per pixel.
        if broadcast_into_larger(sch, block):
            continue
        # An output block, or one that reads what it writes, stays.
        with contextlib.suppress(ScheduleError):
            sch.compute_inline(block)


def _elements(region: tvm.ir.TensorRegion) -> int | None:
    total = 1
    for d in region.source.shape:
        if not isinstance(d, tirx.IntImm):
            return None  # dynamic shape
        total *= int(d)
    return total


def broadcast_into_larger(sch: s_tir.Schedule, block: SBlockRV) -> bool:
    """True when a consumer writes at least BROADCAST_RATIO times more elements than ``block``."""
    writes = sch.get(block).writes
    if len(writes) != 1:
        return False
    size = _elements(writes[0])
    if size is None:
        return False
    for consumer in sch.get_consumers(block):
        out = sch.get(consumer).writes
        larger = _elements(out[0]) if len(out) == 1 else None
        if larger is not None and larger >= BROADCAST_RATIO * size:
            return True
    return False


# --- tiles and epilogues -----------------------------------------------------------------
def attach_epilogue(
    sch: s_tir.Schedule, block: SBlockRV, loop: LoopRV, flat: bool = False
) -> list[SBlockRV]:
    """Compute the consumers of ``block`` inside ``loop`` so its tile never leaves cache.

    The conv output buffer then lives per tile (PlanAndUpdateBufferAllocationLocation +
    CompactBufferAllocation shrink it) and is marked local so LLVM keeps it in registers.
    ``flat`` (whole planes as one row, dot_rows.flat_plane): the consumer's rows and columns
    fused, so its vectors span the row (of a 4- or 8-wide map row, LLVM went scalar).
    """
    attached = []
    for consumer in sch.get_consumers(block):
        sch.reverse_compute_at(consumer, loop, preserve_unit_loops=True)
        attached.append(consumer)
        loops = loops_below(sch, consumer, loop)
        vectorize_innermost(sch, [*loops[:-2], sch.fuse(*loops[-2:])] if flat else loops)
    if attached:
        sch.set_scope(block, 0, "local")
    return attached


def vectorize_innermost(sch: s_tir.Schedule, loops: Sequence[LoopRV]) -> None:
    """Vectorize the last loop (by 16 lanes when long) and unroll a small nest above it.

    The unrolled part is capped: an epilogue attached to a whole row of an NCHWc tile reads
    it transposed, and unrolling all of that makes LLVM's SROA try to promote thousands of
    accumulator elements (minutes of compile time) instead of reading them from L1.
    """
    loops = [lp for lp in loops if extent(sch, lp) > 1]
    if not loops:
        return
    last = loops[-1]
    if extent(sch, last) > MAX_EPILOGUE_VECTOR:
        last = sch.split(last, [None, LANES])[1]
    sch.vectorize(last)
    budget = MAX_UNROLLED_ELEMENTS // extent(sch, last)
    for lp in reversed(loops[:-1]):
        if extent(sch, lp) > budget:
            break
        budget //= extent(sch, lp)
        sch.unroll(lp)


def finish_reduction(
    sch: s_tir.Schedule,
    block: SBlockRV,
    *,
    parallel: Sequence[LoopRV],
    tile_loop: LoopRV,
    first_reduction: LoopRV,
    vector: LoopRV,
    unroll: Sequence[LoopRV],
    attach: bool = True,
) -> None:
    """The common tail of a register-tiled reduction schedule.

    Loop kinds must be set before decompose_reduction (which copies them onto the init
    block's loops): vectorize needs a reduction block that still has its init.
    """
    tile_is_parallel = sch.get(tile_loop).same_as(sch.get(parallel[-1]))
    fused = sch.fuse(*parallel) if len(parallel) > 1 else parallel[0]
    if extent(sch, fused) > 1:
        sch.parallel(fused)
    if attach:
        attach_epilogue(sch, block, fused if tile_is_parallel else tile_loop)
    sch.vectorize(vector)
    for lp in unroll:
        if extent(sch, lp) > 1:
            sch.unroll(lp)
    sch.decompose_reduction(block, first_reduction)


def register_tile(
    sch: s_tir.Schedule,
    oc: LoopRV,
    y: LoopRV,
    x: LoopRV,
    *,
    rows_first: bool,
    lanes: int | None = None,
) -> tuple[LoopRV, ...]:
    """``oc``, ``y`` and ``x`` split (outer, inner) into the register tile that
    :func:`.shapes.register_tile_sizes` sizes."""
    channels, rows, cols = register_tile_sizes(
        extent(sch, oc), extent(sch, y), extent(sch, x), rows_first=rows_first, lanes=lanes
    )
    return (*tile(sch, oc, channels), *tile(sch, y, rows), *tile(sch, x, cols))


def tile_weight_bytes(
    sch: s_tir.Schedule, block: SBlockRV, reduction: Sequence[LoopRV], vectors: int
) -> int:
    """The bytes of weights a tile of ``vectors`` 16-channel vectors reads over the
    ``reduction`` loops (each weight in the conv's output type, as float convs store them)."""
    itemsize = tvm.DataType(str(sch.get(block).writes[0].source.dtype)).bits // 8
    return math.prod(extent(sch, lp) for lp in reduction) * vectors * LANES * itemsize


def reduces_whole(
    sch: s_tir.Schedule, block: SBlockRV, reduction: Sequence[LoopRV], vectors: int
) -> bool:
    """Whether a tile of ``vectors`` reduces all of ``reduction`` at once, its sums in
    registers: its weights over those loops fit in L1 (TILE_WEIGHTS_IN_L1)."""
    return tile_weight_bytes(sch, block, reduction, vectors) <= TILE_WEIGHTS_IN_L1


def schedule_channel_tile(
    sch: s_tir.Schedule,
    block: SBlockRV,
    *,
    outer: Sequence[LoopRV],
    channels: LoopRV,
    y: LoopRV,
    x: LoopRV,
    lanes: LoopRV,
    reduction: LoopRV,
    chunk: int,
    inner: Sequence[LoopRV] = (),
    attach: bool = True,
    vectors: int | None = None,
    rows_in_chunk: bool = False,
) -> None:
    """The register tile of the convs vectorized over 16 output channels: rows x cols pixels
    times a few channel vectors (:func:`.shapes.channel_vectors`: two when the channel blocks
    pair up, else up to ``odd_vectors()``, more where those leave a tile of one pixel), or a
    :func:`.shapes.ragged_tile` run a register's part of each vector at a time. ``inner``
    are the reduction loops below ``reduction``. A tile whose weights fit in L1
    (TILE_WEIGHTS_IN_L1) reduces all of them at once, and its epilogue follows it; otherwise
    ``reduction`` is reduced ``chunk`` iterations at a time over a whole row of tiles, so a
    chunk's weights stay in L1 across the row (a tile of more vectors than the blocks pair
    into takes fewer iterations where they would not: on AVX2, gemm's chunks of 144 input
    channels, 54 KiB at 6 vectors, ran MobileNetV2-224 0.96x, cut to fit 1.02x). The threads
    split the tasks by channel blocks, or by rows where the block says so (ROWS_FIRST_KEY).
    ``vectors`` overrides the channel vectors (Winograd's product:
    :func:`.winograd.product_vectors`).

    With ``rows_in_chunk``, a chunked tile whose output plane fits in CHUNK_PLANE_BYTES takes
    its rows inside each chunk, and the threads split its channel tiles only: a chunk's
    weights serve every row while in L1, one pass over them instead of one per row of tiles
    (spatial_pack's and blocked's 3x3 layers on maps of up to 8 px; blocked whole models
    round-robin on Sapphire Rapids: VGG-16-32 1.04x, ResNet18-32 1.03x, ResNet18-224 1.00x;
    1x1 layers at 7 px ran slower alone)."""
    blocks = extent(sch, channels)
    ragged = None
    if vectors is None:
        ragged = ragged_tile(blocks, extent(sch, y), extent(sch, x))
        vectors = channel_vectors(blocks, extent(sch, y), extent(sch, x))
        if vectors > paired_vectors(blocks):  # fewer steps a chunk where L1 holds fewer
            steps = TILE_WEIGHTS_IN_L1 // tile_weight_bytes(sch, block, inner, vectors)
            chunk = largest_divisor(extent(sch, reduction), max(1, min(chunk, steps)))
    # Read before the splits below replace the loops.
    whole_reduction = reduces_whole(sch, block, [reduction, *inner], vectors)
    plane = extent(sch, y) * extent(sch, x) * vectors * LANES * 4  # float32 partial sums
    rows, cols = (1, ragged[0]) if ragged else pixel_tile(extent(sch, y), extent(sch, x), vectors)
    ob_o, ob_i = tile(sch, channels, vectors)
    y_o, y_i = tile(sch, y, rows)
    x_o, x_i = tile(sch, x, cols)
    r_o, r_i = tile(sch, reduction, chunk)
    tile_loops = [y_i, x_i, ob_i]
    # A ragged tile's whole vectors would take a register too many for their weights; a
    # padded conv's parts of padding drop out of the unrolled tile (its compute masks them).
    if ragged or PADDED_LANES_KEY in sch.get(block).annotations:
        part, lanes = tile(sch, lanes, extent(sch, lanes) // accumulator_registers())
        tile_loops = [ob_i, part, y_i, x_i]
    rows_first = ROWS_FIRST_KEY in sch.get(block).annotations
    if (
        rows_in_chunk
        and attach
        and not (whole_reduction or rows_first)
        and blocks // vectors >= 2 * target_threads()
        and plane <= CHUNK_PLANE_BYTES
    ):
        sch.reorder(*outer, ob_o, r_o, y_o, x_o, r_i, *inner, *tile_loops, lanes)
        parallel, tile_loop = [*outer, ob_o], ob_o
    else:
        first, second = (y_o, ob_o) if rows_first else (ob_o, y_o)
        tiles = [x_o, r_o] if whole_reduction else [r_o, x_o]
        sch.reorder(*outer, first, second, *tiles, r_i, *inner, *tile_loops, lanes)
        parallel, tile_loop = [*outer, first, second], x_o if whole_reduction else second
    finish_reduction(
        sch,
        block,
        parallel=parallel,
        tile_loop=tile_loop,
        first_reduction=r_o,
        vector=lanes,
        unroll=tile_loops,
        attach=attach,
    )
