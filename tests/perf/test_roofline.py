"""The host roofline: measured once per host and thread count, then read from the cache."""

from __future__ import annotations

import json

import pytest

from dlas.devices import roofline as rl


def test_cache_entry_has_spec_and_is_reused(tmp_path, monkeypatch):
    calls = []

    def fake_measure(threads, target=None):
        calls.append(threads)
        return rl.Roofline(threads, "cpu", {"float32": 100.0}, {"memory": 10.0, "cache": 50.0})

    monkeypatch.setattr(rl, "measure", fake_measure)
    first = rl.load_or_measure(tmp_path, 2)
    again = rl.load_or_measure(tmp_path, 2)
    assert calls == [2] and again == first
    (spec_file,) = tmp_path.glob("roofline/*/spec.json")
    spec = json.loads(spec_file.read_text())
    assert spec["threads"] == 2 and spec["roofline_version"] == rl.ROOFLINE_VERSION
    rl.load_or_measure(tmp_path, 1)  # another thread count is another entry
    assert calls == [2, 1]


def test_bandwidth_for_a_working_set():
    roof = rl.Roofline(2, "cpu", {"float32": 100.0}, {"memory": 10.0, "cache": 50.0})
    roof.cache_bytes = 1 << 20
    assert roof.bandwidth_for(1000) == 50.0
    assert roof.bandwidth_for(2 << 20) == 10.0


@pytest.mark.slow
def test_measured_roofline_is_plausible():
    """Peaks per dtype only where /proc/cpuinfo has the instructions; figures > 0."""
    roof = rl.measure(1)
    assert roof.peaks["float32"] > 1.0
    assert roof.bandwidth["memory"] > 0.1 and roof.bandwidth["cache"] > 0.1
    flags = rl.cpu_flags()
    assert ("bfloat16" in roof.peaks) <= bool(flags & set(rl.BF16_FLAGS))
    assert ("int8" in roof.peaks) <= bool(flags & set(rl.INT8_FLAGS))
    # vpdpbusd does 8 operations a lane, an FMA 2, vdpbf16ps 4: at most a few times the
    # float32 peak, and more than it wherever the micro-kernel measured them.
    for dtype, most in (("int8", 6), ("bfloat16", 3)):
        if roof.how.get(dtype) == rl.DOT_STEPS[dtype].how:
            assert roof.peaks["float32"] < roof.peaks[dtype] < most * roof.peaks["float32"]


@pytest.mark.parametrize(("mcpu", "chains"), [("skylake-avx512", 24), ("znver3", 6)])
def test_the_fma_peak_keeps_its_chains_in_the_targets_registers(mcpu, chains):
    # 24 16-lane chains on an AVX2 CPU spill: Zen 3 measured 69 GFLOP/s for them, 194 for 6.
    import tvm

    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": 2})
    _, built = rl.fma_kernel(target, 2)
    assert built == chains


def test_the_fma_peak_is_timed_on_calls_long_enough_for_the_os_to_spread_the_threads(
    monkeypatch,
):
    # Calls of 0.3 ms measured one core's peak in 3 of 8 processes on a 2-core Zen 3 (the
    # caller shared a core with TVM's pinned worker); calls of 0.1 s never did.

    from dlas.devices.local_cpu import host_target

    build = rl.fma_kernel
    timed = []

    class Recorded:
        def __init__(self, lib):
            self.lib = lib

        @property
        def mod(self):
            return self

        def time_evaluator(self, name, dev, number, repeat):
            timer = self.lib.mod.time_evaluator(name, dev, number=number, repeat=repeat)

            def run(*args):
                result = timer(*args)
                timed.append((repeat, args[-1], min(result.results)))
                return result

            return run

    def recorded(target, threads):
        lib, chains = build(target, threads)
        built.append(chains)
        return Recorded(lib), chains

    built = []
    monkeypatch.setattr(rl, "fma_kernel", recorded)
    target = host_target(1)
    peak = rl.fp32_fma_peak(target, 1)
    repeats, iters, best = timed[-1]
    assert repeats == 5 and iters > rl.FMA_ITERS
    assert best >= 0.5 * rl.FMA_MIN_CALL_S
    assert peak == pytest.approx(2 * built[0] * 16 * iters / best / 1e9)


@pytest.mark.parametrize(
    ("dtype", "instruction"), [("int8", "vpdpbusd"), ("bfloat16", "vdpbf16ps")]
)
def test_the_dot_product_peaks_chain_their_instruction_in_zmm_registers(dtype, instruction):
    """Built for a CPU that has it (no need to run it here): each iteration is the chains'
    dot-product instructions on zmm registers; an AVX2 target has no such peak."""
    import tvm

    target = tvm.target.Target({"kind": "llvm", "mcpu": "sapphirerapids", "num-cores": 2})
    lib, chains = rl.dot_kernel(target, 2, dtype)
    asm = lib.mod.inspect_source("asm")
    steps = [line for line in asm.splitlines() if line.strip().startswith(instruction)]
    assert chains == 24 and len(steps) >= chains
    assert all("%zmm" in line for line in steps)
    avx2 = tvm.target.Target({"kind": "llvm", "mcpu": "znver3", "num-cores": 2})
    assert rl.dot_kernel(avx2, 2, dtype) == (None, 0)
    assert rl.dot_peak(avx2, 2, dtype) is None


def test_a_dtype_peak_is_the_higher_of_the_micro_kernel_and_the_library_gemm(monkeypatch):
    """oneDNN's GEMM ran below the instruction peak on Zen 4 (dlas's int8 layers beat it);
    on AMX CPUs its tiles run above VNNI's: the roofline takes whichever is higher."""
    monkeypatch.setattr(rl, "fp32_fma_peak", lambda target, threads: 200.0)
    monkeypatch.setattr(rl, "copy_bandwidth", lambda target, working_set: 10.0)
    monkeypatch.setattr(rl, "cpu_flags", lambda: {"avx512_vnni", "amx_int8", "avx512_bf16"})
    micro = {"int8": 900.0, "bfloat16": None}
    library = {"int8": 3000.0, "bfloat16": 380.0}
    monkeypatch.setattr(rl, "dot_peak", lambda target, threads, dtype: micro[dtype])
    monkeypatch.setattr(rl, "torch_gemm_peak", lambda dtype, threads: library[dtype])
    roof = rl.measure(2, target=object())
    assert roof.peaks == {"float32": 200.0, "int8": 3000.0, "bfloat16": 380.0}
    assert roof.how["int8"] == rl.LIBRARY_GEMMS["int8"]
    library["int8"] = 600.0
    roof = rl.measure(2, target=object())
    assert roof.peaks["int8"] == 900.0 and roof.how["int8"] == rl.DOT_STEPS["int8"].how
    monkeypatch.setattr(rl, "cpu_flags", lambda: set())  # no library GEMM without the flags
    micro["int8"] = None
    assert "int8" not in rl.measure(2, target=object()).peaks
