"""This CPU's roofline: attainable compute peaks per dtype and memory bandwidth, measured.

- float32: a TVM-built FMA micro-kernel (independent vector accumulators in registers, a set
  per thread), i.e. the instruction peak of this CPU at the run's thread count;
- bf16 / int8: the same micro-kernel on the dot-product instruction (AVX512-BF16 ``vdpbf16ps``,
  AVX512-VNNI ``vpdpbusd``) where the target has it, and PyTorch's (oneDNN) GEMM where
  /proc/cpuinfo lists the instructions (avx512_bf16 / amx_bf16; avx512_vnni / avx_vnni /
  amx_int8); the higher of the two. oneDNN's GEMM alone was no peak: on a Zen 4 it ran 668
  int8 GOP/s and 386 bf16 GFLOP/s, dlas's int8 layers 830, the micro-kernels 941 and 470 (one
  instruction a cycle per core). On AMX CPUs oneDNN's tiles are the higher;
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
from typing import Any, NamedTuple

import numpy as np

log = logging.getLogger(__name__)

ROOFLINE_VERSION = 5  # 3: FMA chains sized for the target's vector registers; 4: long calls;
# 5: bf16 / int8 dot-product micro-kernels
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

    from dlas.devices.local_cpu import host_target

    if target is None:
        target = host_target(threads)
    flags = cpu_flags()
    result = Roofline(threads=threads, cpu=cpu_model())
    result.peaks["float32"] = fp32_fma_peak(target, threads)
    result.how["float32"] = "TVM FMA micro-kernel, 16-lane vector chains in registers"
    for dtype, cpu_has in (("bfloat16", BF16_FLAGS), ("int8", INT8_FLAGS)):
        candidates = {}
        if (micro := dot_peak(target, threads, dtype)) is not None:
            candidates[DOT_STEPS[dtype].how] = micro
        if flags & set(cpu_has) and (library := torch_gemm_peak(dtype, threads)):
            candidates[LIBRARY_GEMMS[dtype]] = library
        if candidates:
            how = max(candidates, key=candidates.get)
            result.peaks[dtype], result.how[dtype] = candidates[how], how
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
    """GFLOP/s of independent vector FMA chains, a set per thread, all in registers."""
    lib, chains = fma_kernel(target, threads)
    return _chains_peak(lib, threads, chains, "float32", 2)


def _chains_peak(lib: Any, threads: int, chains: int, dtype: str, ops_per_lane: int) -> float:
    """G(FL)OP/s of a chain micro-kernel ``main(out, operands, iterations)``: the best of 5
    calls, each with enough iterations to last :data:`FMA_MIN_CALL_S`; ``ops_per_lane``:
    what one step of a chain does per accumulator lane (FMA 2, vpdpbusd 8, vdpbf16ps 4)."""
    import tvm

    from dlas.algorithms.shapes import LANES

    dev = tvm.cpu()
    out = tvm.runtime.tensor(np.ones((threads, chains, LANES), dtype), dev)
    operands = tvm.runtime.tensor(np.ones((threads, OPERAND_BYTES), "int8"), dev)
    once = lib.mod.time_evaluator("main", dev, number=1, repeat=1)
    iters = FMA_ITERS
    seconds = once(out, operands, iters).mean
    while seconds < FMA_MIN_CALL_S and iters < FMA_MAX_ITERS:
        iters = min(FMA_MAX_ITERS, iters * max(2, int(FMA_MIN_CALL_S / max(seconds, 1e-9)) + 1))
        seconds = once(out, operands, iters).mean
    timer = lib.mod.time_evaluator("main", dev, number=1, repeat=5)
    seconds = min(timer(out, operands, iters).results)
    return ops_per_lane * threads * chains * LANES * iters / seconds / 1e9


def fma_kernel(target: Any, threads: int) -> tuple[Any, int]:
    """The FMA micro-kernel built for ``target``, and its number of 16-lane chains: as many as
    a register tile holds (24 zmm on AVX-512, 6 x 2 ymm on AVX2), more than FMA latency x
    ports and without spills (24 on AVX2 measured a third of the peak)."""
    import tvm

    from dlas.algorithms.shapes import max_accumulators

    with target:
        chains = max_accumulators()

    def fma(acc: Any, _operands: Any, _thread: Any) -> Any:
        return acc * tvm.tirx.const(0.999999, "float32") + tvm.tirx.const(1e-7, "float32")

    func = _chains_primfunc(threads, chains, "float32", fma)
    return tvm.compile(func, target=target), chains


class DotStep(NamedTuple):
    """A dot-product instruction as a chain step: its accumulators' dtype, the operations a
    step does per accumulator lane, and how the peak it gives is described."""

    accumulator: str
    ops_per_lane: int
    how: str


DOT_STEPS = {
    "int8": DotStep("int32", 8, "TVM vpdpbusd micro-kernel, zmm chains in registers"),
    "bfloat16": DotStep("float32", 4, "TVM vdpbf16ps micro-kernel, zmm chains in registers"),
}
LIBRARY_GEMMS = {
    "int8": "PyTorch torch._int_mm (oneDNN) int8 GEMM 2048^3",
    "bfloat16": "PyTorch (oneDNN) bf16 GEMM 2048^3",
}
# Bytes of the (never changing) operands a dot-product step reads: two zmm registers.
OPERAND_BYTES = 128


def dot_peak(target: Any, threads: int, dtype: str) -> float | None:
    """GOP/s (int8) or GFLOP/s (bfloat16) of dot-product chains in registers, like the FMA
    peak; None where ``target`` lacks the AVX-512 instruction."""
    lib, chains = dot_kernel(target, threads, dtype)
    if lib is None:
        return None
    step = DOT_STEPS[dtype]
    return _chains_peak(lib, threads, chains, step.accumulator, step.ops_per_lane)


def dot_kernel(target: Any, threads: int, dtype: str) -> tuple[Any, int]:
    """The ``dtype`` dot-product micro-kernel built for ``target`` and its number of chains;
    (None, 0) where the target lacks the instruction."""
    import tvm
    from tvm import tirx

    from dlas.algorithms import intrinsics
    from dlas.algorithms.shapes import has_feature, max_accumulators

    def vpdpbusd(acc: Any, operands: Any, thread: Any) -> Any:
        u8, s8 = (operands.vload([thread, at], "int8x64") for at in (0, 64))
        return tirx.call_llvm_pure_intrin("int32x16", "llvm.x86.avx512.vpdpbusd.512", acc, u8, s8)

    def vdpbf16ps(acc: Any, operands: Any, thread: Any) -> Any:
        # bf16 pairs travel as int32 lanes; the LLVM IR function bitcasts them (intrinsics).
        a, b = (
            tirx.reinterpret("int32x16", operands.vload([thread, at], "int8x64")) for at in (0, 64)
        )
        return tirx.call_pure_extern("float32x16", intrinsics.BF16_EXTERN, acc, a, b)

    feature, step, llvm_ir = {
        "int8": (intrinsics.VNNI_FEATURE, vpdpbusd, None),
        "bfloat16": (intrinsics.BF16_FEATURE, vdpbf16ps, intrinsics.BF16_LLVM_IR),
    }[dtype]
    if not has_feature(feature, target):
        return None, 0
    with target:
        chains = max_accumulators()
    func = _chains_primfunc(threads, chains, DOT_STEPS[dtype].accumulator, step, llvm_ir)
    return tvm.compile(func, target=target), chains


def _chains_primfunc(
    threads: int, chains: int, dtype: str, step: Any, llvm_ir: str | None = None
) -> Any:
    """``main(out, operands, iterations)``: per thread, ``chains`` independent 16-lane
    accumulators (from ``out``), each ``acc = step(acc, operands, thread)`` every iteration,
    all in registers; ``llvm_ir``: LLVM IR functions the step calls."""
    from tvm.script import tirx as T

    from dlas.algorithms.shapes import LANES

    vector = f"{dtype}x{LANES}"
    annotations = {"pragma_import_llvm": llvm_ir} if llvm_ir else {}

    @T.prim_func
    def main(
        out: T.Buffer((threads, chains, LANES), dtype),
        operands: T.Buffer((threads, OPERAND_BYTES), "int8"),
        iters: T.int32,
    ):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        for t in T.parallel(threads, annotations=annotations):
            x = T.alloc_buffer((chains, LANES), dtype, scope="local")
            for j in T.unroll(chains):
                for v in T.vectorized(LANES):
                    x[j, v] = out[t, j, v]
            for _ in range(iters):
                for j in T.unroll(chains):
                    x[j, T.ramp(0, 1, LANES)] = step(x.vload([j, 0], vector), operands, t)
            for j in T.unroll(chains):
                for v in T.vectorized(LANES):
                    out[t, j, v] = x[j, v]

    return main


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
