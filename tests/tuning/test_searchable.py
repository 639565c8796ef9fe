"""The default schedules are searchable: their register-tile splits are sampled perfect tiles
whose decisions reproduce the default, so MetaSchedule's mutators can move them."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import s_tir
from tvm.s_tir import meta_schedule as ms

from dlas.algorithms import lower
from dlas.tuning.seeding import default_schedule
from dlas.tuning.workers import import_tensor_intrinsics
from tests.algorithms.util import Case, conv_module, host_target, random_weights


# A 3x3 layer's channel tiles; a 1x1 layer of 1024 channels, a pointwise panel on AVX-512.
@pytest.fixture(
    scope="module",
    params=[Case(1, 32, 16, 16, 64, 3, pad=1), Case(1, 1024, 14, 14, 256, 1)],
    ids=["3x3", "1x1-1024"],
)
def conv_task(request):
    case = request.param
    rng = np.random.default_rng(0)
    zeros = np.zeros(case.oc, "float32")
    mod = conv_module([case], [random_weights(case, 0.0, rng)], [zeros])
    target = host_target()
    lowered = lower(mod, "spatial_pack", target, schedule=False)
    (task,) = [
        t
        for t in ms.relax_integration.extract_tasks(lowered.mod, target)
        if "conv2d" in t.task_name
    ]
    return task.dispatched[0], target


def _tiles(trace: s_tir.schedule.Trace) -> list:
    return [i for i in trace.insts if i.kind.name == "SamplePerfectTile"]


def test_default_trace_samples_its_tiles_and_replays_to_the_same_function(conv_task):
    mod, target = conv_task
    sch = default_schedule(mod, target)
    assert sch is not None and len(_tiles(sch.trace)) >= 4
    for inst in _tiles(sch.trace):
        assert sch.trace.decisions[inst] is not None
    replayed = s_tir.Schedule(mod)
    sch.trace.apply_to_schedule(replayed, remove_postproc=False)
    tvm.ir.assert_structural_equal(replayed.mod, sch.mod)


def test_metaschedule_can_mutate_the_default_trace(conv_task):
    mod, target = conv_task
    sch = default_schedule(mod, target)
    # TuneContext imports TVM's tensor intrinsics; through dlas's import they keep dlas's
    # replacements (a process that already built int8 layers has them registered).
    import_tensor_intrinsics()
    ctx = ms.TuneContext(mod=mod, target=target, space_generator="post-order-apply", num_threads=1)
    mutator = ms.mutator.MutateTileSize()
    mutator._initialize_with_tune_context(ctx)
    mutated = [mutator.apply(sch.trace) for _ in range(10)]
    changed = [m for m in mutated if m is not None and str(m) != str(sch.trace)]
    assert changed, "MutateTileSize found nothing to change in the default schedule's trace"
    # A neighbour of the default is still a valid schedule of the task.
    neighbour = s_tir.Schedule(mod)
    changed[0].apply_to_schedule(neighbour, remove_postproc=False)
    assert neighbour.mod["main"].body is not None
