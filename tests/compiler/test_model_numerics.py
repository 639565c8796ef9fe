"""Each study model, exported and compiled by dlas, computes what PyTorch computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm

from dlas.algorithms import lower
from dlas.compiler.build import build
from dlas.compiler.export import export
from dlas.data import InputSpec
from dlas.devices.local_cpu import TVMRunner, host_target
from dlas.models import create_model
from tests.conftest import STUDY_MODELS, calibrate_batchnorm


# DenseNet-161 takes a minute to build: in the slow tier, with every other model here.
@pytest.mark.parametrize(
    ("name", "variant", "size"),
    [
        pytest.param(*m, marks=pytest.mark.slow) if m[0] == "densenet161" else m
        for m in STUDY_MODELS
    ],
    ids=[f"{n}-{v}" for n, v, _ in STUDY_MODELS],
)
def test_compiled_model_matches_pytorch(name, variant, size):
    torch.manual_seed(0)
    spec = InputSpec(3, size, 10)
    model = create_model(name, 10, variant=variant, image_size=size)
    calibrate_batchnorm(model, spec.shape)
    target = host_target()
    runner = TVMRunner(build(lower(export(model, spec), "direct", target).mod, target), tvm.cpu())

    gen = torch.Generator().manual_seed(1)
    inputs = [torch.randn(spec.shape, generator=gen) for _ in range(2)]
    with torch.no_grad():
        refs = [model(x).numpy() for x in inputs]
    outs = [runner.run(x.numpy()) for x in inputs]
    # The reference must depend on the input, or agreement would prove nothing.
    assert np.abs(refs[0] - refs[1]).max() > 1e-3 * np.abs(refs[0]).max()
    for out, ref in zip(outs, refs, strict=True):
        rel = np.abs(out - ref).max() / np.abs(ref).max()
        assert rel <= 1e-4, f"{name}-{variant}: relative error {rel:.2e}"
