"""Auto: every conv2d runs whichever eligible algorithm is fastest for its workload on the
device, measured rather than guessed.

For each conv, each candidate (direct, gemm, spatial_pack, winograd; the sparse ones too when
the layer's weights are pruned) that would really run this layer — not fall back to another —
is built alone with its default schedule and timed on this machine (batch 1, median of
``repeat`` calls, the candidates taking turns). Each call is timed with cold caches,
as a layer's weights are in a model at batch 1. The times are cached per (workload, layout,
target, candidates, repeat, rounds, sparsity) like tuning records, so later runs and other
models with the same workload reuse them; the layer table lists every candidate's time in its
``candidates`` column. The whole model so chosen is then raced against each whole-graph layout
of ``graph_candidates`` (blocked, whose layers each run Winograd or spatial_pack's kernel,
whichever times faster in its layout), and the faster is built (``choose_lowering``).

    python -m dlas.run algorithm=auto                              # untuned, measured choice
    python -m dlas.run algorithm=auto tuning=metaschedule          # then tune the chosen kernels
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import tvm
import tvm_ffi
from tvm import relax

from dlas.cache import Cache, write_atomic
from dlas.compiler.build import build

from . import blocked
from .base import Algorithm, layer_kernels
from .constants import value_of
from .lowering import LoweredModule, lower, schedule_defaults
from .registry import ALGORITHMS
from .shapes import ROW_COLUMNS, ConvSpec, describe_times

log = logging.getLogger(__name__)

DENSE_CANDIDATES = ("direct", "gemm", "spatial_pack", "winograd")
# Whole-graph layouts the per-layer choice is raced against, as whole models.
GRAPH_CANDIDATES = ("blocked",)
SPARSE_CANDIDATES = ("sparse_direct", "sparse_gemm", "sparse_spatial_pack")
# Bump when what a candidate's timing means changes (kernels, protocol).
# 26: blocked's winograd_2x2 kernel; 24-25: a Winograd product over few tiles with one
# vector; 23: Winograd's pad and epilogue by the shared helpers; 22: Winograd's V by tile
# position; 21: a blocked pool's pad per output row; 20: Winograd's separable transforms, pad and
# epilogue per task; 19: means in parallel by the elements they read;
# 18: blocked's depthwise tasks split as the layer before split their input;
# 17: tiles whose weights fit in L1 reduce in registers; 16: the race times 5x the calls;
# 15: blocked's kernels timed in its race; 14: candidates timed with cold caches;
# 13: direct's pointwise tiles on odd-vector planes; 12: candidates timed round-robin
CHOICES_VERSION = 26
# A layer's candidates are timed in this many rounds, each candidate's calls in turn: a drift
# in the host's speed then reaches all of them. Four fresh choosings of ResNet18-32's 20 layers
# disagreed on 16 of 120 layer pairs timed one after the other (one candidate's time 2x its
# usual in one choosing), on 9 of 120 in 5 rounds (benchmarks/auto_choices.py).
ROUNDS = 5
# The whole-model race makes this many times a layer's calls, in as many times its rounds: the
# two lowerings often run within 5% of each other. Re-raced 24 times each way, VGG-16-32's
# per-layer over blocked ranged 0.946-1.072 with 20 calls in 5 rounds, 0.968-1.028 with 100
# in 25 (benchmarks/auto_race.py, Zen 4, 2 cores).
RACE_SCALE = 5


@ALGORITHMS.register("auto")
class Auto(Algorithm):
    name = "auto"
    composite = True

    def __init__(
        self,
        candidates: list[str] | tuple[str, ...] = DENSE_CANDIDATES,
        sparse_candidates: list[str] | tuple[str, ...] = SPARSE_CANDIDATES,
        cache_dir: str | None = None,
        repeat: int = 20,
        rounds: int = ROUNDS,
        graph_candidates: list[str] | tuple[str, ...] = GRAPH_CANDIDATES,
    ) -> None:
        super().__init__()
        self.candidates = list(candidates)
        self.sparse_candidates = list(sparse_candidates)
        self.graph_candidates = list(graph_candidates)
        whole = [n for n in ALGORITHMS.names() if ALGORITHMS.get(n).whole_graph]
        if unknown := [n for n in self.graph_candidates if n not in whole]:
            raise ValueError(
                f"algorithm.graph_candidates: {', '.join(unknown)} is not a whole-graph "
                f"algorithm; expected among {', '.join(whole) or 'none'}"
            )
        self.cache = Cache(Path(cache_dir).expanduser()) if cache_dir else None
        self.repeat = repeat
        self.rounds = rounds
        kernels = layer_kernels()
        unknown = [n for n in [*self.candidates, *self.sparse_candidates] if n not in kernels]
        if unknown or not self.candidates:
            raise ValueError(
                f"algorithm=auto: candidates must be non-empty and among {', '.join(kernels)}; "
                f"got {', '.join(unknown) or 'none'}"
            )
        self._weight: np.ndarray | None = None
        self._times: dict[str, float] = {}

    def algorithms(self) -> list[str]:
        # The sparse candidates join only on pruned weights, where they can run.
        return list(self.candidates)

    def required_algorithms(self) -> list[str]:
        return []  # a candidate that cannot compute a layer's dtype is simply not timed

    def conv2d(self, bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        self._weight, self._times = value_of(call.args[1]), {}
        out = super().conv2d(bb, call)
        if self._times:
            self.layers[-1]["candidates"] = describe_times(self._times)
        return out

    def select(self, spec: ConvSpec) -> tuple[Algorithm, str]:
        if self._weight is None:  # nothing to time with: the plain default
            return ALGORITHMS.get(self.candidates[0])().select(spec)
        names = list(self.candidates)
        if float(np.mean(self._weight == 0)) > 0:
            names += self.sparse_candidates
        eligible = {}
        for name in names:
            dtypes = ALGORITHMS.get(name).dtypes
            if dtypes is not None and spec.dtype not in dtypes:
                continue
            impl, _ = ALGORITHMS.get(name)().select(spec)
            if impl.name == name:  # a candidate that falls back is its fallback, already listed
                eligible[name] = impl
        if len(eligible) <= 1:
            return (next(iter(eligible.values())) if eligible else ALGORITHMS.get("direct")()), ""
        self._times = self._timed(spec, self._weight, sorted(eligible))
        best = min(self._times, key=self._times.__getitem__)
        return eligible[best], ""

    def choose_lowering(
        self, mod: tvm.IRModule, lowered: LoweredModule, target: tvm.target.Target, schedule: bool
    ) -> LoweredModule:
        """The per-layer choice, or a whole-graph layout (``graph_candidates``: blocked keeps
        16-channel blocks between layers, which no per-layer choice can) if the whole model
        built with it runs faster here. Decided once per (model, target) and cached; the
        layer table's last row (op ``graph``) shows both times."""
        if not self.graph_candidates:
            return lowered
        _require_host(target)
        key = {
            "version": CHOICES_VERSION,
            "graph": tvm_ffi.structural_hash(mod),
            "target": str(target),
            "candidates": [*self.candidates, *self.sparse_candidates],
            "graph_candidates": self.graph_candidates,
            "repeat": self.repeat,
            "rounds": self.rounds,
        }
        path = self.cache.entry("graph_choices", key, ".json") if self.cache else None
        raced = {self.name: lowered}  # the alternatives lowered (and scheduled) to be timed
        if path is not None and path.exists():
            times = json.loads(path.read_text())["times_ms"]
        else:
            for name in self.graph_candidates:
                raced[name] = lower(mod, self._graph_layout(name), target)
            libraries = {name: candidate.mod for name, candidate in raced.items()}
            if not schedule:
                libraries[self.name] = schedule_defaults(lowered.mod, target)
            times = time_models(
                libraries, target, self.repeat * RACE_SCALE, self.rounds * RACE_SCALE
            )
            log.info("algorithm=auto, whole model: %s", times)
            if path is not None:
                write_atomic(path, json.dumps({"spec": key, "times_ms": times}, indent=1).encode())
        best = min(times, key=times.__getitem__)
        if best == self.name or (schedule and best in raced):
            chosen = raced[best]  # lowered as the caller asked: no second lowering
        else:
            chosen = lower(mod, self._graph_layout(best), target, schedule=schedule)
        chosen.layers.append(
            {
                "layer": len(chosen.layers),
                **dict.fromkeys(ROW_COLUMNS),
                "op": "graph",
                "algorithm": best,
                "fallback": "",
                "candidates": describe_times(times),
            }
        )
        return chosen

    def _graph_layout(self, name: str) -> Algorithm:
        """Whole-graph candidate ``name``, choosing each layer's kernel by timing it where it
        has a choice (blocked: Winograd or spatial_pack's, in its own layout)."""
        if name == blocked.Blocked.name:
            return blocked.Blocked(kernel_timer=functools.partial(self._timed, layout=name))
        return ALGORITHMS.get(name)()

    def _timed(
        self, spec: ConvSpec, weight: np.ndarray, names: list[str], layout: str = "NCHW"
    ) -> dict[str, float]:
        """Times of ``names`` on this conv: NCHW kernels, or ``blocked``'s on its layout."""
        target = tvm.target.Target.current()
        _require_host(target)
        key = {
            "version": CHOICES_VERSION,
            "conv": dataclasses.asdict(spec),
            "layout": layout,
            "target": str(target),
            "candidates": names,
            "repeat": self.repeat,
            "rounds": self.rounds,
            # Sparse kernels' speed depends on how many weights are zero.
            "sparsity": round(float(np.mean(weight == 0)), 2),
        }
        path = self.cache.entry("algorithm_choices", key, ".json") if self.cache else None
        if path is not None and path.exists():
            return json.loads(path.read_text())["times_ms"]
        timer = time_convs if layout == "NCHW" else time_blocked_convs
        times = timer(spec, weight, names, target, self.repeat, self.rounds)
        log.info("algorithm=auto %s %s: %s", layout, spec.row()["weight_shape"], times)
        if path is not None:
            write_atomic(path, json.dumps({"spec": key, "times_ms": times}, indent=1).encode())
        return times


def _require_host(target: tvm.target.Target | None) -> None:
    if target is None or target.kind.name != "llvm" or "mtriple" in target.attrs:
        raise ValueError(
            "algorithm=auto times its candidates on this machine and needs this host's CPU "
            f"as the target (got {target}); map layers with algorithm=per_layer instead"
        )


def time_models(
    libraries: dict[str, tvm.IRModule], target: Any, repeat: int, rounds: int = ROUNDS
) -> dict[str, float]:
    """Median milliseconds of each scheduled module's main on random inputs, ``repeat`` calls
    each, made round-robin in ``rounds`` rounds. A whole model's calls evict its own weights
    as it runs, as they do in use: no cache flush here."""
    dev = tvm.cpu()
    rng = np.random.default_rng(0)
    vms = {}
    for name, mod in libraries.items():
        vms[name] = relax.VirtualMachine(build(mod, target), dev)
        inputs = [
            tvm.runtime.tensor(
                rng.standard_normal([int(d) for d in p.ty.shape]).astype(str(p.ty.dtype)), dev
            )
            for p in mod["main"].params
        ]
        vms[name].set_input("main", *inputs)
    return time_vms(vms, repeat, rounds)


def time_vms(
    vms: dict[str, relax.VirtualMachine], repeat: int, rounds: int = ROUNDS
) -> dict[str, float]:
    """:func:`time_models` of VMs already built, their inputs set."""
    return _round_robin(vms, tvm.cpu(), repeat, rounds, _hot_timer)


def conv_module(spec: ConvSpec, weight: np.ndarray) -> tvm.IRModule:
    """One conv2d with constant weights, as the model's legalization sees it; an int8 conv
    with the requantizing epilogue every such layer has (per-channel multiply-add, round,
    clip, cast): it costs as much as the products on narrow layers, and differs by form."""
    op, bb = relax.op, relax.BlockBuilder()
    x = relax.Var(
        "x", relax.TensorType((spec.batch, spec.in_channels, spec.height, spec.width), spec.dtype)
    )
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(
                relax.op.nn.conv2d(
                    x,
                    relax.const(weight),
                    strides=spec.strides,
                    padding=spec.padding,
                    dilation=spec.dilation,
                    groups=spec.groups,
                    out_dtype=spec.out_dtype,
                )
            )
            if spec.out_dtype == "int32":
                channel = (1, spec.out_channels, 1, 1)
                y = bb.emit(op.astype(y, "float32"))
                y = bb.emit(op.multiply(y, relax.const(np.full(channel, 1e-3, "float32"))))
                y = bb.emit(op.add(y, relax.const(np.full(channel, 0.5, "float32"))))
                y = bb.emit(op.astype(op.clip(op.round(y), 0.0, 255.0), "uint8"))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def cold_timer(vm: relax.VirtualMachine, dev: Any, calls: int) -> Any:
    """A timer of ``calls`` calls of ``vm``'s main, each after the caches are flushed: in a
    model at batch 1 a layer's weights come from memory on every call (the other layers'
    evicted them), and timed hot a candidate with larger packed weights (winograd's are 4x
    the filters) looked faster than it runs there (VGG-16-32 with hot choices ran 1.19x
    slower than direct alone)."""
    return vm.module.time_evaluator(
        "invoke_stateful", dev, number=1, repeat=calls, cache_flush_bytes=flush_bytes()
    )


@functools.cache
def flush_bytes() -> int:
    """Twice the last-level cache (64 MiB where the OS does not say)."""
    for name in ("SC_LEVEL3_CACHE_SIZE", "SC_LEVEL2_CACHE_SIZE"):
        with contextlib.suppress(ValueError, OSError, AttributeError):
            if (size := os.sysconf(name)) > 0:
                return 2 * size
    return 64 << 20


def time_convs(
    spec: ConvSpec,
    weight: np.ndarray,
    algorithms: list[str],
    target: Any,
    repeat: int,
    rounds: int = ROUNDS,
) -> dict[str, float]:
    """Median milliseconds of one conv built with each algorithm's default schedule: ``repeat``
    calls each, made round-robin in ``rounds`` rounds so that every candidate sees the same
    machine (1: one candidate after the other)."""
    modules = {name: lower(conv_module(spec, weight), name, target).mod for name in algorithms}
    shape = (spec.batch, spec.in_channels, spec.height, spec.width)
    return _time_cold(modules, shape, spec.dtype, target, repeat, rounds)


def time_blocked_convs(
    spec: ConvSpec,
    weight: np.ndarray,
    kernels: list[str],
    target: Any,
    repeat: int,
    rounds: int = ROUNDS,
) -> dict[str, float]:
    """:func:`time_convs` for blocked's ``kernels``, from blocked input to blocked output."""
    modules = {
        kernel: schedule_defaults(blocked.conv_module(spec, weight, kernel), target)
        for kernel in kernels
    }
    shape = (spec.batch, spec.in_channels // blocked.BLOCK, spec.height, spec.width, blocked.BLOCK)
    return _time_cold(modules, shape, spec.dtype, target, repeat, rounds)


def _time_cold(
    modules: dict[str, tvm.IRModule],
    shape: tuple[int, ...],
    dtype: str,
    target: Any,
    repeat: int,
    rounds: int,
) -> dict[str, float]:
    """Each scheduled one-layer module built and timed cold, round-robin, on one random
    input of ``shape``."""
    dev = tvm.cpu()
    x = tvm.runtime.tensor(np.random.default_rng(0).standard_normal(shape).astype(dtype), dev)
    vms = {}
    for name, mod in modules.items():
        vms[name] = relax.VirtualMachine(build(mod, target), dev)
        vms[name].set_input("main", x)
    return _round_robin(vms, dev, repeat, rounds, cold_timer)


def _round_robin(
    vms: dict[str, relax.VirtualMachine], dev: Any, repeat: int, rounds: int, timer: Any
) -> dict[str, float]:
    """Median milliseconds of ``repeat`` calls of each VM's main, made in ``rounds`` rounds in
    which every VM takes its turn (``timer(vm, dev, calls)`` times one turn)."""
    rounds = max(1, min(rounds, repeat))
    seconds: dict[str, list[float]] = {name: [] for name in vms}
    for i in range(rounds):
        calls = repeat // rounds + (i < repeat % rounds)
        for name, vm in vms.items():
            # The evaluator makes one untimed call first: the candidate's own warm-up.
            seconds[name] += timer(vm, dev, calls)("main").results
    return {name: float(np.median(s) * 1e3) for name, s in seconds.items()}


def _hot_timer(vm: relax.VirtualMachine, dev: Any, calls: int) -> Any:
    return vm.time_evaluator("invoke_stateful", dev, number=1, repeat=calls)
