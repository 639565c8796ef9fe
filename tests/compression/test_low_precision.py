"""int8 and bf16 on the dot-product instructions: the built library uses them, the run says
which family it used, and combinations that cannot run are refused before any work."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from dlas import validity
from dlas.algorithms import intrinsics, lower
from dlas.compiler.build import build
from dlas.compiler.export import export
from dlas.compression.bf16 import to_bf16
from dlas.compression.int8 import calibrate, kernel_family
from dlas.compression.quantize import quantize_module
from dlas.config import validate
from dlas.data import InputSpec
from tests.algorithms.test_intrinsics import INSTRUCTIONS, disassemble
from tests.compression.helpers import host_target, run


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    ).eval()  # fmt: skip


def _disassembly(executable, tmp_path) -> str:
    if shutil.which("objdump") is None:
        pytest.skip("objdump is not installed: the instructions cannot be checked")
    path = tmp_path / "model.so"
    executable.export_library(str(path))
    return disassemble(str(path))


@pytest.mark.parametrize("kind", ["int8", "bf16"])
def test_library_uses_the_dot_product_instruction(kind, tmp_path):
    """Fails if an int8 build has no instruction of the family the target has (vpdpbusd with
    VNNI, vpmaddubsw on zmm or ymm registers without), or a bf16 build on a BF16 target has no
    vdpbf16ps; skips (saying so) on CPUs without them."""
    target = host_target()
    expected = intrinsics.int8_isa(target) if kind == "int8" else intrinsics.BF16_FEATURE
    if (kind == "bf16" and not intrinsics.has_bf16(target)) or expected == "none":
        pytest.skip(f"this CPU ({target.mcpu}) has no {kind} dot product: nothing to check")
    model = _model()
    x = torch.randn(2, 3, 12, 12)
    mod = export(model, InputSpec(3, 12, 10))
    if kind == "int8":
        mod, _ = quantize_module(mod, calibrate(model, [x]))
    else:
        mod, table = to_bf16(mod)
        assert table["status"] == ["bfloat16"] * 3
    lowered = lower(mod, "spatial_pack", target)
    assert [r["kernel"] for r in lowered.layers] == [expected] * 3
    assert kernel_family(lowered.layers) == expected
    executable = build(lowered.mod, target)
    got = run(executable, x[:1].numpy())
    ref = model(x[:1]).detach().numpy()
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()
    instruction = INSTRUCTIONS[expected]
    assert re.search(rf"\s{instruction}", _disassembly(executable, tmp_path)), instruction


def _cfg(compose_cfg, tmp_path, *overrides: str):
    return validate(compose_cfg("model=tiny_cnn", f"paths.cache_dir={tmp_path}", *overrides))


def test_bf16_is_refused_on_a_cpu_without_avx512_bf16(compose_cfg, tmp_path):
    cfg = _cfg(
        compose_cfg, tmp_path, "compression=bf16", "+device.target={kind: llvm, mcpu: cascadelake}"
    )
    (reason,) = validity.problems(cfg)
    assert "compression=bf16" in reason and "avx512bf16" in reason and "cascadelake" in reason
    assert "fp16" in reason  # says what would work


def test_bf16_on_a_bf16_cpu_and_its_algorithms(compose_cfg, tmp_path):
    if not intrinsics.has_bf16(host_target()):
        pytest.skip("this CPU has no AVX512-BF16: bf16 is refused here (tested above)")
    assert not validity.problems(_cfg(compose_cfg, tmp_path, "compression=bf16"))
    (reason,) = validity.problems(
        _cfg(compose_cfg, tmp_path, "compression=bf16", "algorithm=winograd")
    )
    assert "algorithm=winograd" in reason and "bfloat16" in reason
    assert all(name in reason for name in ("direct", "gemm", "spatial_pack"))
