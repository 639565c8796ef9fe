"""Depthwise planes in parallel tasks of a few rows, each task making its own producer stages
(padded rows, phase splits, tap quads) while they are in cache: ``direct``'s widened kernel
and :mod:`.dot_taps`."""

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
