"""This machine's NVIDIA GPU: kernels for CUDA, host-side code for this machine's CPU."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dlas.devices.base import Device, DeviceUnavailableError, Program, Runner
from dlas.devices.local_cpu import TVMRunner, host_cpu_name, resolve_target_dict
from dlas.devices.registry import DEVICES


def local_cuda_arch(dev_id: int = 0) -> str:
    """``sm_90`` for an H100: the compute capability TVM reads from the driver."""
    import tvm

    dev = tvm.cuda(dev_id)
    if not dev.exist:
        raise DeviceUnavailableError(_NO_GPU)
    return "sm_" + str(dev.compute_version).replace(".", "")


_NO_GPU = (
    "no CUDA GPU is visible to TVM (tvm.cuda(0).exist is False): check nvidia-smi and "
    "CUDA_VISIBLE_DEVICES, or name the GPU (device.target.arch=sm_XY) and set "
    "device.measure=false to compile only; device=local_cpu runs on this CPU"
)


@DEVICES.register("cuda")
class CUDADevice(Device):
    @property
    def timing_lock(self) -> Any:
        from dlas.devices.exclusive import gpu

        return gpu(0)

    @property
    def target(self) -> Any:
        import tvm

        spec = dict(self.cfg.target)
        if spec.get("arch") == "auto":
            spec["arch"] = local_cuda_arch()
        host = resolve_target_dict(
            self.cfg.host_target or {"kind": "llvm", "mcpu": "auto"}, self.cfg.num_threads
        )
        return tvm.target.Target(spec, host=host)

    def describe(self) -> dict[str, str]:
        import tvm

        dev = tvm.cuda(0)
        tags = {"host.cpu": host_cpu_name()}
        if dev.exist:
            tags.update(
                {"gpu.name": str(dev.device_name), "gpu.compute_version": str(dev.compute_version)}
            )
        return tags

    def check_available(self) -> None:
        import tvm

        # Compiling needs the GPU only to read an "auto" arch; measuring needs it outright.
        if (self.cfg.measure or self.cfg.target.get("arch") == "auto") and not tvm.cuda(0).exist:
            raise DeviceUnavailableError(_NO_GPU)
        if self.cfg.measure:
            choose_kernel_compiler()

    @contextmanager
    def load(self, program: Program) -> Iterator[Runner]:
        import tvm

        if program.executable is None:
            raise DeviceUnavailableError(
                f"device={self.cfg.name} runs TVM programs only; {program.description!r} is a "
                "Python callable"
            )
        yield TVMRunner(program.executable, tvm.cuda(0), self.timing_lock)


def choose_kernel_compiler() -> None:
    """TVM keeps CUDA kernels as source in the library and compiles them when it is loaded
    (tvm_callback_cuda_compile): with NVRTC from the cuda-bindings package by default, or with
    nvcc when TVM_CUDA_COMPILE_MODE=nvcc. Pick what is there, or say what is missing."""
    import importlib.util
    import os
    import shutil

    if os.environ.get("TVM_CUDA_COMPILE_MODE"):
        return
    try:
        has_nvrtc = importlib.util.find_spec("cuda.bindings") is not None
    except ModuleNotFoundError:
        has_nvrtc = False
    if has_nvrtc:
        return
    if shutil.which("nvcc"):
        os.environ["TVM_CUDA_COMPILE_MODE"] = "nvcc"
        return
    raise DeviceUnavailableError(
        "TVM compiles CUDA kernels when the library is loaded, with NVRTC (pip install "
        "cuda-bindings) or nvcc (on PATH, TVM_CUDA_COMPILE_MODE=nvcc); neither is here"
    )
