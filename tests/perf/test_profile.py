"""Per-kernel profile: every fused kernel timed, costs from the TIR, roofline bounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

from dlas.algorithms import ALGORITHMS, lower
from dlas.compiler.build import build
from dlas.compiler.export import export
from dlas.data import InputSpec
from dlas.profile import KernelTime, kernel_costs, profile_kernels, profile_table
from tests.algorithms.util import (
    KERNELS,
    Case,
    bare_conv_module,
    conv_module,
    host_target,
    random_weights,
)


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 32, 3, padding=1)
        self.fc = torch.nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def test_profile_of_a_built_model():
    torch.manual_seed(0)
    spec = InputSpec(8, 32, 10)
    target = host_target()
    lowered = lower(export(Net().eval(), spec), "direct", target)
    costs = kernel_costs(lowered.mod)
    dev = tvm.cpu()
    vm = relax.VirtualMachine(build(lowered.mod, target), dev)
    kernels = profile_kernels(vm, dev, torch.randn(spec.shape).numpy(), repeat=3)
    names = {k.name for k in kernels}
    assert names and names <= set(costs), names - set(costs)
    conv = next(n for n in names if "conv2d" in n)
    assert costs[conv]["flops"] == 2 * 32 * 8 * 9 * 32 * 32  # 32 x 8 x 9 MACs a pixel
    table = profile_table(kernels, costs, 100.0, lambda nbytes: 10.0)
    assert abs(sum(table["share"]) - 1) < 0.01
    row = table["kernel"].index(conv)
    assert table["gflops"][row] > 0 and table["bound"][row] in ("compute", "memory")


class MobileBlock(torch.nn.Module):
    """1x1 expansion + BN + SiLU, depthwise 3x3 + SiLU, 3x3 conv, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = torch.nn.Conv2d(16, 96, 1, bias=False)
        self.norm = torch.nn.BatchNorm2d(96)
        self.depthwise = torch.nn.Conv2d(96, 96, 3, padding=1, groups=96)
        self.conv = torch.nn.Conv2d(96, 32, 3, padding=1)
        self.fc = torch.nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        silu = torch.nn.functional.silu
        y = self.conv(silu(self.depthwise(silu(self.norm(self.expand(x))))))
        return self.fc(y.mean((2, 3)))


DENSE_ALGORITHMS = [n for n in KERNELS if not ALGORITHMS.get(n).sparse]


@pytest.mark.parametrize("scheduled", [True, False], ids=["default", "for_the_tuner"])
@pytest.mark.parametrize("algorithm", DENSE_ALGORITHMS)
def test_each_layer_kernel_counts_its_layers_products_and_no_more(algorithm, scheduled):
    # TIR's estimator counts an inlined epilogue once per use of each value: a 1x1 conv with
    # a SiLU epilogue read 4.2x its conv's flops (and 75% of the roofline at 17%). Padding
    # lanes and winograd's transforms are not the layer's products either.
    module = export(MobileBlock().eval(), InputSpec(16, 28, 10))
    costs = kernel_costs(lower(module, algorithm, host_target(), schedule=scheduled).mod)
    flops = {name: c["flops"] for name, c in costs.items() if "conv" in name or "dense" in name}
    pixels = 28 * 28
    want = [2 * 16 * 96 * pixels, 2 * 96 * 9 * pixels, 2 * 96 * 32 * 9 * pixels, 2 * 32 * 10]
    assert sorted(flops.values()) == sorted(want), flops


@pytest.mark.parametrize("dtype", ["uint8", "bfloat16"])
def test_low_precision_kernels_count_the_products_their_intrinsics_hide(dtype):
    # TIR's estimator counts nothing inside a tensor intrinsic or an AMX microkernel: without
    # the MACs the algorithm stamps on the function, an int8 conv read as 0 flops.
    case = Case(1, 64, 14, 14, 32, 3, pad=1)
    w = np.random.default_rng(0).integers(-4, 4, size=(32, 64, 3, 3))
    weight = w.astype("int8" if dtype == "uint8" else "float32")
    accumulator = "int32" if dtype == "uint8" else "float32"
    mod = bare_conv_module([case], [dtype], [weight], accumulator)
    costs = kernel_costs(lower(mod, "spatial_pack", host_target()).mod)
    conv = next(name for name in costs if "conv2d" in name)
    assert costs[conv]["flops"] >= 2 * 32 * 64 * 9 * 14 * 14


@pytest.mark.parametrize("algorithm", ["sparse_direct", "sparse_gemm", "sparse_spatial_pack"])
def test_sparse_kernels_count_the_products_of_their_nonzeros(algorithm):
    # TIR's estimator cannot count a loop over a CSR row: it read 1e14 flops for one layer.
    case = Case(1, 16, 16, 16, 32, 3, pad=1)
    rng = np.random.default_rng(0)
    weight = random_weights(case, 0.7, rng)
    mod = conv_module([case], [weight], [rng.standard_normal(32, "f4")])
    (flops,) = [
        c["flops"] for n, c in kernel_costs(lower(mod, algorithm, host_target()).mod).items()
    ]
    assert flops == 2 * np.count_nonzero(weight) * 16 * 16


def test_bounds_follow_the_ridge_point():
    kernels = [KernelTime("dense_math", 1, 1.0), KernelTime("copy", 1, 1.0)]
    costs = {
        "dense_math": {"flops": 50e9 * 1e-3, "bytes": 1e6},  # 50 flop/byte, 50 GFLOP/s
        "copy": {"flops": 1e6, "bytes": 1e7},  # 0.1 flop/byte
    }
    table = profile_table(kernels, costs, peak_gflops=100.0, bandwidth=lambda nbytes: 10.0)
    bound = dict(zip(table["kernel"], table["bound"], strict=True))
    assert bound == {"dense_math": "compute", "copy": "memory"}
    fraction = dict(zip(table["kernel"], table["of_roofline"], strict=True))
    assert fraction["dense_math"] == 0.5  # 50 of 100 GFLOP/s
    assert fraction["copy"] == 1.0  # 1 GFLOP/s of the 0.1 x 10 GB/s allowed


def test_a_kernel_called_several_times_per_model_call_counts_every_call():
    # ms sums a kernel's calls (MobileNetV2 calls one fused kernel 3-4 times); dividing one
    # call's flops by it read 22 GFLOP/s for a kernel doing 66.
    kernels = [KernelTime("once", 1, 1.0), KernelTime("thrice", 3, 1.0)]
    costs = {name: {"flops": 20e6, "bytes": 1e6} for name in ("once", "thrice")}
    table = profile_table(kernels, costs, peak_gflops=100.0, bandwidth=lambda nbytes: 10.0)
    gflops = dict(zip(table["kernel"], table["gflops"], strict=True))
    assert gflops == {"once": 20.0, "thrice": 60.0}
    assert dict(zip(table["kernel"], table["gflop"], strict=True))["thrice"] == 0.06
