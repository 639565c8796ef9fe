"""Vectorizable exp/sigmoid/SiLU: no scalar ``expf`` calls in the library, PyTorch's values."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

from dlas.algorithms import lower
from dlas.compiler.build import build
from dlas.compiler.export import export
from dlas.data import InputSpec
from tests.algorithms.util import host_target, relative_error


class SiluNet(torch.nn.Module):
    """conv → SiLU → squeeze-excitation (mean, two 1x1 convs, sigmoid gate) → linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 32, 3, padding=1)
        self.reduce = torch.nn.Conv2d(32, 8, 1)
        self.expand = torch.nn.Conv2d(8, 32, 1)
        self.fc = torch.nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.silu(self.conv(x))
        s = torch.sigmoid(self.expand(torch.nn.functional.silu(self.reduce(y.mean((2, 3), True)))))
        return self.fc((y * s).mean((2, 3)))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    torch.manual_seed(0)
    model = SiluNet().eval()
    spec = InputSpec(3, 16, 10)
    target = host_target()
    executable = build(lower(export(model, spec), "direct", target).mod, target)
    path = tmp_path_factory.mktemp("silu") / "model.so"
    executable.export_library(str(path))
    return model, spec, executable, path


def test_silu_model_matches_pytorch(built):
    model, spec, executable, _ = built
    vm = relax.VirtualMachine(executable, tvm.cpu())
    gen = torch.Generator().manual_seed(1)
    inputs = [3 * torch.randn(spec.shape, generator=gen) for _ in range(2)]
    with torch.no_grad():
        refs = [model(x).numpy() for x in inputs]
    assert np.abs(refs[0] - refs[1]).max() > 1e-3 * np.abs(refs[0]).max()  # input matters
    for x, ref in zip(inputs, refs, strict=True):
        out = vm["main"](tvm.runtime.tensor(x.numpy()))[0].numpy()
        assert relative_error(out, ref) <= 1e-4


def test_squeeze_excitation_gets_default_schedules(caplog):
    """The gate (a per-channel sigmoid broadcast over the map) stays its own block, and every
    fused function keeps its default schedule (none falls back to the generic one)."""
    spec = InputSpec(3, 16, 10)
    with caplog.at_level("WARNING", logger="dlas.algorithms.default_schedules"):
        lowered = lower(export(SiluNet().eval(), spec), "direct", host_target())
    assert not [r.getMessage() for r in caplog.records if "schedule failed" in r.getMessage()]
    gated = [f.script() for _, f in lowered.mod.functions_items() if "sigmoid" in str(f)]
    assert any("T.parallel" in code and "T.vectorized" in code for code in gated)


def test_no_scalar_exp_calls(built):
    if shutil.which("objdump") is None:
        pytest.skip("objdump not installed (binutils)")
    code = subprocess.run(
        ["objdump", "-d", str(built[3])], capture_output=True, text=True, check=True
    ).stdout
    calls = [line for line in code.splitlines() if "call" in line and "exp" in line]
    assert not calls, f"{len(calls)} scalar exp calls, e.g. {calls[0].strip()}"


def _run_elementwise(op, x: np.ndarray) -> np.ndarray:
    bb = relax.BlockBuilder()
    arg = relax.Var("x", relax.TensorType(x.shape, "float32"))
    with bb.function("main", [arg]):
        bb.emit_func_output(op(arg))
    target = host_target()
    vm = relax.VirtualMachine(build(lower(bb.get(), "direct", target).mod, target), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


@pytest.mark.parametrize(
    ("op", "ref"),
    [
        (relax.op.sigmoid, lambda x: 1 / (1 + np.exp(-x))),
        (relax.op.nn.silu, lambda x: x / (1 + np.exp(-x))),
        (relax.op.exp, np.exp),
    ],
    ids=["sigmoid", "silu", "exp"],
)
def test_activation_values(op, ref):
    """Against float64: relative error <= 1e-5 on [-80, 80] (exp) / [-30, 30]; sigmoid and
    SiLU stay finite and correct to 1e-30 absolute out to +-1e4 (fast_exp clamps)."""
    core = np.linspace(-80 if op is relax.op.exp else -30, 80 if op is relax.op.exp else 30, 4001)
    ends = np.array([-1e4, -200.0, -88.5, 88.5, 200.0, 1e4])
    x = np.concatenate([core, [] if op is relax.op.exp else ends]).astype("float32")
    got = _run_elementwise(op, x).astype("float64")
    with np.errstate(over="ignore"):
        want = ref(x.astype("float64"))
    n = core.size
    assert np.max(np.abs(got[:n] - want[:n]) / np.abs(want[:n]).clip(1e-30)) <= 1e-5
    assert np.all(np.isfinite(got))
    assert np.all(np.abs(got[n:] - want[n:]) <= 1e-30 + 1e-6 * np.abs(want[n:]))


def test_a_sigmoid_gate_of_its_own_input_becomes_one_silu():
    """x * sigmoid(x) (SiLU as exported models write it) is one silu, legalized as
    x / (1 + e^-x); a sigmoid gate of another value (squeeze-excitation) stays a product."""
    from dlas.algorithms.activations import SigmoidGateToSilu

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, 4, 4), "float32"))
    g = relax.Var("g", relax.TensorType((1, 8, 1, 1), "float32"))
    with bb.function("main", [x, g]):
        with bb.dataflow():
            silu = bb.emit(relax.op.multiply(bb.emit(relax.op.sigmoid(x)), x))
            gated = bb.emit(relax.op.multiply(silu, bb.emit(relax.op.sigmoid(g))))
            out = bb.emit_output(gated)
        bb.emit_func_output(out)
    mod = relax.transform.DeadCodeElimination()(SigmoidGateToSilu()(bb.get()))
    ops = [
        binding.value.op.name
        for block in mod["main"].body.blocks
        for binding in block.bindings
        if isinstance(binding.value, relax.Call)
    ]
    assert ops == ["relax.nn.silu", "relax.sigmoid", "relax.multiply"]
    x_np = np.random.default_rng(0).standard_normal((1, 8, 4, 4)).astype("float32")
    g_np = np.random.default_rng(1).standard_normal((1, 8, 1, 1)).astype("float32")
    target = host_target()
    vm = relax.VirtualMachine(build(lower(bb.get(), "direct", target).mod, target), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x_np), tvm.runtime.tensor(g_np)).numpy()
    want = x_np / (1 + np.exp(-x_np)) / (1 + np.exp(-g_np))
    assert relative_error(got, want) <= 1e-5
