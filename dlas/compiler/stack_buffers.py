"""Small scratch buffers of CPU kernels on the stack instead of TVM's workspace pool.

TVM's ``LowerTVMBuiltin`` keeps an allocation on the stack only when its scope is "global"
and it is under 1 KiB; everything else calls ``TVMBackendAllocWorkspace`` and
``TVMBackendFreeWorkspace`` where it is allocated. The default schedules keep each register
tile's accumulators in a "local" buffer allocated inside the parallel loop, so every task of
every kernel paid a pool lookup (a thread-local find in a free list) and a free: 5-7% of
MobileNetV2-32's samples under ``perf``. This pass marks every allocation of at most
:data:`MAX_STACK_BYTES` with the annotation that makes ``LowerTVMBuiltin`` leave it alone, so
LLVM allocates it in the (parallel task's) function entry instead.

The limit keeps a kernel's frame far below the 8 MiB a Linux thread's stack has by default
(TVM's worker threads and the VM's caller alike): the largest tiles of the default schedules
are about 16 KiB, a whole packed input of a 32 x 32 layer about 24 KiB.

Only functions that dlas's default schedules made are changed: :func:`mark` annotates the
schedule's root block, so the mark is part of the schedule's trace, and a tuning record of a
default schedule (the one seeding commits, and what the search mutates from it) builds like
the untuned kernel. MetaSchedule's own designs unroll much more, and on a stack buffer LLVM's
SROA then tries to promote thousands of elements to registers: one candidate of the tuning
tests compiled for minutes instead of a second.
"""

from __future__ import annotations

from typing import Any

import tvm
from tvm import s_tir, tirx

MAX_STACK_BYTES = 32 * 1024
# What marks a function this pass may change: an annotation of its schedule's root block
# (:func:`mark`), then, before lowering removes the blocks, an attribute of the PrimFunc.
MARK = "dlas.stack_buffers"
# tvm::tirx::transform::kDisableLowerTVMBuiltin: LowerTVMBuiltin leaves such a buffer as it is.
KEEP_KEY = "disable_lower_builtin"
PIPELINE = "dlas_cpu"


def _constant_bytes(buffer: Any) -> int | None:
    elements = 1
    for dim in buffer.shape:
        if not isinstance(dim, tirx.IntImm):
            return None
        elements *= int(dim)
    dtype = tvm.runtime.DataType(str(buffer.dtype))
    return elements * dtype.bits * dtype.lanes // 8


def _rewrite(stmt: Any) -> Any:
    """``stmt`` with its small allocations marked (the same object where nothing changed).
    TVM 0.27 has no Python statement mutator: the nodes that hold statements are rebuilt."""
    if isinstance(stmt, tirx.AllocBuffer):
        size = _constant_bytes(stmt.buffer)
        notes = dict(stmt.annotations or {})
        if size is None or size > MAX_STACK_BYTES or KEEP_KEY in notes:
            return stmt
        notes[KEEP_KEY] = tirx.IntImm("int32", 1)
        return tirx.AllocBuffer(stmt.buffer, notes, stmt.span)
    if isinstance(stmt, tirx.SeqStmt):
        items = [_rewrite(s) for s in stmt.seq]
        same = all(new.same_as(old) for new, old in zip(items, stmt.seq, strict=True))
        return stmt if same else tirx.SeqStmt(items, stmt.span)
    if isinstance(stmt, tirx.IfThenElse):
        then = _rewrite(stmt.then_case)
        other = None if stmt.else_case is None else _rewrite(stmt.else_case)
        if then.same_as(stmt.then_case) and (other is None or other.same_as(stmt.else_case)):
            return stmt
        return tirx.IfThenElse(stmt.condition, then, other, stmt.span)
    if not isinstance(stmt, tirx.For | tirx.AttrStmt | tirx.While):
        return stmt
    body = _rewrite(stmt.body)
    if body.same_as(stmt.body):
        return stmt
    if isinstance(stmt, tirx.For):
        return tirx.For(
            stmt.loop_var, stmt.min, stmt.extent, stmt.kind, body,
            stmt.thread_binding, stmt.annotations, stmt.step, stmt.span,
        )  # fmt: skip
    if isinstance(stmt, tirx.AttrStmt):
        return tirx.AttrStmt(stmt.node, stmt.attr_key, stmt.value, body, stmt.span)
    return tirx.While(stmt.condition, body, stmt.span)


def mark(sch: s_tir.Schedule) -> None:
    """Let :func:`stack_buffers` change the function ``sch`` schedules (recorded in its trace)."""
    # 1, not True: a record file stores a bool as 1, and the replayed trace must be equal.
    sch.annotate(sch.get_sblock("root"), MARK, 1)


@tirx.transform.prim_func_pass(opt_level=0, name="dlas.MarkStackBuffers")
def _mark_function(func: tirx.PrimFunc, _mod: tvm.IRModule, _ctx: Any) -> tirx.PrimFunc:
    """The root block's mark as a function attribute: lowering removes the blocks."""
    root = getattr(func.body, "block", None)
    if root is None or MARK not in (root.annotations or {}):
        return func
    return func.with_attr(MARK, True)


@tirx.transform.prim_func_pass(opt_level=0, name="dlas.StackBuffers")
def stack_buffers(func: tirx.PrimFunc, _mod: tvm.IRModule, _ctx: Any) -> tirx.PrimFunc:
    if not (func.attrs and func.attrs.get(MARK, False)):
        return func
    body = _rewrite(func.body)
    return func if body.same_as(func.body) else func.with_body(body)


def _pipeline() -> tuple[Any, Any, Any]:
    lower, finalize_host, finalize_device = tirx.get_tir_pipeline("s_tir")
    passes = [_mark_function, lower, stack_buffers]
    return tvm.transform.Sequential(passes), finalize_host, finalize_device


def cpu_tir_pipeline() -> str:
    """The name of TVM's default TIR pipeline around :func:`stack_buffers`, registered
    on first use (``tvm.compile``'s ``tir_pipeline`` takes a registered name)."""
    from tvm.tirx.compilation_pipeline import PIPELINE_MAP, register_tir_pipeline

    if PIPELINE not in PIPELINE_MAP:
        register_tir_pipeline(PIPELINE, _pipeline)
    return PIPELINE
