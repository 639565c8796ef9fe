"""This CPU's roofline: attainable compute peaks per dtype and memory bandwidth, measured.

- float32: a TVM-built FMA micro-kernel (independent vector accumulators in registers, one
  chain per thread), i.e. the instruction peak of this CPU at the run's thread count;
- bf16 / int8: PyTorch (oneDNN) GEMMs, measured only where /proc/cpuinfo lists the dot-product
  instructions (avx512_bf16 / amx_bf16; avx512_vnni / avx_vnni / amx_int8): attainable
  library peaks, not instruction peaks;
- bandwidth: a TVM-built parallel, vectorized copy over a working set larger than the last-
  level cache (main memory) and one that fits in L2 (cache).

Each figure is the best of a few short runs (a shared machine only ever lowers them). The
result is cached per host (CPU model, flags, threads, TVM version) in the dlas cache with a
spec.json, so a run computes it once.
"""

from __future__ import annotations

import json
import logging
import platform
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

ROOFLINE_VERSION = 4  # 3: FMA chains sized for the target's vector registers; 4: long calls
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
FMA_ITERS = 1 << 17  # the first call's; grown up to FMA_MAX_ITERS (the int32 loop counter)
FMA_MAX_ITERS = 1 << 30
# TVM pins its workers to cores and leaves the calling thread free; sometimes the caller starts
# on a worker's core, and the OS moves it only after tens of ms. A 0.3 ms kernel then measured
# one core's peak in 3 of 8 processes on a 2-core Zen 3; calls of 0.1 s measured 8 of 8 right.
FMA_MIN_CALL_S = 0.1


@dataclass
class Roofline:
    threads: int
    cpu: str
    # attainable peaks, GFLOP/s (GOP/s for int8), by compute dtype
    peaks: dict[str, float] = field(default_factory=dict)
    # GB/s: "memory" (working set > LLC) and "cache" (fits the threads' L2)
    bandwidth: dict[str, float] = field(default_factory=dict)
    how: dict[str, str] = field(default_factory=dict)
    # Bytes of L2 the threads share among them: a kernel whose arguments fit streams from L2.
    cache_bytes: int = 0

    def peak(self, dtype: str) -> float | None:
        return self.peaks.get(dtype)

    @property
    def memory_gbs(self) -> float | None:
        return self.bandwidth.get("memory")

    def bandwidth_for(self, nbytes: float) -> float | None:
        """GB/s a kernel touching ``nbytes`` can stream: L2's if they fit, else memory's."""
        if nbytes <= self.cache_bytes and "cache" in self.bandwidth:
            return self.bandwidth["cache"]
        return self.memory_gbs


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    match = re.search(r"^flags\s*:\s*(.*)$", text, re.MULTILINE)
    return set(match.group(1).split()) if match else set()


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        match = re.search(r"^model name\s*:\s*(.*)$", text, re.MULTILINE)
        if match:
            return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_spec(threads: int) -> dict[str, Any]:
    import tvm

    return {
        "roofline_version": ROOFLINE_VERSION,
        "host": platform.node(),
        "cpu": cpu_model(),
        "flags": sorted(cpu_flags() & {"avx2", "fma", "avx512f", *BF16_FLAGS, *INT8_FLAGS}),
        "threads": threads,
        "tvm": tvm.__version__,
    }


def load_or_measure(cache_root: Path, threads: int, target: Any = None) -> Roofline:
    """The cached roofline of this host at ``threads``, measured (seconds) on a miss."""
    from dlas.cache import Cache, write_atomic

    spec = host_spec(threads)
    entry = Cache(cache_root).entry("roofline", spec, "")
    path = entry / "roofline.json"
    if path.exists():
        return Roofline(**json.loads(path.read_text()))
    roofline = measure(threads, target)
    write_atomic(entry / "spec.json", json.dumps(spec, indent=1).encode())
    write_atomic(path, json.dumps(asdict(roofline), indent=1).encode())
    return roofline


def measure(threads: int, target: Any = None) -> Roofline:
    import tvm

    from dlas.devices.local_cpu import resolve_target_dict

    if target is None:
        target = tvm.target.Target(resolve_target_dict({"kind": "llvm", "mcpu": "auto"}, threads))
    flags = cpu_flags()
    result = Roofline(threads=threads, cpu=cpu_model())
    result.peaks["float32"] = fp32_fma_peak(target, threads)
    result.how["float32"] = "TVM FMA micro-kernel, 16-lane vector chains in registers"
    if flags & set(BF16_FLAGS):
        result.peaks["bfloat16"] = torch_gemm_peak("bfloat16", threads)
        result.how["bfloat16"] = "PyTorch (oneDNN) bf16 GEMM 2048^3"
    if flags & set(INT8_FLAGS):
        gops = torch_gemm_peak("int8", threads)
        if gops:
            result.peaks["int8"] = gops
            result.how["int8"] = "PyTorch torch._int_mm (oneDNN) int8 GEMM 2048^3"
    result.cache_bytes = _cache_bytes(2) * threads
    result.bandwidth["memory"] = copy_bandwidth(target, _cache_bytes(None) * 2)
    result.bandwidth["cache"] = copy_bandwidth(target, result.cache_bytes // 2)
    result.how["bandwidth"] = "TVM parallel vectorized copy (read + write bytes / time)"
    return result


def _best_seconds(fn, runs: int = 5) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def fp32_fma_peak(target: Any, threads: int) -> float:
    """GFLOP/s of independent vector FMA chains, one per thread, all in registers: the best of
    5 calls, each with enough iterations to last :data:`FMA_MIN_CALL_S`."""
    import tvm

    from dlas.algorithms.shapes import LANES

    lib, acc = fma_kernel(target, threads)
    dev = tvm.cpu()
    out = tvm.runtime.tensor(np.ones((threads, acc, LANES), "float32"), dev)
    once = lib.mod.time_evaluator("main", dev, number=1, repeat=1)
    iters = FMA_ITERS
    seconds = once(out, iters).mean
    while seconds < FMA_MIN_CALL_S and iters < FMA_MAX_ITERS:
        iters = min(FMA_MAX_ITERS, iters * max(2, int(FMA_MIN_CALL_S / max(seconds, 1e-9)) + 1))
        seconds = once(out, iters).mean
    seconds = min(lib.mod.time_evaluator("main", dev, number=1, repeat=5)(out, iters).results)
    return 2 * threads * acc * LANES * iters / seconds / 1e9


def fma_kernel(target: Any, threads: int) -> tuple[Any, int]:
    """The FMA micro-kernel ``main(out, iterations)`` built for ``target``, and its number of
    16-lane chains: as many as a register tile holds (24 zmm on AVX-512, 6 x 2 ymm on AVX2),
    more than FMA latency x ports and without spills (24 on AVX2 measured a third of the
    peak)."""
    import tvm

    from dlas.algorithms.shapes import LANES, max_accumulators

    with target:
        chains = max_accumulators()
    return tvm.compile(_fma_primfunc(threads, chains, LANES), target=target), chains


def _fma_primfunc(threads: int, acc: int, lanes: int) -> Any:
    from tvm.script import tirx as T

    @T.prim_func
    def fma(out: T.Buffer((threads, acc, lanes), "float32"), iters: T.int32):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        for t in T.parallel(threads):
            x = T.alloc_buffer((acc, lanes), "float32", scope="local")
            for j in T.unroll(acc):
                for v in T.vectorized(lanes):
                    x[j, v] = out[t, j, v]
            for _ in range(iters):
                for j in T.unroll(acc):
                    for v in T.vectorized(lanes):
                        x[j, v] = x[j, v] * T.float32(0.999999) + T.float32(1e-7)
            for j in T.unroll(acc):
                for v in T.vectorized(lanes):
                    out[t, j, v] = x[j, v]

    return fma


def copy_bandwidth(target: Any, working_set: int) -> float:
    """GB/s (bytes read + written per second) of a parallel vectorized copy."""
    import tvm
    from tvm.script import tirx as T

    n = max(1 << 16, working_set // 8)  # two float32 arrays make up the working set
    chunk = 1 << 14
    n = n // chunk * chunk

    @T.prim_func
    def copy(a: T.Buffer((n,), "float32"), b: T.Buffer((n,), "float32")):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        for i in T.parallel(n // chunk):
            for j in range(chunk // 16):
                for v in T.vectorized(16):
                    b[i * chunk + j * 16 + v] = a[i * chunk + j * 16 + v]

    lib = tvm.compile(copy, target=target)
    dev = tvm.cpu()
    a = tvm.runtime.tensor(np.ones(n, "float32"), dev)
    b = tvm.runtime.tensor(np.zeros(n, "float32"), dev)
    repeat = max(3, min(50, (256 << 20) // (8 * n)))
    timer = lib.mod.time_evaluator("main", dev, number=repeat, repeat=5)
    return 8 * n / min(timer(a, b).results) / 1e9


def torch_gemm_peak(dtype: str, threads: int, size: int = 2048) -> float | None:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if dtype == "int8":
            if not hasattr(torch, "_int_mm"):
                return None
            a = torch.randint(-64, 64, (size, size), dtype=torch.int8)
            b = torch.randint(-64, 64, (size, size), dtype=torch.int8)
            fn = lambda: torch._int_mm(a, b)  # noqa: E731
        else:
            a = torch.randn(size, size).to(getattr(torch, dtype))
            b = torch.randn(size, size).to(getattr(torch, dtype))
            fn = lambda: torch.mm(a, b)  # noqa: E731
        try:
            fn()
        except RuntimeError as err:  # no kernel for this dtype on this build
            log.info("roofline: no %s GEMM in PyTorch here: %s", dtype, err)
            return None
        return 2 * size**3 / _best_seconds(fn, 3) / 1e9
    finally:
        torch.set_num_threads(previous)


def _cache_bytes(level: int | None) -> int:
    """One core's cache of ``level`` from sysfs (None: the largest, i.e. the LLC, capped at
    512 MiB); 1 MiB (L2) / 32 MiB (LLC) where sysfs does not say."""
    sizes = {}
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip()
            lvl = int((index / "level").read_text())
        except (OSError, ValueError):
            continue
        match = re.match(r"(\d+)([KMG]?)", text)
        if match:
            scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[match.group(2)]
            sizes[lvl] = max(sizes.get(lvl, 0), int(match.group(1)) * scale)
    if level is None:
        return min(max(sizes.values(), default=32 << 20), 512 << 20)
    return sizes.get(level, 1 << 20)
