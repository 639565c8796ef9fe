"""What the benchmark scripts share: the library a pipeline run built, and side-by-side timing.

Benchmarks run as scripts (``python benchmarks/x.py``), so this module is imported by its name.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple


def run_one(overrides: list[str]) -> tuple[dict[str, float], Path | None]:
    """One real pipeline run: its metrics and the library it built (or found cached)."""
    from hydra import compose, initialize_config_module

    from dlas import pipeline

    with initialize_config_module("dlas.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return pipeline.run(cfg), library_of(cfg)


def library_of(cfg: Any) -> Path | None:
    """The cached library of this config: same checkpoint, compression, algorithm and tuning
    (the newest, if several targets match)."""
    from dlas.config import validate
    from dlas.models.train import checkpoint_spec

    def plain(value: Any) -> Any:
        return json.loads(json.dumps(value, default=str))

    typed = validate(cfg)
    want = {
        "checkpoint": plain(checkpoint_spec(typed.model, typed.dataset)),
        "compression": plain(asdict(typed.compression)),
        "algorithm": plain(vars(typed.algorithm)),
        "tuning": plain(vars(typed.tuning)),
    }
    found = []
    for spec_file in (Path(typed.paths.cache_dir) / "compiled").glob("*/spec.json"):
        spec = json.loads(spec_file.read_text())
        if {k: spec.get(k) for k in want} == want and (spec_file.parent / "model.so").exists():
            found.append(spec_file.parent / "model.so")
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


# TVM's, ONNX Runtime's and PyTorch's idle worker threads spin for a while after a call; with
# 2 cores they take them from whichever system runs next. A pause did not hide that: after
# PyTorch eager or TVM and a 50 ms pause, ONNX Runtime's MobileNetV2-224 took 11-23 ms where it
# takes 5 (Zen 3, 2 cores, 4 of 4 processes). Warming the next system up on its own calls for
# 0.05-0.1 s measured it at 4.7-6.0 ms every time, and left the others' figures unchanged.
WARMUP_S = 0.1


def round_robin(
    systems: dict[Any, Callable[[], Any]], rounds: int, calls: int, warmup_s: float = WARMUP_S
) -> dict[Any, list[float]]:
    """Times (ms) of ``rounds`` x ``calls`` calls of each system, round-robin so that all see
    the same machine load; before each system's calls, untimed calls of it for ``warmup_s``
    (at least one)."""
    times: dict[Any, list[float]] = {k: [] for k in systems}
    for _ in range(rounds):
        for name, call in systems.items():
            until = time.perf_counter() + warmup_s
            call()
            while time.perf_counter() < until:
                call()
            for _ in range(calls):
                start = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - start) * 1e3)
    return times


class Speedup(NamedTuple):
    """How many times faster one system ran than another: the ratio of their medians, and a
    95% interval of it."""

    ratio: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"x{self.ratio:.2f} (95%: {self.low:.2f}-{self.high:.2f})"


def speedup(fast: Sequence[float], slow: Sequence[float], calls: int) -> Speedup:
    """``median(slow) / median(fast)`` of two systems' :func:`round_robin` times, with a
    percentile-bootstrap interval that resamples whole rounds: a round's blocks of the two
    systems ran back to back, so a change of machine speed between rounds (other tenants on a
    shared host; one core slower than the other for a while) moves both of a pair and stays
    out of their ratio, where resampling calls one by one would count it as noise."""
    import numpy as np

    from dlas.measure import BOOTSTRAP_RESAMPLES

    a = np.asarray(fast, dtype=np.float64).reshape(-1, calls)
    b = np.asarray(slow, dtype=np.float64).reshape(-1, calls)
    rng = np.random.default_rng(0)
    rounds = rng.integers(0, len(a), size=(BOOTSTRAP_RESAMPLES, len(a)))
    ratios = np.median(b[rounds].reshape(BOOTSTRAP_RESAMPLES, -1), axis=1) / np.median(
        a[rounds].reshape(BOOTSTRAP_RESAMPLES, -1), axis=1
    )
    low, high = np.percentile(ratios, [2.5, 97.5])
    return Speedup(float(np.median(b) / np.median(a)), float(low), float(high))


def retime(
    libraries: dict[Any, Path], x: Any, rounds: int = 15, calls: int = 3
) -> dict[Any, float]:
    """Median batch-1 latency (ms) of every library on input ``x``, timed round-robin in one
    process (:func:`round_robin`)."""
    import numpy as np
    import tvm
    from tvm import relax

    dev = tvm.cpu()
    x = tvm.runtime.tensor(np.asarray(x, dtype="float32"), dev)
    vms = {
        k: relax.VirtualMachine(tvm.runtime.load_module(str(p)), dev) for k, p in libraries.items()
    }
    times = round_robin(
        {k: functools.partial(vm["main"], x) for k, vm in vms.items()}, rounds, calls
    )
    return {k: float(np.median(v)) for k, v in times.items()}
