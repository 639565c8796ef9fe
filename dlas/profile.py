"""Per-kernel profile of a compiled Relax model: where a call's time goes.

At build time :func:`kernel_costs` records, per PrimFunc of the lowered module, its float
operations (2 x the multiply-adds its conv or dense layer does, as the algorithm stamped them;
TVM's TIR estimate for the rest) and the bytes of its arguments (what it must read and write
at least once). At measure time :func:`profile_kernels` times every PrimFunc call of a few
whole-model calls through the VM's instrument hook, and
:func:`profile_table` joins the two: time, share of the call, achieved GFLOP/s, arithmetic
intensity and, with a roofline, the fraction of the attainable peak (compute- or
memory-bound, whichever the kernel's intensity says).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlas.results import Table

# The cache entry's file of kernel costs, beside model.so.
KERNELS_FILE = "kernels.json"


def kernel_costs(mod: Any) -> dict[str, dict[str, float]]:
    """{PrimFunc name: {"flops": float operations, "bytes": argument bytes}} of a lowered
    (scheduled or not) IRModule; functions the estimator cannot read get flops 0.

    A conv or dense kernel's flops are 2 x the multiply-adds its algorithm stamped
    (shapes.MACS_KEY), what its GFLOP/s conventionally means. TIR's estimator counts an
    inlined epilogue once per use of each value: a SiLU epilogue read 4.2x the conv's flops,
    and the profile showed a 16->96 layer at 75% of the roofline that ran at 18%."""
    from tvm import tirx
    from tvm.s_tir.analysis import estimate_tir_flops

    costs = {}
    for gv, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        flops = 2.0 * stamped_macs(func)
        # A sparse kernel's loop over a CSR row: the estimator read 7e13 flops for one layer.
        if not flops and not has_loops_of_unknown_extent(func.body):
            with contextlib.suppress(Exception):  # unknown forms: timed, no GFLOP/s
                flops = float(estimate_tir_flops(tvm_module_of(gv.name_hint, func)))
        size = 0
        for param in func.params:  # in TVM 0.27 a tensor parameter is its buffer
            shape = getattr(param, "shape", None)
            try:
                size += int(np.prod([int(d) for d in shape or ()])) * _itemsize(str(param.dtype))
            except (TypeError, ValueError):  # dynamic shape: unknown size
                continue
        costs[gv.name_hint] = {"flops": flops, "bytes": float(size)}
    return costs


def stamped_macs(func: Any) -> int:
    """The multiply-adds the algorithms stamped on ``func``: the default schedule's sum on the
    function, else (left for the tuner) the sum over its reduction blocks (a decomposed
    reduction's init block carries the stamp too); 0 when none is stamped."""
    from tvm import s_tir

    from dlas.algorithms.schedules import annotated_blocks, is_reduction
    from dlas.algorithms.shapes import MACS_KEY

    if MACS_KEY in (func.attrs or {}):
        return int(func.attrs[MACS_KEY])
    sch = s_tir.Schedule(func)
    blocks = [b for b in annotated_blocks(sch, MACS_KEY) if is_reduction(sch, b)]
    return sum(int(sch.get(b).annotations[MACS_KEY]) for b in blocks)


def has_loops_of_unknown_extent(stmt: Any) -> bool:
    """Whether a loop in ``stmt`` has bounds that are neither constants nor shape variables
    (a CSR row's nonzeros, read from memory): TIR's flop estimator cannot count those, and
    returns nonsense rather than failing."""
    from tvm import s_tir, tirx

    if isinstance(stmt, tirx.For):
        bounds = (stmt.min, stmt.extent)
        if any(not isinstance(b, tirx.IntImm | tirx.Var) for b in bounds):
            return True
        return has_loops_of_unknown_extent(stmt.body)
    if isinstance(stmt, s_tir.SBlockRealize):
        block = stmt.block
        return has_loops_of_unknown_extent(block.body) or (
            block.init is not None and has_loops_of_unknown_extent(block.init)
        )
    if isinstance(stmt, tirx.SeqStmt):
        return any(has_loops_of_unknown_extent(s) for s in stmt.seq)
    if isinstance(stmt, tirx.IfThenElse):
        return has_loops_of_unknown_extent(stmt.then_case) or (
            stmt.else_case is not None and has_loops_of_unknown_extent(stmt.else_case)
        )
    body = getattr(stmt, "body", None)  # AttrStmt, LetStmt, While, ...
    return body is not None and has_loops_of_unknown_extent(body)


def tvm_module_of(name: str, func: Any) -> Any:
    import tvm

    return tvm.IRModule({name: func})


def _itemsize(dtype: str) -> int:
    bits = int("".join(ch for ch in dtype if ch.isdigit()) or 8)
    return max(1, bits // 8)


@dataclass
class KernelTime:
    name: str
    calls: int  # per model call
    ms: float  # per model call, median over the profiled calls


def profile_kernels(vm: Any, dev: Any, x: np.ndarray, repeat: int) -> list[KernelTime]:
    """Each PrimFunc's time per model call (median of ``repeat`` profiled calls, after one
    warm-up), on a VM that does nothing else afterwards. The hook costs a Python call per
    kernel (~µs), so the total exceeds the unprofiled latency slightly; shares are what to
    read."""
    import tvm

    runs: list[dict[str, float]] = []
    calls: dict[str, int] = defaultdict(int)
    current: dict[str, float] = defaultdict(float)
    started: dict[str, float] = {}

    def instrument(func, symbol, before, ret, *args):  # noqa: ANN001, ARG001 - VM's signature
        name = str(symbol)
        if name.startswith("vm.builtin.") or name.startswith("relax."):
            return 0
        if before:
            started[name] = time.perf_counter()
        else:
            dev.sync()
            current[name] += time.perf_counter() - started.pop(name, time.perf_counter())
            calls[name] += 1
        return 0

    data = tvm.runtime.tensor(x, dev)
    vm.set_input("main", data)
    vm.invoke_stateful("main")  # warm-up, unprofiled
    vm.set_instrument(instrument)  # for good: the VM cannot unset it (use a VM of its own)
    for _ in range(repeat):
        current.clear()
        vm.invoke_stateful("main")
        runs.append(dict(current))
    names = sorted({n for r in runs for n in r})
    return [
        KernelTime(
            n,
            calls[n] // max(1, repeat),
            float(np.median([r.get(n, 0.0) for r in runs])) * 1e3,
        )
        for n in names
    ]


def profile_table(
    kernels: list[KernelTime],
    costs: dict[str, dict[str, float]],
    peak_gflops: float | None = None,
    bandwidth: Callable[[float], float | None] | None = None,
) -> Table:
    """The ``profile/layers`` table, slowest kernel first. ``bandwidth(bytes)`` is the GB/s a
    kernel touching that many bytes can stream (L2's or memory's: the roofline's
    ``bandwidth_for``). ``bound`` is ``compute`` when the kernel's intensity (flop per
    argument byte) is above that ridge point, else ``memory``; ``of_roofline`` is the
    achieved fraction of what the bound allows."""
    total = sum(k.ms for k in kernels) or 1.0
    rows = []
    for k in sorted(kernels, key=lambda k: -k.ms):
        cost = costs.get(k.name, {})
        # The costs are one call's; ``ms`` sums the kernel's ``calls`` per model call.
        flops, size = (k.calls * cost.get(key, 0.0) for key in ("flops", "bytes"))
        seconds = k.ms / 1e3
        gflops = flops / seconds / 1e9 if flops and seconds > 0 else None
        intensity = flops / size if flops and size else None
        bound = attainable = None
        # Which level streams it depends on what one call touches.
        gbs = bandwidth(size / max(1, k.calls)) if bandwidth and size else None
        ridge = peak_gflops / gbs if peak_gflops and gbs else None
        if ridge is not None and intensity is not None:
            bound = "compute" if intensity >= ridge else "memory"
            attainable = min(peak_gflops, intensity * gbs)
        rows.append(
            {
                "kernel": k.name,
                "calls": k.calls,
                "ms": round(k.ms, 4),
                "share": round(k.ms / total, 4),
                "gflop": round(flops / 1e9, 5) if flops else None,  # per model call
                "gflops": round(gflops, 2) if gflops else None,
                "gbs": round(size / seconds / 1e9, 2) if size and seconds > 0 else None,
                "flop_per_byte": round(intensity, 2) if intensity else None,
                "bound": bound,
                "of_roofline": round(gflops / attainable, 3) if gflops and attainable else None,
            }
        )
    columns = list(rows[0]) if rows else ["kernel", "ms", "share"]
    return {c: [r.get(c) for r in rows] for c in columns}
