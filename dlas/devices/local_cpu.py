"""The host CPU: target read from the machine, programs run in this process."""

from __future__ import annotations

import functools
import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from dlas.devices.base import Device, Program, Runner
from dlas.devices.exclusive import HOST_CPU, TimingLock, holding
from dlas.devices.registry import DEVICES

# TVM sizes its thread pool once, from TVM_NUM_THREADS, when it first runs parallel code; unset,
# it assumes two hardware threads per core and makes half as many workers as CPUs (one on a
# 2-core machine). A pool of every core lets each run pick its own count (LocalCPU.threads).
os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))


# The CPU features dlas's kernels key on, by the name the kernel's /proc/cpuinfo gives each
# and the name LLVM gives it. LLVM names the host CPU from its model number, and a hypervisor
# can report a model whose LLVM CPU lacks features the host has (a KVM Sapphire Rapids read as
# model 167, "rocketlake": no AMX, no avx512bf16), or has features the host masks.
HOST_FEATURES = {
    "avx2": "avx2",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512_vnni": "avx512vnni",
    "avx_vnni": "avxvnni",
    "avx512_bf16": "avx512bf16",
    "avx512_fp16": "avx512fp16",
    "amx_tile": "amx-tile",
    "amx_int8": "amx-int8",
    "amx_bf16": "amx-bf16",
    "asimddp": "dotprod",  # aarch64
}


def host_cpu_name() -> str:
    from tvm.target import codegen

    return codegen.llvm_get_system_cpu()


def cpuinfo_flags(cpuinfo: str) -> set[str] | None:
    """The first processor's feature flags in /proc/cpuinfo text (``flags`` on x86,
    ``Features`` on Arm); None when the text has neither."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


def feature_corrections(mcpu: str, flags: set[str]) -> list[str]:
    """``mattr`` entries that make LLVM's ``mcpu`` agree with the host's ``flags`` on every
    feature of HOST_FEATURES: +f where the host has what the CPU model lacks, -f the reverse."""
    import tvm

    from dlas.algorithms.shapes import has_feature

    modelled = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
    return [
        ("+" if flag in flags else "-") + feature
        for flag, feature in HOST_FEATURES.items()
        if has_feature(feature, modelled) != (flag in flags)
    ]


@functools.cache
def host_feature_corrections() -> tuple[str, ...]:
    """feature_corrections for this host (none where /proc/cpuinfo cannot be read)."""
    try:
        flags = cpuinfo_flags(Path("/proc/cpuinfo").read_text())
    except OSError:
        return ()
    return tuple(feature_corrections(host_cpu_name(), flags)) if flags is not None else ()


def resolve_target_dict(target: dict, num_threads: int | None) -> dict:
    """Fill ``mcpu: auto`` and the core count from the host; an empty target is this host's
    CPU. With ``mcpu: auto``, ``mattr`` also gets the host's features that LLVM's name for its
    CPU disagrees on (host_feature_corrections); a feature the config names itself stays."""
    resolved = dict(target) or {"kind": "llvm", "mcpu": "auto"}
    if resolved.get("mcpu") == "auto":
        resolved["mcpu"] = host_cpu_name()
        given = list(resolved.get("mattr") or [])
        named = {m.lstrip("+-") for m in given}
        extra = [c for c in host_feature_corrections() if c[1:] not in named]
        if extra:
            resolved["mattr"] = [*given, *extra]
    if resolved.get("kind") == "llvm":
        resolved.setdefault("num-cores", num_threads or os.cpu_count() or 1)
    return resolved


def host_target(num_threads: int | None = None) -> Any:
    """This host's CPU as a TVM target (``mcpu: auto``: its name and feature corrections) with
    ``num_threads`` cores (None: all of them)."""
    import tvm

    return tvm.target.Target(resolve_target_dict({"kind": "llvm", "mcpu": "auto"}, num_threads))


class TVMRunner(Runner):
    def __init__(self, executable, dev, lock: TimingLock | None = None) -> None:
        from tvm import relax

        self.lock = lock  # held while timing (dlas.devices.exclusive); None: a remote board
        self.dev = dev
        self.vm = relax.VirtualMachine(executable, dev)

    def run(self, x: np.ndarray) -> np.ndarray:
        import tvm

        # Stateful call + get_outputs rather than vm["main"](x): over RPC the output tuple is a
        # reference to an object on the board, and get_outputs fetches its tensors one by one.
        self.vm.set_input("main", tvm.runtime.tensor(x, self.dev))
        self.vm.invoke_stateful("main")
        out = self.vm.get_outputs("main")
        while isinstance(out, tuple):
            out = out[0]
        return out.numpy()

    def close(self) -> None:
        """Drop the VM and device; over RPC the session ends once nothing refers to it."""
        self.vm = self.dev = None

    def time(self, x: np.ndarray, warmup: int, repeat: int) -> list[float]:
        import tvm

        self.vm.set_input("main", tvm.runtime.tensor(x, self.dev))
        with holding(self.lock):  # warm-up too: it would disturb another job's samples
            for _ in range(warmup):
                self.vm.invoke_stateful("main")
            self.dev.sync()
            # number=1: every sample is one inference (TVM's evaluator discards one extra call).
            timer = self.vm.time_evaluator("invoke_stateful", self.dev, number=1, repeat=repeat)
            return [s * 1e3 for s in timer("main").results]


class PythonRunner(Runner):
    """Baselines (PyTorch eager, Inductor, ONNX Runtime) timed with the same protocol."""

    def __init__(self, function, lock: TimingLock | None = HOST_CPU) -> None:
        self.function = function
        self.lock = lock

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.function(x))

    def time(self, x: np.ndarray, warmup: int, repeat: int) -> list[float]:
        samples = []
        with holding(self.lock):  # warm-up too: it sets up the threads the samples use
            for _ in range(warmup):
                self.function(x)
            for _ in range(repeat):
                start = time.perf_counter()
                self.function(x)
                samples.append((time.perf_counter() - start) * 1e3)
        return samples


@DEVICES.register("local")
class LocalCPU(Device):
    @property
    def target(self):
        import tvm

        return tvm.target.Target(resolve_target_dict(self.cfg.target, self.cfg.num_threads))

    def describe(self) -> dict[str, str]:
        return {
            "host.cpu": host_cpu_name(),
            "host.cpu_feature_corrections": ",".join(host_feature_corrections()) or "none",
            "host.machine": platform.machine(),
            "host.cores": str(os.cpu_count()),
        }

    @contextmanager
    def threads(self) -> Iterator[None]:
        """device.num_threads (null: every core) for TVM's pool and PyTorch's, then back."""
        import torch
        import tvm

        configure = tvm.get_global_func("runtime.config_threadpool")
        count = self.cfg.num_threads or os.cpu_count() or 1
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(count)
        configure(0, count)  # mode 0: no affinity change
        try:
            yield
        finally:
            torch.set_num_threads(torch_threads)
            configure(0, 0)  # 0: every worker of the pool

    def thread_count(self) -> int:
        import tvm

        return tvm.runtime.num_threads()

    @contextmanager
    def load(self, program: Program) -> Iterator[Runner]:
        import tvm

        if program.is_tvm:
            yield TVMRunner(program.executable, tvm.cpu(), self.timing_lock)
        else:
            yield PythonRunner(program.function, self.timing_lock)

    @property
    def timing_lock(self) -> TimingLock:
        return HOST_CPU
