"""The peers' int8 (PyTorch x86 engine, ONNX Runtime static QDQ) really quantize and stay
close to the float model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dlas.data import InputSpec
from dlas.tuning.int8_peers import onnxruntime_int8, pytorch_int8
from dlas.tuning.onnx_runtime import export_onnx


def _model_and_samples():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    ).eval()  # fmt: skip
    samples = [torch.randn(8, 3, 12, 12) for _ in range(2)]
    return model, samples


def _check(got: np.ndarray, ref: np.ndarray) -> None:
    err = np.abs(got - ref).max()
    assert err < 0.1 * np.abs(ref).max()  # close to float...
    assert err > 1e-6  # ...but quantized (float kernels would agree to ~1e-7)


def test_pytorch_int8_is_quantized_and_close():
    model, samples = _model_and_samples()
    quantized = pytorch_int8(model, samples)
    assert "Quantized" in str(quantized)  # quantized conv modules, not float ones
    x = samples[0][:2]
    with torch.inference_mode():
        _check(quantized(x).numpy(), model(x).numpy())


def test_onnxruntime_int8_is_quantized_and_close(tmp_path):
    pytest.importorskip("onnxruntime")
    model, samples = _model_and_samples()
    float_path = tmp_path / "float.onnx"
    export_onnx(model, InputSpec(3, 12, 10), float_path, 17)
    forward, session = onnxruntime_int8(float_path, samples, tmp_path, 1)
    x = samples[0][:1]
    with torch.inference_mode():
        _check(forward(x.numpy()), model(x).numpy())
