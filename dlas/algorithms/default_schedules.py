"""Default CPU schedules for fused PrimFuncs.

Relax on CPU has no default schedules, so every fused PrimFunc passes through here:
1. injective blocks (batch-norm arithmetic, bias, relu, residual add, layout unpacking) are
   inlined into one epilogue block per output;
2. a block annotated by an algorithm (conv2d, dense) is handed to that algorithm's
   ``schedule``, which tiles it and computes the epilogue inside its output tile;
3. whatever is left (pads, im2col, packing, pooling, means, plain elementwise functions) gets
   a generic schedule: parallel outer loops, a vectorized inner loop.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Sequence

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.schedule import LoopRV, SBlockRV, ScheduleError

from ..compiler import stack_buffers
from .schedules import (
    ScheduleFn,
    annotated_blocks,
    extent,
    inline_injective,
    is_reduction,
    loops_below,
    root_blocks,
    vectorize_innermost,
)
from .shapes import ALGORITHM_KEY, LANES, LLVM_VECTOR_KEY, MACS_KEY, ROW_KEY, largest_divisor

log = logging.getLogger(__name__)

# Below this many output elements (a reduction's: elements read) a parallel region costs more
# than it saves.
PARALLEL_MIN_ELEMENTS = 4096
# Longest inner loop vectorized whole; LLVM splits odd widths into legal vector pieces.
MAX_WHOLE_VECTOR = 256
# Partial sums a reduction over contiguous planes keeps: two 16-lane vectors, two add chains
# per thread. Means of 32x112x112 to 672x14x14 ran alike with 32 and 64; 64 was 1.5x slower
# at 672x14x14, 16 1.4x slower at 32x112x112.
MAX_PARTIAL_SUMS = 32
SCHEDULED_ATTR = "tirx.is_scheduled"
# On a PrimFunc whose algorithm schedule raised: why. It runs the generic schedule (or none),
# often many times slower, so LoweredModule.schedule_fallbacks names it for the run's record.
SCHEDULE_FALLBACK_ATTR = "dlas.schedule_fallback"


def schedule_module(mod: tvm.IRModule, lookup: Callable[[str], ScheduleFn]) -> tvm.IRModule:
    """A copy of ``mod`` with every unscheduled PrimFunc scheduled; ``lookup(name)`` gives an
    algorithm's schedule. ``mod`` stays as it was: the tuner builds it both tuned and not."""
    scheduled = mod.clone()
    for gv, func in mod.functions_items():
        if isinstance(func, tirx.PrimFunc) and not func.attrs.get(SCHEDULED_ATTR, False):
            scheduled[gv] = schedule_func(func, lookup).with_attr(SCHEDULED_ATTR, True)
    return scheduled


def schedule_func(func: tirx.PrimFunc, lookup: Callable[[str], ScheduleFn]) -> tirx.PrimFunc:
    sch = s_tir.Schedule(func)
    # Read before scheduling: tensorizing replaces the blocks that carry it.
    macs = sum(int(sch.get(b).annotations[MACS_KEY]) for b in annotated_blocks(sch, MACS_KEY))
    try:
        default_schedule(sch, lookup)
        return sch.mod["main"].with_attr(MACS_KEY, macs) if macs else sch.mod["main"]
    except Exception as err:  # noqa: BLE001 - a slow kernel beats a failed compile
        reason = f"{type(err).__name__}: {str(err)[:300]}"
        log.warning("default schedule failed, using the generic one: %s", reason)
    sch = s_tir.Schedule(func)
    try:
        default_schedule(sch, None)
    except Exception as err:  # noqa: BLE001
        log.warning("generic schedule failed, leaving the function unscheduled: %s", err)
        return func.with_attr(SCHEDULE_FALLBACK_ATTR, f"{reason}; generic schedule failed too")
    return sch.mod["main"].with_attr(SCHEDULE_FALLBACK_ATTR, reason)


def default_schedule(sch: s_tir.Schedule, lookup: Callable[[str], ScheduleFn] | None) -> None:
    """Schedule the function in ``sch``: each algorithm block with ``lookup(its algorithm)``
    (none: generic schedules only), the rest generically. Raises where a schedule fails. Its
    trace is what a tuning record of the default schedule stores (dlas.tuning.seeding)."""
    mains = annotated_blocks(sch, ALGORITHM_KEY) if lookup else []
    inline_injective(sch, keep=mains)
    for block in mains:
        lookup(str(sch.get(block).annotations[ALGORITHM_KEY]))(sch, block)
    generic_schedule(sch)
    stack_buffers.mark(sch)


# --- generic schedules -------------------------------------------------------------------
def generic_schedule(sch: s_tir.Schedule) -> None:
    """Parallel + vectorized loops for every block no algorithm has scheduled."""
    for block in root_blocks(sch):
        loops = sch.get_loops(block)
        if not loops or any(sch.get(lp).kind != tirx.ForKind.SERIAL for lp in loops):
            continue
        # A nest shared with other blocks was scheduled with them (algorithm blocks,
        # epilogues, attached consumers): rescheduling it here would vectorize across their
        # loops.
        if len(sch.get_child_blocks(loops[0])) != 1:
            continue
        if is_reduction(sch, block):
            _schedule_reduction(sch, block)
        else:
            schedule_spatial(sch, block)


def schedule_spatial(sch: s_tir.Schedule, block: SBlockRV) -> None:
    _write_in_order(sch, block)
    loops = sch.get_loops(block)
    row = int(sch.get(block).annotations.get(ROW_KEY, 0))
    if row and extent(sch, loops[-1]) % row == 0:
        loops = [*loops[:-1], *sch.split(loops[-1], [None, row])]
    extents = [extent(sch, lp) for lp in loops]
    # A short innermost loop (7x7 maps, 1x1 features) is fused with its parent for lanes.
    split = len(loops) - 1
    while split > 0 and extents[split] < 8 and extents[split - 1] * extents[split] <= 64:
        extents[split - 1] *= extents[split]
        split -= 1
    inner = sch.fuse(*loops[split:]) if len(loops) - split > 1 else loops[split]
    outer = loops[:split]
    if extent(sch, inner) <= MAX_WHOLE_VECTOR:
        vector = inner
    else:
        # A ragged last vector is predicated: still far better than a scalar row.
        rest, vector = sch.split(inner, [None, LANES])
        outer = [*outer, rest]
    total = math.prod(extents)
    if outer and total >= PARALLEL_MIN_ELEMENTS:
        fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
        sch.parallel(fused)
    if extent(sch, vector) > 1:
        sch.vectorize(vector)


def _write_in_order(sch: s_tir.Schedule, block: SBlockRV) -> None:
    """A block that writes its output's innermost axis from an outer loop (a layout transform
    from NCHW to 16-channel blocks iterates over its input) is made to iterate in its output's
    order: its vectors then store whole cache lines, not one lane in each of 16 lines (a
    16x56x56 input's transform, a scatter, took 0.05-0.25 ms)."""
    stmt = sch.get(block)
    loops = sch.get_loops(block)
    if len(stmt.writes) != 1 or ROW_KEY in stmt.annotations or len(loops) < 2:
        return
    realize = sch.get(loops[-1]).body
    if not isinstance(realize, s_tir.SBlockRealize):
        return
    last = tirx.analysis.undefined_vars(stmt.writes[0].region[-1].min, [])
    axes = [i for i, iv in enumerate(stmt.iter_vars) if any(v.same_as(iv.var) for v in last)]
    if len(axes) != 1:
        return
    bound = realize.iter_values[axes[0]]
    loop_vars = [sch.get(lp).loop_var for lp in loops]
    inner = next((i for i, v in enumerate(loop_vars) if v.same_as(bound)), None)
    if inner is not None and inner != len(loops) - 1:
        sch.reorder(*loops[:inner], *loops[inner + 1 :], loops[inner])


def _schedule_reduction(sch: s_tir.Schedule, block: SBlockRV) -> None:
    """Pooling / mean: parallel over outputs, epilogue inside the tile; the reduction
    vectorized along the outputs' last axis where the reads are contiguous along it, else in
    partial sums along contiguous planes (a global mean), else serial."""
    stmt = sch.get(block)
    n_spatial = sum(iv.iter_type == tirx.IterVar.DataPar for iv in stmt.iter_vars)
    loops = sch.get_loops(block)
    if len(loops) != len(stmt.iter_vars):
        return
    spatial, reduce = loops[:n_spatial], loops[n_spatial:]
    total = math.prod(extent(sch, lp) for lp in spatial)
    vector = None
    if LLVM_VECTOR_KEY in stmt.annotations:
        spatial = spatial[:-1]  # the row stays a serial loop for LLVM to vectorize
    elif spatial and _vectorizable_reduction(sch, block) and extent(sch, spatial[-1]) >= 4:
        vector = spatial[-1]
        spatial = spatial[:-1]
        sch.reorder(*reduce, vector)
    elif spatial and reduce and (lanes := _plane_lanes(sch, block, reduce)):
        _reduce_in_lanes(sch, block, spatial, reduce, lanes)
        return
    if not spatial:
        return
    # A pooling's pad (inline_injective keeps it out of the reduction's vector loop).
    producers = sch.get_producers(block) if vector is not None else []
    pads = [p for p in producers if len(sch.get_consumers(p)) == 1]
    if pads and len(spatial) > 1:
        spatial = spatial[:-1]  # a task per output row; its columns stay a loop inside
    fused = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
    for pad in pads:
        # The input rows of the task's output row, padded while in cache: in a pass of its
        # own, the pad streamed ResNet's 64x112x112 stem output through memory twice.
        with contextlib.suppress(ScheduleError):
            sch.compute_at(pad, fused)
            vectorize_innermost(sch, loops_below(sch, pad, fused))
    _attach_consumers(sch, block, fused)
    # Parallel by the elements read, not the outputs: a blocked mean over 112x112 planes has
    # 32 outputs and 401,408 inputs (EfficientNet-B0's first squeeze-excitation ran 21 us on
    # one core, 12 us on two).
    reads = total * math.prod(extent(sch, lp) for lp in reduce)
    if reads >= PARALLEL_MIN_ELEMENTS and extent(sch, fused) > 1:
        sch.parallel(fused)
    if vector is not None and reduce:
        sch.vectorize(vector)
        sch.decompose_reduction(block, reduce[0])


def _attach_consumers(sch: s_tir.Schedule, block: SBlockRV, loop: LoopRV) -> None:
    for consumer in sch.get_consumers(block):
        if is_reduction(sch, consumer):
            continue  # scheduled as a reduction of its own
        with contextlib.suppress(ScheduleError):
            sch.reverse_compute_at(consumer, loop)
            vectorize_innermost(sch, sch.get_loops(consumer)[1:])


def _vectorizable_reduction(sch: s_tir.Schedule, block: SBlockRV) -> bool:
    """True when the innermost output axis is the innermost axis of every read (contiguous)."""
    stmt = sch.get(block)
    spatial = [iv.var for iv in stmt.iter_vars if iv.iter_type == tirx.IterVar.DataPar]
    if not spatial:
        return False
    inner = spatial[-1]
    for region in stmt.reads:
        used = tirx.analysis.undefined_vars(region.region[-1].min, [])
        if not any(v.same_as(inner) for v in used):
            return False
    return True


def _plane_lanes(sch: s_tir.Schedule, block: SBlockRV, reduce: Sequence[LoopRV]) -> int:
    """The partial sums for a reduction over whole trailing axes of every read (a mean over
    the H, W planes of NCHW): the longest divisor of its length up to MAX_PARTIAL_SUMS, whole
    vectors where one divides; 0 when the reads are not whole planes or the reduction is not
    two such rounds long (a 7x7 plane is one: the partial sums would only add a pass)."""
    stmt = sch.get(block)
    axes = [iv.var for iv in stmt.iter_vars if iv.iter_type != tirx.IterVar.DataPar]
    extents = [extent(sch, lp) for lp in reduce]
    for region in stmt.reads:
        ranges = list(region.region)
        if len(ranges) < len(axes):
            return 0
        shape = [int(d) for d in region.source.shape[len(ranges) - len(axes) :]]
        indices = [r.min for r in ranges[len(ranges) - len(axes) :]]
        if shape != extents or not all(
            isinstance(i, tirx.Var) and i.same_as(v) for i, v in zip(indices, axes, strict=True)
        ):
            return 0
    n = math.prod(extents)
    if n % LANES == 0:
        lanes = LANES * largest_divisor(n // LANES, MAX_PARTIAL_SUMS // LANES)
    else:
        lanes = largest_divisor(n, MAX_PARTIAL_SUMS)
    return lanes if lanes >= 8 and n >= 2 * lanes else 0


def _reduce_in_lanes(
    sch: s_tir.Schedule,
    block: SBlockRV,
    spatial: Sequence[LoopRV],
    reduce: Sequence[LoopRV],
    lanes: int,
) -> None:
    """``lanes`` partial sums per output, each a vector add per round over the contiguous
    plane, then their sum: a serial scalar sum is one add chain, latency-bound (a mean over
    32 x 112 x 112 took 270 us, 28x longer). Parallel over the outputs."""
    elements = math.prod(extent(sch, lp) for lp in [*spatial, *reduce])
    fused_reduce = sch.fuse(*reduce) if len(reduce) > 1 else reduce[0]
    _, inner = sch.split(fused_reduce, [None, lanes])
    partial = sch.rfactor(inner, factor_axis=len(spatial))  # sums [*outputs, lanes]
    loops = sch.get_loops(partial)
    outputs = sch.fuse(*loops[: len(spatial)]) if len(spatial) > 1 else loops[0]
    *_, rounds, inner = sch.get_loops(partial)
    sch.vectorize(inner)
    sch.reverse_compute_at(block, outputs)
    _attach_consumers(sch, block, outputs)
    if elements >= PARALLEL_MIN_ELEMENTS and extent(sch, outputs) > 1:
        sch.parallel(outputs)
    # After parallel: the update block without its init is no longer a reduction block that
    # 'parallel' accepts.
    sch.decompose_reduction(partial, rounds)
