"""How ``algorithm=auto`` times its candidates on this machine: one conv built alone with each
candidate's default schedule and timed with cold caches (:func:`time_convs`,
:func:`time_blocked_convs`), and whole models timed as a run times its latency
(:func:`time_models`). Every timing is round-robin: the candidates take turns in rounds, so a
drift in the host's speed reaches all of them."""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any

import numpy as np
import tvm
from tvm import relax

from dlas import measure
from dlas.compiler.build import build
from dlas.devices.local_cpu import TVMRunner

from . import blocked
from .lowering import lower, schedule_defaults
from .shapes import ConvSpec

# A layer's candidates are timed in this many rounds, each candidate's calls in turn. Four
# fresh choosings of ResNet18-32's 20 layers disagreed on 16 of 120 layer pairs timed one after
# the other (one candidate's time 2x its usual in one choosing), on 9 of 120 in 5 rounds
# (benchmarks/auto_choices.py).
ROUNDS = 5


def time_models(
    libraries: dict[str, tvm.IRModule], target: Any, repeat: int, rounds: int = ROUNDS
) -> dict[str, float]:
    """Median milliseconds of each scheduled model's main on one random input, timed as the
    run times its latency (:func:`dlas.measure.round_robin`: ``repeat`` calls in ``rounds``
    rounds, each block after ``measure.WARMUP_S`` of the model's own untimed calls). A whole
    model's calls evict its own weights as it runs, as they do in use: no cache flush here.
    Raced with one untimed call before each block of four, ResNet18-32's lowerings ran 25-35%
    slower than warmed and in another order (per-layer 3.64, blocked 3.75 ms; warmed 2.82 and
    2.52 ms), so the race kept the lowering that was slower in the run."""
    dev = tvm.cpu()
    runners = {name: TVMRunner(build(mod, target), dev) for name, mod in libraries.items()}
    (param,) = next(iter(libraries.values()))["main"].params
    shape = [int(d) for d in param.ty.shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(str(param.ty.dtype))
    return time_runners(runners, x, repeat, rounds)


def time_runners(
    runners: dict[str, TVMRunner], x: np.ndarray, repeat: int, rounds: int = ROUNDS
) -> dict[str, float]:
    """:func:`time_models` of models already built."""
    rounds = max(1, min(rounds, repeat))
    times = measure.round_robin(runners, x, rounds, -(-repeat // rounds))
    return {name: float(np.median(t)) for name, t in times.items()}


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
    """Median milliseconds of ``repeat`` cold calls of each scheduled one-layer module, built
    and called on one random input of ``shape``, the modules taking turns in ``rounds``
    rounds."""
    dev = tvm.cpu()
    x = tvm.runtime.tensor(np.random.default_rng(0).standard_normal(shape).astype(dtype), dev)
    vms = {}
    for name, mod in modules.items():
        vms[name] = relax.VirtualMachine(build(mod, target), dev)
        vms[name].set_input("main", x)
    rounds = max(1, min(rounds, repeat))
    seconds: dict[str, list[float]] = {name: [] for name in vms}
    for i in range(rounds):
        calls = repeat // rounds + (i < repeat % rounds)
        for name, vm in vms.items():
            # The evaluator makes one untimed call first: the candidate's own warm-up.
            seconds[name] += cold_timer(vm, dev, calls)("main").results
    return {name: float(np.median(s) * 1e3) for name, s in seconds.items()}
