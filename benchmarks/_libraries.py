"""What the benchmark scripts share: the library a pipeline run built, and side-by-side timing.

Benchmarks run as scripts (``python benchmarks/x.py``), so this module is imported by its name.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dlas import measure


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


def round_robin(
    systems: dict[Any, Callable[[], Any]],
    rounds: int,
    calls: int,
    warmup_s: float = measure.WARMUP_S,
) -> dict[Any, list[float]]:
    """:func:`dlas.measure.round_robin` over no-argument calls: times (ms) of ``rounds`` x
    ``calls`` calls of each system, each block after about ``warmup_s`` of its own untimed
    calls."""
    from dlas.devices.local_cpu import PythonRunner

    runners = {
        name: PythonRunner(lambda _x, call=call: call(), lock=None)
        for name, call in systems.items()
    }
    return measure.round_robin(runners, None, rounds, calls, warmup_s=warmup_s)


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
