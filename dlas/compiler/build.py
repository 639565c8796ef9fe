"""Build a lowered Relax module into a runnable executable for a target."""

from __future__ import annotations

import tempfile
from pathlib import Path

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

from .stack_buffers import cpu_tir_pipeline


def is_gpu(target: tvm.target.Target) -> bool:
    return "gpu" in target.keys


def gpu_default_schedules() -> tvm.transform.Pass:
    """dlight's GPU rules (thread bindings) for every PrimFunc not scheduled yet: the algorithm
    layer's default schedules are CPU ones, and a GPU kernel without bindings does not build."""
    from tvm.s_tir import dlight as dl

    return dl.ApplyDefaultSchedule(
        dl.gpu.Matmul(),
        dl.gpu.GEMV(),
        dl.gpu.Reduction(),
        dl.gpu.GeneralReduction(),
        dl.gpu.Fallback(),
    )


def finish_pipeline(target: tvm.target.Target) -> tvm.transform.Pass:
    """The backend's passes after legalization: dlas.algorithms.lower did those already."""
    if target.kind.name == "cuda":
        from tvm.relax.backend.cuda import pipeline as backend
    elif is_gpu(target):
        from tvm.relax.backend.gpu_generic import pipeline as backend
    else:
        backend = cpu_generic

    @tvm.transform.module_pass(opt_level=0)
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            passes = [gpu_default_schedules()] if is_gpu(target) else []
            passes += backend.dataflow_lower_passes(target) + backend.finalize_passes(target)
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


# TIR's common-subexpression elimination is quadratic in a kernel's expression size: on the
# unrolled Winograd transforms it took 68% of the build (ResNet18-CIFAR, winograd: 93 s with
# it, 31 s without), and LLVM eliminates the same subexpressions anyway (latency of direct,
# gemm and winograd ResNet18 unchanged within 1.5%, measured side by side).
BUILD_CONFIG = {"tirx.disable_cse_tir": True}


def full_width_vectors(target: tvm.target.Target) -> tvm.target.Target:
    """``target`` with LLVM's preference for 256-bit vectors turned off on AVX-512 CPUs.

    The kernels are sized for 512-bit registers (16 float32 lanes), and their tensor
    intrinsics are zmm instructions, but LLVM's tuning for Intel server cores prefers ymm
    and splits every other vector op in two: an int8 layer's requantizing epilogue became
    four ymm pieces per 32 lanes plus the inserts that join them. MobileNetV2-32 int8
    (direct) ran 6% faster without the preference (measured side by side)."""
    from dlas.algorithms.shapes import has_feature

    if target.kind.name != "llvm" or not has_feature("avx512f", target):
        return target
    config = dict(target.export())
    mattr = list(config.get("mattr") or [])
    if any(m.endswith("prefer-256-bit") for m in mattr):
        return target
    config["mattr"] = [*mattr, "-prefer-256-bit"]
    return tvm.target.Target(config)


def build(lowered: tvm.IRModule, target: tvm.target.Target) -> relax.VMExecutable:
    """Compile a module whose operators are already lowered to (scheduled) PrimFuncs, in the
    caller's pass context; :data:`BUILD_CONFIG` fills in what that context does not set."""
    outer = tvm.transform.PassContext.current()
    config = {**BUILD_CONFIG, **dict(outer.config)}
    with tvm.transform.PassContext(
        opt_level=outer.opt_level,
        required_pass=list(outer.required_pass),
        disabled_pass=list(outer.disabled_pass),
        instruments=list(outer.instruments),
        config=config,
    ):
        return tvm.compile(
            lowered,
            full_width_vectors(target),
            relax_pipeline=finish_pipeline(target),
            tir_pipeline="default" if is_gpu(target) else cpu_tir_pipeline(),
        )


def detached_copy(executable: relax.VMExecutable) -> relax.VMExecutable:
    """A copy of ``executable`` to run before that executable is exported.

    A VM started on an executable gives each of its constants an empty memory scope in it
    (``exec_->memory_scopes[i]`` in TVM's src/runtime/vm/vm.cc inserts one), and an executable
    exported after that warns once per constant each time it is saved or loaded ("Scope
    Saving:", "Scope Loaded:"; 30 lines on every run of a tuned ResNet18). The copy has its own
    bytecode and constants and shares the compiled kernels (the imported modules)."""
    import tvm_ffi

    load = tvm_ffi.get_global_func("ffi.Module.load_from_file.relax.VMExecutable")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "executable.bin"
        executable.mod.write_to_file(str(path))
        copy = load(str(path))
    for kernels in executable.mod.imports:
        copy.import_module(kernels)
    return relax.VMExecutable(copy)
