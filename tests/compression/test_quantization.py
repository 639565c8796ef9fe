"""int8 and fp16 on the TVM side: numerics against float references, and integer kernels."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlas.compiler.export import export
from dlas.compression.fp16 import op_dtypes, to_fp16
from dlas.compression.int8 import calibrate
from dlas.compression.quantize import op_bindings, quantize_module
from dlas.data import InputSpec
from tests.compression.helpers import build, run

CONVS = {
    "3x3": dict(in_channels=8, out_channels=16, kernel_size=3, padding=1),
    "3x3-stride2": dict(in_channels=8, out_channels=16, kernel_size=3, stride=2, padding=1),
    "1x1": dict(in_channels=8, out_channels=24, kernel_size=1),
    "depthwise": dict(in_channels=16, out_channels=16, kernel_size=3, padding=1, groups=16),
    "grouped": dict(in_channels=16, out_channels=16, kernel_size=3, padding=1, groups=4),
}


def _input(channels: int, signed: bool, seed: int = 0) -> torch.Tensor:
    x = torch.randn(1, channels, 12, 12, generator=torch.Generator().manual_seed(seed))
    return x if signed else x.relu()  # after ReLU: the uint8 path


def _int8_conv_bound(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """|y_int8 - y| <= s_w[o]/2 * sum_window |x| + s_x/2 * sum_kernel |w_hat[o]| (+ float
    rounding of the rescale), elementwise.

    Derivation: y = sum_i x_i w_i over the window of output o. The scheme stores
    x_hat_i = s_x q_i with |x_i - x_hat_i| <= s_x/2 (calibrated on this x, so nothing clips) and
    w_hat_i = s_w[o] p_i with |w_i - w_hat_i| <= s_w[o]/2; the int32 sum of q_i p_i is exact.
    So |y - y_hat| = |sum x_i (w_i - w_hat_i) + w_hat_i (x_i - x_hat_i)|
                  <= s_w[o]/2 sum |x_i| + s_x/2 sum |w_hat_i|.
    Scales per the scheme: s_w[o] = max|w[o]|/127; s_x = max x/255 (x >= 0, uint8) or
    max|x|/127 (int8). Computed here from those definitions, not from the implementation."""
    w = conv.weight.detach().double()
    xd = x.double()
    s_w = w.abs().amax(dim=(1, 2, 3)) / 127
    s_x = float(xd.max() / 255 if xd.min() >= 0 else xd.abs().max() / 127)
    w_hat = torch.round(w / s_w[:, None, None, None]).clamp(-127, 127) * s_w[:, None, None, None]
    kw = dict(stride=conv.stride, padding=conv.padding, groups=conv.groups)
    window_x = F.conv2d(xd.abs(), torch.ones_like(w), **kw)
    return (
        s_w[None, :, None, None] / 2 * window_x
        + s_x / 2 * w_hat.abs().sum(dim=(1, 2, 3))[None, :, None, None]
    )


def _quantized(model: nn.Module, x: torch.Tensor):
    model.eval()
    mod = export(model, InputSpec(x.shape[1], x.shape[2], 10))
    return quantize_module(mod, calibrate(model, [x]))


@pytest.mark.parametrize("signed", [True, False], ids=["int8-input", "uint8-input"])
@pytest.mark.parametrize("kind", list(CONVS))
def test_int8_conv_within_quantization_bound(kind, signed):
    torch.manual_seed(0)
    conv = nn.Conv2d(**CONVS[kind])
    x = _input(conv.in_channels, signed)
    mod, table = _quantized(nn.Sequential(conv), x)
    assert table["status"] == ["int8"]
    assert table["input_dtype"] == ["int8" if signed else "uint8"]

    got = run(build(mod), x.numpy())
    ref = conv.double()(x.double()).detach()
    err = (torch.from_numpy(got).double() - ref).abs()
    bound = _int8_conv_bound(conv, x) + 1e-5 * (1 + ref.abs())
    assert (err <= bound).all(), float((err - bound).max())
    # It really quantized (a float conv would be ~1e-7 off), and the bound is not vacuous.
    assert float(err.max()) > 1e-4
    assert float(bound.max()) < 0.1 * float(ref.abs().max())


def test_int8_dense_within_quantization_bound():
    """Same derivation as the conv, with the window being the whole input row."""
    torch.manual_seed(0)
    linear = nn.Linear(48, 10)
    model = nn.Sequential(nn.Flatten(), linear)
    x = _input(3, signed=True).narrow(2, 0, 4).narrow(3, 0, 4).contiguous()
    mod, table = _quantized(model, x)
    assert table["op"] == ["matmul"] and table["status"] == ["int8"]
    got = torch.from_numpy(run(build(mod), x.numpy())).double()

    flat, w = x.flatten(1).double(), linear.weight.detach().double()
    ref = flat @ w.T + linear.bias.detach().double()
    s_w = w.abs().amax(dim=1) / 127
    s_x = float(flat.abs().max() / 127)
    w_hat = torch.round(w / s_w[:, None]) * s_w[:, None]
    bound = s_w / 2 * flat.abs().sum() + s_x / 2 * w_hat.abs().sum(dim=1) + 1e-5
    assert ((got - ref).abs() <= bound).all()
    assert float((got - ref).abs().max()) > 1e-5


def test_int8_kernels_compute_in_integers(tmp_path):
    """The built conv reads int8/uint8, accumulates in int32, and its machine code uses
    integer multiply-adds (vpdpbusd, the u8 x s8 VNNI instruction, is reported if present)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 32, 3, padding=1, bias=False)
    x = _input(32, signed=False)
    mod, _ = _quantized(nn.Sequential(conv), x)
    text = mod.script(show_meta=False)
    assert re.search(
        r'R\.nn\.conv2d\(\w+, metadata\["ir.GenericConst"\]\[\d+\].*out_dtype="int32"', text
    )
    assert 'dtype="uint8"' in text
    if shutil.which("objdump") is None:
        pytest.skip("objdump not installed")
    lib = tmp_path / "int8.so"
    build(mod).export_library(str(lib))
    asm = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", str(lib)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    integer_macs = re.findall(r"\s(vpdpbusds?|vpdpwssds?|vpmaddwd|vpmaddubsw|vpmulld)\s", asm)
    assert integer_macs, "no integer multiply(-add) instruction in the int8 library"
    print("integer MAC instructions:", sorted(set(integer_macs)))


def test_layers_without_calibration_stay_float_and_are_listed():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1)).eval()
    x = _input(3, signed=True)
    mod = export(model, InputSpec(3, 12, 10))
    ranges = calibrate(model, [x])
    del ranges[next(iter(ranges))]  # the first conv has no range now
    mod, table = quantize_module(mod, ranges)
    assert table["status"] == ["float", "int8"]
    assert "calibration" in table["reason"][0]
    got = run(build(mod), x.numpy())
    ref = model(x).detach().numpy()
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()


@pytest.mark.parametrize("accumulate", ["float16", "float32"])
def test_fp16_conv_within_fp16_rounding_bound(accumulate):
    """Every product and partial sum is rounded to fp16 (unit roundoff u = 2^-11), inputs and
    weights too: the standard bound for a K-term dot product is
    |y16 - y| <= (K + 4) u sum |x_i||w_i| (K additions, 2 input roundings, product, bias),
    plus u |b| for the bias add. With float32 accumulation the K term shrinks, the bound holds."""
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, padding=1)
    x = _input(8, signed=True)
    mod = to_fp16(export(nn.Sequential(conv).eval(), InputSpec(8, 12, 10)), accumulate)
    table = op_dtypes(mod)
    assert table["input_dtype"] == ["float16"] and table["out_dtype"] == [accumulate]

    got = torch.from_numpy(run(build(mod), x.numpy())).double()
    w, b = conv.weight.detach().double(), conv.bias.detach().double()
    ref = F.conv2d(x.double(), w, b, padding=1)
    u, k = 2.0**-11, 8 * 9
    bound = (k + 4) * u * (F.conv2d(x.double().abs(), w.abs(), padding=1) + b.abs()[:, None, None])
    assert ((got - ref).abs() <= bound + 1e-6).all()
    assert float((got - ref).abs().max()) > 1e-6  # it really ran in fp16


def test_fp16_model_matches_float32_and_stores_fp16_weights():
    from dlas.models import create_model
    from tests.conftest import calibrate_batchnorm

    torch.manual_seed(0)
    model = create_model("tiny_cnn", 10, image_size=16)
    calibrate_batchnorm(model, (1, 3, 16, 16))
    mod = to_fp16(export(model, InputSpec(3, 16, 10)))
    table = op_dtypes(mod)
    assert set(table["input_dtype"]) == {"float16"}  # every conv and the classifier
    assert "float32" not in {str(c.ty.dtype) for c in _constants(mod) if c.ty.ndim == 4}
    x = torch.randn(4, 3, 16, 16)
    ex = build(mod)
    got = np.concatenate([run(ex, x[i : i + 1].numpy()) for i in range(4)])
    ref = model(x).detach().numpy()
    spread = ref.std(axis=0).mean()
    print(f"fp16 tiny_cnn: max|diff| {np.abs(got - ref).max():.2e}, logit spread {spread:.2e}")
    assert spread > 1e-3  # logits depend on the input: the comparison means something
    # A handful of fp16 layers: errors of a few 2^-11 relative per layer, well under 1%.
    assert np.abs(got - ref).max() < 1e-2 * np.abs(ref).max()


def _constants(mod) -> list:
    import tvm
    from tvm import relax

    found = []
    relax.analysis.post_order_visit(
        mod["main"].body, lambda e: found.append(e) if isinstance(e, tvm.ir.GenericConst) else None
    )
    return found


def test_fp16_keeps_relu6_and_hardtanh_in_fp16():
    """MobileNet's ReLU6 is ``clip`` with scalar bounds, which ToMixedPrecision rejects."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6(), nn.Hardtanh(-1, 2)).eval()
    mod = to_fp16(export(model, InputSpec(3, 8, 10)))
    assert "R.clip" not in mod.script(show_meta=False)
    x = torch.randn(1, 3, 8, 8) * 3
    ref = model(x).detach().numpy()
    got = run(build(mod), x.numpy())
    assert np.abs(got - ref).max() < 1e-2 * np.abs(ref).max()
    assert got.min() >= -1 and got.max() <= 2  # the bounds still apply


class _PoolThenConv(nn.Module):
    """conv -> ReLU -> 3x3/2 max-pool -> conv; ``barrier`` puts a reshape pair between the
    pool and the second conv (the same values; the pool is then not the quantized tensor's
    producer)."""

    def __init__(self, barrier: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first, self.second = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 8, 1)
        self.barrier = barrier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.max_pool2d(F.relu(self.first(x)), 3, stride=2, padding=1)
        if self.barrier:
            y = y.reshape(y.shape[0], -1).reshape(y.shape)
        return self.second(y)


def _pool_input_dtypes(mod) -> list[str]:
    from tvm import relax

    found = []
    for _, call, _ in op_bindings(mod["main"], ("relax.nn.max_pool2d",)):
        found.append(str(call.args[0].ty.dtype))
    del relax
    return found


def test_max_pooled_activations_are_quantized_before_the_pool():
    """Quantizing commutes with max, so the pool runs on the 8-bit tensor the conv before it
    writes: the same numbers as quantizing after the pool (the barrier model), bit for bit."""
    x = _input(3, signed=True)
    pooled_first, table = _quantized(_PoolThenConv(barrier=False), x)
    pooled_after, _ = _quantized(_PoolThenConv(barrier=True), x)
    assert table["status"] == ["int8", "int8"]
    assert _pool_input_dtypes(pooled_first) == ["uint8"]
    assert _pool_input_dtypes(pooled_after) == ["float32"]
    got, ref = run(build(pooled_first), x.numpy()), run(build(pooled_after), x.numpy())
    assert np.abs(ref).max() > 0.1  # the reference varies
    np.testing.assert_array_equal(got, ref)
