"""Performance findings of a measured TVM build: achieved GFLOP/s against this CPU's roofline,
and the per-kernel profile (``profile/layers``). Called once from the pipeline's measure
stage; returns Findings and never logs to MLflow itself."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from dlas import metrics as m
from dlas.results import Findings

log = logging.getLogger(__name__)

PERF_GFLOPS = "perf/gflops"
PERF_FRACTION = "perf/fraction_of_peak"
PERF_PEAK = "perf/peak_gflops"
PROFILE_TABLE = "profile/layers.json"
PROFILE_REPEAT = 5


def model_gflops(macs: float, latency_ms: float) -> float:
    """Achieved GFLOP/s of a model of ``macs`` multiply-accumulates run in ``latency_ms``."""
    return 2 * macs / (latency_ms * 1e-3) / 1e9


def perf_findings(
    cfg: Any,
    prepared: Any,
    device: Any,
    program: Any,
    entry: Path | None,
    metrics: dict[str, float],
) -> Findings:
    """``perf/gflops`` and ``perf/fraction_of_peak`` (for the compression's compute dtype),
    and, with ``eval.profile``, the per-kernel profile of a local TVM build."""
    found = Findings()
    macs, latency = prepared.findings.metrics.get(m.MACS), metrics.get(m.LATENCY)
    if macs and latency:
        found.metrics[PERF_GFLOPS] = model_gflops(macs, latency)
    local = device.cfg.kind == "local"
    roofline = None
    if cfg.eval.roofline and local:
        from dlas.devices.roofline import load_or_measure

        threads = device.thread_count() or 1
        roofline = load_or_measure(Path(cfg.paths.cache_dir).expanduser(), threads, device.target)
    elif local:
        log.info("eval.roofline=false: no perf/fraction_of_peak")
    dtype = prepared.compression.compute_dtypes[0]
    peak = roofline.peak(dtype) if roofline else None
    if peak:
        found.metrics[PERF_PEAK] = peak
        found.tags["perf.compute_dtype"] = dtype
        if PERF_GFLOPS in found.metrics:
            found.metrics[PERF_FRACTION] = found.metrics[PERF_GFLOPS] / peak
    if cfg.eval.profile and local and program.is_tvm:
        found.tables[PROFILE_TABLE] = _profile(program, prepared, entry, peak, roofline)
    return found


def _profile(program: Any, prepared: Any, entry: Path | None, peak, roofline) -> dict:
    import tvm
    from tvm import relax

    from dlas.profile import KERNELS_FILE, profile_kernels, profile_table

    if program.executable is not None:
        executable = program.executable
    else:
        executable = tvm.runtime.load_module(program.library)
    costs = {}
    if entry is not None and (entry / KERNELS_FILE).exists():
        costs = json.loads((entry / KERNELS_FILE).read_text())
    dev = tvm.cpu()
    # A VM of its own: the instrument hook cannot be removed once set.
    vm = relax.VirtualMachine(executable, dev)
    x = next(iter(prepared.data.test_loader(batch_size=1)))[0].numpy()
    kernels = profile_kernels(vm, dev, x, PROFILE_REPEAT)
    return profile_table(kernels, costs, peak, roofline.bandwidth_for if roofline else None)
