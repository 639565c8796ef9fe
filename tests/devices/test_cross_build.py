"""Cross-compilation on the host: libraries for the boards' triples, CPU and GPU targets."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import torch
from torch import nn

from dlas.algorithms import lower
from dlas.compiler.build import build
from dlas.compiler.export import export
from dlas.config import validate
from dlas.data import InputSpec
from dlas.devices import create_device
from dlas.devices.cross import elf_machine, needs_cross_compiler

needs_aarch64_gcc = pytest.mark.skipif(
    shutil.which("aarch64-linux-gnu-g++") is None,
    reason="cross compiler missing: apt-get install g++-aarch64-linux-gnu",
)


def small_net() -> tuple[nn.Module, InputSpec]:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )
    return net.eval(), InputSpec(3, 16, 10)


def build_for(device, tmp_path, name: str):
    """What the pipeline does: lower (CPU schedules for CPU targets only), build, export."""
    net, spec = small_net()
    target = device.target
    lowered = lower(export(net, spec), "direct", target, schedule=target.kind.name == "llvm")
    path = tmp_path / f"{name}.so"
    executable = build(lowered.mod, target)
    device.export_library(executable, path)
    return executable, path


def module_kinds(module) -> set[str]:
    kinds = {module.kind}
    for child in module.imports:
        kinds |= module_kinds(child)
    return kinds


def test_host_build_is_for_this_host(compose_cfg, tmp_path):
    # The control for the checks below: the same reader says x86_64 for a host library.
    device = create_device(validate(compose_cfg("device=local_cpu")).device)
    _, path = build_for(device, tmp_path, "host")
    assert elf_machine(path) == "x86_64"
    assert not needs_cross_compiler(device.target)


@needs_aarch64_gcc
def test_hikey_cpu_library_is_linked_for_aarch64(compose_cfg, tmp_path):
    device = create_device(validate(compose_cfg("device=hikey_cpu")).device)
    assert needs_cross_compiler(device.target)
    _, path = build_for(device, tmp_path, "hikey_cpu")
    assert elf_machine(path) == "aarch64"
    if shutil.which("file"):
        assert (
            "aarch64" in subprocess.run(["file", str(path)], capture_output=True, text=True).stdout
        )
    # The cache hands the file to the device, which must not try to load it on this host.
    program = device.load_library(path)
    assert program.is_tvm and program.executable is None and program.library == str(path)


@needs_aarch64_gcc
@pytest.mark.parametrize(("name", "kernels"), [("xavier", "cuda"), ("hikey_gpu", "opencl")])
def test_gpu_targets_build_with_gpu_schedules(compose_cfg, tmp_path, name, kernels):
    # No GPU needed to compile: dlight binds threads, the kernels ship inside the library.
    device = create_device(validate(compose_cfg(f"device={name}")).device)
    executable, path = build_for(device, tmp_path, name)
    assert kernels in module_kinds(executable.mod)
    assert elf_machine(path) == "aarch64"


@needs_aarch64_gcc
def test_metaschedule_candidates_are_linked_for_the_board():
    # What metaschedule_builder() hands its workers (pickled): candidates the board can load.
    import functools
    import pickle

    import tvm
    from tvm import te

    from dlas.devices.cross import metaschedule_export

    a = te.placeholder((64,), "float32", name="a")
    func = te.create_prim_func([a, te.compute((64,), lambda i: a[i] + 1.0, name="b")])
    target = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu"})
    # (MetaSchedule's default_build would do, but it imports every tensor intrinsic: minutes.)
    candidate = tvm.compile(tvm.IRModule({"main": func}), target)
    export = pickle.loads(
        pickle.dumps(functools.partial(metaschedule_export, "aarch64-linux-gnu-g++"))
    )
    path = export(candidate)
    try:
        assert elf_machine(path) == "aarch64"
    finally:
        shutil.rmtree(os.path.dirname(path))
