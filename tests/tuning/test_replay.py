"""Every tile a default schedule samples can move: MetaSchedule's mutators change the
decisions of its sampled tiles and replay the trace, which must still apply (a trace whose
instructions return a different number of loops for other tiles fails the search)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import s_tir

from dlas.algorithms import lower
from dlas.tuning.seeding import default_schedule
from tests.algorithms.util import Case, conv_module, host_target, random_weights


@pytest.mark.parametrize(
    "case",
    [
        Case(1, 16, 16, 16, 16, 3, pad=1, groups=16),  # depthwise: a padded stage per tile
        Case(1, 16, 16, 16, 16, 3, stride=2, pad=1, groups=16),  # phase-split per tile
    ],
    ids=["depthwise", "depthwise_strided"],
)
def test_default_trace_replays_with_every_tile_moved_outward(case):
    rng = np.random.default_rng(0)
    weights = random_weights(case, 0.0, rng)
    mod = conv_module([case], [weights], [np.zeros(case.oc, "float32")])
    lowered = lower(mod, "direct", host_target(), schedule=False).mod
    (name,) = [gv.name_hint for gv in lowered.functions if "conv2d" in gv.name_hint]
    task = tvm.IRModule({"main": lowered[name]})
    sch = default_schedule(task, host_target())
    assert sch is not None
    trace = sch.trace
    tiles = [i for i in trace.insts if i.kind.name == "SamplePerfectTile"]
    assert tiles
    for inst in tiles:  # inner factor 1: the loops a tile of one leaves are unit loops
        outer, inner = (int(v) for v in trace.decisions[inst])
        trace = trace.with_decision(inst, [outer * inner, 1], remove_postproc=False)
    moved = s_tir.Schedule(task)
    trace.apply_to_schedule(moved, remove_postproc=False)
    assert not tvm_ffi.structural_equal(moved.mod, sch.mod)
