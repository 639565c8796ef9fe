"""Scratch buffers of the default schedules live on the stack, not in TVM's workspace pool."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, s_tir

from dlas.algorithms import lower
from dlas.compiler import stack_buffers
from dlas.compiler.build import build
from dlas.tuning import workers
from dlas.tuning.seeding import default_schedule
from tests.algorithms.util import Case, conv_module, host_target, random_weights

ALLOC = "TVMBackendAllocWorkspace"


def _built(monkeypatch, limit: int) -> tuple[str, np.ndarray]:
    """The assembly of a conv + relu built with ``limit``, and its output. Its buffers are all
    small: the padded input (5 KiB) and each task's register tile ("local")."""
    monkeypatch.setattr(stack_buffers, "MAX_STACK_BYTES", limit)
    case = Case(1, 4, 16, 16, 32, 3, pad=1)
    rng = np.random.default_rng(0)
    mod = conv_module([case], [random_weights(case, 0.0, rng)], [rng.standard_normal(32, "f4")])
    executable = build(lower(mod, "direct", host_target()).mod, host_target())
    asm = "".join(m.inspect_source("asm") for m in executable.mod.imports)
    x = rng.standard_normal((case.n, case.c, case.h, case.w)).astype("float32")
    out = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x, tvm.cpu()))
    return asm, out[0].numpy()


def test_small_buffers_leave_the_workspace_pool_with_the_same_results(monkeypatch):
    limit = stack_buffers.MAX_STACK_BYTES
    pooled_asm, pooled = _built(monkeypatch, 0)
    stacked_asm, stacked = _built(monkeypatch, limit)
    assert ALLOC in pooled_asm  # what TVM does by itself: the test can see the difference
    assert ALLOC not in stacked_asm
    assert np.abs(pooled).max() > 1.0  # the output varies
    np.testing.assert_array_equal(stacked, pooled)


def _rewritten(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
    return stack_buffers.stack_buffers(tvm.IRModule({"f": func}))["f"]


def test_large_buffers_stay_in_the_pool():
    buffer = tvm.tirx.decl_buffer((64, 1024), "float32", scope="local")
    small = tvm.tirx.decl_buffer((16, 16), "float32", scope="local")
    body = tvm.tirx.SeqStmt([tvm.tirx.AllocBuffer(buffer), tvm.tirx.AllocBuffer(small)])
    func = tvm.tirx.PrimFunc([], body)
    large_alloc, small_alloc = _rewritten(func.with_attr(stack_buffers.MARK, True)).body.seq
    assert stack_buffers.KEEP_KEY not in (large_alloc.annotations or {})
    assert stack_buffers.KEEP_KEY in small_alloc.annotations
    # A function the default schedules did not make (a MetaSchedule design) is left alone.
    assert _rewritten(func).same_as(func)


def test_a_buffer_of_unknown_size_stays_in_the_pool():
    dim = tvm.tirx.Var("n", "int64")
    buffer = tvm.tirx.decl_buffer((dim, 16), "float32", scope="local")
    body = tvm.tirx.SeqStmt([tvm.tirx.AllocBuffer(buffer), tvm.tirx.Evaluate(0)])
    func = tvm.tirx.PrimFunc([dim], body).with_attr(stack_buffers.MARK, True)
    assert stack_buffers.KEEP_KEY not in (_rewritten(func).body.seq[0].annotations or {})


def _replayed_default_asm(task: tvm.IRModule) -> str:
    """The assembly of the tuner's build of a record of ``task``'s default schedule: its trace
    replayed on the task, as MetaScheduleApplyDatabase does in a tuned build."""
    replayed = s_tir.Schedule(task)
    default_schedule(task, host_target()).trace.apply_to_schedule(replayed, remove_postproc=False)
    return workers._build_candidate(replayed.mod, host_target()).inspect_source("asm")


def test_a_tuning_record_of_the_default_schedule_keeps_its_stack_buffers(monkeypatch):
    # Else a tuned build whose best record is the seeded default is slower than the untuned one.
    case = Case(1, 4, 16, 16, 32, 3, pad=1)
    rng = np.random.default_rng(0)
    mod = conv_module([case], [random_weights(case, 0.0, rng)], [rng.standard_normal(32, "f4")])
    lowered = lower(mod, "direct", host_target(), schedule=False).mod
    (conv,) = [f for gv, f in lowered.functions_items() if "conv2d" in gv.name_hint]
    task = tvm.IRModule({"main": conv.with_attr("global_symbol", "main")})  # as a task has
    assert ALLOC not in _replayed_default_asm(task)
    monkeypatch.setattr(stack_buffers, "mark", lambda sch: None)
    assert ALLOC in _replayed_default_asm(task)  # without the mark in the trace: pooled
