"""The whole-model check of a tuned build against the untuned one.

MetaSchedule times each task alone and hot, and so does the per-task check against the default
schedules (seeding.py). Inside the model a layer's weights come from memory after the layers
before it ran: on blocked MobileNetV2-224 the schedules that won alone ran up to 1.26x slower
in the model, and the tuned library 0.99x of the untuned one (docs/tuning.md). So the tuned and
the untuned build are timed whole, side by side on the device with the run's latency protocol,
and the faster is kept: a tuned build is never slower than the untuned one as the run measures
it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm
import tvm_ffi

from dlas.compiler.build import build, detached_copy
from dlas.devices import Device, Program
from dlas.measure import Speedup, side_by_side, speedup
from dlas.tuning.base import TuneContext

log = logging.getLogger(__name__)

TUNED, UNTUNED = "tuned", "untuned"


@dataclass(frozen=True)
class ModelCheck:
    # The untuned build's median latency over the tuned one's (> 1: tuning paid off in the
    # model), with a 95% interval.
    speedup: Speedup
    # Each build's median latency (ms).
    medians: dict[str, float]

    @property
    def keeps_tuned(self) -> bool:
        return self.medians[TUNED] < self.medians[UNTUNED]

    def metrics(self) -> dict[str, float]:
        return {
            "tune/model_speedup": self.speedup.ratio,
            "tune/model_speedup_ci_low": self.speedup.low,
            "tune/model_speedup_ci_high": self.speedup.high,
            "tune/kept_untuned": float(not self.keeps_tuned),
        }


def why_unchecked(device: Device | None) -> str:
    """Why the check cannot run on ``device`` ('' when it can)."""
    if device is None:
        return "no device to time on"
    if device.one_program_at_a_time:
        return f"device={device.cfg.name} loads one program at a time"
    return ""


def sample_input(mod: tvm.IRModule) -> np.ndarray:
    """A random batch with the shape and dtype of the model's input (``main``'s first one)."""
    info = mod["main"].params[0].ty
    shape = tuple(int(d) for d in info.shape)
    return np.random.default_rng(0).random(shape).astype(str(info.dtype))


def check(tuned: Any, untuned: Any, x: np.ndarray, device: Device) -> ModelCheck:
    """Time two executables of the same model side by side on ``device``."""
    with ExitStack() as stack:
        runners = {
            name: stack.enter_context(device.load(Program(executable=e, description=name)))
            for name, e in ((TUNED, tuned), (UNTUNED, untuned))
        }
        times, calls = side_by_side(runners, x, device.cfg.warmup_runs, device.cfg.timed_runs)
    return ModelCheck(
        speedup(times[TUNED], times[UNTUNED], calls),
        {name: float(np.median(t)) for name, t in times.items()},
    )


def keep_faster(
    tuned_mod: tvm.IRModule,
    tuned: Any,
    untuned_module: Callable[[], tvm.IRModule],
    target: Any,
    ctx: TuneContext,
) -> tuple[Any, bool]:
    """``(executable, whether it is the untuned build)``: the untuned build of the model if it
    ran faster than the ``tuned`` executable (built from ``tuned_mod``), else ``tuned``. The
    figures go to ``ctx.metrics``. ``untuned_module`` makes the untuned module only where the
    device can time both; nothing is timed where the two modules are the same."""
    if reason := why_unchecked(ctx.device):
        log.info("Tuned build not checked against the untuned one: %s", reason)
        return tuned, False
    untuned_mod = untuned_module()
    if tvm_ffi.structural_equal(tuned_mod, untuned_mod):
        return tuned, False
    untuned = build(untuned_mod, target)
    # Timed as copies: the run exports the one it keeps (detached_copy says why).
    found = check(
        detached_copy(tuned), detached_copy(untuned), sample_input(untuned_mod), ctx.device
    )
    ctx.metrics.update(found.metrics())
    log.info(
        "Whole model: tuned %.3f ms, untuned %.3f ms (%s): keeping the %s build",
        found.medians[TUNED],
        found.medians[UNTUNED],
        found.speedup,
        TUNED if found.keeps_tuned else UNTUNED,
    )
    return (tuned, False) if found.keeps_tuned else (untuned, True)
